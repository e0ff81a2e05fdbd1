"""The compiled per-iteration passes give the numbers of the numpy maths."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter

from spectralign.match import kernels as _kernels, peaks as _peaks, spectral as _spectral
from spectralign.errors import WindowOutsideImageError

pytestmark = pytest.mark.skipif(_kernels.backend() != "numba", reason="numba is not installed")


def _scene(rng, shape):
    return gaussian_filter(rng.random(shape), 1.5).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(4, 40), w=st.integers(4, 40), seed=st.integers(0, 2**31),
       ox=st.integers(-35, 60), oy=st.integers(-35, 60))
@example(h=33, w=10, seed=0, ox=0, oy=49)  # a window mostly past the edge: tiny energy
def test_apodize_windows_equals_numpy(h, w, seed, ox, oy):
    rng = np.random.default_rng(seed)
    img = _scene(rng, (50, 60))
    apod = _spectral.apodization_window((h, w))
    origins = np.array([[ox, oy], [5, 7]])
    if ox + w <= 0 or oy + h <= 0 or ox >= 60 or oy >= 50:
        with pytest.raises(WindowOutsideImageError, match="wholly"):
            _kernels.apodize_windows(img, origins, 0.3, apod, np.empty((2, h, w), np.float32))
        return
    ours = np.empty((2, h, w), np.float32)
    ref = np.empty((2, h, w), np.float32)
    m, e = _kernels.apodize_windows(img, origins, 0.3, apod, ours)
    m_ref, e_ref = _kernels._apodize_numpy(img, origins, 0.3, apod, ref)
    np.testing.assert_allclose(ours, ref, atol=2e-6)
    np.testing.assert_allclose(m, m_ref, rtol=1e-5)
    # energies of windows mostly filled with their own mean are tiny: float32
    # rounding of each pixel (about 1e-7 of it, values <= 1) sets the floor
    np.testing.assert_allclose(e, e_ref, rtol=1e-4, atol=2e-7 * h * w)


@pytest.mark.parametrize("exponent, noise_floor", [(-0.65, 4.0), (-1.0, 0.0), (0.0, 0.0), (-0.3, 2.0)])
@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (33, 17)])
def test_weigh_cross_power_equals_numpy(exponent, noise_floor, shape):
    rng = np.random.default_rng(3)
    h, w = shape
    spectra = np.fft.rfft2(rng.standard_normal((4, h, w))).astype(np.complex64)
    dead = np.array([False, True])
    a1, a2 = spectra[:2].copy(), spectra[2:].copy()
    b1, b2 = spectra[:2].copy(), spectra[2:].copy()
    _kernels.weigh_cross_power(a1, a2, exponent, noise_floor, dead)
    _kernels._weigh_numpy(b1, b2, exponent, noise_floor, dead)
    # the fast power is piecewise linear in the bits of |X|: float32 rounding
    # of |X| moves it by up to a few 1e-5 relative
    np.testing.assert_allclose(a2, b2, rtol=1e-4, atol=1e-6 * np.abs(b2).max())
    np.testing.assert_array_equal(a1, a2)  # both slots hold the result
    assert not a1[1].any()  # a dead (textureless) pair is zero


@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (65, 33)])
def test_locate_peaks_equals_numpy(shape):
    rng = np.random.default_rng(5)
    h, w = shape
    scene = _scene(rng, (3, h + 8, w + 8))
    apod = _spectral.apodization_window(shape)
    a = scene[:, 2:h + 2, 3:w + 3]
    b = scene[:, 4:h + 4, 1:w + 1]  # content moved by (dy, dx) = (-2, 2)
    a, b = [(v - v.mean(axis=(1, 2), keepdims=True)) * apod for v in (a, b)]
    x = np.fft.rfft2(a) * np.conj(np.fft.rfft2(b))
    x = (x / np.abs(x) ** 0.65).astype(np.complex64)
    corr = np.fft.irfft2(x, s=shape, norm="forward").astype(np.float32)
    at, value, width, snr = _kernels.locate_peaks(corr, x)
    argmax, total, energy = _kernels.surface_stats(corr, x)
    peaks = _peaks.integer_peaks(corr, argmax)
    at_ref, value_ref, width_ref = _peaks.refine_peaks(x, corr, peaks)
    snr_ref = _peaks.peak_snr(corr, peaks, value_ref)
    np.testing.assert_allclose(at, at_ref, atol=1e-5)
    np.testing.assert_allclose(at, [[2, -2]] * 3, atol=0.3)  # and it is the true peak
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    np.testing.assert_allclose(width, width_ref, rtol=1e-4)
    np.testing.assert_allclose(snr, snr_ref, rtol=1e-4)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(8, 70), w=st.integers(8, 70), seed=st.integers(0, 2**31),
       noise=st.sampled_from([0.0, 0.05, 0.5]))
def test_weigh_snr_equals_numpy(h, w, seed, noise):
    rng = np.random.default_rng(seed)
    a = _scene(rng, (3, h, w)) + rng.normal(0, noise, (3, h, w)).astype(np.float32)
    b = np.roll(a, (1, -2), axis=(1, 2)) + rng.normal(0, noise, (3, h, w)).astype(np.float32)
    s1 = np.fft.rfft2(a).astype(np.complex64)
    s2 = np.fft.rfft2(b).astype(np.complex64)
    dead = np.array([False, True, False])
    c1, c2, r1, r2 = s1.copy(), s2.copy(), s1.copy(), s2.copy()
    _kernels.weigh_snr(c1, c2, (h, w), dead)
    _kernels.weigh_snr(r1, r2, (h, w), dead, compiled=False)
    scale = np.abs(r2).max() + 1e-30
    np.testing.assert_allclose(c2 / scale, r2 / scale, atol=2e-5)
    np.testing.assert_array_equal(c1, c2)
    assert not np.any(c2[1])


@pytest.mark.parametrize("method", ["mean", "max", "first", "last"])
@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("affine", [False, True])
def test_render_kernel_equals_numpy(monkeypatch, method, order, affine):
    from spectralign import Affine, Renderer

    rng = np.random.default_rng(11)
    tiles = {(r, c): (rng.random((40, 50)) * 200).astype(np.float32)
             for r in range(2) for c in range(2)}
    placed = {}
    for (r, c) in tiles:
        t = Affine.translator((c * 43.3 + r * 1.7, r * 33.6 - c * 2.2))
        if affine:
            t = t @ Affine.rotator(rng.uniform(-0.05, 0.05), (25, 20)) @ Affine.scaler(1.02)
        placed[(r, c)] = t

    def render():
        ren = Renderer(affine=placed, tilesize=(50, 40), blend=6, method=method, order=order,
                       chunk=32)
        for t, img in tiles.items():
            ren.render(t, img)
        return ren.canvas.astype(np.float64).compute(scheduler="synchronous")

    ours = render()
    monkeypatch.setattr(_kernels, "backend", lambda: "numpy")
    monkeypatch.setattr(_kernels, "compiled_loops", lambda: None)
    ref = render()
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-4)  # float32 rounding
