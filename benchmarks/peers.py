"""Call peer registration methods from the benchmark scripts.

The peer methods (the original GPL-licensed ``spectralign==0.2.0`` from
PyPI and scikit-image's ``phase_cross_correlation``) live in a separate
virtual environment, ``benchmarks/.peer-env``, created by
``bash benchmarks/setup_peer_env.sh``.  This module only exchanges arrays
with ``peer_worker.py`` running in that environment through a temporary
``.npz`` file; it needs nothing but numpy.

Available modes (see ``peer_worker.py`` for details): ``original``,
``original_class``, ``skimage_up20``, ``skimage_unnorm``.

Shifts follow one convention for every mode: ``(dx, dy)`` is the
position of a feature in ``b`` minus its position in ``a`` (x = column,
y = row); ``b = np.roll(a, 3, axis=1)`` gives ``dx = +3``.

The interpreter can be overridden with the ``SPECTRALIGN_PEER_PYTHON``
environment variable.
"""

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORKER = HERE / "peer_worker.py"
MODES = ("original", "original_class", "skimage_up20", "skimage_unnorm")


def peer_python():
    """Path of the peer environment's Python interpreter."""
    override = os.environ.get("SPECTRALIGN_PEER_PYTHON")
    return Path(override) if override else HERE / ".peer-env" / "bin" / "python"


def peer_available():
    """Return True if the peer environment's interpreter exists."""
    return peer_python().is_file() and os.access(peer_python(), os.X_OK)


def run_peer(mode, a, b, repeats=3, timeout=None):
    """Register window pairs with a peer method in the peer environment.

    Parameters
    ----------
    mode : str
        Peer method, one of ``MODES``.
    a, b : array_like, shape (K, H, W) or (H, W)
        Reference windows and moving windows (converted to float32).
    repeats : int, optional
        Number of timed passes over all pairs (after one warm-up call).
    timeout : float, optional
        Seconds after which the worker is killed.

    Returns
    -------
    dict
        ``shift``: ndarray (K, 2) of (dx, dy), position in ``b`` minus
        position in ``a``; ``seconds_per_call``: mean single-threaded
        wall time of one pair registration.

    Raises
    ------
    RuntimeError
        If the peer environment is missing or the worker fails.
    """
    if mode not in MODES:
        raise ValueError(f"unknown peer mode {mode!r}; choose from {MODES}")
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim != 3 or a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"a and b must both have shape (K, H, W) with K >= 1; "
                         f"got {a.shape} and {b.shape}")
    if not peer_available():
        raise RuntimeError(
            f"peer environment not found ({peer_python()}); "
            "create it with: bash benchmarks/setup_peer_env.sh")
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        src, dst = Path(tmp, "in.npz"), Path(tmp, "out.npz")
        np.savez(src, a=a, b=b, mode=np.array(mode), repeats=np.int64(repeats))
        proc = subprocess.run([str(peer_python()), str(WORKER), str(src), str(dst)],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"peer worker failed for mode {mode!r} "
                               f"(exit {proc.returncode}):\n{proc.stderr}")
        with np.load(dst) as out:
            return dict(shift=out["shift"],
                        seconds_per_call=float(out["seconds_per_call"]))
