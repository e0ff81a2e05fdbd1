"""Run peer registration methods on window pairs (peer environment side).

This script is executed with the interpreter of the separate peer
environment (``benchmarks/.peer-env``, created by ``setup_peer_env.sh``),
which holds the original ``spectralign==0.2.0`` package and scikit-image.
Those packages are only imported and called here; none of their code is
part of this repository.  The benchmark side talks to this script through
``peers.run_peer``.

Usage
-----
``python peer_worker.py IN.npz OUT.npz``
    ``IN.npz`` holds ``a`` and ``b`` (float32, shape (K, H, W)), a scalar
    string ``mode`` and a scalar int ``repeats``.  ``OUT.npz`` receives
    ``shift`` (float64, shape (K, 2), columns (dx, dy)) and the scalar
    ``seconds_per_call``.
``python peer_worker.py --check``
    Verify the sign convention of every mode on synthetic rolled images.

Sign convention
---------------
All modes report ``d = (dx, dy)`` = position of a feature in ``b`` minus
the position of the same feature in ``a`` (x = column, y = row).  If
``b`` is ``a`` translated by +3 px in x (content moves right, e.g.
``b = np.roll(a, 3, axis=1)``), then ``dx = +3``.

Modes
-----
original
    ``spectralign.funcs.swim(funcs.apodize(a), b, wht=-0.65, rad=5)`` of
    spectralign 0.2.0: the stationary window ``a`` is apodized, the moving
    window ``b`` is not (as in the package's own ``Swim.align`` and
    ``stationaryPatches``/``movingPatches``/``multiSwim``).  Its (dx, dy)
    already follow the convention above.
original_class
    The package's object interface,
    ``Swim(wht=-0.65, rad=5).align(Image(a), Image(b)).shift``; same
    computation as ``original`` plus the ``Image`` wrapping.
skimage_up20
    ``skimage.registration.phase_cross_correlation(a, b,
    upsample_factor=20)`` (default ``normalization='phase'``).  It returns
    the (row, col) shift that registers ``b`` onto ``a``, i.e. ``-(dy, dx)``.
skimage_unnorm
    As ``skimage_up20`` with ``normalization=None``.

Timing
------
All computations are single-threaded (thread-count variables are set
before numpy is imported, and ``cv2.setNumThreads(1)``).  After one
warm-up call, ``repeats`` passes over all K pairs are timed with
``time.perf_counter``; ``seconds_per_call`` is the mean time per pair.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _original():
    import cv2
    from spectralign import funcs

    cv2.setNumThreads(1)

    def call(a, b):
        dx, dy, _sx, _sy, _snr = funcs.swim(funcs.apodize(a), b, -0.65, 5)
        return dx, dy

    return call


def _original_class():
    import cv2
    from spectralign import Image, Swim

    cv2.setNumThreads(1)

    def call(a, b):
        return Swim(wht=-0.65, rad=5).align(Image(a), Image(b)).shift

    return call


def _skimage(normalization):
    from skimage.registration import phase_cross_correlation

    def call(a, b):
        shift = phase_cross_correlation(a, b, upsample_factor=20,
                                        normalization=normalization)[0]
        return -shift[1], -shift[0]

    return call


MODES = {
    "original": _original,
    "original_class": _original_class,
    "skimage_up20": lambda: _skimage("phase"),
    "skimage_unnorm": lambda: _skimage(None),
}


def run(mode, a, b, repeats=3):
    """Apply one peer method to every window pair and time it.

    Parameters
    ----------
    mode : str
        One of ``MODES``.
    a, b : ndarray, shape (K, H, W)
        Reference and moving windows (float32).
    repeats : int
        Number of timed passes over all K pairs.

    Returns
    -------
    shift : ndarray, shape (K, 2)
        (dx, dy) per pair, convention described in the module docstring.
    seconds_per_call : float
        Mean wall time of one pair registration.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {sorted(MODES)}")
    call = MODES[mode]()
    a = [np.ascontiguousarray(x, dtype=np.float32) for x in a]
    b = [np.ascontiguousarray(x, dtype=np.float32) for x in b]
    call(a[0], b[0])  # warm-up
    shift = np.array([call(x, y) for x, y in zip(a, b)], dtype=np.float64)
    repeats = max(int(repeats), 1)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for x, y in zip(a, b):
            call(x, y)
    seconds = (time.perf_counter() - t0) / (repeats * len(a))
    return shift.reshape(len(a), 2), seconds


def check():
    """Verify the sign convention of every mode on a rolled synthetic image.

    The test uses a circular ``np.roll`` so that the shift is exact for
    every method (un-windowed phase correlation can lock onto the window
    edges of non-periodic crops of smooth images).
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    a = gaussian_filter(rng.standard_normal((256, 256)), 2).astype(np.float32)
    truth = np.array([3, -5])  # content of b moved right 3 px and up 5 px
    b = np.roll(a, (truth[1], truth[0]), axis=(0, 1))
    ok = True
    for mode in MODES:
        shift, _ = run(mode, a[None], b[None], repeats=1)
        good = np.allclose(shift[0], truth, atol=0.25)
        ok &= good
        print(f"{mode:15s} dx,dy = {shift[0].round(3)}  expected {truth}"
              f"  {'OK' if good else 'MISMATCH'}")
    return ok


def main(argv):
    if argv[1:] == ["--check"]:
        return 0 if check() else 1
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with np.load(argv[1], allow_pickle=False) as data:
        a, b = data["a"], data["b"]
        mode, repeats = str(data["mode"][()]), int(data["repeats"])
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"a and b must have equal shape (K, H, W), got "
                         f"{a.shape} and {b.shape}")
    shift, seconds = run(mode, a, b, repeats)
    np.savez(argv[2], shift=shift, seconds_per_call=np.float64(seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
