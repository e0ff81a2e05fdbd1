"""register(): two whole images, no prior, to subpixel precision.

Four stages, each honouring both validity masks:

1. **Rotation and scale** (not for ``model="translation"``): Fourier-Mellin
   on the magnitude spectra of the valid pixels
   (:mod:`~spectralign.registration.fourier_mellin`) gives a few candidate
   angles, each known modulo 180 degrees.
2. **Translation**: for each candidate and its half-turn, moving is turned
   and scaled, and the masked correlation coefficient over every shift
   (:mod:`~spectralign.registration.masked`, Padfield 2012), weighed by the
   overlap behind it, finds where it lies on fixed.  Stage 1 runs on
   images shrunk to about 128 px, stage 2 to about 64 px; where neither of the two best candidates
   refines, every angle is searched in steps of 4 degrees at 64 px.  Small
   whole frames (up to 160 x 160 px) are first placed by one windowed
   correlation over the frame at the best angle, both turns, which costs a
   third as much; the masked placements follow where it does not refine.
3. **Windows**: moving is resampled (cubic convolution) through the estimate into fixed's
   frame, spectral windows (:class:`~spectralign.Matcher`) across the
   overlap measure what is left, and a robust least-squares fit of the model
   (consensus, then trimming) updates the estimate.  Enough windows
   must agree, or the candidate is rejected.
4. **Pixels**: Gauss-Newton on all the valid pixels (with gain and offset,
   :mod:`~spectralign.registration.direct`) finishes the estimate to a
   thousandth of a pixel, kept where the pixels agree better than at the
   windows' estimate.  Where no candidate's windows agree (a few cells under
   heavy noise), the same fit from each candidate decides, if the best
   stands far clear of chance.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage

from ..affine import Affine
from ..errors import ImageDimensionError, MaskError, NoOverlapError, SpectralignWarning
from ..io.image import Image
from ..match import loader as _loader
from ..match.matcher import Matcher
from .denoise import denoise_image
from .direct import _dog, _region, bandpass, bandpass_forms, bandpass_forms_of, helper, refine_direct
from .fit import MIN_POINTS, MODELS, determined, robust_fit
from .fourier_mellin import rotation_scale_candidates
from .masked import fill_masked, masked_ncc, ncc_peaks

__all__ = ["register", "Registration", "SNR_THRESHOLD", "NCC_THRESHOLD", "MODELS"]

#: A :attr:`Registration.snr` below this means the result is not to be trusted.
SNR_THRESHOLD = 6.0
#: A :attr:`Registration.detail_ncc` below this warns too: the pixels
#: say the images differ, whatever the windows found (on the bench the
#: correct results reach 0.67 and more, under noise of 0.2 of the range;
#: neighbouring serial TEM sections, whose content changes, 0.10-0.25,
#: where their windows agree with SNR 9-11 on transforms 6-40 px off).
NCC_THRESHOLD = 0.4
#: Where the pixels' detail correlation of a result whose windows agreed
#: is below this while their SNR is at least :data:`DOUBT_SNR` (so noise
#: is not what holds the detail back), the other candidates are refined
#: too, the most significant result wins, and a warning says that a
#: repeating pattern or a straight edge may be matched off its place.
#: Measured: no correct result of the bench's (about 900, noise 0.2
#: included) falls there; sparse honeycomb crops of the fluorescence tile
#: matched a cell or two along their edge do (0.73-0.84).
DOUBT_NCC = 0.85
#: See :data:`DOUBT_NCC`.
DOUBT_SNR = 8.0
#: Below this detail correlation the other candidates are refined too
#: whatever the windows' SNR: windows of sparse, faint content can agree
#: weakly (SNR 5-6) on a placement far off, where the pixels correlate at
#: 0.3-0.48 (crops of a widefield YFP tile overlapping by half), while the
#: right placements of the bench's 128 px crops under noise of 0.2 of the
#: range reach 0.505 and more (the first percentile 0.615).
DOUBT_NCC_ANY = 0.5
#: Where no other check has warned, the aligned images' correlation over
#: every shift (band-passed, at the placements' scale, under a window) is
#: read for a rival peak more than 4 px off: at this fraction of the peak
#: at the result or more, a warning says the content repeats and the
#: result may be a period off.  Measured: the bench's right answers reach
#: 0.76 at most (noise 0.2; 0.65 at noise 0.1); on 3 x 160 crops of the
#: fluorescence tile's honeycomb and the H&E excerpt with little content,
#: the one right answer over 0.5 read 0.83, and 15 of the 17 misses over
#: 0.5 read 0.85-6.2 (detail correlations up to 0.99, window SNRs up to 21).
RIVAL_RATIO = 0.85
#: Windows whose correlation peak has a lower SNR take no part in the fit
#: (small noisy windows that match reach 4 to 6; the robust fit sorts out
#: the chance matches among them).
WINDOW_SNR = 4.0
#: Stages 1 and 2 run on images shrunk to about this many pixels a side.
COARSE_SIDE = 128
#: The candidates' placements run on images shrunk to about this size.
PLACE_SIDE = 64
#: The search of every angle runs on images shrunk to about this size.
SEARCH_SIDE = 64
#: Pixels within this many band-pass widths of an edge take no part in the
#: candidates' correlation.
EDGE_REACH = 2.0
#: Smallest overlap searched, as a fraction of the smaller image's valid area.
MIN_OVERLAP = 0.2
#: Significance (correlation times the root of the independent pixels)
#: that the pixels' own fit must reach when the windows cannot agree
#: (unrelated images reach 10 after the fit has made the most of them;
#: sparse cells under heavy noise that do match, 40 and more).
DIRECT_Z = 20.0
#: Window passes before the pixels' fit finishes the estimate.
REFINE_ITERS = 1
#: Band-pass levels (px) of that finishing fit.
POLISH_LEVELS = (1.0,)
#: Images with more pixels are finished on block means (a million pixels
#: pin a transform far below the windows' noise already).
POLISH_PIXELS = 1_000_000
#: Spectral passes of each window: one, since the pixels' fit finishes
#: the estimate (on the bench, 1 and 2 gave the same errors in every task).
WINDOW_ITERS = 1
#: Smallest side of the spectral windows (a third of the frames' shorter
#: side, within this and 160 px): 16 windows of 24 px on 64 px frames
#: where 32 px left 9, too few to agree under heavy noise.
WINDOW_MIN = 24
#: Side of the parts of the frames whose spectra :func:`_parts` compares,
#: as a fraction of the frame's.
PART = 0.6
#: Windows a side, at most.
MAX_WINDOWS_SIDE = 8
#: The same where an image is binary (two values).
BINARY_POLISH_LEVELS = (0.5,)
#: Width of the soft step that a gray image goes through to meet a binary
#: one, in standard deviations of its values (0.1: 0.028 px, 0.3: 0.025,
#: 0.5: 0.026 px median corner error on the bench's binarized affine).
SOFT_WIDTH = 0.3
#: The finish stops when a step moves no corner by more than this (px):
#: Gauss-Newton converges quadratically here (a step of d leaves about
#: 0.2 d^2), and on the bench's affines 0.03 gives the corner errors of
#: 0.005 in two thirds of the time.
POLISH_TOL = 0.03
#: Images whose sides span twice this many pixels (or blocks) first
#: finish on block means of 2 x 2.
PYRAMID_SIDE = 128
#: Images whose sides span twice this many pixels are compared by the
#: spectral windows on block means of 2 x 2 (:func:`_frames`).  Measured
#: on 128 px rotations against 128 (60 pairs a condition, clean, noise
#: 0.1 and 0.2, JPEG 30 and 10, the bench's and the other sources): 570
#: of 600 aligned against 568, in 0.89-0.90x the time; on 200 px no-prior
#: crops with sparse content (seeds 8-16), 651 right either way and 36
#: wrong with no warning against 35.
FRAMES_SIDE = 64
#: Each step of the finish on an image (or block means) of at least
#: :data:`EVERY_FROM` pixels takes one pixel in this many (a checkerboard:
#: neighbours in an image band-passed at 1 px tell much the same): median
#: corner errors on the bench's affine 0.0064 / 0.0284 / 0.0129 px gray /
#: binarized / vignetted against 0.0064 / 0.0232 / 0.0128 with every
#: pixel, in 70 % of the time; the same errors in the rotation, masked,
#: no-prior and 1400 px tasks.
POLISH_EVERY = 2
#: See :data:`POLISH_EVERY`.
EVERY_FROM = 128 * 128
#: Fewest valid pixels a mask may leave.
MIN_VALID = 256
#: Pixels (of the larger image) up to which a pair is small, and goes
#: another way in three places, each measured (wall clock per pair at
#: 128 px, against the way of bigger images):
#:
#: - two whole frames are first placed by one windowed correlation over
#:   the frame (:func:`_framed`), before the masked correlation's
#:   placements: on 128 px rotations (60 pairs a condition: clean, noise
#:   0.1 and 0.2, JPEG 10, on the bench's and the other sources) it placed
#:   534 of 600 right against 521, in 0.8 ms against 2.4 (on a 384 px
#:   affine 17 of 40 against 29: big images go straight to the latter);
#: - Fourier-Mellin runs on images of about half COARSE_SIDE
#:   (:func:`_coarse_factor`);
#: - the windows' frames and the pixels' fit's band-passes are made on
#:   the calling thread, not the helper: the two threads' many short numpy
#:   calls wait on each other for the interpreter lock (0.95-0.97x without
#:   the helper; at 256 px 0.9-1.07x, within the machine's noise; at 320
#:   and 384 px the helper gains 1.05-1.15x).
SMALL_PIXELS = 160 * 160


@dataclass(frozen=True)
class Registration:
    """What :func:`register` found.

    Attributes
    ----------
    transform : Affine
        Maps moving's pixel ``(x, y)`` to fixed's.
    model : str
        The model fitted.
    snr : float
        Median signal-to-noise ratio of the correlation peaks of the
        spectral windows that agreed on the transform.  Below
        :data:`SNR_THRESHOLD` (6) the result is not to be trusted (a
        :class:`~spectralign.errors.SpectralignWarning` says so); the
        windows of unrelated images reach 4 to 6.5, but too few of them
        agree on one transform (:class:`~spectralign.errors.NoOverlapError`).
    ncc : float
        Correlation coefficient of fixed and :meth:`warp` over the pixels
        valid in both (every other pixel each way in images of 96 px a
        side and more; moving resampled by cubic convolution rather than
        :meth:`warp`'s cubic spline, whose prefilter costs more than the
        rest of the finish: it reads a little lower, 0.970 for 0.976 in
        the README's example at 256 px and more): the
        pixels' own verdict (1: identical up to gain and offset; shading
        that one image has and the other lacks lowers it).  Of the images
        as matched: a binarized image whose contrast is the gray one's
        inverted is matched inverted (:meth:`warp` and :meth:`difference`
        show the images as given).
    overlap : float
        Fraction of fixed's valid pixels that moving's valid pixels cover.
    windows : int
        Spectral windows in the final fit.
    residual : float
        RMS distance (px) of those windows' matches from the windows' fit;
        NaN where the windows could not agree and all the pixels decided
        (sparse content under heavy noise: :attr:`snr` then warns too).
    iterations : int
        Refinement steps taken.
    detail_ncc : float
        Correlation coefficient of the two images' detail (band-passed to
        1-8 px: the pixels' fit's view, where shading and pixel noise weigh
        little) over the overlap at the result.  Below
        :data:`NCC_THRESHOLD` a warning says the images differ (changed
        content, such as the next serial section, or overwhelming noise):
        windows that agree can still be off there.
    """

    transform: Affine
    model: str
    snr: float
    ncc: float
    overlap: float
    windows: int
    residual: float
    iterations: int
    detail_ncc: float
    _fixed: np.ndarray = field(repr=False)
    _moving: np.ndarray = field(repr=False)
    _fixed_mask: np.ndarray = field(repr=False)
    _moving_mask: np.ndarray = field(repr=False)

    def warp(self, order: int = 3, fill: float = 0.0) -> np.ndarray:
        """Moving resampled into fixed's frame: an array of fixed's shape
        (spline ``order``; ``fill`` where moving has no pixel).

        A spline of order 2 or more reads moving mirrored past its edges
        (a spline fitted against the fill would ring a few pixels into the
        image: 1 % of a flat image's level 3 px in), and the pixels whose
        sample lies outside moving's frame take ``fill``."""
        h, w = self._fixed.shape
        if order < 2:
            return np.asarray(self.transform.apply(self._moving, (0, 0, w, h), order=order,
                                                   fill=fill))
        from .compiled import frame_mask

        pad = 12  # the spline's ringing decays by 0.27 a pixel: 1e-7 here
        padded = np.pad(np.asarray(self._moving, dtype=np.float32), pad, mode="symmetric")
        # padded pixel (x + pad, y + pad) is moving's (x, y)
        out = np.asarray((self.transform @ Affine.translator((-pad, -pad))).apply(
            padded, (0, 0, w, h), order=order, fill=fill))
        inside = np.empty((h, w), dtype=bool)
        frame_mask(np.ascontiguousarray(self.transform.inverse().matrix), self._moving.shape[0],
                   self._moving.shape[1], 0.0, inside)
        out[~inside] = fill
        return out

    def valid(self) -> np.ndarray:
        """Boolean mask, fixed's shape: where fixed and the warped moving
        are both valid (and 2 px inside moving's edges, where the spline of
        :meth:`warp` feels the fill)."""
        return _overlap(self.transform, self._fixed_mask, self._moving_mask)

    def difference(self, normalize: bool = False) -> np.ndarray:
        """``fixed - warp()`` where both are valid, NaN elsewhere.

        With ``normalize``, the warp's gain and offset are first fitted to
        fixed over the valid overlap (for images of different contrast,
        e.g. a binarized and a gray one); where the warp is flat over the
        overlap, only the offset (fixed's mean there)."""
        valid = self.valid()
        warped = self.warp()
        fixed = self._fixed.astype(np.float64)
        if normalize and valid.sum() > 2:
            m, f = warped[valid].astype(np.float64), fixed[valid]
            m0, f0 = m.mean(), f.mean()
            spread = float(np.dot(m - m0, m - m0))
            # flat: a spread within single precision's rounding of its level
            flat = spread <= m.size * (1e-6 * abs(m0)) ** 2
            gain = 0.0 if flat else float(np.dot(m - m0, f - f0)) / spread
            warped = gain * (warped - m0) + f0
        return np.where(valid, fixed - warped, np.nan).astype(np.float32)

    def to_dict(self) -> dict:
        """The numbers, for JSON or a table row (``residual`` None where
        NaN)."""
        return {"model": self.model, "matrix": self.transform.matrix.tolist(),
                "angle_deg": float(np.degrees(self.transform.angle())),
                "scale": self.transform.magnification(),
                "shift": self.transform.translation().tolist(),
                "snr": self.snr, "ncc": self.ncc, "overlap": self.overlap,
                "windows": self.windows,
                "residual": self.residual if np.isfinite(self.residual) else None,
                "iterations": self.iterations,
                "detail_ncc": self.detail_ncc if np.isfinite(self.detail_ncc) else None}


# -- inputs ------------------------------------------------------------------

def _as_gray(img: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A float32 2-D image and the mask of its finite pixels."""
    if isinstance(img, (str, PathLike)):
        data = np.asarray(Image(img))
    else:
        arr = np.asarray(img)
        if arr.ndim == 2 and arr.dtype.kind == "f":
            data = arr.astype(np.float32)
        elif arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
            data = np.asarray(Image(arr))
        else:
            raise ImageDimensionError(
                f"Expected {name} as a 2-D gray image (H, W) or a colour image (H, W, 3|4). "
                f"Got an array of shape {arr.shape} instead; pick one plane, e.g. {name}[0].")
    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, 0.0).astype(np.float32)
    return data, finite


def _as_mask(mask: Any, shape: tuple[int, int], finite: np.ndarray, name: str) -> np.ndarray:
    if mask is None:
        out = finite
    else:
        arr = np.asarray(mask)
        if arr.shape != shape:
            raise MaskError(f"Expected {name} of the image's shape {shape} (H, W). "
                            f"Got shape {arr.shape} instead.")
        if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise MaskError(f"Expected {name} as booleans (True = valid pixel). Got values "
                            f"other than 0 and 1 (dtype {arr.dtype}) instead.")
        out = arr.astype(bool) & finite
    valid = int(out.sum())
    need = max(MIN_VALID, int(0.01 * out.size))
    if valid < need:
        raise MaskError(f"Expected at least {need} valid pixels in {name.replace('_mask', '')}. "
                        f"Got {valid} of {out.size} instead; check that True marks the valid "
                        f"pixels, not the masked ones.")
    return out


# -- stages -------------------------------------------------------------------

def _warp_mask(t: Affine, mask: np.ndarray, shape: tuple[int, int],
               margin: int = 0) -> np.ndarray:
    """Where ``mask`` (moving's) lands in a frame of ``shape`` through ``t``:
    pixels whose bilinear sample is wholly valid, ``margin`` px in from
    moving's edges where ``mask`` is all valid."""
    h, w = shape
    if mask.all():  # a whole image: where the inverse map lands inside it
        from .compiled import frame_mask

        out = np.empty((h, w), dtype=bool)
        frame_mask(np.ascontiguousarray(t.inverse().matrix, dtype=np.float64), mask.shape[0],
                   mask.shape[1], float(margin), out)
        return out
    m = np.asarray(t.apply(mask.astype(np.float32), (0, 0, w, h), order=1, fill=0.0))
    return m > 0.999


def _overlap(t: Affine, fmask: np.ndarray, mmask: np.ndarray) -> np.ndarray:
    """Where fixed and moving through ``t`` are both valid, 2 px in from
    moving's invalid pixels and edges."""
    if mmask.all():
        return fmask & _warp_mask(t, mmask, fmask.shape, margin=2)
    inner = scipy.ndimage.binary_erosion(np.pad(mmask, 1), iterations=2)[1:-1, 1:-1]
    return fmask & _warp_mask(t, inner, fmask.shape)


def _shrink(img: np.ndarray, mask: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Block means of ``f x f`` pixels over valid ones; blocks with any
    invalid pixel are invalid.  The stages shrink the same images by the
    same blocks (the windows' frames and the pixels' fit, say): within a
    call of :func:`register` each is shrunk once (:class:`_Shrunk`)."""
    if f == 1:
        return img, mask
    return _SHRUNK.get(img, mask, f)


class _Shrunk:
    """What :func:`_shrink` has made, by the identity of the image and
    mask, shared by the threads.  An entry holds weak references to its
    image and mask and goes when either is freed (so that no other array
    takes their identity while it lasts); :func:`register` empties the
    store as it returns."""

    def __init__(self, size: int = 16):
        self._lock = threading.Lock()
        self._made: dict = {}
        self._size = size

    def get(self, img: np.ndarray, mask: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
        key = (id(img), id(mask), f)
        with self._lock:
            hit = self._made.get(key)
        if hit is not None and hit[0]() is img and hit[1]() is mask:
            return hit[2]
        out = _block_means(img, mask, f)

        def forget(_, key=key):
            with self._lock:
                self._made.pop(key, None)
        entry = (weakref.ref(img, forget), weakref.ref(mask, forget), out)
        with self._lock:
            if len(self._made) >= self._size:
                self._made.pop(next(iter(self._made)))
            self._made[key] = entry
        return out

    def clear(self) -> None:
        with self._lock:
            self._made.clear()


_SHRUNK = _Shrunk()
# a child forked while another thread held the lock would wait on it for
# ever: the child starts with a store of its own
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _SHRUNK.__init__())


def _block_means(img: np.ndarray, mask: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_shrink`'s work."""
    if mask.all():
        small = _block_sum(img, f)
        small *= np.float32(1.0 / (f * f))
        return small, np.ones(small.shape, dtype=bool)
    count = _block_sum(mask, f)
    small = _block_sum(np.where(mask, img, 0), f) / np.maximum(count, 1)
    return small.astype(np.float32), count == f * f


def _block_sum(img: np.ndarray, f: int) -> np.ndarray:
    """Sums of ``f x f`` blocks (float32; the last rows and columns that
    make no whole block are left out), by strided adds (a tenth of the
    time of a reduction over a reshaped array)."""
    h, w = (s // f * f for s in img.shape)
    x = img[:h, :w]
    cols = x[:, 0::f].astype(np.float32)
    for j in range(1, f):
        cols += x[:, j::f]
    out = cols[0::f].copy()
    for i in range(1, f):
        out += cols[i::f]
    return out


def _bandpass(img: np.ndarray, mask: np.ndarray, fine: float = 2.0) -> np.ndarray:
    """Detail between ``fine`` and 8 ``fine`` px of the valid pixels: no
    noise at the pixel scale, no shading, and broad enough to still
    correlate a few degrees off the true angle."""
    return bandpass(fill_masked(img, mask), fine)


def _turned(moving: np.ndarray, mask: np.ndarray, lin: Affine, scale: float,
            reach: int) -> tuple[Affine, np.ndarray, np.ndarray]:
    """Moving (its band-passed form) through the linear map ``lin`` (of
    scale ``scale``), on a canvas that holds all of it: returns the map
    from moving to the canvas, the canvas (cubic convolution) and where it
    holds moving's valid pixels ``reach`` px in from their edges."""
    from .compiled import cubic_sample

    h, w = moving.shape
    corners = lin(np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64))
    lo, hi = np.floor(corners.min(axis=0)), np.ceil(corners.max(axis=0))
    to_canvas = Affine.translator(-lo) @ lin
    cw, ch = (hi - lo).astype(int)
    canvas = np.empty((ch, cw), dtype=np.float32)
    cubic_sample(moving, np.ascontiguousarray(to_canvas.inverse().matrix), canvas)
    if mask.all():  # a whole frame: its inset, in moving's px
        inset = _warp_mask(to_canvas, mask, (ch, cw), margin=reach / scale)
        # the turned frame is symmetric about the canvas's centre but for
        # the odd pixel on its edges: made so, its half-turn is itself,
        # and its correlation needs fewer transforms (:func:`masked_ncc`)
        return to_canvas, canvas, inset & inset[::-1, ::-1]
    return to_canvas, canvas, _inner(_warp_mask(to_canvas, mask, (ch, cw)), reach)


def _inner(mask: np.ndarray, reach: int) -> np.ndarray:
    """``mask`` less ``reach`` px along its edges and the frame's."""
    if not reach:
        return mask
    if mask.all():  # a whole frame: the frame inset
        out = np.zeros(mask.shape, dtype=bool)
        out[reach:-reach, reach:-reach] = True
        return out
    return scipy.ndimage.binary_erosion(mask, iterations=reach)


def _placements(sf, sfm, sm, smm, linears, f: int, fine: float) -> list[tuple[float, Affine]]:
    """Each linear map's best translation on the shrunk images (by masked
    correlation of their band-passed forms, weighed by the overlap), as
    full-size transforms with their scores, best first."""
    bf = _bandpass(sf, sfm, fine)
    # the band-pass near an edge (of the frame or of the mask) answers to
    # the padding, not to the scene; two edges lined up would correlate
    reach = int(np.ceil(EDGE_REACH * fine))
    fin = _inner(sfm, reach)
    # moving is band-passed before it is turned (the band-pass is the same
    # every way round), at the scale that puts its band on fixed's: one
    # band-pass a scale, not one a turn
    passed = {}
    small = Affine.scaler(1.0 / f)
    out, cache = [], {}
    # a half-turn's canvas is its twin's read backwards (the canvas holds
    # all of the turned image, so it is symmetric), band-pass and all: one
    # resampling and one set of forward transforms serve both
    keys = [tuple(np.round(lin.linear, 9).ravel() + 0.0) for lin in linears]
    index = {key: i for i, key in enumerate(keys)}
    done = set()
    for i, lin in enumerate(linears):
        if i in done:
            continue
        j = index.get(tuple(-v + 0.0 for v in keys[i]))
        pair = j is not None and j not in done and j != i
        done.update((i, j) if pair else (i,))
        scale = round(float(np.sqrt(abs(np.linalg.det(lin.linear)))), 6)
        if scale not in passed:
            passed[scale] = _bandpass(sm, smm, fine / scale)
        to_canvas, bc, cin = _turned(passed[scale], smm, lin, scale, reach)
        if cin.sum() < MIN_VALID // 4:
            continue
        need = MIN_OVERLAP * min(fin.sum(), cin.sum())
        found = masked_ncc(bf, bc, fin, cin, need, cache, half_turn=pair)
        flip = _half_turn(bc.shape)
        for (ncc, count), tc in zip(found if pair else [found], (to_canvas, flip @ to_canvas)):
            # a small overlap correlates well by chance: rank by
            # significance, the coefficient times the square root of the
            # pixels behind it
            score = ncc * np.sqrt(count / fin.sum())
            for shift, value in ncc_peaks(score, bc.shape, k=1):
                # full-size moving -> shrunk moving -> canvas -> shrunk fixed -> fixed
                t = small.inverse() @ Affine.translator(shift) @ tc @ small
                out.append((value, t))
    out.sort(key=lambda vt: -vt[0])
    return out


def _factor(fixed, moving, side: int) -> int:
    return max(1, int(round(max(*fixed.shape, *moving.shape) / side)))


def _small(fixed, moving) -> bool:
    """Whether a pair is small (:data:`SMALL_PIXELS`)."""
    return max(fixed.size, moving.size) <= SMALL_PIXELS


def _coarse_factor(fixed, moving) -> int:
    """Block size of Fourier-Mellin's images: about COARSE_SIDE px a side,
    half that for a small pair, whose candidates need no finer spectra
    (measured on 128 px rotations, 60 pairs a condition, clean, noise 0.1
    and 0.2, JPEG 30 and 10, on the bench's and the other sources: the
    same pairs aligned, the whole call in 0.94-0.96x the time)."""
    return _factor(fixed, moving, COARSE_SIDE // 2 if _small(fixed, moving) else COARSE_SIDE)


def _coarse(fixed, fmask, moving, mmask, model: str, notes: dict | None = None):
    """Candidate transforms (moving -> fixed) as ``(score, transform)``,
    the two best: Fourier-Mellin's angles and scales, each turned both ways,
    placed by correlation; on small whole frames, first the best angle's
    framed placement (:func:`_framed`, which leaves its rival check in
    ``notes``).  Lazily: each is placed only when the one before has been
    refined and failed."""
    # the placements' band-pass (2 to 16 px at COARSE_SIDE) holds nothing
    # that images shrunk by another 2 lose: they run at PLACE_SIDE, 1 px
    if model == "translation":
        g = _factor(fixed, moving, PLACE_SIDE)
        pf, pfm = _shrink(fixed, fmask, g)
        pm, pmm = _shrink(moving, mmask, g)
        yield from _placements(pf, pfm, pm, pmm, [Affine()], g, 1.0)[:2]
        return
    f = _coarse_factor(fixed, moving)
    sf, sfm = _shrink(fixed, fmask, f)
    sm, smm = _shrink(moving, mmask, f)
    cands = rotation_scale_candidates(sf, sfm, sm, smm, scale=model != "rigid", k=2)
    if cands and _small(fixed, moving) and fmask.all() and mmask.all():
        yield from _framed(fixed, fmask, moving, mmask, *cands[0][:2], notes=notes)
    yield from _placed(fixed, fmask, moving, mmask, cands)


def _framed(fixed, fmask, moving, mmask, angle: float, scale: float,
            notes: dict | None = None) -> list[tuple[float, Affine]]:
    """Moving (a whole frame) turned by ``angle`` (and by half a turn more)
    and scaled by ``scale`` about its centre onto fixed's, each placed by
    the peak of their correlation over every cyclic shift, on images
    shrunk to PLACE_SIDE, under a Hann window over the valid pixels and
    band-passed as :func:`_rival` reads them: the better turn's ``(score,
    transform)``, the score its peak over the correlation's RMS.

    The same correlation holds :func:`_rival`'s check of the placement:
    ``notes["framed"]`` gets ``(transform, ratio, offset)``."""
    from .compiled import cubic_sample, rival_peak

    g = _factor(fixed, moving, PLACE_SIDE)
    sf, sfm = _shrink(fixed, fmask, g)
    sm, smm = _shrink(moving, mmask, g)
    h, w = sf.shape
    onto = Affine.translator(((w - 1) / 2, (h - 1) / 2))
    lin = (onto @ Affine.rotator(angle) @ Affine.scaler(scale)
           @ Affine.translator((-(sm.shape[1] - 1) / 2, -(sm.shape[0] - 1) / 2)))
    warped = np.empty((2, h, w), dtype=np.float32)
    cubic_sample(sm, np.ascontiguousarray(lin.inverse().matrix), warped[0])
    valid = _warp_mask(lin, smm, (h, w), margin=1)
    if valid.sum() < MIN_VALID // 4:
        return []
    # turned by half a turn more about the frame's centre: read backwards
    warped[1] = warped[0, ::-1, ::-1]
    window = _hann((h, w))
    inside = window * valid
    centred = (warped - warped[0][valid].mean()) * np.stack([inside, inside[::-1, ::-1]])
    spectra = scipy.fft.rfft2(centred)
    cross = np.conj(spectra) * (_windowed_spectrum(sf, sfm, window) * _dog_squared((h, w)))
    corr = scipy.fft.irfft2(cross, (h, w))
    # the band-pass leaves no mean: the RMS is the spread
    rms = np.sqrt(np.einsum("kij,kij->k", corr, corr) / (h * w))
    flat = corr.reshape(2, -1)
    at = np.argmax(flat, axis=1)
    score = flat[[0, 1], at] / np.maximum(rms, 1e-30)
    k = int(np.argmax(score))
    dy, dx = divmod(int(at[k]), w)
    # cyclic: the far half of the shifts are the negative ones
    shift = ((dx + w // 2) % w - w // 2, (dy + h // 2) % h - h // 2)
    turned = _half_turn((h, w)) if k else Affine()
    small = _block_map(g)
    placed = small.inverse() @ Affine.translator(shift) @ turned @ lin @ small
    if notes is not None:
        # the rival check reads the correlation with the placement at shift 0
        at_peak = np.roll(corr[k], (-shift[1], -shift[0]), axis=(0, 1))  # a fresh, contiguous copy
        top, value, rx, ry = rival_peak(at_peak, 4, 4)
        ratio = float(value) / float(top) if top > 0 and value > 0 else 0.0
        notes["framed"] = (placed, ratio, np.array([rx, ry], dtype=np.float64) * g)
    return [(float(score[k]), placed)]


def _half_turn(shape: tuple[int, int]) -> Affine:
    """Half a turn about the centre of a frame of ``shape``: the frame
    read backwards (pixel (x, y) -> (w - 1 - x, h - 1 - y))."""
    h, w = shape
    return Affine([[-1.0, 0.0, w - 1.0], [0.0, -1.0, h - 1.0]])


@functools.lru_cache(maxsize=8)
def _hann(shape: tuple[int, int]) -> np.ndarray:
    """A Hann window over a frame of ``shape``."""
    out = np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)
    out.flags.writeable = False  # shared between calls
    return out


def _windowed_spectrum(img: np.ndarray, valid: np.ndarray, window: np.ndarray) -> np.ndarray:
    """The transform of ``img`` less the mean of its ``valid`` pixels, under
    ``window`` (zero where not valid)."""
    return _windowed_spectra(img[None], valid, window)[0]


def _windowed_spectra(stack: np.ndarray, valid: np.ndarray, window: np.ndarray) -> np.ndarray:
    """:func:`_windowed_spectrum` of each image of ``stack`` (one
    transform call)."""
    stack = np.asarray(stack, dtype=np.float32)
    means = stack[:, valid].mean(axis=1, dtype=np.float64).astype(np.float32)
    return scipy.fft.rfft2((stack - means[:, None, None]) * window)


@functools.lru_cache(maxsize=8)
def _dog_squared(shape: tuple[int, int]) -> np.ndarray:
    """The square of the 1 px band-pass (:func:`~.direct._dog`) on an
    ``rfft2`` of ``shape``: the band-pass of both sides of a correlation."""
    out = (_dog(shape, 1.0) ** 2).astype(np.float32)
    out.flags.writeable = False  # shared between calls
    return out


def _part_pairs(fshape: tuple[int, int], mshape: tuple[int, int]) -> list[tuple]:
    """Slices of fixed and of moving that hold the same content when
    moving lies about half a frame off along an axis or a diagonal: fixed's
    right part and moving's left, and so on (eight pairs); parts of
    :data:`PART` of the frame, which share more than halves where the
    offset is less than half a frame (a diagonal one most of all)."""
    def split(n):
        k = max(1, int(round(PART * n)))
        return slice(0, k), slice(n - k, n), slice(0, n)
    (ft, fb, fy), (fl, fr, fx) = split(fshape[0]), split(fshape[1])
    (mt, mb, my), (ml, mr, mx) = split(mshape[0]), split(mshape[1])
    return [((fy, fr), (my, ml)), ((fy, fl), (my, mr)), ((fb, fx), (mt, mx)),
            ((ft, fx), (mb, mx)), ((fb, fr), (mt, ml)), ((ft, fl), (mb, mr)),
            ((fb, fl), (mt, mr)), ((ft, fr), (mb, ml))]


def _parts(fixed, fmask, moving, mmask, model: str):
    """Candidates as :func:`_coarse`'s, from the spectra of parts of the
    frames: where the images share little (half their area), the content
    they do not share swamps the whole spectra's likeness (measured: the
    right angle not among the whole spectra's ten best on 11 of 40 crops
    overlapping by 50-65 %), while the parts that hold the same content
    match strongly.  The two strongest of the eight pairs are placed
    (they held the right angle on 24 of 30 such crops with halves, on 30
    of 30 with parts of 0.6 of the frame), each on the parts that matched:
    on the whole frames, content that repeats along one axis (rows of
    cells, stripes) can correlate best where the frames lie on each other
    instead of at the offset the parts tell."""
    if model == "translation":
        return
    f = _coarse_factor(fixed, moving)
    sf, sfm = _shrink(fixed, fmask, f)
    sm, smm = _shrink(moving, mmask, f)
    cands = []
    for fpart, mpart in _part_pairs(sf.shape, sm.shape):
        if min(sfm[fpart].sum(), smm[mpart].sum()) < MIN_VALID // 4:
            continue
        cands += [(a, sc, v, fpart, mpart) for a, sc, v in rotation_scale_candidates(
            sf[fpart], sfm[fpart], sm[mpart], smm[mpart], scale=model != "rigid", k=1)]
    cands.sort(key=lambda c: -c[2])

    def where(fpart, mpart):  # the parts' slices on the full frames
        return tuple(tuple(slice(s.start * f, s.stop * f) for s in part)
                     for part in (fpart, mpart))
    yield from _first_then_rest([
        functools.partial(_turns_placed, fixed, fmask, moving, mmask, a, sc, where(fp, mp))
        for a, sc, _, fp, mp in cands[:2]])


def _placed(fixed, fmask, moving, mmask, cands):
    """``(score, transform)`` of the candidates' angles and scales, each
    turned both ways and placed on images shrunk to PLACE_SIDE; the best
    placement of the first candidate, then the best of the rest (placed
    only when asked for)."""
    yield from _first_then_rest([
        functools.partial(_turns_placed, fixed, fmask, moving, mmask, a, sc)
        for a, sc, _ in cands])


def _turns_placed(fixed, fmask, moving, mmask, angle: float, scale: float,
                  where: tuple | None = None) -> list[tuple[float, Affine]]:
    """The placements of moving turned by ``angle`` (and by half a turn
    more) and scaled by ``scale`` on fixed, on images shrunk to
    PLACE_SIDE, best first; with ``where`` (fixed's and moving's slices)
    those of the parts, as transforms of the whole frames."""
    if where is not None:
        fs, ms = where
        fixed, fmask, moving, mmask = fixed[fs], fmask[fs], moving[ms], mmask[ms]
    g = _factor(fixed, moving, PLACE_SIDE)
    pf, pfm = _shrink(fixed, fmask, g)
    pm, pmm = _shrink(moving, mmask, g)
    lins = [Affine.rotator(angle + turn) @ Affine.scaler(scale) for turn in (0.0, np.pi)]
    found = _placements(pf, pfm, pm, pmm, lins, g, 1.0)
    if where is None:
        return found
    into, out_of = (Affine.translator((s[1].start, s[0].start)) for s in where)
    return [(v, into @ t @ out_of.inverse()) for v, t in found]


def _first_then_rest(placings: list):
    """The best placement of the first of ``placings`` (functions that
    place), then the best of the rest and of the others' (those placed
    only when asked for)."""
    if not placings:
        return
    first = placings[0]()
    if first:
        yield first[0]
    rest = first[1:] + [vt for place in placings[1:] for vt in place()]
    rest.sort(key=lambda vt: -vt[0])
    if rest:
        yield rest[0]


def _search(fixed, fmask, moving, mmask, model: str) -> list[tuple[float, Affine]]:
    """The slow, sure way, when the spectra's candidates fail: every angle
    in steps of 4 degrees (and scales 0.7, 1 and 1.4 where the model
    scales), placed by correlation on images shrunk to 64 px."""
    f = _factor(fixed, moving, SEARCH_SIDE)
    sf, sfm = _shrink(fixed, fmask, f)
    sm, smm = _shrink(moving, mmask, f)
    scales = (1.0,) if model == "rigid" else (0.7, 1.0, 1.4)
    linears = [Affine.rotator(np.radians(a)) @ Affine.scaler(s)
               for a in np.arange(-180.0, 180.0, 4.0) for s in scales]
    return _placements(sf, sfm, sm, smm, linears, f, 1.0)


def _windows(valid: np.ndarray, size: int) -> np.ndarray:
    """Centres ``(x, y)`` of ``size`` windows at half-window steps (at most
    :data:`MAX_WINDOWS_SIDE` a side) whose pixels are at least 90 % valid."""
    h, w = valid.shape
    if size > min(h, w):
        return np.zeros((0, 2))
    from .compiled import window_centres

    # half-window steps, but no more than MAX_WINDOWS_SIDE a side: big
    # images need no more windows to pin a transform, only more time
    sx = max(4, size // 2, -(-(w - size) // (MAX_WINDOWS_SIDE - 1)))
    sy = max(4, size // 2, -(-(h - size) // (MAX_WINDOWS_SIDE - 1)))
    return window_centres(valid, size, sx, sy, 0.9)


def _fast_side(n: int) -> int:
    """The largest side up to ``n`` of the form 2^k or 3 x 2^k (at least
    16), whose transforms are the fastest: windows of 42 px (transformed
    at 45) took 47 us each, of 32 px 10 us, of 48 px 33 us."""
    best = 16
    for base in (16, 24):
        while base * 2 <= n:
            base *= 2
        if base <= n:
            best = max(best, base)
    return best


def _measure(ffill, fmask, mfill, mmask, t: Affine, model: str):
    """Spectral windows across the overlap of fixed and moving (its cubic
    filled form ``mfill``) resampled through ``t`` (cubic convolution: the
    windows need no finer reading, and a spline's prefilter of moving took
    as long as reading it): their centres,
    matches, SNRs, which of them are fit to use, and their size; None
    where no window fits in the overlap."""
    h, w = ffill.shape
    valid = fmask & _warp_mask(t, mmask, ffill.shape)
    size = _fast_side(int(np.clip(min(h, w) // 3, WINDOW_MIN, 160)))
    centres = _windows(valid, size)
    while size > 24 and len(centres) < max(4, 2 * MIN_POINTS[model]):
        size = max(24, _fast_side(int(size / 1.4)))
        centres = _windows(valid, size)
    if not len(centres):
        return None
    from .compiled import cubic_sample

    warped = np.empty((h, w), dtype=np.float32)
    cubic_sample(mfill, np.ascontiguousarray(t.inverse().matrix), warped)
    ref, warped = fill_masked([ffill, warped], valid)
    matches = Matcher(ref, warped).refine_many(centres, centres, size, iters=WINDOW_ITERS, workers=1)
    snrs = np.array(matches.snr, dtype=np.float64)
    # a window measures shifts well within its own size; beyond, its peak
    # is chance
    moved_by = np.linalg.norm(np.asarray(matches.p_) - np.asarray(matches.p), axis=1)
    good = (snrs >= WINDOW_SNR) & (moved_by <= size / 4)
    return centres, matches, snrs, good, size


@dataclass(frozen=True)
class _Frames:
    """What the spectral windows compare: fixed filled and its mask,
    moving filled (read by cubic convolution) and its mask, on block means of
    ``factor`` x ``factor`` pixels (``to_small`` maps the full images'
    pixels to theirs)."""

    fill: np.ndarray
    fmask: np.ndarray
    moving: np.ndarray
    mmask: np.ndarray
    factor: int
    to_small: Affine

    def shrunk(self, t: Affine) -> Affine:
        """``t`` (full images) on the blocks."""
        return self.to_small @ t @ self.to_small.inverse()

    def full(self, t: Affine) -> Affine:
        """``t`` (blocks) on the full images."""
        return self.to_small.inverse() @ t @ self.to_small


def _frames(fixed, fmask, moving, mmask) -> _Frames:
    """The windows' frames: images with sides of ``2 FRAMES_SIDE`` or
    more on block means of 2 x 2 (windows of a quarter of the pixels still
    bring the estimate well within the pixels' fit's reach, which finishes
    it on the full images; measured: the same errors in every task of the
    bench, in half the windows' time at 384 px)."""
    f = _frame_factor(fixed, moving)
    sf, sfm = _shrink(fixed, fmask, f)
    sm, smm = _shrink(moving, mmask, f)
    return _Frames(fill_masked(sf, sfm), sfm, fill_masked(sm, smm), smm, f, _block_map(f))


def _frame_factor(fixed, moving) -> int:
    """Block size of :func:`_frames`."""
    return 2 if min(*fixed.shape, *moving.shape) >= 2 * FRAMES_SIDE else 1


def _block_map(f: int) -> Affine:
    """Full pixels -> block means of ``f x f`` (pixel (i, j) of the shrunk
    image sits at ``f i + (f - 1) / 2`` of the full one)."""
    return Affine(np.array([[1 / f, 0, -(f - 1) / (2 * f)], [0, 1 / f, -(f - 1) / (2 * f)]]))


def _refine(frames: _Frames, t: Affine, model: str, max_iters: int = 8):
    """Spectral windows and robust fits from ``t`` (full images) until it
    settles, on ``frames``.

    Returns (transform, snr, windows, residual, iterations, NaN) (the
    last, the pixels' detail correlation, is :func:`_polish`'s to fill), or
    None when no window could be matched (with the best SNR seen); the
    transform and the residual are the full images'."""
    best_snr = 0.0
    t = frames.shrunk(t)
    for it in range(1, max_iters + 1):
        measured = _measure(frames.fill, frames.fmask, frames.moving, frames.mmask, t, model)
        if measured is None:
            return None, best_snr
        centres, matches, snrs, good, _ = measured
        best_snr = max(best_snr, float(snrs.max(initial=0.0)))
        if not determined(centres[good], model):
            return None, best_snr
        p = np.asarray(matches.p)[good]
        q = t.inverse()(np.asarray(matches.p_)[good])  # the same content in moving
        new, keep = robust_fit(q, p, model, np.ones(len(p)))
        kept = int(keep.sum())
        residual = float(np.sqrt(np.mean(np.sum((new(q[keep]) - p[keep]) ** 2, axis=1))))
        snr = float(np.median(snrs[good][keep]))
        moved = _apart(new, t, frames.fill.shape)
        t = new
        if moved < 1e-3:
            break
    return (frames.full(t), snr, kept, residual * frames.factor, it, float("nan")), best_snr


def _agreeing(model: str) -> int:
    """Windows that must agree on one transform: three beyond the fewest
    that fix it, which chance matches almost never reach."""
    return MIN_POINTS[model] + 3


def _best(fixed, fmask, moving, mmask, model: str, soon_frames: _Soon, ahead: _Soon,
          quick: bool = False, notes: dict | None = None):
    """Refine the two best candidates; if neither has enough windows that
    agree, the two best of the parts' spectra (:func:`_parts`); then
    search every angle and refine its two best; if still none does,
    fit all the pixels from each of those starts (:mod:`.direct`).  With
    ``quick``, the two best candidates only, and only a clear agreement
    counts.

    Returns (transform, snr, windows, residual, iterations, detail
    correlation) or None, and the best window SNR seen; ``notes`` gets
    what the candidates' search noted (:func:`_coarse`)."""
    best, best_snr, starts, agreed = None, 0.0, [], []
    frames = None
    for search in (_coarse,) if quick else (_coarse, _parts, _search):
        if search is not _coarse and model == "translation":
            break
        if agreed and search is _search:
            break  # doubtful agreement beats the slow search
        # _coarse's first may be its framed placement (small whole frames)
        tries = 3 if search is _coarse else 2
        found_by = (functools.partial(_coarse, notes=notes) if search is _coarse else search)
        for _, t0 in itertools.islice(found_by(fixed, fmask, moving, mmask, model), tries):
            starts.append(t0)
            frames = soon_frames.result()
            found, snr = _refine(frames, t0, model, max_iters=REFINE_ITERS)
            best_snr = max(best_snr, snr)
            if found is not None and found[2] >= _agreeing(model):
                found = _polish(fixed, fmask, moving, mmask, found, model, ahead.result())
                agreed.append(found)
                # windows can agree along a straight edge or a periodic
                # pattern a period off: where the pixels' detail says so,
                # the other candidates are heard too, and the most
                # significant wins
                if not (found[5] < DOUBT_NCC
                        and (found[1] >= DOUBT_SNR or found[5] < DOUBT_NCC_ANY)):
                    return _most_significant(agreed, fmask, mmask), best_snr
            elif found is not None and (best is None or found[2] > best[2]):
                best = found
    if quick:  # doubtful agreement is heard only once the full search has run
        return best, best_snr
    if agreed:
        return _most_significant(agreed, fmask, mmask), best_snr
    direct = _direct(fixed, fmask, moving, mmask, starts, model, soon_frames.result())
    return (direct if direct is not None else best), best_snr


def _rival(fixed, fmask, moving, mmask, t: Affine) -> tuple[float, np.ndarray]:
    """The best rival of the result ``t``: the highest peak more than 4
    px (at the placements' scale) off in the correlation of fixed and
    moving through ``t`` over every shift (both band-passed as the
    placements are, under a Hann window over their common valid pixels:
    one product of two transforms), as a fraction of the peak at the
    result, and its offset (full-size px)."""
    from .compiled import cubic_sample, rival_peak

    g = _factor(fixed, moving, PLACE_SIDE)
    sf, sfm = _shrink(fixed, fmask, g)
    sm, smm = _shrink(moving, mmask, g)
    small = _block_map(g)
    ts = small @ t @ small.inverse()
    warped = np.empty(sf.shape, dtype=np.float32)
    cubic_sample(fill_masked(sm, smm), np.ascontiguousarray(ts.inverse().matrix), warped)
    # 4 px in from both frames' edges and masks (whole frames: the frames
    # inset, no erosion)
    valid = _region(sfm, smm, ts, _warp_mask, 4)
    if valid.sum() < MIN_VALID // 4:
        return 0.0, np.zeros(2)
    h, w = sf.shape
    spectra = _windowed_spectra(np.stack([sf, warped]), valid, _hann((h, w)) * valid)
    cross = spectra[0] * np.conj(spectra[1]) * _dog_squared((h, w))
    at, value, dx, dy = rival_peak(scipy.fft.irfft2(cross, (h, w)), 4, 4)
    if at <= 0 or value <= 0:
        return 0.0, np.zeros(2)
    return float(value) / float(at), np.array([dx, dy], dtype=np.float64) * g


def _rival_of(notes: dict, t: Affine, shape: tuple[int, int]):
    """The rival check :func:`_framed` made, where the result ``t`` lies
    within a pixel (at the placements' scale) of the framed placement
    (measured on 180 rotations of 128 px: within 0.007 of
    :func:`_rival`'s ratio on average, 0.12 at most; none crossed
    :data:`RIVAL_RATIO`), else None."""
    if "framed" not in notes:
        return None
    placed, ratio, offset = notes["framed"]
    if _apart(placed, t, shape) > max(shape) / PLACE_SIDE:  # a pixel of the placements' images
        return None
    return ratio, offset


def _apart(a: Affine, b: Affine, shape: tuple[int, int]) -> float:
    """How far two transforms take a frame of ``shape``'s corners apart
    (the larger coordinate difference, px)."""
    h, w = shape
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
    return float(np.abs(a(corners) - b(corners)).max())


def _corrcoef(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation coefficient of two samples (0 where either is flat or
    fewer than three)."""
    if a.size < 3:
        return 0.0
    a = a.astype(np.float64) - a.mean(dtype=np.float64)
    b = b.astype(np.float64) - b.mean(dtype=np.float64)
    # einsum, not BLAS (see :data:`~.direct.GRAM_ROWS`)
    den = np.sqrt(np.einsum("i,i", a, a) * np.einsum("i,i", b, b))
    return float(np.einsum("i,i", a, b) / den) if den > 0 else 0.0


def _most_significant(agreed: list, fmask: np.ndarray, mmask: np.ndarray):
    """Of results whose windows agreed, the one whose pixels' detail
    correlation stands furthest from chance: the coefficient times the
    root of the overlap's pixels (a small overlap agrees well by chance)."""
    def z(found):
        detail = found[5] if np.isfinite(found[5]) else 0.0
        return detail * np.sqrt(_overlap(found[0], fmask, mmask).sum())
    return max(agreed, key=z) if len(agreed) > 1 else agreed[0]


def _polish(fixed, fmask, moving, mmask, found, model: str, ahead: tuple):
    """The windows' estimate finished by all the pixels (one level, 1 px
    band-pass; on 2 x 2 block means first where the images are big enough):
    each window's peak carries its own noise, and windows on a few patches
    of content leave an affine's far corners loose; the whole overlap
    settles both.  Kept where the pixels agree better than at the windows'
    estimate and it has not run off (a tenth of the image).  The last of
    the tuple returned is the band-passed images' correlation at the
    transform returned (:attr:`Registration.detail_ncc`).  ``ahead`` is
    :func:`_prepare`'s."""
    t = found[0]
    (bf, bm, levels, steps), forms = ahead
    # one binarized, one gray: fixed = step(gray - level) is no gain and
    # offset of the gray one, and fitting as if it were pulls every edge
    # by the gray edge's asymmetry (0.052 px median corner error); the gray
    # one through the same step, softened, keeps its subpixel edges
    # (0.025 px)
    if bf and not bm:
        moving = _soft_threshold(moving, mmask, fixed, fmask, t)
    elif bm and not bf:
        fixed = _soft_threshold(fixed, fmask, moving, mmask, t.inverse())
    # the pixels' detail correlation goes with the transform returned
    new, total = t, 0
    for g in steps:
        fitted, after, iters, before = _fit_on_blocks(fixed, fmask, moving, mmask, new, model,
                                                      g, levels, forms)
        total += iters
        if g == steps[0]:
            at_start = before  # at the windows' estimate
        detail = after
        if after < before:  # the pixels agree better where the fit started
            detail = before
            if g == steps[0]:
                return tuple(found[:5]) + (detail,)
            break
        new = fitted
    if _apart(new, t, fixed.shape) > 0.1 * max(fixed.shape):
        return tuple(found[:5]) + (at_start,)  # the pixels ran off: the windows' estimate
    return (new,) + tuple(found[1:4]) + (found[4] + total, detail)


def _fit_on_blocks(fixed, fmask, moving, mmask, t: Affine, model: str, f: int,
                   levels: tuple[float, ...], made: dict | None = None):
    """:func:`~.direct.refine_direct` from ``t`` on block means of ``f x
    f`` pixels (pixel (i, j) of the shrunk image sits at ``f i + (f - 1) /
    2`` of the full one); the transform returned is the full images'.
    ``made`` holds band-passed forms made ahead (:func:`_prepare`)."""
    to_small = _block_map(f)
    sf, sfm = _shrink(fixed, fmask, f)
    sm, smm = _shrink(moving, mmask, f)
    made = made or {}

    def forms(sigma):
        fixed_forms = made.get(("fixed", f, sigma))
        coef = made.get(("moving", f, sigma))
        if fixed_forms is None:
            fixed_forms = _fixed_forms(fill_masked(sf, sfm), sigma)
        if coef is None:
            coef = _moving_forms(fill_masked(sm, smm), sigma)
        return fixed_forms, coef
    new, after, iters, before = refine_direct(
        sf, sfm, sm, smm, to_small @ t @ to_small.inverse(), model, _warp_mask,
        levels=levels, tol=POLISH_TOL / f, forms=forms,
        every=POLISH_EVERY if sf.size >= EVERY_FROM else 1)
    return to_small.inverse() @ new @ to_small, after, iters, before


def _polish_plan(fixed, fmask, moving, mmask):
    """How :func:`_polish` goes about two images: whether each is binary,
    the band-pass levels, and the block sizes of its steps."""
    # a binarized image has no blur: its edges are all it tells, and any
    # smoothing moves them against a gray partner (measured: 0.09 px
    # median corner error at 1 px, 0.067 at 0.5 px)
    bf, bm = _is_binary(fixed, fmask), _is_binary(moving, mmask)
    levels = BINARY_POLISH_LEVELS if bf or bm else POLISH_LEVELS
    # a big image is finished on block means of f x f pixels; any image
    # big enough first settles on block means of twice that, where a step
    # costs a quarter, so that the full pixels need one or two steps
    f = int(np.ceil(np.sqrt(max(fixed.size, moving.size) / POLISH_PIXELS)))
    steps = [2 * f, f] if min(*fixed.shape, *moving.shape) >= 2 * f * PYRAMID_SIDE else [f]
    return bf, bm, levels, steps


def _prepare(fixed, fmask, moving, mmask):
    """:func:`_polish`'s plan and the band-passed forms it will need that
    do not depend on the transform (those of an image that goes through
    :func:`_soft_threshold` do), made while the candidates are sought."""
    plan = bf, bm, levels, steps = _polish_plan(fixed, fmask, moving, mmask)
    made = {}
    for g in steps:
        for sigma in levels:
            keys, imgs, forms = [], [], []
            if not (bm and not bf):
                sf, sfm = _shrink(fixed, fmask, g)
                keys.append(("fixed", g, sigma))
                imgs.append(fill_masked(sf, sfm))
                forms.append(FIXED_FORMS)
            if not (bf and not bm):
                sm, smm = _shrink(moving, mmask, g)
                keys.append(("moving", g, sigma))
                imgs.append(fill_masked(sm, smm))
                forms.append(MOVING_FORMS)
            # both through one transform call where their shapes agree
            for key, got in zip(keys, bandpass_forms_of(imgs, sigma, forms)):
                made[key] = _as_made(key[0], got)
    return plan, made


#: What the pixels' fit reads of fixed and of moving (band-passed).
FIXED_FORMS, MOVING_FORMS = ("value", "dx", "dy"), ("spline",)


def _fixed_forms(ffill: np.ndarray, sigma: float) -> tuple:
    """Fixed's band-passed values and spline derivatives (filled image)."""
    return _as_made("fixed", bandpass_forms(ffill, sigma, FIXED_FORMS))


def _moving_forms(mfill: np.ndarray, sigma: float) -> np.ndarray:
    """Moving's band-passed spline coefficients (filled image)."""
    return _as_made("moving", bandpass_forms(mfill, sigma, MOVING_FORMS))


def _as_made(side: str, forms: list):
    """:func:`bandpass_forms`' output as the pixels' fit takes it: fixed's
    three forms, moving's coefficients in double precision."""
    return tuple(forms) if side == "fixed" else forms[0].astype(np.float64)


class _Soon:
    """``fn(*args)``, computed on the helper thread from now on (see
    :func:`~.direct.helper`), or when first asked where there is none, where
    ``threaded`` is false, or where that thread has not started it yet
    (busy with other calls' work): no call waits on another's."""

    def __init__(self, fn, *args, threaded: bool = True):
        pool = helper() if threaded else None
        self._job = pool.submit(fn, *args) if pool is not None else None
        self._fn, self._args, self._value = fn, args, None

    def result(self):
        if self._job is not None:
            if not self._job.cancel():
                return self._job.result()
            self._job = None  # not started yet (the thread busy with other work): done here
        if self._fn is not None:
            self._value, self._fn, self._args = self._fn(*self._args), None, None
        return self._value


def _is_binary(img: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the valid pixels take two values at most."""
    head = img[:8][mask[:8]]  # a gray image shows three values in its first rows
    if head.size and np.count_nonzero((head != head[0]) & (head != head.max())) \
            and np.count_nonzero((head != head[0]) & (head != head.min())):
        return False
    vals = img[mask]
    other = vals[vals != vals[0]]
    return bool(other.size == 0 or (other == other[0]).all())


def _soft_threshold(gray: np.ndarray, gmask: np.ndarray, binimg: np.ndarray,
                    bmask: np.ndarray, t: Affine) -> np.ndarray:
    """``gray`` through a soft step (``tanh``, :data:`SOFT_WIDTH` of its
    spread wide) at the level that leaves as much of the overlap on the
    bright side as ``binimg`` has (``t`` maps ``gray`` -> ``binimg``).
    Every other pixel each way of images over 256 x 256 tells the level
    and the spread as well."""
    k = 2 if gray.size > 256 * 256 else 1
    gs, gms = gray[::k, ::k], gmask[::k, ::k]
    valid = gms & _warp_mask(Affine.scaler(1.0 / k) @ t.inverse(), bmask, gs.shape)
    if valid.sum() < MIN_VALID // (k * k):
        return gray
    # the binary image's own pixels over the overlap (no resampling: a
    # fraction of the area is all that is read off them)
    k = 2 if binimg.size > 256 * 256 else 1
    bs, bms = binimg[::k, ::k], bmask[::k, ::k]
    back = bs[bms & _warp_mask(Affine.scaler(1.0 / k) @ t, gmask, bs.shape)]
    g = gs[valid].astype(np.float64)
    spread = float(np.std(g))
    if spread == 0 or back.size == 0 or back.min() == back.max():
        return gray
    bright = float(np.mean(back > 0.5 * (back.min() + back.max())))
    at = int(round((1 - bright) * (g.size - 1)))
    level = np.float32(np.partition(g, at)[at])
    return np.tanh((gray - level) * np.float32(1 / (SOFT_WIDTH * spread)))


def _direct(fixed, fmask, moving, mmask, starts, model: str, frames: _Frames):
    """The pixels' own fit from each start; the most significant one if it
    stands clear of chance, else None."""
    best, best_z = None, DIRECT_Z
    for t0 in starts:
        t, ncc, iters, _ = refine_direct(fixed, fmask, moving, mmask, t0, model, _warp_mask)
        valid = fmask & _warp_mask(t, mmask, fixed.shape)
        if valid.sum() < MIN_OVERLAP * min(fmask.sum(), mmask.sum()):
            continue
        # pixels 1 px apart in images smoothed by 1 px are not independent:
        # count one per 4 x 4 px
        z = ncc * np.sqrt(valid.sum() / 16.0)
        if z > best_z:
            best, best_z = (t, iters, ncc), z
    if best is None:
        return None
    t, iters, ncc = best
    measured = _measure(frames.fill, frames.fmask, frames.moving, frames.mmask,
                        frames.shrunk(t), model)
    if measured is None:
        return t, 0.0, 0, float("nan"), iters, ncc
    _, _, snrs, good, _ = measured
    snr = float(np.median(snrs[good] if good.any() else snrs))
    return t, snr, int(good.sum()), float("nan"), iters, ncc


def _solve(f_img, fmask, m_img, mmask, model: str, quick: bool = False):
    """:func:`_best`'s result and its notes, or
    :class:`~spectralign.errors.NoOverlapError`."""
    # what does not hang on the transform is made on the helper thread
    # while this one seeks it: the windows' frames, then the pixels' fit's
    # band-passed images; on small images, here when first needed
    threaded = not _small(f_img, m_img)
    soon_frames = _Soon(_frames, f_img, fmask, m_img, mmask, threaded=threaded)
    ahead = _Soon(_prepare, f_img, fmask, m_img, mmask, threaded=threaded)
    notes = {}
    found, best_snr = _best(f_img, fmask, m_img, mmask, model, soon_frames, ahead, quick, notes)
    if found is None or (found[2] < _agreeing(model) and not np.isnan(found[3])):
        agree = found[2] if found is not None else 0
        raise NoOverlapError(
            f"Expected two images that share content. Found none: at best {agree} spectral "
            f"windows agreed on one transform ({_agreeing(model)} needed for {model!r}), "
            f"the best window reached SNR {best_snr:.1f}. Check that the images overlap by "
            f"at least a quarter of their area, try denoise='gaussian' for very noisy "
            f"images, or mask out regions that differ.", best_snr=best_snr)
    return found, notes


def _inverted_binary(f_img, fmask, m_img, mmask):
    """Fixed and moving with the binary one of them inverted (its two
    values swapped), or None unless exactly one of them is binary."""
    bf, bm = _is_binary(f_img, fmask), _is_binary(m_img, mmask)
    if bf == bm:
        return None

    def flip(img, mask):
        vals = img[mask]
        return (vals.min() + vals.max() - img).astype(np.float32)
    return (flip(f_img, fmask), m_img) if bf else (f_img, flip(m_img, mmask))


def register(fixed: Any, moving: Any, model: str = "affine", *, fixed_mask: Any = None,
             moving_mask: Any = None, denoise: Any = None) -> Registration:
    """Align two whole images with no prior: where does moving lie on fixed?

    Parameters
    ----------
    fixed, moving : (H, W) array_like, Image, or path
        The two images (any sizes; colour is averaged to gray; NaN pixels
        count as invalid).
    model : {"translation", "rigid", "similarity", "affine"}
        The transform sought.  ``"translation"`` searches shifts only;
        the others also any rotation, and ``"similarity"`` and ``"affine"``
        scales from 0.5 to 2.
    fixed_mask, moving_mask : (H, W) bool array_like, optional
        True where a pixel is valid.  Invalid pixels take no part in any
        stage (a beam block, a scale bar, a tear, padding).
    denoise : None, str or callable, optional
        A prefilter run on both images first: one of
        :data:`~spectralign.registration.denoise.DENOISERS` or a function
        of an (H, W) array.  The spectral windows weigh frequencies by their
        signal-to-noise ratio already; measured advice is in
        ``docs/benchmarks.md``.

    Returns
    -------
    Registration
        ``.transform`` maps moving's ``(x, y)`` to fixed's; ``.snr`` and
        ``.ncc`` say how far to trust it; ``.warp()`` and ``.difference()``
        show it.

    Raises
    ------
    ImageDimensionError
        If an image is not 2-D (or colour).
    MaskError
        If a mask has the wrong shape or leaves too few valid pixels.
    NoOverlapError
        If no candidate placement gives matching windows (the error's
        ``best_snr`` says how close it came); never a silent identity.

    Examples
    --------
    >>> import numpy as np, spectralign
    >>> from scipy.ndimage import gaussian_filter
    >>> scene = gaussian_filter(np.random.default_rng(1).random((400, 400)), 2)
    >>> turn = spectralign.Affine.rotator(np.radians(12), (200, 200))
    >>> fixed = scene[100:300, 100:300]
    >>> moving = np.asarray(turn.apply(scene))[100:300, 100:300]
    >>> reg = spectralign.register(fixed, moving, model="rigid")
    >>> print(f"{np.degrees(reg.transform.angle()):.2f}")
    -12.00
    """
    if model not in MODELS:
        raise ValueError(f"Expected model as one of {', '.join(map(repr, MODELS))}. "
                         f"Got {model!r} instead.")
    # the pixels' fit runs compiled loops of its own: numba is loaded
    # anyway, so the windows' compiled loops start loading now (in the
    # background) rather than after two seconds of matching
    _loader.start()
    f_img, f_ok = _as_gray(fixed, "fixed")
    m_img, m_ok = _as_gray(moving, "moving")
    fmask = _as_mask(fixed_mask, f_img.shape, f_ok, "fixed_mask")
    mmask = _as_mask(moving_mask, m_img.shape, m_ok, "moving_mask")
    if denoise is not None:
        f_img = np.where(fmask, denoise_image(fill_masked(f_img, fmask), denoise), f_img)
        m_img = np.where(mmask, denoise_image(fill_masked(m_img, mmask), denoise), m_img)
    try:
        return _register(f_img, fmask, m_img, mmask, model)
    finally:
        _SHRUNK.clear()


def _register(f_img, fmask, m_img, mmask, model: str) -> Registration:
    """:func:`register` once its inputs are checked."""
    user_f, user_m = f_img, m_img
    # a binarized image whose contrast is the gray one's inverted (the
    # objects white in one, dark in the other) matches nowhere as it is:
    # where the best candidates fail, the binary image inverted is tried
    # on its best candidates, then both in full before giving up
    flipped = _inverted_binary(f_img, fmask, m_img, mmask)
    tries = [((f_img, m_img), True), (flipped, True), ((f_img, m_img), False),
             (flipped, False)] if flipped is not None else [((f_img, m_img), False)]
    failed = None
    for (f_try, m_try), quick in tries:
        try:
            found, notes = _solve(f_try, fmask, m_try, mmask, model, quick)
        except NoOverlapError as exc:
            if failed is None or exc.best_snr > failed.best_snr:
                failed = exc
            continue
        f_img, m_img = f_try, m_try
        break
    else:
        raise failed
    t, snr, kept, residual, iters, detail = found
    # every other pixel each way tells the coefficient (and the overlap) as
    # well, from 96 px a side (over 2,000 pixels)
    k = 2 if min(f_img.shape) >= 96 else 1
    to_sub = Affine.scaler(1.0 / k) @ t
    sub = _overlap(to_sub, fmask[::k, ::k], mmask)
    # cubic convolution: a spline's prefilter would cost more than the rest
    from .compiled import cubic_sample

    warped = np.empty(sub.shape, dtype=np.float32)
    cubic_sample(m_img, np.ascontiguousarray(to_sub.inverse().matrix), warped)
    ncc = _corrcoef(f_img[::k, ::k][sub], warped[sub])
    doubts = []
    if snr < SNR_THRESHOLD:
        doubts.append(f"the windows' median SNR {snr:.1f} is below {SNR_THRESHOLD:g}")
    if detail < NCC_THRESHOLD:
        doubts.append(f"the aligned images' detail correlates at only {detail:.2f} (below "
                      f"{NCC_THRESHOLD:g}: heavy noise, or content that differs, such as the "
                      f"next section)")
    elif detail < DOUBT_NCC and snr >= DOUBT_SNR:
        doubts.append(f"the windows agree clearly (SNR {snr:.1f}) but the aligned images' "
                      f"detail correlates at only {detail:.2f}: a repeating pattern or a "
                      f"straight edge may be matched away from its place")
    if not doubts:
        ratio, off = _rival_of(notes, t, f_img.shape) or _rival(f_img, fmask, m_img, mmask, t)
        if ratio >= RIVAL_RATIO:
            doubts.append(f"moving placed ({off[0]:+.0f}, {off[1]:+.0f}) px further "
                          f"correlates {ratio:.0%} as well as where it is: the content "
                          f"repeats, and the result may be a period off")
    if doubts:
        warnings.warn(f"register: {' and '.join(doubts)}; check the result by eye "
                      f"(Registration.difference()).", SpectralignWarning, stacklevel=3)
    return Registration(transform=t, model=model, snr=snr, ncc=ncc,
                        overlap=float(sub.sum() / fmask[::k, ::k].sum()), windows=kept,
                        residual=residual, iterations=iters, detail_ncc=detail,
                        _fixed=user_f, _moving=user_m,
                        _fixed_mask=fmask, _moving_mask=mmask)
