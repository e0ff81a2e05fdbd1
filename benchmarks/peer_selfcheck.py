"""Self-check of the peer methods on a real SEM image at known offsets.

Cuts K window pairs from ``../shared/data/sem_texture/retic.tif`` (rows
below 1024 are the microscope's info bar and are dropped) at known integer
offsets, runs every peer mode through ``peers.run_peer`` and prints the RMS
error of the recovered shift (dx, dy) and the time per call.

Usage: ``python benchmarks/peer_selfcheck.py [--pairs K] [--sizes 256 512]``
(run ``bash benchmarks/setup_peer_env.sh`` first).
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import MODES, peer_python, run_peer  # noqa: E402

IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sem_texture" / "retic.tif"


def load_image(path):
    """Read a grayscale TIFF with tifffile, PIL, or else the peer env's tifffile."""
    try:
        import tifffile
        return tifffile.imread(path)
    except ImportError:
        pass
    try:
        from PIL import Image
        return np.asarray(Image.open(path))
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "img.npy")
        code = "import sys, numpy, tifffile; numpy.save(sys.argv[2], tifffile.imread(sys.argv[1]))"
        subprocess.run([str(peer_python()), "-c", code, str(path), str(out)], check=True)
        return np.load(out)


def make_pairs(img, size, k, max_shift, rng):
    """Cut K pairs of (size x size) windows at known integer offsets.

    Returns ``a, b`` of shape (K, size, size) and ``truth`` (K, 2) with
    (dx, dy) = position of a feature in ``b`` minus its position in ``a``.
    """
    h, w = img.shape
    truth = rng.integers(-max_shift, max_shift + 1, size=(k, 2))
    a = np.empty((k, size, size), np.float32)
    b = np.empty_like(a)
    for i, (dx, dy) in enumerate(truth):
        x0 = rng.integers(max_shift, w - size - max_shift + 1)
        y0 = rng.integers(max_shift, h - size - max_shift + 1)
        a[i] = img[y0:y0 + size, x0:x0 + size]
        b[i] = img[y0 - dy:y0 - dy + size, x0 - dx:x0 - dx + size]
    return a, b, truth


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--max-shift", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    img = load_image(IMAGE)[:1024].astype(np.float32)
    rng = np.random.default_rng(1)
    print(f"{'size':>5} {'mode':15s} {'rms err (px)':>12} {'max err (px)':>12} {'ms/call':>9}")
    for size in args.sizes:
        a, b, truth = make_pairs(img, size, args.pairs, args.max_shift, rng)
        for mode in MODES:
            res = run_peer(mode, a, b, repeats=args.repeats)
            err = np.hypot(*(res["shift"] - truth).T)
            print(f"{size:5d} {mode:15s} {np.sqrt(np.mean(err**2)):12.4f} "
                  f"{err.max():12.4f} {1e3 * res['seconds_per_call']:9.2f}")


if __name__ == "__main__":
    main()
