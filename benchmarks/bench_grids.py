"""Accuracy of ``stitch_grid`` on grids cut from the real images in ../shared/data.

    python benchmarks/bench_grids.py             # three seeds per grid
    python benchmarks/bench_grids.py --seeds 1

Tiles are cut at known subpixel positions (order-5 spline) with a uniform
stage error, Gaussian noise and vignetting (``datasets.synthetic_grid``);
``stitch_grid`` gets the tiles, the grid and the nominal overlap.  Errors:
distance of each tile from the truth after removing the mean offset.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.ndimage
import tifffile

import spectralign
from spectralign.datasets import synthetic_grid

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sources() -> dict[str, tuple[np.ndarray, dict]]:
    """Name -> (source image, synthetic_grid arguments)."""
    sem = tifffile.imread(DATA / "sem_texture" / "retic.tif")[:1024].astype(np.float64)
    rgb = tifffile.imread(DATA / "brightfield_he" / "cmu_small_region.svs")
    he = rgb.mean(axis=-1)[512:, 768:1792] / 255
    yfp = spectralign.Image(str(DATA / "yfp_montage_pair" / "C2-20250523_montage_YFP_ideal_02.jpg"))
    return {
        "SEM texture, 10 x 10 of 512 px": (
            scipy.ndimage.zoom(sem, 4.5, order=3),
            dict(grid=(10, 10), tile=512, overlap=0.16, stage_error=20, noise=0.1)),
        "H&E tissue, 10 x 4 of 512 px": (
            scipy.ndimage.zoom(he, 2, order=3),
            dict(grid=(10, 4), tile=512, overlap=0.16, stage_error=20, noise=0.1)),
        "YFP cells, 2 x 7 of 256 px": (
            scipy.ndimage.zoom(np.asarray(yfp, np.float64), 2, order=3),
            dict(grid=(2, 7), tile=256, overlap=0.17, stage_error=7.4, noise=0.05)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    for name, (image, kw) in sources().items():
        rms, worst, took = [], [], []
        for seed in range(args.seeds):
            synth = synthetic_grid(image, vignetting=0.2, seed=seed, **kw)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                montage = spectralign.stitch_grid(synth.tiles, grid=kw["grid"],
                                                  overlap=kw["overlap"])
            took.append(time.perf_counter() - t0)
            rows, cols = kw["grid"]
            pos = np.array([montage.positions[r, c] for r in range(rows) for c in range(cols)])
            err = pos - synth.truth
            err -= err.mean(axis=0)
            dist = np.hypot(err[:, 0], err[:, 1])
            rms.append(np.sqrt(np.mean(dist ** 2)))
            worst.append(dist.max())
        print(f"{name}: RMS {np.mean(rms):.3f} px (seeds {', '.join(f'{v:.3f}' for v in rms)}), "
              f"max {np.max(worst):.3f} px, {np.median(took):.1f} s per grid")


if __name__ == "__main__":
    main()
