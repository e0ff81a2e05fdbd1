"""FFT backend: batched real 2-D transforms with per-thread plans.

pyfftw is used when it is installed, with plans cached per shape *and per
thread* (one FFTW plan executed from two threads at once gives wrong
results).  A new shape is first planned with ``FFTW_ESTIMATE``, which
costs nothing; once a plan has spent ``MEASURE_AFTER`` seconds executing,
it is planned again with ``FFTW_MEASURE``.  Measuring takes 0.3 to 0.9 s
per shape here and the measured plan is 1.2 to 1.5 times faster (1.5 at
1024 x 1024), so it pays for itself after some 3 s of executing: small
jobs never pay for planning and large ones soon run on measured plans.
FFTW accumulates wisdom in the process, so a second thread that plans a
shape already measured by another pays almost nothing.  Set the environment variable ``SPECTRALIGN_FFTW_WISDOM``
to a file path to keep that wisdom between processes.  Without pyfftw,
``scipy.fft`` is used.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections import OrderedDict

import numpy as np
import scipy.fft

try:  # pragma: no cover - exercised by whichever backend is installed
    import pyfftw
except ImportError:  # pragma: no cover
    pyfftw = None

__all__ = ["RealFFT2", "get_plan", "backend"]

_PLANS_PER_THREAD = 16
#: Seconds a plan executes before it is measured (see the module notes).
MEASURE_AFTER = 3.0
_local = threading.local()
_planner_lock = threading.Lock()
_wisdom_loaded = False
#: Plan keys measured in this process: every thread's plan for them is
#: then measured too (from the wisdom, at almost no cost), so that threads
#: run the same measured algorithm (algorithms differ in the last bits).
_measured: set = set()


def backend() -> str:
    """Name of the FFT library in use: ``"pyfftw"`` or ``"scipy"``."""
    return "pyfftw" if pyfftw is not None else "scipy"


def _wisdom_path() -> str | None:
    return os.environ.get("SPECTRALIGN_FFTW_WISDOM") or None


def _load_wisdom() -> None:
    global _wisdom_loaded
    _wisdom_loaded = True
    path = _wisdom_path()
    if path and os.path.exists(path):
        try:
            with open(path, "rb") as f:
                pyfftw.import_wisdom(pickle.load(f))
        except Exception:  # unreadable, stale or foreign wisdom only costs planning time
            pass


def _save_wisdom() -> None:
    path = _wisdom_path()
    if path:
        try:
            with open(path, "wb") as f:
                pickle.dump(pyfftw.export_wisdom(), f)
        except OSError:
            pass


class RealFFT2:
    """Forward and inverse real 2-D FFTs of a stack of ``2 B`` windows.

    ``real`` is a ``(2 B, H, W)`` float32 buffer: fill it, call
    :meth:`forward`, and ``spectrum`` (``(2 B, H, W // 2 + 1)`` complex64)
    holds the transforms.  :meth:`backward` transforms the first ``B``
    spectra back into ``real[:B]``, destroying ``spectrum[:B]``; the result
    is *not* divided by ``H W``.

    Parameters
    ----------
    batch : int
        Number of window pairs ``B``.
    shape : (int, int)
        Window shape ``(H, W)`` in numpy order.
    threads : int
        Threads FFTW may use for one transform.
    """

    def __init__(self, batch: int, shape: tuple[int, int], threads: int = 1,
                 measure: bool = True):
        height, width = shape
        self.batch = batch
        self.shape = (height, width)
        full = (2 * batch, height, width)
        spec = (2 * batch, height, width // 2 + 1)
        if pyfftw is not None:
            self.real = pyfftw.empty_aligned(full, dtype=np.float32)
            self.spectrum = pyfftw.empty_aligned(spec, dtype=np.complex64)
            with _planner_lock:
                if not _wisdom_loaded:
                    _load_wisdom()
                flags = ("FFTW_MEASURE",) if measure else ("FFTW_ESTIMATE",)
                self._fwd = pyfftw.FFTW(self.real, self.spectrum, axes=(-2, -1),
                                        flags=flags, threads=threads)
                self._bwd = pyfftw.FFTW(self.spectrum[:batch], self.real[:batch],
                                        axes=(-2, -1), direction="FFTW_BACKWARD",
                                        flags=flags + ("FFTW_DESTROY_INPUT",),
                                        threads=threads)
                if measure:
                    _save_wisdom()
        else:
            self.real = np.empty(full, dtype=np.float32)
            self.spectrum = np.empty(spec, dtype=np.complex64)
            self._fwd = self._bwd = None
        self._threads = threads
        self.measured = measure or self._fwd is None
        self.seconds = 0.0  # spent executing, while not measured

    def _execute(self, fftw) -> None:
        """Run an FFTW plan, timing it while it is only estimated."""
        if self.measured:
            fftw.execute()
            return
        t0 = time.perf_counter()
        fftw.execute()
        self.seconds += time.perf_counter() - t0

    def forward(self) -> None:
        """Transform all of ``real`` into ``spectrum``."""
        if self._fwd is not None:
            self._execute(self._fwd)
        else:
            self.spectrum[...] = scipy.fft.rfft2(self.real, workers=self._threads)

    def backward(self) -> None:
        """Transform ``spectrum[:B]`` back into ``real[:B]`` (unnormalized)."""
        if self._bwd is not None:
            self._execute(self._bwd)
        else:
            b = self.batch
            self.real[:b] = scipy.fft.irfft2(self.spectrum[:b], s=self.shape,
                                             norm="forward", workers=self._threads)


def get_plan(batch: int, shape: tuple[int, int], threads: int = 1) -> RealFFT2:
    """This thread's cached :class:`RealFFT2` for a batch size and shape.

    Plans (and their buffers) are never shared between threads.  A new
    plan is estimated; one that has executed for ``MEASURE_AFTER`` seconds
    is replaced by a measured one (fresh buffers: callers fill ``real``
    after asking for the plan), and from then on every thread's plan of
    that key is measured, so that all threads run the same algorithm.
    """
    cache = getattr(_local, "plans", None)
    if cache is None:
        cache = _local.plans = OrderedDict()
    key = (batch, tuple(shape), threads)
    plan = cache.get(key)
    if plan is None:
        plan = cache[key] = RealFFT2(batch, shape, threads, measure=key in _measured)
        while len(cache) > _PLANS_PER_THREAD:
            cache.popitem(last=False)
    else:
        if not plan.measured and (plan.seconds >= MEASURE_AFTER or key in _measured):
            plan = cache[key] = RealFFT2(batch, shape, threads, measure=True)
            _measured.add(key)
        cache.move_to_end(key)
    return plan
