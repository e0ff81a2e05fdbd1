"""Matcher API: results, batches, threads, bad input."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import spectralign
from spectralign import errors
from conftest import fourier_shifted, shared


def test_match_unpacks_and_carries_quality(texture):
    m = spectralign.Matcher(texture, texture)
    match = m.refine((200, 150), (203, 148), 128, iters=4, tolerance=0.01)
    p, p_ = match
    assert isinstance(p, np.ndarray) and p.shape == (2,)
    assert (p + (1, 1)).shape == (2,)
    np.testing.assert_allclose(p, p_, atol=0.01)
    assert 1 <= match.niters <= 4 and len(match.history) == match.niters
    assert match.dists[0] == pytest.approx(np.hypot(3, 2), abs=0.05)  # first step, windows 3 px apart
    assert match.dist < 0.01
    assert match.snr > 20
    assert np.all(match.peakwidth > 0)


def test_float_and_rectangular_sizes(texture):
    m = spectralign.Matcher(texture, texture)
    for size in ((100.4, 60.6), (97, 131), 64, (64, 256)):
        p, p_ = m.refine((250, 180), (252.5, 181.25), size, iters=3)
        np.testing.assert_allclose(p_ - p, 0, atol=0.02)


@settings(max_examples=25, deadline=None)
@given(dx=st.floats(-20, 20), dy=st.floats(-20, 20))
def test_any_subpixel_shift_recovered(dx, dy):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(7)
    crop = gaussian_filter(rng.random((256, 256)), 1.2).astype(np.float32)
    moved = fourier_shifted(crop, (dx, dy))
    a, b = crop[64:192, 64:192], moved[64:192, 64:192]
    p, p_ = spectralign.Matcher(a, b).refine((64, 64), (64, 64), 128, iters=3)
    np.testing.assert_allclose(p_ - p, (dx, dy), atol=0.05)


def test_refine_many_equals_loop(texture):
    rng = np.random.default_rng(3)
    P = rng.uniform(100, 280, (40, 2))
    P_ = P + rng.uniform(-6, 6, (40, 2))
    m = spectralign.Matcher(texture, texture[3:, 5:])
    batch = m.refine_many(P, P_, 64, iters=3, workers=2)
    assert len(batch) == 40
    for i in (0, 17, 39):
        single = m.refine(P[i], P_[i], 64, iters=3)
        np.testing.assert_allclose(batch.p[i], single.p, atol=1e-9)
        np.testing.assert_allclose(batch.p_[i], single.p_, atol=1e-9)
        assert batch.snr[i] == pytest.approx(single.snr, rel=1e-4)  # float32 sums in another order
        assert batch[i].niters == single.niters
    P2, P2_ = batch
    np.testing.assert_allclose(P2_ - P2, np.broadcast_to((-5, -3), P2.shape), atol=0.02)


def test_two_threads_give_serial_results(sem_texture):
    # matching switches from numpy to the compiled loops once they are
    # loaded (the same numbers to float32 rounding): load them first, so
    # that both runs use the same ones and must agree bit for bit
    spectralign.match.loader.wait()
    rng = np.random.default_rng(5)
    P = rng.uniform(150, 850, (200, 2))
    P_ = P + rng.uniform(-5, 5, (200, 2))
    m = spectralign.Matcher(sem_texture, sem_texture[2:, 1:])
    serial = [m.refine(p, p_, 128, iters=2) for p, p_ in zip(P, P_)]
    results = [None] * 200

    def work(indices):
        for i in indices:
            results[i] = m.refine(P[i], P_[i], 128, iters=2)

    threads = [threading.Thread(target=work, args=(range(k, 200, 2),)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, r in zip(serial, results):
        np.testing.assert_array_equal(s.p, r.p)
        np.testing.assert_array_equal(s.p_, r.p_)
        assert s.snr == r.snr


def test_window_partly_off_image_works(texture):
    m = spectralign.Matcher(texture, texture)
    p, p_ = m.refine((10, 20), (12, 19), 64, iters=3)
    np.testing.assert_allclose(p_ - p, 0, atol=0.05)


def test_window_wholly_off_image_is_refused(texture):
    m = spectralign.Matcher(texture, texture)
    with pytest.raises(errors.WindowOutsideImageError, match=r"512 x 384 image.*wholly outside"):
        m.refine((2000, 100), (100, 100), 64)


@pytest.mark.parametrize("size", [0, -8, (64, 0), (np.nan, 3), "big", (1, 2, 3)])
def test_bad_size_is_refused(texture, size):
    m = spectralign.Matcher(texture, texture)
    with pytest.raises(errors.InvalidSizeError, match="Expected size"):
        m.refine((100, 100), (100, 100), size)


def test_bad_points_are_refused(texture):
    m = spectralign.Matcher(texture, texture)
    with pytest.raises(errors.InvalidPointError, match="finite"):
        m.refine((np.nan, 3), (100, 100), 64)
    with pytest.raises(errors.InvalidPointError, match="same number"):
        m.refine_many(np.zeros((3, 2)), np.zeros((4, 2)), 64)


def test_non_2d_input_is_refused():
    with pytest.raises(errors.ImageDimensionError, match=r"shape \(2, 3, 4, 5\)"):
        spectralign.Matcher(np.zeros((2, 3, 4, 5)), np.zeros((8, 8)))
    with pytest.raises(errors.ImageDimensionError, match=r"shape \(7,\)"):
        spectralign.Image(np.zeros(7))


def test_nan_pixels_are_refused_with_a_clear_error(texture):
    bad = texture.copy()
    bad[5, 9] = np.nan
    with pytest.raises(errors.NonFiniteImageError, match=r"img2.*\(x, y\) = \(9, 5\)"):
        spectralign.Matcher(texture, bad)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(errors.ImageNotFoundError, match="does not exist") as info:
        spectralign.Image(tmp_path / "nope.tif")
    assert isinstance(info.value, FileNotFoundError)


def test_constant_window_gives_zero_snr(texture):
    flat = np.full_like(texture, 0.3)
    match = spectralign.Matcher(texture, flat).refine((100, 100), (100, 100), 64, iters=3)
    assert match.snr == 0
    np.testing.assert_array_equal(match.p, (100, 100))


def test_readme_example_on_real_yfp_pair():
    """The original README's two-tile code on a real montage pair."""
    folder = shared("yfp_montage_pair")
    img = spectralign.Image(str(folder / "C2-20250523_montage_YFP_ideal_02.jpg"))
    img_ = spectralign.Image(str(folder / "C2-20250523_montage_YFP_ideal_03.jpg"))
    H, W = img.shape
    p0 = (0.9 * W, 0.5 * H)
    p0_ = (0.1 * W, 0.5 * H)
    matcher = spectralign.Matcher(img, img_)
    p, p_ = matcher.refine(p0, p0_, size=(512, 1024), iters=3)
    # difference over the overlap, at the nominal and at the found offset
    size = (128, 512)
    nominal = img.straightwindow(p0, size).rmsdelta(img_.straightwindow(p0_, size))
    c = (0.85 * W, 0.5 * H)
    found = img.straightwindow(c, size).rmsdelta(img_.straightwindow(c - p + p_, size))
    assert found < 0.5 * nominal, (found, nominal)
    # the README's finer grid: where the SNR vouches for a small-window
    # match (sparse fluorescence leaves many windows empty), it agrees
    trusted = []
    for dx in [-50, 50]:
        for dy in range(-H // 2 + 100, H // 2 - 100, 100):
            match = matcher.refine(p + (dx, dy), p_ + (dx, dy), size=128, iters=3)
            p1, p1_ = match
            if match.snr > 10:
                trusted.append(p1_ - p1)
    assert len(trusted) >= 4
    np.testing.assert_allclose(trusted, np.broadcast_to(p_ - p, (len(trusted), 2)), atol=1.0)
