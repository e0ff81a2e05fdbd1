"""Masked normalized cross-correlation over every shift (Padfield 2012).

Padfield, "Masked object registration in the Fourier domain", IEEE TIP 21
(2012), doi:10.1109/TIP.2011.2181402: the correlation coefficient of two
images over just the pixels valid in both, for every relative shift, from
the transforms of each image's mask, values and squares (one batched
forward transform a side) and one batched inverse transform of their six
products; the products and the coefficient are compiled loops.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.ndimage

__all__ = ["masked_ncc", "ncc_peaks", "fill_masked", "fft_workers"]


def fft_workers(shape: tuple[int, int]) -> int:
    """Threads for a 2-D transform of ``shape``: all only past 512 x 512
    (measured: one 160 x 160 transform takes twice as long on two threads
    as on one)."""
    return -1 if shape[0] * shape[1] > 512 * 512 else 1


def fill_masked(img, mask: np.ndarray | None, sigma: float = 4.0):
    """``img`` with its invalid pixels replaced by a smooth local mean.

    Normalized convolution: ``G * (img mask) / G * mask`` with a Gaussian
    ``G`` of ``sigma`` px, so a hole takes the blurred colour of its
    surroundings and leaves no edge for a correlation to lock onto; pixels
    too far from any valid one take the mean of all valid pixels.  A list
    of images of one shape gets a list back, the mask's part done once.
    Where ``sigma`` spans 4 px or more, the convolution runs on sums of
    blocks of ``floor(sigma)`` px a side and the holes read it bilinearly
    (:func:`_coarse_fill`): a smooth fill needs no finer grid, and it
    costs half.
    """
    if isinstance(img, list):
        imgs = [np.asarray(a, dtype=np.float32) for a in img]
    else:
        imgs = [np.asarray(img, dtype=np.float32)]
    f = int(sigma)
    if mask is None or mask.all():
        out = imgs
    elif f >= 4 and min(mask.shape) >= 4 * f:
        out = _coarse_fill(imgs, mask, f, sigma)
    else:
        m = mask.astype(np.float32)
        smooth = _gaussian_zero_padded(np.stack([m] + [a * m for a in imgs]), sigma)
        den = smooth[0]
        near = den > 1e-3
        den = np.maximum(den, 1e-3)
        out = []
        for a, num in zip(imgs, smooth[1:]):
            mean = float(a[mask].mean()) if mask.any() else 0.0
            out.append(np.where(mask, a, np.where(near, num / den, mean)).astype(np.float32))
    return out if isinstance(img, list) else out[0]


def _coarse_fill(imgs: list, mask: np.ndarray, f: int, sigma: float) -> list:
    """:func:`fill_masked` on blocks of ``f x f`` px: the blocks' sums
    (a box of variance ``(f^2 - 1) / 12`` px^2) through a Gaussian, read
    back bilinearly (a triangle of variance ``f^2 / 6``), which together
    make the variance of a Gaussian of ``sigma``."""
    from .compiled import fill_from_blocks

    h, w = mask.shape
    H, W = -(-h // f) * f, -(-w // f) * f
    m = np.zeros((H, W), dtype=np.float32)
    m[:h, :w] = mask
    stack = np.zeros((1 + len(imgs), H, W), dtype=np.float32)
    stack[0] = m
    for k, a in enumerate(imgs):
        stack[1 + k, :h, :w] = np.where(mask, a, np.float32(0))
    # block sums by strided adds (a tenth of the time of a reduction over
    # a reshaped array)
    cols = stack[:, :, 0::f].copy()
    for j in range(1, f):
        cols += stack[:, :, j::f]
    sums = cols[:, 0::f].copy()
    for i in range(1, f):
        sums += cols[:, i::f]
    rest = max(sigma * sigma - (f * f - 1) / 12 - f * f / 6, (0.5 * f) ** 2)
    smooth = _gaussian_zero_padded(sums, np.sqrt(rest) / f) / np.float32(f * f)
    den = smooth[0]
    out = []
    for a, num in zip(imgs, smooth[1:]):
        mean = float(a[mask].mean()) if mask.any() else 0.0
        filled = np.array(a, dtype=np.float32)
        fill_from_blocks(filled, mask, np.ascontiguousarray(num, dtype=np.float32),
                         np.ascontiguousarray(den, dtype=np.float32), f, np.float32(mean))
        out.append(filled)
    return out


def _gaussian_zero_padded(stack: np.ndarray, sigma: float) -> np.ndarray:
    """Each ``(H, W)`` image of ``stack`` smoothed by a Gaussian of
    ``sigma`` px, zero beyond the frame: one product in the Fourier domain
    on frames padded by 4 sigmas (where a spatial filter is truncated)."""
    _, h, w = stack.shape
    pad = int(np.ceil(4 * sigma))
    shape = (scipy.fft.next_fast_len(h + pad, real=True),
             scipy.fft.next_fast_len(w + pad, real=True))
    workers = fft_workers(shape)
    spec = scipy.fft.rfft2(stack, shape, axes=(-2, -1), workers=workers)
    spec *= _gaussian_transfer(shape, float(sigma))
    return scipy.fft.irfft2(spec, shape, axes=(-2, -1), workers=workers)[:, :h, :w]


@lru_cache(maxsize=16)
def _gaussian_transfer(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A Gaussian of ``sigma`` px on an ``rfft2`` of ``shape``."""
    fy = scipy.fft.fftfreq(shape[0])[:, None]
    fx = scipy.fft.rfftfreq(shape[1])[None, :]
    out = np.exp(-2 * np.pi ** 2 * sigma ** 2 * (fx * fx + fy * fy)).astype(np.float32)
    out.flags.writeable = False  # shared between calls
    return out


def masked_ncc(fixed: np.ndarray, moving: np.ndarray, fixed_mask: np.ndarray,
               moving_mask: np.ndarray, min_overlap: float,
               cache: dict | None = None, half_turn: bool = False):
    """Correlation coefficient of the valid pixels at every shift.

    Returns
    -------
    ncc : (H1 + H2 - 1, W1 + W2 - 1) float32 array
        ``ncc[v, u]`` compares ``fixed[y + dy, x + dx]`` with
        ``moving[y, x]`` for ``(dx, dy) = (u - W2 + 1, v - H2 + 1)``; 0
        where fewer than ``min_overlap`` pixels are valid in both.
    count : same shape
        How many pixels are valid in both at each shift.

    ``cache``, a dict kept between calls with the same fixed image and
    mask, saves fixed's transforms.  With ``half_turn``, a list of two
    such pairs: for ``moving`` and for ``moving[::-1, ::-1]`` (moving
    turned by half a turn about its centre), the second from the first's
    transforms: a reversed real array's transform is the conjugate of the
    original's times a linear phase.
    """
    from .compiled import ncc_coefficient, ncc_products

    h1, w1 = fixed.shape
    h2, w2 = moving.shape
    shape = (scipy.fft.next_fast_len(h1 + h2 - 1, real=True),
             scipy.fft.next_fast_len(w1 + w2 - 1, real=True))
    workers = fft_workers(shape)
    # correlation of a (fixed side) with b (moving side) at shift s:
    # sum_x a(x + s) b(x) = irfft(A conj(B)); fixed's side is the same for
    # every moving of this size (``cache``).  Single precision: the values
    # are centred (the sums subtract large, nearly equal numbers
    # otherwise), and a placement needs its peak to a pixel, not the
    # coefficient to eight digits.
    if cache is not None and shape in cache:
        fixed_spectra = cache[shape]
    else:
        fixed_spectra = scipy.fft.rfft2(_centred_stack(fixed, fixed_mask), shape,
                                        workers=workers)
        if cache is not None:
            cache[shape] = fixed_spectra
    moving_spectra = scipy.fft.rfft2(_centred_stack(moving, moving_mask), shape, workers=workers)
    # a mask symmetric about its frame's centre (a whole frame, or one
    # inset evenly) sees the turned moving's mask and values at shift s as
    # the moving's at shift (H1 - H2, W1 - W2) - s: three sums are read
    # back, not transformed; where moving's mask is symmetric too (a
    # turned frame on a canvas that holds it), its turn is itself, and
    # so are the sums of fixed over it
    symmetric = half_turn and np.array_equal(fixed_mask, fixed_mask[::-1, ::-1])
    both = symmetric and np.array_equal(moving_mask, moving_mask[::-1, ::-1])
    slots = 6 if not half_turn else 7 if both else 9 if symmetric else 12
    # conj(transform of b[::-1, ::-1]) = transform of b times this phase
    py = np.exp(2j * np.pi * (h2 - 1) * scipy.fft.fftfreq(shape[0])).astype(np.complex64)
    px = np.exp(2j * np.pi * (w2 - 1) * scipy.fft.rfftfreq(shape[1])).astype(np.complex64)
    products = np.empty((slots,) + moving_spectra.shape[1:], dtype=np.complex64)
    ncc_products(fixed_spectra, moving_spectra, py, px, products)
    sums = scipy.fft.irfft2(products, shape, workers=workers)
    out = []
    for turned in (False, True)[:1 + half_turn]:
        ncc = np.empty((h1 + h2 - 1, w1 + w2 - 1), dtype=np.float32)
        count = np.empty_like(ncc)
        sfg = sums[6] if turned else sums[5]
        sf, sff = (sums[7], sums[8]) if turned and not both else (sums[1], sums[3])
        own = (sums[9], sums[10], sums[11]) if turned and not symmetric else (
            sums[0], sums[2], sums[4])
        ncc_coefficient(own[0], sf, own[1], sff, own[2], sfg, turned and symmetric,
                        h1 - h2 + 1, w1 - w2 + 1, h2, w2, float(min_overlap), ncc, count)
        out.append((ncc, count))
    return out if half_turn else out[0]


def _centred_stack(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask, the values less their mean and their squares (zero where
    invalid), stacked: what :func:`masked_ncc` transforms of each image."""
    out = np.zeros((3,) + img.shape, dtype=np.float32)
    out[0] = mask
    vals = img[mask].astype(np.float32)
    out[1][mask] = vals - vals.mean()
    np.multiply(out[1], out[1], out=out[2])
    return out


def ncc_peaks(ncc: np.ndarray, moving_shape: tuple[int, int], k: int = 3,
              separation: int = 5) -> list[tuple[np.ndarray, float]]:
    """The ``k`` highest separated maxima of :func:`masked_ncc`, as
    ``((dx, dy), value)`` with a parabolic subpixel offset."""
    h2, w2 = moving_shape
    if k == 1:  # the highest is a maximum: no neighbourhood filter needed
        best = int(np.argmax(ncc))
        if not ncc.flat[best] > 0:
            return []
        cand = np.array([np.unravel_index(best, ncc.shape)])
        vals, order = ncc.flat[best:best + 1], np.zeros(1, dtype=int)
    else:
        local = scipy.ndimage.maximum_filter(ncc, size=2 * separation + 1, mode="constant")
        cand = np.argwhere((ncc == local) & (ncc > 0))
        if not len(cand):
            return []
        vals = ncc[cand[:, 0], cand[:, 1]]
        order = np.argsort(-vals)[:k]
    out = []
    for (r, c), v in zip(cand[order], vals[order]):
        sub = []
        for axis, (i, n) in enumerate(((r, ncc.shape[0]), (c, ncc.shape[1]))):
            if 0 < i < n - 1:
                lo = ncc[i - 1, c] if axis == 0 else ncc[r, i - 1]
                hi = ncc[i + 1, c] if axis == 0 else ncc[r, i + 1]
                d = lo - 2 * v + hi
                sub.append(float(np.clip(0.5 * (lo - hi) / d, -0.5, 0.5)) if d < 0 else 0.0)
            else:
                sub.append(0.0)
        out.append((np.array([c + sub[1] - (w2 - 1), r + sub[0] - (h2 - 1)]), float(v)))
    return out
