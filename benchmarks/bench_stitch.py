"""End to end: ``spectralign stitch`` against m2stitch on one grid with ground truth.

    bash benchmarks/setup_peer_env.sh             # once: the peers' environment
    python benchmarks/bench_stitch.py             # 20 x 20 grid of 1024 px tiles
    python benchmarks/bench_stitch.py --grid 6    # smaller, for a smoke run

Tiles are cut from a random texture (white noise smoothed at two scales)
at known subpixel positions (cubic spline), uint16 with Gaussian noise, at
a 15 % nominal overlap (85 % step) with uniform stage error of +-20 px.  Both tools get the files, the grid and the
overlap (m2stitch as its initial position guess, with its tiles shifted to
a mean of 1: its NCC leaves the mean in the denominator); each runs in its own process, its time and peak memory (``VmHWM``)
measured there.  Errors are the distance of each tile's found position from
the truth after removing the mean offset.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PEER_PYTHON = HERE / ".peer-env" / "bin" / "python"

OURS = r"""
import json, sys, time
t0 = time.perf_counter()
from spectralign import cli
folder, n, overlap = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rc = cli.main(["stitch", folder + "/tile_*.tif", "--grid", f"{n}x{n}", "--overlap", overlap,
               "-o", folder + "/ours.ome.zarr", "-q", "--overwrite"])
elapsed = time.perf_counter() - t0
doc = json.load(open(folder + "/ours.json"))
pos = {t["cell"][0] * n + t["cell"][1]: t["position"] for t in doc["tiles"]}
peak = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"rc": rc, "seconds": elapsed, "peak_mb": peak,
                  "positions": [pos[k] for k in range(n * n)]}))
"""

PEER = r"""
import json, sys, time, glob
import numpy as np, tifffile, m2stitch
t0 = time.perf_counter()
folder, n = sys.argv[1], int(sys.argv[2])
files = sorted(glob.glob(folder + "/tile_*.tif"))
# m2stitch's NCC does not subtract the mean in its denominator: give it
# (nearly) zero-mean tiles, as a user would after reading its code; exactly
# zero would make its phase correlation divide 0 by 0 at the zero frequency
images = np.stack([tifffile.imread(f) for f in files]).astype(np.float32)
images -= images.mean(axis=(1, 2), keepdims=True) - 1.0
step = int(sys.argv[3]) * (1 - float(sys.argv[4]))
rows = [i // n for i in range(n * n)]
cols = [i % n for i in range(n * n)]
guess = [[r * step, c * step] for r, c in zip(rows, cols)]  # the layout, as ours gets
df, _ = m2stitch.stitch_images(images, rows, cols, position_initial_guess=guess,
                               row_col_transpose=False)
elapsed = time.perf_counter() - t0
peak = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"seconds": elapsed, "peak_mb": peak,
                  "positions": [[float(df["x_pos"][i]), float(df["y_pos"][i])] for i in range(n * n)]}))
"""


def make_tiles(folder: Path, n: int, tile: int, overlap: float, stage_error: float = 20,
               seed: int = 0) -> np.ndarray:
    """Cut an n x n grid from a random texture at known subpixel positions."""
    import scipy.ndimage
    import tifffile

    rng = np.random.default_rng(seed)
    step = tile * (1 - overlap)
    m = 16  # margin for the interpolation
    truth = np.array([(c * step, r * step) for r in range(n) for c in range(n)])
    truth += stage_error + m + rng.uniform(-stage_error, stage_error, truth.shape)
    side = int(truth.max() + tile + m + 8)
    canvas = rng.standard_normal((side, side), dtype=np.float32)
    fine = scipy.ndimage.gaussian_filter(canvas, 1.5)
    coarse = scipy.ndimage.gaussian_filter(canvas, 8.0)
    canvas = fine / fine.std() + 0.5 * coarse / coarse.std()
    del fine, coarse
    for i, (x, y) in enumerate(truth):
        ix, iy = int(np.floor(x)), int(np.floor(y))
        crop = canvas[iy - m:iy + tile + m, ix - m:ix + tile + m]
        img = scipy.ndimage.shift(crop, (iy - y, ix - x), order=3, mode="nearest")
        img = img[m:m + tile, m:m + tile]
        img = 30000 + 8000 * img + rng.normal(0, 2000, img.shape)
        tifffile.imwrite(folder / f"tile_{i:04d}.tif",
                         np.clip(img, 0, 65535).astype(np.uint16))
    return truth


def errors(found, truth) -> np.ndarray:
    d = np.asarray(found, float) - truth
    d -= d.mean(axis=0)
    return np.hypot(d[:, 0], d[:, 1])


def run(code: str, python, folder: Path, n: int, *extra) -> dict:
    out = subprocess.run([str(python), "-c", code, str(folder), str(n), *map(str, extra)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{python} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=20, help="n for an n x n grid")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=float, default=0.15)
    parser.add_argument("--stage-error", type=float, default=20.0,
                        help="uniform stage error, +- px per axis (default 20)")
    parser.add_argument("--scratch", default=None, help="folder for the tiles (default: temp)")
    parser.add_argument("--skip-peer", action="store_true", help="run spectralign only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        truth = make_tiles(folder, args.grid, args.tile, args.overlap, args.stage_error)
        print(f"made {args.grid}x{args.grid} tiles of {args.tile} px in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        rows = {}
        ours = run(OURS, sys.executable, folder, args.grid, args.overlap)
        e = errors(ours["positions"], truth)
        rows["spectralign stitch"] = dict(seconds=ours["seconds"], peak_mb=ours["peak_mb"],
                                          rms=float(np.sqrt((e ** 2).mean())), max=float(e.max()))
        print(f"spectralign stitch: {ours['seconds']:.1f} s, peak {ours['peak_mb']:.0f} MB, "
              f"RMS {rows['spectralign stitch']['rms']:.3f} px, max {e.max():.3f} px", flush=True)
        if args.skip_peer:
            pass
        elif PEER_PYTHON.exists():
            peer = run(PEER, PEER_PYTHON, folder, args.grid, args.tile, args.overlap)
            e = errors(peer["positions"], truth)
            rows["m2stitch"] = dict(seconds=peer["seconds"], peak_mb=peer["peak_mb"],
                                    rms=float(np.sqrt((e ** 2).mean())), max=float(e.max()))
            print(f"m2stitch: {peer['seconds']:.1f} s, peak {peer['peak_mb']:.0f} MB, "
                  f"RMS {rows['m2stitch']['rms']:.3f} px, max {e.max():.3f} px", flush=True)
        else:
            print("(m2stitch skipped: run `bash benchmarks/setup_peer_env.sh` first)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"stitch_{args.grid}x{args.grid}_e{args.stage_error:g}.json").write_text(json.dumps(
        {"grid": args.grid, "tile": args.tile, "overlap": args.overlap,
         "stage_error": args.stage_error, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
