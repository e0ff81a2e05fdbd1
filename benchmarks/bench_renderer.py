"""Renderer: peak memory and throughput writing big canvases to OME-Zarr, and
the speed ratio against the original package's way of rendering.

    python benchmarks/bench_renderer.py            # 10, 100, 400 tiles + ratio
    python benchmarks/bench_renderer.py --quick    # 4 and 16 tiles + ratio

Memory: n tiles of 2048 x 2048 uint16, written as uncompressed TIFFs to a
scratch folder and read lazily (memory-mapped) by the renderer, on a square
grid at a 1,995 px step (400 tiles: a 39,948 x 39,948 canvas, 3.2 GB);
``Renderer.to_zarr`` with the default threaded scheduler.  Each case runs in
a fresh subprocess; peak memory is that process's peak resident set
(``VmHWM``: Python, numpy, dask and zarr included).

Ratio: a 6 x 6 grid of 1,024 x 1,024 tiles (translation, then a small
affine per tile), ours (``Renderer.image``) against the original's method:
for every tile, allocate canvas-sized image and weight arrays, warp the tile
and its feathered weight into them over the whole canvas, and accumulate.
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

RESULTS = Path(__file__).parent / "results"

MEMORY_CHILD = r"""
import json, sys, time
from pathlib import Path


def peak_mb():
    # VmHWM: this process image's own peak (ru_maxrss would carry the
    # parent's peak across fork + exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

import numpy as np
import spectralign

folder, n, tile, step = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
side = int(n ** 0.5)
while n % side:
    side -= 1
rows, cols = (side, n // side)
pos = {(r, c): (c * step, r * step) for r in range(rows) for c in range(cols)}
renderer = spectralign.Renderer(rigid=pos, tilesize=(tile, tile), blend=50, chunk=1024)
for (r, c) in pos:
    renderer.render((r, c), folder / f"tile_{r}_{c}.tif")
t0 = time.perf_counter()
renderer.to_zarr(folder / "out.ome.zarr", overwrite=True)
dt = time.perf_counter() - t0
h, w = renderer.shape
print(json.dumps(dict(tiles=len(pos), canvas=[h, w], seconds=dt, mpx_per_s=h * w / dt / 1e6,
                      canvas_gb=h * w * 2 / 1e9,
                      peak_mb=peak_mb())))
"""


def make_tiles(folder: Path, n: int, tile: int, rng) -> None:
    import tifffile

    base = (rng.random((tile, tile)) * 65535).astype(np.uint16)
    side = int(n ** 0.5)
    while n % side:
        side -= 1
    for r in range(side):
        for c in range(n // side):
            path = folder / f"tile_{r}_{c}.tif"
            if not path.exists():
                tifffile.imwrite(path, np.roll(base, (r * 37, c * 53), (0, 1)))


def memory_case(folder: Path, n: int, tile: int = 2048, step: int = 1995) -> dict:
    make_tiles(folder, n, tile, np.random.default_rng(0))
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(folder), str(n), str(tile),
                          str(step)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def original_way(afms, tiles, shape, origin, blend):
    """Canvas-sized arrays per tile, whole-canvas warps, blend in memory."""
    import scipy.ndimage

    acc = np.zeros(shape)
    wsum = np.zeros(shape)
    for t, img in tiles.items():
        h, w = img.shape
        yy, xx = np.mgrid[0:h, 0:w]
        weight = (np.clip((np.minimum(xx, w - 1 - xx) + 0.5) / blend, 0, 1)
                  * np.clip((np.minimum(yy, h - 1 - yy) + 0.5) / blend, 0, 1))
        inv = np.linalg.inv(np.vstack([afms[t], [0, 0, 1]]))
        lin = inv[:2, :2][::-1, ::-1]
        off = (inv[:2, :2] @ np.asarray(origin, float) + inv[:2, 2])[::-1]
        full = scipy.ndimage.affine_transform(img.astype(np.float64), lin, off,
                                              output_shape=shape, order=1)
        fw = scipy.ndimage.affine_transform(weight, lin, off, output_shape=shape, order=1)
        acc += full * fw
        wsum += fw
    return np.where(wsum > 0, acc / np.maximum(wsum, 1e-12), 0)


def ratio_case(kind: str) -> dict:
    import spectralign

    rng = np.random.default_rng(1)
    n, tile, step = 6, 1024, 920
    tiles, afms = {}, {}
    for r in range(n):
        for c in range(n):
            tiles[(r, c)] = (rng.random((tile, tile)) * 255).astype(np.uint8)
            a = spectralign.Affine.translator((c * step + rng.uniform(-3, 3),
                                               r * step + rng.uniform(-3, 3)))
            if kind == "affine":
                a = a @ spectralign.Affine.rotator(rng.normal(0, 0.005), (512, 512))
            afms[(r, c)] = a
    # warm-up: the first render in a fresh install compiles the blend loop
    warm = spectralign.Renderer(rigid={0: (0.5, 0.5)}, tilesize=(8, 8))
    warm.render(0, np.zeros((8, 8), np.uint8))
    warm.image
    t0 = time.perf_counter()
    renderer = spectralign.Renderer(affine=afms, tilesize=(tile, tile), blend=20)
    for t, img in tiles.items():
        renderer.render(t, img)
    ours = renderer.image
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = original_way({t: a.matrix for t, a in afms.items()}, tiles, ours.shape,
                          renderer.origin, 20)
    t_theirs = time.perf_counter() - t0
    diff = float(np.abs(theirs[50:-50, 50:-50] - ours[50:-50, 50:-50]).mean())
    return dict(kind=kind, canvas=list(ours.shape), ours_s=t_ours, original_way_s=t_theirs,
                ratio=t_theirs / t_ours, mean_abs_diff=diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small canvases only")
    parser.add_argument("--scratch", default=None, help="folder for the tiles (default: temp)")
    args = parser.parse_args()
    rows = []
    for kind in ("translation", "affine"):
        r = ratio_case(kind)
        rows.append(r)
        print(f"6 x 6 grid, {kind:11s}: ours {r['ours_s']:.2f} s, original way "
              f"{r['original_way_s']:.1f} s, ratio {r['ratio']:.0f}x "
              f"(mean |difference| {r['mean_abs_diff']:.2f})", flush=True)
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        for n in ([4, 16] if args.quick else [10, 100, 400]):
            r = memory_case(Path(tmp), n)
            rows.append(r)
            h, w = r["canvas"]
            print(f"{r['tiles']:4d} tiles of 2048^2 uint16 -> {w} x {h} canvas "
                  f"({r['canvas_gb']:.2f} GB): {r['seconds']:.1f} s, {r['mpx_per_s']:.1f} Mpx/s, "
                  f"peak {r['peak_mb']:.0f} MB", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "renderer.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
