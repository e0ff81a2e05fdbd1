"""The Matcher under a microscope's conditions, through the README recipe.

Ground-truth grids cut from the real SEM texture (enlarged 2x) with a
Gaussian PSF of sigma 0.7 px, 40 % vignetting, gain and offset per tile and
white noise (``datasets.synthetic_grid``); every neighbouring pair matched
with a fresh ``Matcher`` and ``refine(p0, p0_, size=(0.15 W, 0.8 H),
iters=3)`` as the README shows.
"""

import numpy as np
import pytest
import scipy.ndimage

import spectralign
from spectralign import Matcher, fast_size
from spectralign.datasets import synthetic_grid

TILE = 512
OVERLAP = 0.15
MICROSCOPE = dict(psf=0.7, vignetting=0.4, gain=0.1, offset=0.05, stage_error=8.0)
#: The least threshold a pipeline learns for a match that means something
#: (``montage._learn_threshold``: 1.25 x the best non-match, at least 5).
LEAST_THRESHOLD = 5.0


@pytest.fixture(scope="module")
def sem2(sem_texture):
    return scipy.ndimage.zoom(sem_texture[:1024].astype(np.float64) / 255, 2, order=3)


def _recipe_pairs(grid):
    """(i, j, p0, p0_, size) of every neighbouring pair, as the README writes it."""
    rows, cols = grid
    ov = OVERLAP * TILE
    out = []
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if c + 1 < cols:
                out.append((i, i + 1, (TILE - ov / 2, TILE / 2), (ov / 2, TILE / 2),
                            (0.15 * TILE, 0.8 * TILE)))
            if r + 1 < rows:
                out.append((i, i + cols, (TILE / 2, TILE - ov / 2), (TILE / 2, ov / 2),
                            (0.8 * TILE, 0.15 * TILE)))
    return out


def _recipe_errors(image, noise, seed, **matcher):
    synth = synthetic_grid(image, (3, 3), TILE, OVERLAP, noise=noise, seed=seed, **MICROSCOPE)
    errs, snrs = [], []
    for i, j, p0, p0_, size in _recipe_pairs((3, 3)):
        p, p_ = match = Matcher(synth.tiles[i], synth.tiles[j], **matcher).refine(
            p0, p0_, size=size, iters=3)
        errs.append(np.hypot(*((p_ - p) - (synth.truth[i] - synth.truth[j]))))
        snrs.append(match.snr)
    return np.array(errs), np.array(snrs)


def test_known_answer_band_limited_snr_1(sem2):
    """SNR 1 on optics-blurred tiles: the noise above the optics' cut-off
    gets no weight (the SWiFT-IR weighting, which trusts it, misses this
    bound by far: 0.2 px RMS here, against 0.08)."""
    errs, snrs = np.concatenate([_recipe_errors(sem2, 1.0, seed) for seed in (3, 4)], axis=1)
    rms = np.sqrt(np.mean(errs**2))
    assert rms <= 0.12, f"pair RMS {rms:.3f} px"
    assert errs.max() <= 0.4
    assert snrs.min() > LEAST_THRESHOLD  # every true match is kept


def test_known_answer_band_limited_snr_8(sem2):
    errs, _ = _recipe_errors(sem2, 1 / 8, 5)
    assert np.sqrt(np.mean(errs**2)) <= 0.015
    assert errs.max() <= 0.04


def test_noiseless_sharp_content_keeps_its_accuracy(sem_texture):
    """Sharp content (signal up to Nyquist) is not taken for noise once the
    windows are aligned."""
    img = sem_texture[:768, :768].astype(np.float32)
    d = np.array([2.37, -1.61])
    moved = np.fft.ifft2(np.fft.fft2(img) * np.exp(
        -2j * np.pi * (np.fft.fftfreq(768)[None, :] * d[0]
                       + np.fft.fftfreq(768)[:, None] * d[1]))).real.astype(np.float32)
    p, p_ = match = Matcher(img, moved).refine((384, 384), (384, 384), 300, iters=3)
    np.testing.assert_allclose(p_ - p, d, atol=0.01)
    assert match.snr > 3 * LEAST_THRESHOLD


@pytest.mark.parametrize("size", [(77, 410), (154, 816), (410, 77)])
def test_pure_noise_scores_below_learned_threshold(size):
    rng = np.random.default_rng(7)
    for _ in range(5):
        a = rng.normal(100, 10, (512, 512)).astype(np.float32)
        b = rng.normal(100, 10, (512, 512)).astype(np.float32)
        match = Matcher(a, b).refine((256, 256), (256, 256), size, iters=3)
        assert match.snr < LEAST_THRESHOLD


def test_non_overlapping_tiles_score_below_true_matches(sem2):
    synth = synthetic_grid(sem2, (3, 3), TILE, OVERLAP, noise=1.0, seed=6, **MICROSCOPE)
    ov = OVERLAP * TILE
    args = ((TILE - ov / 2, TILE / 2), (ov / 2, TILE / 2), (0.15 * TILE, 0.8 * TILE))
    non = [Matcher(synth.tiles[i], synth.tiles[j]).refine(*args, iters=3).snr
           for i, j in [(0, 2), (3, 5), (6, 8), (0, 8)]]
    true = [Matcher(synth.tiles[i], synth.tiles[i + 1]).refine(*args, iters=3).snr
            for i in (0, 3, 6)]
    assert max(LEAST_THRESHOLD, 1.25 * max(non)) < min(true)


def test_fast_size_is_a_fast_length_at_least_the_size():
    """Every side from 16 to 2000 px: the next 5-smooth length (these are up
    to 15 % apart: 21 -> 24, 325 -> 360), each side on its own."""
    for n in range(16, 2001):
        other = 16 + (7 * n) % 1985  # the height runs over the same range, out of step
        fw, fh = fast_size((n, other))
        for side, f in ((n, fw), (other, fh)):
            assert side <= f <= 1.15 * side
            for p in (2, 3, 5):
                while f % p == 0:
                    f //= p
            assert f == 1


@pytest.mark.parametrize("size", [(154, 816), (77, 410), (101, 97), (131, 257)])
def test_odd_size_gives_the_exact_size_answer(sem_texture, size):
    """Computed at the next fast size, an odd window's answer is the one
    the exact size gives, on clean data, to within 0.01 px."""
    img = scipy.ndimage.gaussian_filter(sem_texture[:1000, :1000].astype(np.float32), 0.7)
    d = np.array([1.73, -2.41])
    moved = scipy.ndimage.shift(img, d[::-1], order=5, mode="reflect")
    m = Matcher(img, moved)
    c = np.array([[500.0, 500.0]])
    fast = m.refine(c[0], c[0], size, iters=3)
    exact = m._refine_chunk(c, c, tuple(size), 1, 3, 0.0)
    np.testing.assert_allclose(fast.p_ - fast.p, exact[1][0] - exact[0][0], atol=0.01)
    np.testing.assert_allclose(fast.p_ - fast.p, d, atol=0.02)


def test_numpy_and_compiled_paths_agree(sem2):
    synth = synthetic_grid(sem2, (2, 2), TILE, OVERLAP, noise=0.25, seed=8, **MICROSCOPE)
    m = Matcher(synth.tiles[0], synth.tiles[1])
    ov = OVERLAP * TILE
    P = np.array([[TILE - ov / 2, TILE / 2]])
    P_ = np.array([[ov / 2, TILE / 2]])
    size = fast_size((0.15 * TILE, 0.8 * TILE))
    out = [m._refine_chunk(P, P_, size, 1, 3, 0.0, compiled=c)
           for c in ((False, True) if spectralign.match.kernels.backend() == "numba" else (False,))]
    for o in out[1:]:
        np.testing.assert_allclose(o[1] - o[0], out[0][1] - out[0][0], atol=1e-3)


def test_swiftir_weighting_still_offered(sem2):
    errs, _ = _recipe_errors(sem2, 1 / 8, 5, weighting="swiftir")
    assert np.sqrt(np.mean(errs**2)) <= 0.1
    with pytest.raises(ValueError, match="weighting"):
        Matcher(sem2, sem2, weighting="bogus")
