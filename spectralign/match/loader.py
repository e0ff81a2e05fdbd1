"""Loading the compiled matching loops without making anyone wait for them.

Loading numba and the cached machine code of the loops takes about a
second in a fresh process (seconds more on the first run after an
install, when they are compiled), most of it holding the interpreter's
lock; the loops make matching 1.3 to 3 times faster than the numpy maths,
which repays that only after a hundred tile pairs or so.  So matching
starts with the numpy maths (the same numbers to float32 rounding), and
once a process has spent
``LOAD_AFTER`` seconds matching that way, :func:`spent` starts loading the
compiled loops on a background thread, which also runs one tiny
refinement so that every loop is compiled for the types matching uses.
From the next batch after they are ready, matching uses them.  Small jobs
never load them; large ones pay the load once, while they go on matching.

The state kept here is the one fact "the loops are loaded" (and the
seconds spent without them), as Python's import system keeps which modules
are loaded.
"""

from __future__ import annotations

import atexit
import logging
import threading

import numpy as np

__all__ = ["ready", "spent", "start", "wait", "LOAD_AFTER"]

#: Seconds of matching with numpy after which the compiled loops are loaded.
LOAD_AFTER = 2.0

_log = logging.getLogger("spectralign")
_done = threading.Event()
_lock = threading.Lock()
_started: list[threading.Thread] = []  # the loading thread, once started
_seconds = [0.0]  # spent matching with numpy


def _load() -> None:
    try:
        from . import kernels as _kernels

        if _kernels.compiled_loops() is not None:
            from .matcher import Matcher

            rng = np.random.default_rng(0)
            img = rng.random((48, 48)).astype(np.float32)
            m = Matcher(img, img)
            p = np.array([[24.0, 24.0]])
            for weighting in ("snr", "swiftir"):
                m.weighting = weighting
                m._refine_chunk(p, p + 1, (32, 32), 1, 1, 0.0, False, compiled=True)
    except Exception:  # noqa: BLE001 - numpy keeps working; say why once
        _log.warning("spectralign: the compiled loops could not be loaded; matching "
                     "goes on with numpy", exc_info=True)
        return
    _done.set()


def _start() -> bool:
    """Start the loading thread if numba is installed; False if it is not."""
    from . import kernels as _kernels

    if _kernels.backend() != "numba":
        return False
    with _lock:
        if not _started:
            thread = threading.Thread(target=_load, name="spectralign-load-loops", daemon=True)
            _started.append(thread)
            # a loader frozen by the interpreter's exit while FFTW plans
            # would hold pyfftw's lock and hang the exit: let it finish
            atexit.register(thread.join)
            thread.start()
    return True


def ready() -> bool:
    """True once the compiled loops are loaded."""
    return _done.is_set()


def spent(seconds: float) -> None:
    """Count ``seconds`` of matching with numpy; start loading the compiled
    loops once they add up to ``LOAD_AFTER``."""
    if _started or _done.is_set():
        return
    with _lock:
        _seconds[0] += seconds
        due = _seconds[0] >= LOAD_AFTER
    if due:
        _start()


def start() -> bool:
    """Start loading the compiled loops now, on the background thread,
    without waiting: for callers that load numba for loops of their own
    anyway (whole-image registration), so that the wait for numba is paid
    already.  False where numba is missing."""
    return _done.is_set() or _start()


def wait(timeout: float | None = None) -> bool:
    """Load the compiled loops now and wait until they are ready; True if
    they are (False where numba is missing or they failed to load)."""
    if _done.is_set():
        return True
    if not _start():
        return False
    _started[0].join(timeout)
    return _done.is_set()
