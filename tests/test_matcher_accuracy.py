"""Known-answer accuracy: real images shifted by known subpixel amounts."""

import numpy as np
import pytest

import spectralign
from conftest import known_shift_pairs

SIZE = 256
PAIRS = 100  # per image and noise level; 200 offsets per noise level in all


def _errors(img, noise, seed):
    rng = np.random.default_rng(seed)
    errs, snrs = [], []
    for a, b, d in known_shift_pairs(img, PAIRS, SIZE, rng):
        if noise:
            s = np.std(a)
            a = a + rng.normal(0, s, a.shape).astype(np.float32)
            b = b + rng.normal(0, s, b.shape).astype(np.float32)
        c = (SIZE / 2, SIZE / 2)
        match = spectralign.Matcher(a, b).refine(c, c, SIZE, iters=3)
        errs.append(match.p_ - match.p - d)
        snrs.append(match.snr)
    return np.array(errs), np.array(snrs)


@pytest.mark.parametrize("noise, rms_bound", [(False, 0.05), (True, 0.2)])
def test_subpixel_accuracy_on_real_images(sem_texture, he_slide, noise, rms_bound):
    errs = np.concatenate([_errors(sem_texture, noise, 1)[0], _errors(he_slide, noise, 2)[0]])
    assert len(errs) >= 200
    rms = np.sqrt(np.mean(np.sum(errs**2, axis=1)))
    assert rms <= rms_bound, f"RMS error {rms:.4f} px"
    assert np.abs(errs).max() <= 1.0


def test_sign_convention(texture):
    """p_ - p is where the content at p in img1 went in img2."""
    a = texture[50:306, 50:306]
    b = texture[57:313, 47:303]  # a's content at (x, y) is at (x + 3, y - 7) in b
    match = spectralign.Matcher(a, b).refine((128, 128), (128, 128), 128, iters=3)
    np.testing.assert_allclose(match.p_ - match.p, (3, -7), atol=0.01)
    # the correction is split evenly between the two points
    np.testing.assert_allclose(match.p + match.p_, (256, 256), atol=0.01)


def test_snr_separates_match_from_non_match(sem_texture):
    a = sem_texture[100:356, 100:356]
    far = sem_texture[600:856, 900:1156]
    good = spectralign.Matcher(a, a).refine((128, 128), (128, 128), 256)
    bad = spectralign.Matcher(a, far).refine((128, 128), (128, 128), 256)
    assert good.snr > 50
    assert bad.snr < 8
