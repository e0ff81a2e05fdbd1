"""Seam scores from the pixels, every model, on the real tile sets we have.

    python benchmarks/bench_seams.py            # all sets, a markdown table
    python benchmarks/bench_seams.py --json out.json

Every solution is scored the same way, by :func:`spectralign.seam_scores`:
both tiles resampled at the same model points of each overlap (after a
Gaussian of 1 px), NCC.  Compared on the same tiles: the stage layout, a
reference solution where there is one (the shipped SEM grid's, from a
feature-based tool), the truth where it is known (grids cut from graph
paper), and every model of ours.  Also: tile scales (singular values of
each linear part), the montage's extent against the stage layout's, and the
largest distance of a tile centre from the reference or truth (after the
mean offset).  Stacks: NCC between neighbouring sections, aligned and as
given (30 real ssTEM sections, each turned and moved by a known rigid
transform).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile

import spectralign
from spectralign.pipelines.inputs import grid_positions
from spectralign.datasets import graph_paper, perturb_sections, stitch2d_grid, synthetic_grid

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MODELS = [("translation", None), ("euclidean", None), ("similarity", None),
          ("affine", None), ("affine", 0.0)]


def _label(model, reg):
    return model if reg is None else f"{model} (regularize={reg:g})"


def _scores(tiles, transforms, pairs):
    ncc = np.array([s.ncc for s in spectralign.seam_scores(tiles, transforms, pairs)])
    ncc = ncc[np.isfinite(ncc)]
    return float(np.median(ncc)), float(ncc.min())


def _centre_error(transforms, truth, size):
    """Largest distance of a tile centre from the truth's, mean offset removed."""
    w, h = size
    c = np.array([[w / 2, h / 2]])
    ours = np.array([transforms[t](c)[0] for t in truth])
    ref = np.array([np.asarray(truth[t], float) + (w / 2, h / 2) for t in truth])
    d = ours - ref
    d -= d.mean(0)
    return float(np.hypot(*d.T).max())


def montage_rows(name, tiles, nominal, size, reference=None, ref_name="reference", **kw):
    """Rows for one tile set: the stage, the reference, every model."""
    ids = list(range(len(tiles)))
    src = dict(zip(ids, tiles))
    first = None
    rows = []
    for model, reg in MODELS:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = spectralign.stitch_grid(tiles, positions=dict(zip(ids, map(tuple, nominal))),
                                        model=model, regularize=reg, **kw)
        seconds = time.perf_counter() - t0
        if first is None:  # the overlaps every solution is scored on
            first = [(o.t, o.t_) for o in m.overlaps]
            med, lo = _scores(src, dict(zip(ids, map(tuple, nominal))), first)
            rows.append(dict(set=name, solution="stage layout", median=med, min=lo))
            if reference is not None:
                med, lo = _scores(src, dict(zip(ids, map(tuple, reference))), first)
                rows.append(dict(set=name, solution=ref_name, median=med, min=lo))
        med, lo = _scores(src, m.transforms, first)
        sc = m.placement.scales
        row = dict(set=name, solution=_label(model, reg), median=med, min=lo,
                   scale_lo=float(sc.min()), scale_hi=float(sc.max()),
                   extent=[round(v, 4) for v in m.extent_ratio], seconds=seconds,
                   warnings=len(caught))
        if reference is not None:
            row["centre_err"] = _centre_error(m.transforms, dict(zip(ids, reference)), size)
        rows.append(row)
    return rows


def stack_rows():
    imgs = [np.asarray(spectralign.Image(str(DATA / "sstem_stack" / f"{z}.png")))
            for z in range(30)]
    moved, _ = perturb_sections(imgs, shift=30, angle=2, seed=4)
    rows = []
    pairs = [(z, z + 1) for z in range(len(moved) - 1)]
    src = dict(enumerate(moved))
    med, lo = _scores(src, {z: (0.0, 0.0) for z in src}, pairs)
    rows.append(dict(set="ssTEM stack, 30 sections (+-30 px, +-2 deg)", solution="as given",
                     median=med, min=lo))
    for model, reg in MODELS:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            st = spectralign.align_stack(moved, model=model, regularize=reg)
        seconds = time.perf_counter() - t0
        ncc = np.array([s.ncc for s in st.seams])
        sc = st.placement.scales
        rows.append(dict(set=rows[0]["set"], solution=_label(model, reg),
                         median=float(np.nanmedian(ncc)), min=float(np.nanmin(ncc)),
                         scale_lo=float(sc.min()), scale_hi=float(sc.max()), seconds=seconds,
                         warnings=len(caught)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    g = stitch2d_grid()
    tiles = [g.tiles[r, c] for r in range(g.rows) for c in range(g.cols)]
    w, h = np.asarray(tiles[0]).shape[::-1]
    _, nominal = grid_positions(len(tiles), (g.rows, g.cols), (w, h), g.overlap)
    ref = [g.reference[r, c] for r in range(g.rows) for c in range(g.cols)]
    rows += montage_rows("SEM 2 x 3 grid (shipped)", tiles, nominal, (w, h), ref)
    fl = [tifffile.imread(DATA / "fluorescence_pair" / f"tile{k}.tif") for k in (0, 1)]
    rows += montage_rows("fluorescence pair", fl, np.array([[0.0, 0.0], [832.0, 0.0]]),
                         fl[0].shape[::-1])
    yfp = sorted((DATA / "yfp_montage_pair").glob("*.jpg"))
    rows += montage_rows("YFP montage pair", [str(p) for p in yfp],
                         np.array([[0.0, 0.0], [800.0, 0.0]]), (1200, 1200))
    for marks in (80, 200):
        gp = synthetic_grid(graph_paper(marks=marks, seed=1), (2, 5), 400, 0.2, stage_error=8,
                            noise=0.05, psf=1.0, vignetting=0.3, gain=0.1, seed=3)
        rows += montage_rows(f"graph paper 2 x 5, {marks} pen marks", gp.tiles, gp.nominal,
                             (400, 400), gp.truth, ref_name="truth")
    rows += stack_rows()
    print("| set | solution | seam NCC median | min | tile scales | extent / stage "
          "| centre error px | s | warnings |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        scales = f"{r['scale_lo']:.4f}-{r['scale_hi']:.4f}" if "scale_lo" in r else ""
        ext = " x ".join(f"{v:.3f}" for v in r["extent"]) if "extent" in r else ""
        err = f"{r['centre_err']:.2f}" if "centre_err" in r else ""
        sec = f"{r['seconds']:.1f}" if "seconds" in r else ""
        print(f"| {r['set']} | {r['solution']} | {r['median']:.3f} | {r['min']:.3f} | "
              f"{scales} | {ext} | {err} | {sec} | {r.get('warnings', '')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
