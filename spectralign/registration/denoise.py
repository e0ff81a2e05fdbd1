"""Prefilters for noisy and JPEG-compressed images, from SciPy and scikit-image.

Measured on ``benchmarks/bench_register.py --tasks denoise`` (rotation at
128 px on the four real sources, white noise of 0.1 and 0.2 of the range,
JPEG 30 and 10; figures in ``docs/benchmarks.md``): none of them improves
on ``None``.  The spectral windows already weigh each frequency by its
signal-to-noise ratio and the pixels' fit band-passes, so a prefilter only
takes signal away; ``"bilateral"`` costs the most (4x the angle error
under noise 0.1, a third of the pairs lost at 0.2).  They are here for
noise that is not white (``"median"`` for salt and pepper), which the
benchmark does not test.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.ndimage

__all__ = ["DENOISERS", "denoise_image", "noise_sigma"]


def _gaussian(img: np.ndarray) -> np.ndarray:
    return scipy.ndimage.gaussian_filter(img, 1.0)


def _median(img: np.ndarray) -> np.ndarray:
    return scipy.ndimage.median_filter(img, size=3)


def noise_sigma(img: np.ndarray) -> float:
    """Standard deviation of white noise in ``img``, robustly: the median
    absolute value of the 2 x 2 checkerboard difference, whose variance is 4
    sigma^2 for white noise while smooth (optically blurred) content
    hardly reaches it."""
    a = np.asarray(img, dtype=np.float64)
    d = a[1:, 1:] - a[1:, :-1] - a[:-1, 1:] + a[:-1, :-1]
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / 2)


def _scaled(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Run a scikit-image filter on the image scaled to [0, 1] and back."""
    def run(img: np.ndarray) -> np.ndarray:
        lo, hi = float(img.min()), float(img.max())
        span = hi - lo or 1.0
        return (fn((img - lo) / span) * span + lo).astype(np.float32)
    return run


def _nlmeans(img: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_nl_means
    sigma = max(noise_sigma(img), 1e-3)
    return denoise_nl_means(img, h=0.8 * sigma, sigma=sigma, patch_size=5,
                            patch_distance=6, fast_mode=True)


def _tv(img: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle
    return denoise_tv_chambolle(img, weight=max(noise_sigma(img), 1e-3))


def _bilateral(img: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_bilateral
    sigma = max(noise_sigma(img), 1e-3)
    return denoise_bilateral(img.astype(np.float64), sigma_color=2 * sigma, sigma_spatial=1.5)


#: Named prefilters: ``"gaussian"`` (sigma 1 px) and ``"median"`` (3 x 3)
#: from SciPy; ``"nlmeans"`` (non-local means), ``"tv"`` (total variation,
#: Chambolle) and ``"bilateral"`` from scikit-image, each with the noise
#: level estimated from the image (:func:`noise_sigma`).
DENOISERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gaussian": _gaussian,
    "median": _median,
    "nlmeans": _scaled(_nlmeans),
    "tv": _scaled(_tv),
    "bilateral": _scaled(_bilateral),
}


def denoise_image(img: np.ndarray, denoise: Any) -> np.ndarray:
    """Apply ``denoise`` (None, a name in :data:`DENOISERS`, or a callable
    taking and returning an (H, W) array)."""
    if denoise is None:
        return img
    if callable(denoise):
        fn = denoise
    elif isinstance(denoise, str) and denoise in DENOISERS:
        fn = DENOISERS[denoise]
    else:
        raise ValueError(f"Expected denoise as None, a callable, or one of "
                         f"{', '.join(map(repr, DENOISERS))}. Got {denoise!r} instead.")
    out = np.asarray(fn(np.asarray(img, dtype=np.float32)), dtype=np.float32)
    if out.shape != img.shape:
        raise ValueError(f"Expected the denoise filter to keep the image's shape {img.shape}. "
                         f"Got {out.shape} instead.")
    return out
