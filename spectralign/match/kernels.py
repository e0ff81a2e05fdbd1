"""Per-iteration passes of spectral matching, compiled or in numpy.

One refinement iteration is three FFTs and some twenty elementwise passes
around them (cut the windows, apodize, form and weight the cross-power,
find the peak and its statistics).  With numba installed those passes run
as fused compiled loops (:mod:`spectralign.match.compiled`, the only module that
imports numba) that read each array once, which brings an iteration close
to the cost of its FFTs; otherwise, or with ``compiled=False``, the same
maths runs as numpy expressions from :mod:`spectralign.match.spectral`.  Both
give the same numbers to float32 rounding (``tests/test_kernels.py``).

Importing this module does not import numba: :func:`compiled_loops`
does, when a caller first asks for the compiled loops, so that a process
that has not loaded them yet can match with numpy meanwhile
(:class:`spectralign.Matcher` loads them on a background thread).

Every function takes the whole window stack of one batch and returns
arrays; none keeps state.  The compiled loops release the GIL, so
:meth:`spectralign.Matcher.refine_many` runs them on several threads.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from types import ModuleType

import numpy as np

from . import peaks as _peaks, spectral as _spectral
from ..io.image import check_overlap, cut

__all__ = ["backend", "compiled_loops", "apodize_windows", "weigh_snr", "weigh_cross_power",
           "surface_stats", "locate_peaks"]

_SPLINE_ORDER = 5


@lru_cache(maxsize=1)
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def backend() -> str:
    """``"numba"`` when the fused loops can be compiled, else ``"numpy"``."""
    return "numba" if _numba_installed() else "numpy"


def compiled_loops() -> ModuleType | None:
    """The compiled loops (:mod:`spectralign.match.compiled`), importing numba
    on the first call; None where numba is not installed."""
    if not _numba_installed():
        return None
    return importlib.import_module("spectralign.match.compiled")


def _loops(compiled: bool) -> ModuleType | None:
    return compiled_loops() if compiled else None


# --------------------------------------------------------------------- numpy

def _apodize_numpy(img, origins, fill, apod, out):
    h, w = apod.shape
    x0, y0 = origins[:, 0], origins[:, 1]
    for k in range(len(x0)):
        cut(img, int(x0[k]), int(y0[k]), w, h, fill, out[k])
    return _apodize_numpy_cut(out, apod)


def _apodize_numpy_cut(out, apod):
    flat = out.reshape(len(out), -1)
    wf = apod.reshape(-1)
    w_sum, _ = _spectral._window_sums(apod.shape)
    mean = (flat @ wf) / w_sum
    flat -= mean[:, None].astype(np.float32)
    flat *= wf
    energy = np.vecdot(flat, flat).astype(np.float64)
    return mean.astype(np.float64), energy


def _apodize_spline(img, origins, fill, apod, out, order=_SPLINE_ORDER):
    """Windows sampled at fractional origins by spline interpolation of
    order ``order``: the spline coefficients of the window and a margin,
    then, since the fraction is the same for every pixel of a window, one
    short constant filter per axis."""
    import scipy.ndimage

    h, w = apod.shape
    m = 2 * order + 2  # the prefilter's reach is negligible past this
    for k, (x, y) in enumerate(origins):
        ox, oy = int(np.floor(x)), int(np.floor(y))
        region = cut(img, ox - m, oy - m, w + 2 * m, h + 2 * m, fill).astype(np.float64)
        coef = scipy.ndimage.spline_filter(region, order=order, mode="mirror")
        taps, wx = _spline_taps(x - ox, order)
        _, wy = _spline_taps(y - oy, order)
        rows = sum(c * coef[:, m + t:m + t + w] for t, c in zip(taps, wx))
        out[k] = sum(c * rows[m + t:m + t + h] for t, c in zip(taps, wy))
    return _apodize_numpy_cut(out, apod)


@lru_cache(maxsize=4096)
def _spline_taps_cached(frac: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    import scipy.ndimage

    n = 4 * order + 8
    delta = np.zeros(n)
    delta[n // 2] = 1.0
    # value at n/2 + frac of the spline whose coefficients are delta[j - t]
    resp = scipy.ndimage.shift(delta, -frac, order=order, prefilter=False, mode="constant")
    taps = np.arange(-order, order + 1)
    weights = resp[n // 2 - taps]
    keep = np.abs(weights) > 0
    return taps[keep], weights[keep]


def _spline_taps(frac: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets ``t`` and weights ``c`` with ``f(i + frac) = sum c f_coef(i + t)``."""
    return _spline_taps_cached(round(float(frac), 12), order)


def _weigh_numpy(s1, s2, exponent, noise_floor, dead):
    scratch = np.empty(s1.shape, dtype=np.float32)
    x = _spectral.whitened_cross_power(s1, s2, exponent, scratch, noise_floor)
    x[dead] = 0
    s1[...] = x


# ---------------------------------------------------------------- public API

def apodize_windows(img: np.ndarray, origins: np.ndarray, fill: float,
                    apod: np.ndarray, out: np.ndarray, *, interpolate: bool = False,
                    compiled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Cut, mean-subtract and apodize a stack of windows.

    Window ``k`` covers ``img[y0:y0+H, x0:x0+W]`` with ``(x0, y0) =
    origins[k]``; pixels off the image take ``fill`` (NaN: the mean of the
    window's pixels on the image).  With ``interpolate``
    the origins may be fractional and the window is sampled there by quintic
    spline interpolation (scipy.ndimage, with its prefilter); else they are
    whole pixels.  ``out[k]`` receives ``(x - m) * apod`` with ``m`` the
    apodization-weighted mean (see :func:`spectralign.match.spectral.apodize_stack`).

    Returns
    -------
    mean, energy : (K,) float64 arrays
        Each window's weighted mean and the sum of squares of its
        apodized form.

    Raises
    ------
    WindowOutsideImageError
        If a window does not meet the image at all.
    """
    h, w = apod.shape
    if interpolate:
        origins = np.ascontiguousarray(origins, dtype=np.float64)
        for x, y in origins:  # cut raises too, but with the margin in the numbers
            check_overlap(img.shape, int(np.floor(x)), int(np.floor(y)), w, h)
        return _apodize_spline(img, origins, fill, apod, out)
    origins = np.ascontiguousarray(origins, dtype=np.int64)
    loops = _loops(compiled)
    if loops is None:
        return _apodize_numpy(img, origins, fill, apod, out)
    w_sum, _ = _spectral._window_sums(apod.shape)
    mean, energy, k = loops._apodize_numba(img, origins, float(fill), apod, out, w_sum)
    if k >= 0:  # window k is off the image
        check_overlap(img.shape, int(origins[k, 0]), int(origins[k, 1]), w, h)
    return mean, energy


def weigh_snr(s1: np.ndarray, s2: np.ndarray, shape: tuple[int, int], dead: np.ndarray,
              *, compiled: bool = True) -> None:
    """SNR-weighted cross-power of two spectrum stacks, into both.

    Computes what :func:`spectralign.match.spectral.snr_weighted_cross_power`
    does and writes it over ``s1`` *and* ``s2`` (``s1`` is then transformed
    back, which destroys it; ``s2`` keeps a copy for the subpixel peak).
    Where ``dead[k]`` is true (a textureless window) the result is zero.
    ``compiled=False`` runs the numpy maths even where numba is installed.
    """
    dead = np.ascontiguousarray(dead, dtype=np.bool_)
    loops = _loops(compiled)
    if loops is None:
        x = _spectral.snr_weighted_cross_power(s1, s2, shape)
        x[dead] = 0
        s1[...] = x
        return
    index, counts, first_noise = _spectral.radial_bins(tuple(shape))
    b, h, m = s1.shape
    loops._weigh_snr_numba(s1.view(np.float32).reshape(b, h, 2 * m),
                           s2.view(np.float32).reshape(b, h, 2 * m),
                           index, counts, int(first_noise), float(_spectral.MISMATCH),
                           float(_spectral.DYNAMIC_RANGE), float(_spectral.SIGNIFICANCE), dead)


def weigh_cross_power(s1: np.ndarray, s2: np.ndarray, exponent: float,
                      noise_floor: float, dead: np.ndarray, *, compiled: bool = True) -> None:
    """Partially whitened cross-power of two spectrum stacks, into both.

    Computes what :func:`spectralign.match.spectral.whitened_cross_power` does
    and writes it over ``s1`` *and* ``s2`` (``s1`` is then transformed
    back, which destroys it; ``s2`` keeps a copy for the subpixel peak).
    Where ``dead[k]`` is true (a textureless window) the result is zero.
    """
    dead = np.ascontiguousarray(dead, dtype=np.bool_)
    loops = _loops(compiled)
    if loops is None:
        _weigh_numpy(s1, s2, exponent, noise_floor, dead)
    else:
        b, h, m = s1.shape
        loops._weigh_numba(s1.view(np.float32).reshape(b, h, 2 * m),
                           s2.view(np.float32).reshape(b, h, 2 * m),
                           float(exponent), float(noise_floor), dead)


def surface_stats(corr: np.ndarray, spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat index of the maximum, sum and sum of squares of each surface.

    Parameters
    ----------
    corr : (B, H, W) float32 array
        Unnormalized inverse transforms of ``spectra``.
    spectra : (B, H, W // 2 + 1) complex array
        The half spectra; the sum of a surface is ``H W`` times its zero
        frequency term, so it costs no pass over the surface.

    Returns
    -------
    argmax : (B,) int array
    total, energy : (B,) float64 arrays
    """
    b, h, w = corr.shape
    flat = corr.reshape(b, -1)
    total = spectra[:, 0, 0].real.astype(np.float64) * (h * w)
    return np.argmax(flat, axis=1), total, np.vecdot(flat, flat).astype(np.float64)


def locate_peaks(corr: np.ndarray, spectra: np.ndarray, *, compiled: bool = True):
    """Subpixel peak, peak value, width and SNR of each correlation surface.

    The same numbers as :func:`spectralign.match.spectral.integer_peaks`, then
    :func:`~spectralign.match.spectral.refine_peaks` and
    :func:`~spectralign.match.spectral.peak_snr`, in one call.

    Parameters
    ----------
    corr : (B, H, W) float32 array
        Unnormalized inverse transforms of ``spectra``.
    spectra : (B, H, W // 2 + 1) complex64 array

    Returns
    -------
    at : (B, 2) float array
        Peak positions ``(dy, dx)``.
    value : (B,) float array
    width : (B, 2) float array
    snr : (B,) float array
    """
    argmax, total, energy = surface_stats(corr, spectra)
    loops = _loops(compiled and _peaks._NEWTON_STEPS == 1)
    if loops is None:
        peaks = _peaks.integer_peaks(corr, argmax)
        near = _peaks.peak_neighbourhood(corr, peaks)
        at, value, width = _peaks.refine_peaks(spectra, corr, peaks, near)
        return at, value, width, _peaks.peak_snr(corr, peaks, value, total, energy, near)
    kx, ky, powers_x, _ = _peaks._frequencies(corr.shape[1:])
    b, h, m = spectra.shape
    return loops._peaks_numba(corr, spectra.view(np.float32).reshape(b, h, 2 * m),
                              argmax.astype(np.int64), total, energy, kx, ky, powers_x[0],
                              _peaks._SNR_EXCLUDE, _peaks._SNR_EXCLUDE)
