"""Rotation and scale between two images from their magnitude spectra.

Reddy and Chatterji, "An FFT-based technique for translation, rotation,
and scale-invariant image registration", IEEE TIP 5 (1996),
doi:10.1109/83.506761: a translation leaves the magnitude of the Fourier
transform unchanged, a rotation turns it by the same angle and a scaling
by ``s`` shrinks it by ``1 / s``; in log-polar coordinates both become
shifts, found by phase correlation.  The magnitude spectrum is symmetric,
so an angle is known modulo 180 degrees: the caller tries both.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.ndimage

from .masked import fft_workers, fill_masked

__all__ = ["rotation_scale_candidates"]

#: Angular bins over 180 degrees; half as many where the band's outer
#: ring spans fewer pixels over the half-turn than that half (spectra of
#: up to 160 px: 180 bins still sample the ring more finely than its
#: pixels, and cost half as much).
ANGLES = 360
#: The band of spatial frequency used, in cycles/px: below, the image's
#: size and vignetting dominate; above, optics-blurred images hold noise.
BAND = (0.02, 0.35)


@lru_cache(maxsize=8)
def _round_taper(n: int) -> np.ndarray:
    # a round window: a separable one leaks strong low frequencies along
    # the axes, a pattern at 0 and 90 degrees in both images alike
    y, x = np.ogrid[:n, :n]
    r = np.hypot((2 * x - n + 1) / n, (2 * y - n + 1) / n)
    taper = np.where(r < 1, 0.5 + 0.5 * np.cos(np.pi * np.minimum(r, 1)), 0.0).astype(np.float32)
    taper.flags.writeable = False  # shared between calls
    return taper


def _magnitudes(pairs: list, n: int) -> np.ndarray:
    """Magnitude spectra of images' valid pixels (``(image, mask)``
    pairs), each tapered to zero at the image's edges and the mask's,
    zero-padded to ``n x n``: the half with frequencies ``kx >= 0`` (the
    other is its mirror), rows centred (``ky = 0`` at row ``n // 2``), in
    single precision; one transform call."""
    stack = np.zeros((len(pairs), n, n), dtype=np.float32)
    for out, (img, mask) in zip(stack, pairs):
        h, w = img.shape
        a = fill_masked(img, mask)
        m = max(h, w)
        taper = _round_taper(m)[(m - h) // 2:(m - h) // 2 + h, (m - w) // 2:(m - w) // 2 + w]
        if not mask.all():
            taper = taper * scipy.ndimage.gaussian_filter(mask.astype(np.float32), 3.0)
        mean = np.einsum("ij,ij", a, taper, dtype=np.float64) / np.sum(taper, dtype=np.float64)
        out[:h, :w] = (a - np.float32(mean)) * taper
    spec = scipy.fft.rfft2(stack, workers=fft_workers((n, n)))
    return np.abs(scipy.fft.fftshift(spec, axes=1))


@lru_cache(maxsize=8)
def _geometry(n: int, lo: float, nr: int, log_step: float,
              angles: int) -> tuple[np.ndarray, np.ndarray]:
    """The log-polar grid's sample points on the half spectrum of
    :func:`_magnitudes` (a point with ``kx < 0`` read at its mirror
    ``-k``), and the flat indices of every other one of the spectrum's
    pixels beyond 0.45 cycles/px (where the noise floor is read)."""
    radii = lo * np.exp(np.arange(nr) * log_step)
    theta = np.arange(angles) * (np.pi / angles)
    r, t = np.meshgrid(radii, theta)  # (angles, R)
    kx, ky = r * np.cos(t), r * np.sin(t)
    mirror = kx < 0
    kx, ky = np.where(mirror, -kx, kx), np.where(mirror, -ky, ky)
    points = np.stack([n // 2 + ky, np.maximum(kx, 0.0)])
    fy = scipy.fft.fftshift(scipy.fft.fftfreq(n))[:, None]
    fx = scipy.fft.rfftfreq(n)[None, :]
    far = np.flatnonzero(np.hypot(fx, fy) > 0.45)[::2]
    points.flags.writeable = far.flags.writeable = False  # shared between calls
    return points, far


def _log_polar(spec: np.ndarray, points: np.ndarray, far: np.ndarray) -> np.ndarray:
    from .compiled import bilinear_points

    lp = np.empty(points.shape[1:], dtype=np.float32)
    bilinear_points(spec, points[0], points[1], lp)
    # the noise floor: the spectrum's median beyond 0.45 cycles/px, where
    # optics leave nothing but the camera's white noise
    beyond = spec.ravel()[far]
    floor = float(np.partition(beyond, len(beyond) // 2)[len(beyond) // 2]) if len(beyond) else 0.0
    level = np.maximum(lp.mean(axis=0, keepdims=True), np.float32(1e-30))
    # each ring's angular pattern relative to its level, weighed by how
    # much of the ring is signal rather than noise
    signal = np.clip(1.0 - floor / level, 0.0, 1.0)
    lp -= level
    lp *= signal / level
    return lp


def rotation_scale_candidates(fixed: np.ndarray, fixed_mask: np.ndarray,
                              moving: np.ndarray, moving_mask: np.ndarray, *,
                              scale: bool, max_scale: float = 2.0,
                              k: int = 3) -> list[tuple[float, float, float]]:
    """Up to ``k`` ``(angle, scale, strength)`` candidates for the similarity
    that takes ``moving`` onto ``fixed``.

    ``angle`` in radians in ``[-pi/2, pi/2)`` (add pi for the other half),
    positive as :meth:`spectralign.Affine.rotator`; ``scale`` how much
    larger moving's content appears in fixed; 1 when ``scale`` is False.
    """
    for img, mask in ((fixed, fixed_mask), (moving, moving_mask)):
        vals = img[mask]
        if not vals.size or vals.min() == vals.max():
            return []  # a blank (or constant) image: no angle to tell
    n = scipy.fft.next_fast_len(max(*fixed.shape, *moving.shape))
    lo, hi = BAND[0] * n, BAND[1] * n
    nr = max(32, int(round(n / 2)))
    log_step = np.log(hi / lo) / (nr - 1)
    angles = ANGLES // 2 if np.pi * hi < ANGLES / 2 else ANGLES
    points, far = _geometry(n, lo, nr, log_step, angles)
    lp = np.stack([_log_polar(spec, points, far)
                   for spec in _magnitudes([(fixed, fixed_mask), (moving, moving_mask)], n)])
    # angle is periodic; radius is not: taper it, and pad it by the
    # farthest shift sought (none where the scale is not), so that no
    # shift within reach wraps round
    taper = np.hanning(nr + 2)[1:-1].astype(np.float32)
    reach = int(np.ceil(np.log(max_scale * 1.05) / log_step)) if scale else 0
    shape = (angles, scipy.fft.next_fast_len(nr + reach, real=True))
    s1, s2 = scipy.fft.rfft2(lp * taper, shape)
    cross = s1 * np.conj(s2)
    peak = np.abs(cross).max()
    if not peak > 0:
        return []  # a blank (or constant) image: no angle to tell
    cross /= np.abs(cross) ** 0.65 + 1e-12 * peak
    corr = scipy.fft.irfft2(cross, shape)
    # corr[a, r]: lp1(t + a, q + r) ~ lp2(t, q)
    if scale:
        rows = np.r_[0:reach + 1, shape[1] - reach:shape[1]]
    else:
        rows = np.array([0])
    sub = corr[:, rows]
    # peaks 4.5 degrees apart at least (and a radius step, where there
    # are radii: a square's maximum is its rows' maximum of columns')
    local = scipy.ndimage.maximum_filter1d(sub, max(3, 9 * angles // ANGLES | 1), axis=0,
                                           mode="wrap")
    if sub.shape[1] > 1:
        local = scipy.ndimage.maximum_filter1d(local, 3, axis=1, mode="wrap")
    cand = np.argwhere(sub == local)
    vals = sub[cand[:, 0], cand[:, 1]]
    order = np.argsort(-vals)[:k]
    noise = float(np.std(sub)) or 1.0
    out = []
    for (a, j), v in zip(cand[order], vals[order]):
        ya, yb = corr[(a - 1) % angles, rows[j]], corr[(a + 1) % angles, rows[j]]
        d = ya - 2 * v + yb
        da = 0.5 * (ya - yb) / d if d < 0 else 0.0
        r = rows[j] if rows[j] <= shape[1] // 2 else rows[j] - shape[1]
        dr = 0.0
        if scale and 0 < j < len(rows) - 1 and abs(r) < reach:
            jm, jp = (rows[j] - 1) % shape[1], (rows[j] + 1) % shape[1]
            xa, xb = corr[a, jm], corr[a, jp]
            d = xa - 2 * v + xb
            dr = 0.5 * (xa - xb) / d if d < 0 else 0.0
        angle = ((a + da) * np.pi / angles + np.pi / 2) % np.pi - np.pi / 2
        # fixed's spectrum at radius rho e^(r) matches moving's at rho:
        # fixed's content is smaller by e^(r) in space
        out.append((float(angle), float(np.exp(-(r + dr) * log_step)), float(v / noise)))
    return out
