"""FFT backend: numbers against numpy, pyfftw against scipy, per-thread plans."""

import pickle
import threading

import numpy as np
import pytest

import spectralign
from spectralign.match import fft as _fft
from conftest import fourier_shifted

needs_pyfftw = pytest.mark.skipif(_fft.pyfftw is None, reason="pyfftw is not installed")


@pytest.fixture
def fresh_plans(monkeypatch):
    """An empty per-thread plan cache for this test only."""
    monkeypatch.setattr(_fft, "_local", threading.local())


@pytest.fixture(params=["pyfftw", "scipy"])
def backend(request, monkeypatch, fresh_plans):
    """Run a test with each FFT backend (pyfftw only where installed)."""
    if request.param == "scipy":
        monkeypatch.setattr(_fft, "pyfftw", None)
    elif _fft.pyfftw is None:
        pytest.skip("pyfftw is not installed")
    assert _fft.backend() == request.param
    return request.param


def filled_plan(batch, shape, seed=0):
    plan = _fft.RealFFT2(batch, shape)
    data = np.random.default_rng(seed).standard_normal((2 * batch, *shape)).astype(np.float32)
    plan.real[...] = data
    return plan, data


@pytest.mark.parametrize("batch, shape", [(1, (16, 16)), (3, (12, 15)), (2, (9, 20))])
def test_forward_is_numpy_rfft2_and_backward_is_unnormalized(backend, batch, shape):
    plan, data = filled_plan(batch, shape)
    assert plan.real.shape == (2 * batch, *shape) and plan.real.dtype == np.float32
    assert plan.spectrum.shape == (2 * batch, shape[0], shape[1] // 2 + 1)
    assert plan.spectrum.dtype == np.complex64
    plan.forward()
    want = np.fft.rfft2(data.astype(np.float64))
    scale = np.abs(want).max()
    np.testing.assert_allclose(plan.spectrum, want, rtol=0, atol=1e-5 * scale)
    plan.backward()  # the first B spectra back into real[:B], times H * W
    n = shape[0] * shape[1]
    np.testing.assert_allclose(plan.real[:batch], n * data[:batch], rtol=0, atol=1e-4 * n)
    np.testing.assert_array_equal(plan.real[batch:], data[batch:])  # untouched


@needs_pyfftw
def test_scipy_fallback_gives_the_pyfftw_numbers(monkeypatch, fresh_plans):
    fast, data = filled_plan(2, (24, 30), seed=3)
    fast.forward()
    monkeypatch.setattr(_fft, "pyfftw", None)
    slow, _ = filled_plan(2, (24, 30), seed=3)
    assert type(slow.real) is np.ndarray
    slow.forward()
    scale = np.abs(fast.spectrum).max()
    np.testing.assert_allclose(slow.spectrum, fast.spectrum, rtol=0, atol=2e-6 * scale)
    fast.spectrum[...] = slow.spectrum  # same input to both inverse transforms
    fast.backward()
    slow.backward()
    np.testing.assert_allclose(slow.real[:2], fast.real[:2], rtol=0,
                               atol=2e-6 * np.abs(fast.real[:2]).max())


def test_get_plan_is_cached_per_thread(fresh_plans):
    plan = _fft.get_plan(2, (16, 16))
    assert _fft.get_plan(2, (16, 16)) is plan
    assert _fft.get_plan(2, [16, 16]) is plan  # the shape may be any sequence
    assert _fft.get_plan(3, (16, 16)) is not plan
    assert _fft.get_plan(2, (16, 18)) is not plan
    assert _fft.get_plan(2, (16, 16), threads=2) is not plan
    other = []
    thread = threading.Thread(target=lambda: other.append(_fft.get_plan(2, (16, 16))))
    thread.start()
    thread.join()
    assert len(other) == 1 and isinstance(other[0], _fft.RealFFT2)
    assert other[0] is not plan and other[0].real is not plan.real  # no shared buffers
    assert _fft.get_plan(2, (16, 16)) is plan  # this thread's plan is still there


def test_plan_cache_is_bounded_least_recently_used_first(monkeypatch, fresh_plans):
    monkeypatch.setattr(_fft, "_PLANS_PER_THREAD", 3)
    a = _fft.get_plan(1, (4, 4))
    b = _fft.get_plan(1, (4, 6))
    assert _fft.get_plan(1, (4, 4)) is a  # a is now the most recently used
    _fft.get_plan(1, (6, 4))
    _fft.get_plan(1, (6, 6))  # evicts b, the least recently used
    assert len(_fft._local.plans) == 3
    assert _fft.get_plan(1, (4, 4)) is a
    assert _fft.get_plan(1, (4, 6)) is not b


def test_matcher_refine_agrees_across_backends(monkeypatch, fresh_plans):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(9)
    crop = gaussian_filter(rng.random((192, 192)), 1.3).astype(np.float32)
    moved = fourier_shifted(crop, (4.3, -2.6))
    a, b = crop[32:160, 32:160], moved[32:160, 32:160]
    first = spectralign.Matcher(a, b).refine((64, 64), (64, 64), 96, iters=3)
    monkeypatch.setattr(_fft, "pyfftw", None)
    monkeypatch.setattr(_fft, "_local", threading.local())  # no plan made with pyfftw
    second = spectralign.Matcher(a, b).refine((64, 64), (64, 64), 96, iters=3)
    assert type(_fft.get_plan(1, (96, 96)).real) is np.ndarray  # really the fallback
    np.testing.assert_allclose(second.p, first.p, atol=1e-3)
    np.testing.assert_allclose(second.p_, first.p_, atol=1e-3)
    np.testing.assert_allclose(second.p_ - second.p, (4.3, -2.6), atol=0.05)
    assert second.snr == pytest.approx(first.snr, rel=1e-3)


@needs_pyfftw
def test_wisdom_is_saved_and_bad_wisdom_is_ignored(tmp_path, monkeypatch):
    path = tmp_path / "wisdom.pkl"
    monkeypatch.setenv("SPECTRALIGN_FFTW_WISDOM", str(path))
    monkeypatch.setattr(_fft, "_wisdom_loaded", False)
    _fft.RealFFT2(1, (10, 14))
    assert _fft._wisdom_loaded
    with open(path, "rb") as f:
        wisdom = pickle.load(f)
    assert isinstance(wisdom, tuple) and all(isinstance(w, bytes) for w in wisdom)
    for junk in (b"not a pickle", pickle.dumps("not wisdom"), pickle.dumps(7), b""):
        path.write_bytes(junk)
        monkeypatch.setattr(_fft, "_wisdom_loaded", False)
        plan, data = filled_plan(1, (10, 14))  # planning still works
        plan.forward()
        np.testing.assert_allclose(plan.spectrum, np.fft.rfft2(data), rtol=0, atol=1e-4)
