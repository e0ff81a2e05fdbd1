"""Locating correlation peaks: the integer peak, its subpixel position by
Newton steps on the correlation surface built from the spectra, and the
peak's SNR against the rest of the surface.  Pure functions on arrays.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


__all__ = ["integer_peaks", "peak_neighbourhood", "refine_peaks", "peak_snr"]

_NEWTON_STEPS = 1


_SNR_EXCLUDE = 2  # half-width of the peak neighbourhood left out of the SNR noise


def integer_peaks(corr: np.ndarray, argmax: np.ndarray | None = None) -> np.ndarray:
    """Signed integer position ``(dy, dx)`` of the maximum of each correlation.

    Parameters
    ----------
    corr : (B, H, W) float array
        Circular correlation surfaces; index 0 is zero shift.
    argmax : (B,) int array, optional
        Flat index of each maximum, if already known.

    Returns
    -------
    (B, 2) int array
        Peak positions folded into ``[-H/2, H/2)`` and ``[-W/2, W/2)``.
    """
    b, h, w = corr.shape
    flat = np.argmax(corr.reshape(b, -1), axis=1) if argmax is None else argmax
    iy, ix = np.divmod(flat, w)
    iy = (iy + h // 2) % h - h // 2
    ix = (ix + w // 2) % w - w // 2
    return np.stack([iy, ix], axis=1)


def peak_neighbourhood(corr: np.ndarray, peaks: np.ndarray,
                       radius: int = _SNR_EXCLUDE) -> np.ndarray:
    """Values of each surface around its peak (circularly wrapped).

    Parameters
    ----------
    corr : (B, H, W) float array
    peaks : (B, 2) int array
        ``(dy, dx)`` from :func:`integer_peaks`.
    radius : int

    Returns
    -------
    (B, 2 radius + 1, 2 radius + 1) float64 array
        ``near[b, radius + i, radius + j]`` is the surface at the peak
        plus ``(i, j)``.
    """
    b, h, w = corr.shape
    r = np.arange(-radius, radius + 1)
    ys = (peaks[:, 0, None, None] + r[None, :, None]) % h
    xs = (peaks[:, 1, None, None] + r[None, None, :]) % w
    return corr[np.arange(b)[:, None, None], ys, xs].astype(np.float64)


def _parabolic_start(near: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Three-point parabola through the peak along each axis (clamped)."""
    k = near.shape[1] // 2
    c0 = near[:, k, k]
    cm = np.stack([near[:, k - 1, k], near[:, k, k - 1]], axis=1)
    cp = np.stack([near[:, k + 1, k], near[:, k, k + 1]], axis=1)
    denom = cm - 2 * c0[:, None] + cp
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (cm - cp) / denom, 0.0)
    return peaks + np.clip(off, -0.5, 0.5)


@lru_cache(maxsize=64)
def _frequencies(shape: tuple[int, int]):
    """Moment weights ``[1, k, k^2]`` along x (half spectrum, with Hermitian
    weights) and y, as read-only ``(3, M)`` and ``(3, H)`` arrays, and the
    angular frequencies ``kx``, ``ky`` themselves."""
    h, w = shape
    m = w // 2 + 1
    kx = 2 * np.pi * np.arange(m) / w
    ky = 2 * np.pi * np.fft.fftfreq(h)
    weight = np.full(m, 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    powers_x = np.stack([weight, weight * kx, weight * kx**2])
    powers_y = np.stack([np.ones_like(ky), ky, ky**2])
    for a in (kx, ky, powers_x, powers_y):
        a.setflags(write=False)
    return kx, ky, powers_x, powers_y


def _surface(spectra: np.ndarray, at: np.ndarray, shape: tuple[int, int]):
    """Value, gradient and Hessian of the correlation surface at ``at``.

    The surface is ``c(s) = sum_k X(k) exp(i k.s)`` over the full spectrum
    (the unnormalized inverse DFT, continued between pixels), evaluated from
    the half spectrum with Hermitian weights.  For each window,
    ``G = E X V`` with ``V = [e_x, k_x e_x, k_x^2 e_x]`` and
    ``E = [e_y, k_y e_y, k_y^2 e_y]`` holds every needed moment.
    """
    kx, ky, powers_x, powers_y = _frequencies(shape)
    ex = np.exp(1j * np.outer(at[:, 1], kx))  # (B, M)
    ey = np.exp(1j * np.outer(at[:, 0], ky))  # (B, H)
    right = (ex[:, None, :] * powers_x).astype(np.complex64)  # (B, 3, M)
    left = (ey[:, None, :] * powers_y).astype(np.complex64)  # (B, 3, H)
    # one 2-D product per window: stacked complex matmul does not use BLAS
    g = np.array([e @ (x @ v.T) for e, x, v in zip(left, spectra, right)], dtype=np.complex128)
    c = g[:, 0, 0].real
    grad = np.stack([-g[:, 1, 0].imag, -g[:, 0, 1].imag], axis=1)  # (dc/dy, dc/dx)
    return c, grad, -g[:, 2, 0].real, -g[:, 0, 2].real, -g[:, 1, 1].real


def refine_peaks(spectra: np.ndarray, corr: np.ndarray, peaks: np.ndarray,
                 near: np.ndarray | None = None):
    """Subpixel maxima of correlation surfaces, with their curvature.

    Starts from a parabola through the integer peak and takes Newton steps
    on the exact band-limited surface (steps limited to half a pixel; a
    step is skipped where the surface is not concave).

    Parameters
    ----------
    spectra : (B, H, M) complex64 array
        Whitened cross-power half spectra (``M = W // 2 + 1``).
    corr : (B, H, W) float array
        Their inverse transforms (the surfaces sampled at integer shifts).
    peaks : (B, 2) int array
        Integer peak positions from :func:`integer_peaks`.
    near : (B, K, K) float array, optional
        :func:`peak_neighbourhood` of the peaks, if already gathered.

    Returns
    -------
    at : (B, 2) float array
        Peak positions ``(dy, dx)`` in pixels.
    value : (B,) float array
        Surface value at the peak.
    width : (B, 2) float array
        Peak width ``(sy, sx)`` in pixels: ``sqrt(-c / c'')`` per axis,
        the standard deviation of a Gaussian of the same curvature; NaN
        where the surface is not concave.
    """
    shape = corr.shape[1:]
    if near is None:
        near = peak_neighbourhood(corr, peaks, 1)
    at = _parabolic_start(near, peaks)
    for _ in range(_NEWTON_STEPS):
        c, grad, cyy, cxx, cxy = _surface(spectra, at, shape)
        det = cyy * cxx - cxy**2
        concave = (cxx < 0) & (det > 0)
        safe = np.where(concave, det, 1.0)
        step_y = -(cxx * grad[:, 0] - cxy * grad[:, 1]) / safe
        step_x = -(cyy * grad[:, 1] - cxy * grad[:, 0]) / safe
        step = np.where(concave[:, None], np.stack([step_y, step_x], 1), 0.0)
        norm = np.hypot(step[:, 0], step[:, 1])
        step *= np.minimum(1.0, 0.5 / np.maximum(norm, 1e-12))[:, None]
        at = at + step
    # value and curvature from the last evaluation: the last step is tiny
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(-np.stack([c / cyy, c / cxx], 1))
    width[~np.isfinite(width)] = np.nan
    return at, c, width


def peak_snr(corr: np.ndarray, peaks: np.ndarray, value: np.ndarray,
             total: np.ndarray | None = None, energy: np.ndarray | None = None,
             near: np.ndarray | None = None) -> np.ndarray:
    """Signal-to-noise ratio of correlation peaks.

    ``(peak - mean) / std`` of the correlation surface, where the mean and
    standard deviation leave out the 5 x 5 pixels around the peak.  Two
    windows that do not match give about 4 to 5 on a 256 x 256 surface;
    a surface that is zero everywhere gives 0.

    Parameters
    ----------
    corr : (B, H, W) float array
    peaks : (B, 2) int array
    value : (B,) float array
        Peak values (e.g. from :func:`refine_peaks`).
    total, energy : (B,) float arrays, optional
        Sum and sum of squares of each surface, if already known.
    near : (B, 5, 5) float array, optional
        :func:`peak_neighbourhood` of the peaks, if already gathered.

    Returns
    -------
    (B,) float array
    """
    b, h, w = corr.shape
    flat = corr.reshape(b, -1)
    if total is None:
        total = flat.sum(axis=1, dtype=np.float64)
    if energy is None:
        energy = np.vecdot(flat, flat).astype(np.float64)
    if near is None:
        near = peak_neighbourhood(corr, peaks)
    n = h * w - near[0].size
    mean = (total - near.sum(axis=(1, 2))) / n
    var = (energy - (near**2).sum(axis=(1, 2))) / n - mean**2
    std = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(std > 0, (value - mean) / std, 0.0)
    return snr
