"""Matcher: spectral refinement of matching points between two images."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

import scipy.fft

from . import kernels as _kernels, loader as _loader, spectral as _spectral
from .fft import get_plan
from ..errors import InvalidPointError
from ..io.image import Image, parse_point, parse_size
from .results import Iteration, Match, Matches

__all__ = ["Matcher", "Match", "Matches", "Iteration", "WEIGHTINGS", "fast_size"]

_CHUNK_BYTES = 4 << 20  # window-pair stacks of about this size per FFT batch

#: The cross-power weightings a :class:`Matcher` offers.
WEIGHTINGS = ("snr", "swiftir")


def default_workers() -> int:
    """Threads that matching uses unless told otherwise: the CPUs this
    process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fast_size(size: tuple[int, int]) -> tuple[int, int]:
    """The window size ``(width, height)`` actually computed for ``size``:
    each side rounded up to the next length whose FFT is fast (factors 2, 3
    and 5 only)."""
    return scipy.fft.next_fast_len(int(size[0]), True), scipy.fft.next_fast_len(int(size[1]), True)


def _as_image(img: Any, name: str) -> Image:
    if isinstance(img, Image):
        return img
    try:
        return Image(img)
    except Exception as exc:
        raise type(exc)(f"{name}: {exc}") from exc


def _parse_points(points: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty((0, 0))
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)):
        raise InvalidPointError(
            f"Expected {name} as an (N, 2) array of finite (x, y) points. "
            f"Got {np.shape(points)} {'with NaN or inf' if arr.ndim == 2 else ''} instead.")
    return arr


class Matcher:
    """Finds matching points between two images by spectral correlation.

    Parameters
    ----------
    img1, img2 : Image or (H, W) array_like
        The two images (arrays are converted with :class:`Image`).
    weighting : {"snr", "swiftir"}, keyword-only
        How the cross-power spectrum is weighted before it is transformed
        back.  ``"snr"`` (the default) weighs each frequency by its
        signal-to-noise ratio, estimated for every window pair from the
        two spectra themselves: a microscope's optics leave nothing but
        its camera's white noise near Nyquist, and those frequencies get
        no weight, while strong ones are whitened (maximum-likelihood
        generalized cross-correlation, Knapp and Carter 1976,
        doi:10.1109/TASSP.1976.1162830).  It is 2 to 3 times more accurate
        than ``"swiftir"`` on blurred tiles with noise as strong as the
        signal, and as accurate on clean ones; on *sharp* content (signal
        up to Nyquist) with noise as strong as the signal it is less
        accurate (0.09 against 0.06 px, ``docs/benchmarks.md``), since it
        takes the sharp detail above 0.4 cycles/px for noise.
        ``"swiftir"`` is SWiFT-IR's partial whitening, ``|X| ** whiten``,
        with the coherence factor of ``noise_floor``.
    whiten : float, keyword-only
        For ``weighting="swiftir"``: exponent in [-1, 0] applied to the
        cross-power magnitude: -1 is pure phase correlation, 0 plain
        cross-correlation; SWiFT-IR's -0.65 keeps some of the signal's own
        weighting.
    noise_floor : float, keyword-only
        For ``weighting="swiftir"``: frequencies whose cross-power is not
        clearly above this multiple of the mean high-frequency magnitude
        are faded out by a Wiener-style coherence factor; 0 turns it off
        (plain SWiFT-IR weighting).

    Notes
    -----
    Each iteration cuts a window around each point (at whole-pixel
    positions, so no interpolation blurs either window), apodizes both,
    correlates them through the weighted cross-power spectrum and finds
    the correlation peak to a small fraction of a pixel (Newton's method
    on the exact band-limited correlation surface).  Both points then move
    half way towards each other's match, as in SWiFT-IR (Wetzel et al.
    2016, doi:10.1109/AIPR.2016.8010595).

    Windows are computed at the next size whose FFT is fast
    (``scipy.fft.next_fast_len``: 77 x 410 px becomes 80 x 432) with the
    same centre, so any size costs about what a power of two does.

    Making a Matcher reads nothing of the images.  A process matches with
    numpy at first; once that has taken two seconds, the compiled loops
    are loaded on a background thread and used as soon as
    they are ready (the two give the same numbers to float32 rounding), so
    a small job never waits for them and a large one soon runs on them.

    A Matcher may be used from several threads at once; FFT plans are kept
    per thread and shared by every Matcher of that thread.

    Examples
    --------
    >>> import numpy as np, spectralign
    >>> rng = np.random.default_rng(0)
    >>> from scipy.ndimage import gaussian_filter
    >>> scene = gaussian_filter(rng.random((300, 400)), 2)
    >>> a, b = scene[:, :300], scene[:, 100:]     # b starts 100 px right of a
    >>> p, p_ = spectralign.Matcher(a, b).refine((200, 150), (103, 148), 128, iters=3)
    >>> (p_ - p).round(1).tolist()
    [-100.0, 0.0]
    """

    def __init__(self, img1: Any, img2: Any, *, weighting: str = "snr",
                 whiten: float = -0.65, noise_floor: float = 4.0):
        self.img1 = _as_image(img1, "img1")
        self.img2 = _as_image(img2, "img2")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"Expected weighting as one of {', '.join(map(repr, WEIGHTINGS))}. "
                             f"Got {weighting!r} instead.")
        self.weighting = weighting
        self.whiten = float(whiten)
        self.noise_floor = float(noise_floor)
        if not self.noise_floor >= 0:
            raise ValueError(f"Expected noise_floor >= 0. Got {noise_floor!r} instead.")
        if not -1.0 <= self.whiten <= 0.0:
            raise ValueError(f"Expected whiten in [-1, 0] (-1: phase correlation, 0: plain "
                             f"correlation). Got {whiten!r} instead.")

    def __repr__(self) -> str:
        h1, w1 = self.img1.shape
        h2, w2 = self.img2.shape
        extra = (f", whiten={self.whiten}, noise_floor={self.noise_floor}"
                 if self.weighting == "swiftir" else "")
        return f"Matcher({w1}x{h1} image, {w2}x{h2} image, weighting={self.weighting!r}{extra})"

    def refine(self, p: Any, p_: Any, size: Any, iters: int = 1,
               tolerance: float = 0, *, interpolate: bool = False) -> Match:
        """Refine one pair of putatively matching points.

        Parameters
        ----------
        p : (x, y)
            A point in the first image.
        p_ : (x, y)
            The point in the second image believed to show the same thing.
        size : int or (width, height)
            Window size; any size works, and is rounded up to the next size
            whose FFT is fast (at most a few percent larger), with the
            window's centre where it was.
        iters : int
            Maximum number of iterations.
        tolerance : float
            Stop early once an iteration's shift is shorter than this (px).
        interpolate : bool
            Cut the windows at the exact subpixel points (quintic spline
            interpolation) instead of the nearest whole pixels.  Windows
            cut at whole pixels share their apodization envelope, which
            pulls the estimate of a fractional offset towards the whole
            pixel by a few percent of the fraction on small windows (about
            0.07 px at a 0.9 px fraction on 64 px windows; 0.01 px on 256
            px windows); interpolated windows converge onto the offset
            itself (within 0.01 px there), at the cost of a spline filter
            per window.  Use it for the last iterations of small windows.

        Returns
        -------
        Match
            Unpacks as ``p, p_``; also carries the last shift, peak width,
            SNR, iteration count and per-iteration history.

        Raises
        ------
        InvalidPointError, InvalidSizeError, WindowOutsideImageError
        """
        p = parse_point(p, "p")
        p_ = parse_point(p_, "p_")
        return self.refine_many(p[None], p_[None], size, iters, tolerance, workers=1,
                                interpolate=interpolate)[0]

    def refine_many(self, p: Any, p_: Any, size: Any, iters: int = 1,
                    tolerance: float = 0, *, workers: int | None = None,
                    interpolate: bool = False) -> Matches:
        """Refine many point pairs of this image pair in one call.

        Windows are stacked and transformed in batches, and batches run on
        ``workers`` threads, which is much faster than a loop over
        :meth:`refine` and gives the same numbers.

        Parameters
        ----------
        p, p_ : (N, 2) array_like
            Points ``(x, y)`` in the first and second image.
        size, iters, tolerance, interpolate
            As in :meth:`refine`.
        workers : int, optional
            Threads to use (default: the number of CPUs available).

        Returns
        -------
        Matches
        """
        P = _parse_points(p, "p")
        P_ = _parse_points(p_, "p_")
        if P.shape != P_.shape:
            raise InvalidPointError(
                f"Expected p and p_ with the same number of points. "
                f"Got {len(P)} and {len(P_)} instead.")
        w, h = fast_size(parse_size(size))
        iters = int(iters)
        if iters < 1:
            raise ValueError(f"Expected iters >= 1. Got {iters} instead.")
        n = len(P)
        chunk = max(1, min(n, _CHUNK_BYTES // (8 * w * h)))
        starts = list(range(0, n, chunk))
        workers = max(1, min(default_workers() if workers is None else int(workers), len(starts)))

        def run(start: int) -> tuple:
            return self._refine_chunk(P[start:start + chunk], P_[start:start + chunk],
                                      (w, h), chunk, iters, float(tolerance), bool(interpolate))

        if workers == 1:
            parts = [run(s) for s in starts]
        else:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(run, starts))
        if len(parts) == 1:
            return Matches(*parts[0])
        cat = [np.concatenate(x, axis=0 if i < 6 else 1) for i, x in enumerate(zip(*parts))]
        return Matches(*cat)

    def _refine_chunk(self, P: np.ndarray, P_: np.ndarray, size: tuple[int, int],
                      batch: int, iters: int, tolerance: float, interpolate: bool = False,
                      compiled: bool | None = None) -> tuple:
        """Refine up to ``batch`` pairs; the FFT plan always has ``batch`` slots.

        ``compiled`` picks the compiled loops or numpy; None: the compiled
        ones if they are loaded, else numpy (counting its time towards
        loading them, see :mod:`spectralign.match.loader`)."""
        if compiled is None:
            compiled = _loader.ready()
            if not compiled:
                t0 = time.perf_counter()
                try:
                    return self._refine_chunk(P, P_, size, batch, iters, tolerance,
                                              interpolate, compiled=False)
                finally:
                    _loader.spent(time.perf_counter() - t0)
        w, h = size
        n = len(P)
        P, P_ = P.copy(), P_.copy()
        plan = get_plan(batch, (h, w))
        apod = _spectral.apodization_window((h, w))
        _, w_sq = _spectral._window_sums((h, w))
        img1, img2 = np.asarray(self.img1), np.asarray(self.img2)
        half = np.array([w // 2, h // 2], dtype=np.float64)
        shifts = np.full((iters, n, 2), np.nan)
        widths = np.full((iters, n, 2), np.nan)
        snrs = np.full((iters, n), np.nan)
        active = np.ones(n, dtype=bool)
        everyone = True  # all pairs still active: plain slices, no masks
        niters = np.zeros(n, dtype=int)
        real, spec = plan.real, plan.spectrum
        dead = np.ones(batch, dtype=bool)  # unused slots of the plan stay dead
        if n < batch:
            real[n:batch].fill(0)
            real[batch + n:].fill(0)
        last_cut = None
        for k in range(iters):
            if interpolate:  # windows centred exactly on the points
                o1, o2 = P - half, P_ - half
            else:
                o1 = np.floor(P - half + 0.5).astype(np.int64)
                o2 = np.floor(P_ - half + 0.5).astype(np.int64)
                if (everyone and last_cut is not None and np.array_equal(o1, last_cut[0])
                        and np.array_equal(o2, last_cut[1])):
                    # the same whole-pixel windows as the last iteration:
                    # the same correlation, already applied, so this step
                    # is exactly zero (no need to compute it again)
                    shifts[k] = 0.0
                    widths[k] = widths[k - 1]
                    snrs[k] = snrs[k - 1]
                    niters += 1
                    if tolerance > 0:
                        break
                    continue
                last_cut = (o1, o2)
            # pixels off an image take the mean of the window's pixels on it
            m1, e1 = _kernels.apodize_windows(img1, o1, np.nan, apod, real[:n],
                                              interpolate=interpolate, compiled=compiled)
            m2, e2 = _kernels.apodize_windows(img2, o2, np.nan, apod, real[batch:batch + n],
                                              interpolate=interpolate, compiled=compiled)
            dead[:n] = (_spectral.textureless_windows(m1, e1, w_sq)
                        | _spectral.textureless_windows(m2, e2, w_sq))
            plan.forward()
            xpow = spec[batch:]
            if self.weighting == "snr":
                _kernels.weigh_snr(spec[:batch], xpow, (h, w), dead, compiled=compiled)
            else:
                _kernels.weigh_cross_power(spec[:batch], xpow, self.whiten, self.noise_floor,
                                           dead, compiled=compiled)
            plan.backward()
            corr = real[:batch]
            at, value, width, snr = _kernels.locate_peaks(corr, xpow, compiled=compiled)
            snr = snr[:n]
            # corr peaks at s = -delta, delta: how far window 2's content is displaced
            delta = -at[:n, ::-1]
            c1 = o1 + half
            c2 = o2 + half
            step = (c2 - P_) - (c1 - P) + delta
            if everyone:
                shifts[k] = step
                widths[k] = width[:n, ::-1]
                snrs[k] = snr
                niters += 1
            else:
                step[~active] = 0
                shifts[k, active] = step[active]
                widths[k, active] = width[:n, ::-1][active]
                snrs[k, active] = snr[active]
                niters[active] += 1
            P -= step / 2
            P_ += step / 2
            if tolerance > 0:
                active &= np.hypot(step[:, 0], step[:, 1]) >= tolerance
                everyone = bool(active.all())
                if not active.any():
                    break
        last = niters - 1
        idx = np.arange(n)
        return (P, P_, shifts[last, idx], widths[last, idx], snrs[last, idx], niters,
                shifts, snrs, widths)
