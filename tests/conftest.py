"""Shared fixtures: the real images in ../shared/data and known-shift pairs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# the same examples on every run (a clean clone's CI included); set
# HYPOTHESIS_PROFILE=explore to search new ones
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

DATA = Path(os.environ.get("SPECTRALIGN_TEST_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """Path of a file in the shared data folder; skip the test if it is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test image {path} not found (set SPECTRALIGN_TEST_DATA)")
    return path


@pytest.fixture(scope="package")
def sem_texture() -> np.ndarray:
    """The SEM texture image without its info bar, float32 in [0, 1]."""
    import tifffile

    return tifffile.imread(shared("sem_texture", "retic.tif"))[:1024].astype(np.float32) / 255


@pytest.fixture(scope="package")
def he_slide() -> np.ndarray:
    """The H&E slide excerpt as gray float32 in [0, 1]."""
    import tifffile

    rgb = tifffile.imread(shared("brightfield_he", "cmu_small_region.svs"))
    return rgb.mean(axis=-1).astype(np.float32) / 255


def fourier_shifted(crop: np.ndarray, dxy) -> np.ndarray:
    """``crop`` translated by ``dxy = (dx, dy)`` px (content moves by +d),
    exactly for band-limited content, circularly."""
    ky = np.fft.fftfreq(crop.shape[0])[:, None]
    kx = np.fft.fftfreq(crop.shape[1])[None, :]
    phase = np.exp(-2j * np.pi * (kx * dxy[0] + ky * dxy[1]))
    return np.fft.ifft2(np.fft.fft2(crop) * phase).real.astype(np.float32)


def known_shift_pairs(img: np.ndarray, n: int, size: int, rng, max_bright: float = 0.9):
    """``n`` window pairs cut from textured parts of ``img`` with known shifts.

    Yields ``(a, b, d)``: ``b`` shows ``a``'s content moved by ``d = (dx, dy)``,
    ``|d| <= size / 4`` in each axis.  Crops are twice the window so the
    circular wrap of the Fourier shift never reaches the window.
    """
    h, w = img.shape
    q = size // 2
    made = 0
    while made < n:
        y0 = rng.integers(0, h - 2 * size)
        x0 = rng.integers(0, w - 2 * size)
        crop = img[y0:y0 + 2 * size, x0:x0 + 2 * size]
        if (crop > max_bright).mean() > 0.1:  # skip blank slide background
            continue
        d = rng.uniform(-size / 4, size / 4, 2)
        moved = fourier_shifted(crop, d)
        made += 1
        yield crop[q:q + size, q:q + size].copy(), moved[q:q + size, q:q + size].copy(), d


@pytest.fixture
def texture() -> np.ndarray:
    """A synthetic smooth random texture, 384 x 512 (for tests without real data)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(42)
    return gaussian_filter(rng.random((384, 512)), 1.5).astype(np.float32)
