"""Refinement by the pixels themselves, for content the windows cannot hold.

Where content is sparse (a few cells on a dark field) or drowned in noise,
few spectral windows see anything and the windows cannot agree on a
transform.  Every valid pixel still carries a little signal, so the fallback
fits the model to all of them at once: Gauss-Newton on the intensities
(Lucas and Kanade 1981, compositional form), with a gain (a quadratic
surface: vignetting, uneven light) and an offset fitted alongside so that
images of different contrast (a binarized one against a gray one) still
meet, on both images band-passed (a difference of
Gaussians) first at 2 px, then at 1 px.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.ndimage

from ..affine import Affine
from .masked import _gaussian_transfer, fft_workers, fill_masked

__all__ = ["refine_direct", "bandpass", "bandpass_forms", "bandpass_forms_of"]

#: Smoothing (Gaussian sigma, px) of the successive levels.
LEVELS = (2.0, 1.0)
#: Pixels within this many sigmas of an edge are left out (the band-pass
#: reaches across the edge differently in the two images).
EDGE = 8
#: The design matrix's precision: single halves the normal equations'
#: time, and the bench's errors stay within 2 % (corner errors of 0.0064
#: and 0.0065 px on the 384 px affine; the steps iterate to the same
#: fixed point).
DESIGN_DTYPE = np.float32


#: Steps taken over (see :func:`refine_direct`) where they go the way of
#: the one before to this cosine, and shrank by less than this ratio.
#: Measured on 128 px rotations under noise 0.1 (other sources, 20 pairs
#: whose steps shrank slowly): 6.7 steps against 10.6, mean error 0.060
#: against 0.066 deg over 60 pairs; the bench's affines as before.
ACCELERATE_COS, ACCELERATE_MAX = 0.9, 0.9
#: Pixels from which a Gauss-Newton step's rows are shared between two
#: threads (below, handing work over costs more than it saves).
SPLIT_PIXELS = 20_000
_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _forget_helper() -> None:
    """In a forked child: the parent's thread is not there."""
    global _helper, _helper_lock
    _helper, _helper_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)


def helper() -> ThreadPoolExecutor | None:
    """One background thread for the registration's heavy loops, or None
    on a single CPU.  The caller always does a share of the work itself,
    so that calls from several threads at once never wait on each other
    for long and never deadlock."""
    global _helper
    if _helper is None:
        from ..match.matcher import default_workers

        with _helper_lock:
            if _helper is None and default_workers() > 1:
                _helper = ThreadPoolExecutor(1, thread_name_prefix="spectralign-register")
    return _helper


def bandpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """Detail between ``sigma`` and 8 ``sigma``: no pixel noise, no shading.

    A quadratic surface fitted to the image is taken off first: the
    padding beyond the frame would otherwise fold shading (vignetting) into
    a ridge along the edges, which the band-pass keeps.  The difference of
    Gaussians is one product in the Fourier domain, on the image mirrored
    3 coarse sigmas out (as a spatial filter truncated there sees it).
    Returns a float32 array of ``img``'s shape."""
    return bandpass_forms(img, sigma, ("value",))[0]


#: What :func:`bandpass_forms` can return besides the band-passed values.
FORMS = ("value", "spline", "dx", "dy")


def bandpass_forms(img: np.ndarray, sigma: float, forms: tuple[str, ...]) -> list[np.ndarray]:
    """The band-pass of :func:`bandpass` in several forms from one forward
    transform: ``"value"`` (the band-passed image), ``"spline"`` (its cubic
    B-spline coefficients, as :func:`scipy.ndimage.spline_filter` gives),
    ``"dx"`` and ``"dy"`` (the derivatives of that spline at the pixels).

    The spline's prefilter is a linear filter, one more factor of the
    band-pass's transfer function, so one inverse transform gives the
    coefficients; the B-spline's samples are ``(z + 4 + 1/z) / 6`` of them
    and its derivative ``(z - 1/z) / 2`` along an axis, short stencils
    (exact, where a factor a form in the transform would cost an inverse
    transform each).  The frame's edges see the band-pass's
    mirrored padding instead of the spline's mirror; both are guesses of
    what lies beyond the frame, and the fits leave those pixels out.
    Returns float32 arrays of ``img``'s shape, in the order asked."""
    return bandpass_forms_of([img], sigma, [forms])[0]


def bandpass_forms_of(imgs: list, sigma: float, forms: list) -> list[list[np.ndarray]]:
    """:func:`bandpass_forms` of several images (``forms[i]`` of
    ``imgs[i]``): those of one shape share each transform call."""
    for each in forms:
        for form in each:
            if form not in FORMS:
                raise ValueError(f"Expected a form of {FORMS}. Got {form!r} instead.")
    if len({np.shape(img) for img in imgs}) > 1:
        return [bandpass_forms_of([img], sigma, [each])[0] for img, each in zip(imgs, forms)]
    # single precision: twice as fast, far finer than any noise
    stack = np.stack([_detrend(img) for img in imgs])
    _, h, w = stack.shape
    pad = int(np.ceil(24 * sigma))
    padded = np.pad(stack, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
    shape = tuple(scipy.fft.next_fast_len(n, real=True) for n in padded.shape[1:])
    workers = fft_workers(shape)
    spec = scipy.fft.rfft2(padded, shape, workers=workers)
    if all(tuple(each) == ("value",) for each in forms):
        spec *= _dog(shape, float(sigma))
        back = scipy.fft.irfft2(spec, shape, workers=workers)
        return [[b[pad:pad + h, pad:pad + w]] for b in back]
    # one inverse transform, the spline's coefficients (1 px wider each
    # way); the values and derivatives are their short stencils
    spec *= _dog_spline(shape, float(sigma))
    back = scipy.fft.irfft2(spec, shape, workers=workers)
    return [_stencils(c[pad - 1:pad + h + 1, pad - 1:pad + w + 1], each)
            for c, each in zip(back, forms)]


def _stencils(c: np.ndarray, forms) -> list[np.ndarray]:
    """``forms`` of the spline whose coefficients are ``c`` (1 px wider
    each way than the frame)."""
    sixth = np.float32(1 / 6)
    made = {"spline": c[1:-1, 1:-1]}
    if "value" in forms or "dx" in forms:
        along_y = (c[:-2] + c[2:] + 4 * c[1:-1]) * sixth  # (h, w + 2)
        if "value" in forms:
            made["value"] = (along_y[:, :-2] + along_y[:, 2:] + 4 * along_y[:, 1:-1]) * sixth
        if "dx" in forms:
            made["dx"] = (along_y[:, 2:] - along_y[:, :-2]) * np.float32(0.5)
    if "dy" in forms:
        along_x = (c[:, :-2] + c[:, 2:] + 4 * c[:, 1:-1]) * sixth  # (h + 2, w)
        made["dy"] = (along_x[2:] - along_x[:-2]) * np.float32(0.5)
    return [made[form] for form in forms]


@lru_cache(maxsize=16)
def _dog_spline(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """:func:`_dog` times the cubic B-spline's prefilter, ``1 / (b_y b_x)``
    with ``b = (4 + 2 cos w) / 6`` (the spline's samples of its
    coefficients, ``(z + 4 + 1/z) / 6`` along each axis), on an ``rfft2``
    of ``shape``: the band-passed image's spline coefficients."""
    wy = 2 * np.pi * scipy.fft.fftfreq(shape[0])[:, None]
    wx = 2 * np.pi * scipy.fft.rfftfreq(shape[1])[None, :]
    by, bx = (4 + 2 * np.cos(wy)) / 6, (4 + 2 * np.cos(wx)) / 6
    out = (_dog(shape, sigma) / (by * bx)).astype(np.float32)
    out.flags.writeable = False  # shared between calls
    return out


@lru_cache(maxsize=16)
def _dog(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """The transfer function of a Gaussian of ``sigma`` less one of 8
    ``sigma`` on an ``rfft2`` of ``shape``."""
    out = _gaussian_transfer(shape, sigma) - _gaussian_transfer(shape, 8 * sigma)
    out.flags.writeable = False  # shared between calls
    return out


def _detrend(img: np.ndarray) -> np.ndarray:
    """``img`` less its least-squares quadratic surface (fitted on every
    fourth pixel each way), in single precision."""
    h, w = img.shape
    x, y, fit = _quadratic(h, w)
    # einsum, not BLAS (see GRAM_ROWS)
    c = np.einsum("kn,n->k", fit, img[::4, ::4].ravel().astype(np.float64))
    # the surface's terms in x alone, in y alone, and the one in both
    row = (c[0] + c[1] * x + c[3] * x * x).astype(np.float32)
    col = (c[2] * y + c[5] * y * y).astype(np.float32)
    out = img.astype(np.float32) - row[None, :]
    out -= col[:, None]
    out -= np.float32(c[4]) * np.outer(y.astype(np.float32), x.astype(np.float32))
    return out


@lru_cache(maxsize=16)
def _quadratic(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred, scaled pixel coordinates x (w) and y (h) of an ``h x w``
    frame, and the least-squares map from every fourth pixel's values to
    the quadratic surface's coefficients (1, x, y, x^2, x y, y^2)."""
    x = (np.arange(w) - w / 2) / max(w, 1)
    y = (np.arange(h) - h / 2) / max(h, 1)
    xs, ys = (a.ravel() for a in np.broadcast_arrays(x[None, ::4], y[::4, None]))
    a = np.stack([np.ones(xs.size), xs, ys, xs ** 2, xs * ys, ys ** 2], axis=1)
    fit = np.linalg.pinv(a)
    for v in (x, y, fit):
        v.flags.writeable = False  # shared between calls
    return x, y, fit


def _basis(model: str, xn: np.ndarray, yn: np.ndarray) -> list[tuple]:
    """Displacement fields ``(dx, dy)`` of the model's small changes, in
    coordinates centred on the overlap and scaled to about one."""
    one, zero = np.ones_like(xn), np.zeros_like(xn)
    fields = [(one, zero), (zero, one)]
    if model in ("rigid", "similarity"):
        fields.append((-yn, xn))
    if model == "similarity":
        fields.append((xn, yn))
    if model == "affine":
        fields += [(xn, zero), (yn, zero), (zero, xn), (zero, yn)]
    return fields


def _step(model: str, d: np.ndarray, centre: np.ndarray, scale: float) -> Affine:
    """The map ``x -> x + displacement(x)`` of the parameters ``d`` (the
    fields of :func:`_basis`; a rigid step is an exact rotation)."""
    if model == "translation":
        return Affine.translator(d[:2])
    if model == "rigid":
        return Affine.translator(d[:2]) @ Affine.rotator(d[2] / scale, centre)
    if model == "similarity":
        lin = np.array([[1 + d[3] / scale, -d[2] / scale], [d[2] / scale, 1 + d[3] / scale]])
    else:
        lin = np.eye(2) + np.array([[d[2], d[3]], [d[4], d[5]]]) / scale
    return Affine(np.c_[lin, d[:2] + centre - lin @ centre])


def refine_direct(fixed: np.ndarray, fmask: np.ndarray, moving: np.ndarray,
                  mmask: np.ndarray, t: Affine, model: str, warp_mask,
                  max_iters: int = 40, levels: tuple[float, ...] = LEVELS,
                  tol: float = 1e-3, forms=None,
                  every: int = 1, accelerate: bool = True) -> tuple[Affine, float, int, float]:
    """Gauss-Newton on all valid pixels from ``t`` (moving -> fixed).

    ``forms(sigma)``, where given, returns fixed's band-passed values and
    spline derivatives and moving's band-passed spline coefficients at a
    level (made ahead by the caller).

    ``every`` > 1 keeps one pixel in ``every`` of the overlap (on a
    lattice that takes each row's and each column's in turn).

    Under noise the steps fall short: the noise in the gradients adds to
    the normal equations' diagonal, so each step covers a fixed fraction
    of the way and the steps shrink by a ratio ``r`` each time.  Where a
    step goes the way of the one before (cosine above
    :data:`ACCELERATE_COS`) and shrank by ``r`` < :data:`ACCELERATE_MAX`,
    and moves the corners less than a pixel (but no less than ``tol``,
    where the plain step ends it), it is taken ``1 / (1 - r)`` times over
    (the rest of the geometric series: Aitken's extrapolation);
    ``accelerate=False`` takes the plain steps.

    Returns the transform, the correlation coefficient of the band-passed
    images over the final overlap, the iterations taken, and the
    coefficient at ``t`` on the first level's pixels."""
    from .compiled import MODEL_CODES, gauss_newton_rows

    h, w = fixed.shape
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
    if forms is None:
        ffill, mfill = fill_masked(fixed, fmask), fill_masked(moving, mmask)
    total, ncc, first = 0, 0.0, None
    code = MODEL_CODES[model]
    k = len(_basis(model, np.zeros(1), np.zeros(1)))
    n = k + 7
    sums = np.empty(6)
    gain = 1.0
    for sigma in levels:
        # fixed's values and spline derivatives, moving's spline
        # coefficients: one forward transform each
        if forms is not None:
            (fs, fdx, fdy), coef = forms(sigma)
        else:
            fs, fdx, fdy = bandpass_forms(ffill, sigma, ("value", "dx", "dy"))
            coef = bandpass_forms(mfill, sigma, ("spline",))[0].astype(np.float64)
        # the pixels compared stay the same through a level (an overlap
        # that changed with every step would jitter the solution)
        valid = _region(fmask, mmask, t, warp_mask, 2 + int(EDGE * sigma))
        if valid.sum() < 64:
            return t, 0.0, total, first or 0.0
        if every > 1:  # one pixel in ``every``, on a checkerboard-like lattice
            valid &= _lattice(h, w, every)
        # the pixels' flat indices, found once: gathers by index are three
        # times as fast as by the mask
        at = np.flatnonzero(valid)
        yi = at // w
        y, x = yi.astype(np.float64), (at - yi * w).astype(np.float64)
        cx, cy = x.mean(), y.mean()
        centre = np.array([cx, cy])
        scale = max(float(np.ptp(x)), float(np.ptp(y)), 1.0) / 2
        # the gain starts flat at each level (the pixels differ from the
        # last level's): a quadratic surface's coefficients
        gain_c = np.array([float(np.mean(gain)), 0, 0, 0, 0, 0], dtype=np.float64)
        g0 = gain_c[0]
        fv, fgx, fgy = (np.ascontiguousarray(a).ravel().take(at).astype(np.float64)
                        for a in (fs, fdx, fdy))
        # the design's last column holds fixed's values: the normal
        # equations' matrix and right-hand side come from one product
        design = np.empty((len(x), n + 1), dtype=DESIGN_DTYPE)
        fv32 = fv.astype(DESIGN_DTYPE)
        last = None  # the step before, as parameters
        for _ in range(max_iters):
            total += 1
            inv = np.ascontiguousarray(t.inverse().matrix, dtype=np.float64)

            def rows(part, out):
                design[part, n] = fv32[part]  # the kernel zeroes rows outside moving
                gauss_newton_rows(coef, inv, x[part], y[part], fgx[part], fgy[part], cx, cy,
                                  scale, code, gain_c, g0, fv[part], design[part], out)
                return _gram(design[part])
            pool = helper() if len(x) >= SPLIT_PIXELS else None
            if pool is None:
                gram = rows(slice(None), sums)
            else:  # the rows are independent: half on the helper thread
                half = len(x) // 2
                other = np.empty(6)
                job = pool.submit(rows, slice(half, None), other)
                gram = rows(slice(0, half), sums)
                gram += job.result()
                sums += other
            if first is None:
                first = _ncc_sums(sums)
            if sums[0] < 64:
                return t, 0.0, total, first or 0.0
            z = _solve_normal(gram[:n, :n], gram[:n, n])
            g0 = z[k]
            if abs(g0) < 1e-12:
                return t, 0.0, total, first or 0.0
            # the gain may vary across the image (vignetting, uneven
            # illumination): a quadratic surface g0 (1 + ...) whose shape
            # the next step's displacement columns carry
            gain_c = z[k:k + 6].copy()
            gain = g0
            d = z[:k] / g0
            new = _step(model, d, centre, scale).inverse() @ t
            moved = float(np.abs(new(corners) - t(corners)).max())
            if accelerate and last is not None and tol <= moved < 1.0 and float(last @ last) > 0:
                r = float(d @ last) / float(last @ last)
                cos = float(d @ last) / (float(np.linalg.norm(d) * np.linalg.norm(last)) or 1.0)
                if cos > ACCELERATE_COS and 0.0 < r < ACCELERATE_MAX:
                    new = _step(model, d / (1.0 - r), centre, scale).inverse() @ t
            last = d
            t = new
            if moved > 0.5 * max(h, w):
                return t, 0.0, total, first or 0.0  # running away: not a basin
            if moved < tol:
                break
        ncc = _ncc_sums(sums)
    return t, ncc, total, first if first is not None else 0.0


@lru_cache(maxsize=16)
def _lattice(h: int, w: int, every: int) -> np.ndarray:
    """One pixel in ``every`` of an ``h x w`` frame: a checkerboard for 2,
    else the pixels with ``(x + 3 y) % every == 0``."""
    y, x = np.ogrid[:h, :w]
    out = ((x + y) % 2 == 0) if every == 2 else ((x + 3 * y) % every == 0)
    out.flags.writeable = False  # shared between calls
    return out


def _region(fmask: np.ndarray, mmask: np.ndarray, t: Affine, warp_mask,
            reach: int) -> np.ndarray:
    """Fixed's pixels where fixed and moving through ``t`` are both valid,
    ``reach`` px in from every edge (of a mask and of either frame)."""
    if fmask.all() and mmask.all():
        # whole frames: an inset rectangle, and moving's frame inset by as
        # much (the most that ``reach`` px of fixed span in moving)
        margin = reach * float(np.linalg.norm(t.inverse().linear, 2))
        valid = warp_mask(t, mmask, fmask.shape, margin=margin)
        valid[:reach] = valid[-reach:] = False
        valid[:, :reach] = valid[:, -reach:] = False
        return valid
    return scipy.ndimage.binary_erosion(fmask & warp_mask(t, mmask, fmask.shape),
                                        iterations=reach)


#: Rows of the design a product takes at a time: small enough that BLAS
#: keeps to the calling thread (its own threads would spin on the other
#: core between calls, where the helper thread runs; measured: as fast as
#: one threaded product of all the rows).
GRAM_ROWS = 1024


def _gram(design: np.ndarray) -> np.ndarray:
    """``design.T @ design`` in double precision, summed over blocks of
    :data:`GRAM_ROWS` rows."""
    k = design.shape[1]
    out = np.zeros((k, k))
    for start in range(0, len(design), GRAM_ROWS):
        block = design[start:start + GRAM_ROWS]
        out += block.T @ block
    return out


def _solve_normal(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The normal equations solved, scaled to a unit diagonal first."""
    d = np.sqrt(np.diag(normal))
    d[d == 0] = 1.0
    scaled = normal / np.outer(d, d)
    try:
        z = np.linalg.solve(scaled, rhs / d)
    except np.linalg.LinAlgError:
        z = np.linalg.lstsq(scaled, rhs / d, rcond=None)[0]
    return z / d


def _ncc_sums(sums: np.ndarray) -> float:
    """Correlation coefficient from count, sums, sums of squares and of
    products."""
    n, sf, sm, sff, smm, sfm = sums
    if n < 2:
        return 0.0
    den = np.sqrt(max(sff - sf * sf / n, 0.0) * max(smm - sm * sm / n, 0.0))
    return float((sfm - sf * sm / n) / den) if den > 0 else 0.0
