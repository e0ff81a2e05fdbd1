"""The README recipe under a microscope's conditions, against the original.

Usage::

    bash benchmarks/setup_peer_env.sh          # once: the peers' environment
    python benchmarks/bench_recipe.py [--quick]

Ground truth: grids of tiles cut at known subpixel positions
(``datasets.synthetic_grid``) from the real SEM texture (enlarged 2x) and
the H&E excerpt (gray) in ``../shared/data``, under a microscope's
conditions: a Gaussian PSF of sigma 0.7 px (nothing above ~0.45
cycles/px), 40 % vignetting, +-10 % gain and +-5 % offset per tile, white
Gaussian noise at SNR 8, 4, 1 and 0.5 (the blurred image's standard
deviation over the noise's), and JPEG quality 30 (at SNR 8).  Stage error
+-8 px.

Every neighbouring pair is matched as a user writes it: a fresh
``Matcher(img, img_)`` per pair, then ``refine(p0, p0_, size=(0.15 W, 0.8
H), iters=3)`` from the nominal overlap centres (``(0.8 W, 0.15 H)`` for
vertical pairs), so windows such as 77 x 410 or 154 x 819 px.  Each job
(one grid) runs in a fresh process for each method (``recipe_worker.py``),
single thread, start-up included; the original ``spectralign==0.2.0``
(peer environment) runs the same recipe with its ``Swim`` on
``straightwindow`` cuts.

Windows on blank slide (the H&E excerpt has some; their noiseless detail,
the image less its blur of sigma 8 px, has a standard deviation below
``BLANK``) have no answer: they are counted, not scored.

Reported per condition: pair RMS and max error (px) of the refined offset
``p_ - p`` against the truth, pairs/s of a 24-pair job (4 x 4 tiles of 512
px) and of a 112-pair job (8 x 8 tiles of 1024 px), and the ratios.
Figures go to stdout as Markdown and to ``benchmarks/results/recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.ndimage
import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import peer_available, peer_python  # noqa: E402

sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import DATA  # noqa: E402

import spectralign  # noqa: E402
from spectralign.datasets import synthetic_grid  # noqa: E402

WORKER = HERE / "recipe_worker.py"
#: A window whose noiseless detail (the image less its Gaussian blur of
#: sigma 8 px) varies less than this (std) is blank slide: on these images
#: such windows reach 0.023 at most, textured ones 0.057 at least.
BLANK = 0.04
MICROSCOPE = dict(psf=0.7, vignetting=0.4, gain=0.1, offset=0.05, stage_error=8.0)
CONDITIONS = {  # name -> synthetic_grid keywords on top of MICROSCOPE
    "no noise": dict(),
    "SNR 8": dict(noise=1 / 8),
    "SNR 4": dict(noise=1 / 4),
    "SNR 1": dict(noise=1.0),
    "SNR 0.5": dict(noise=2.0),
    "SNR 8, JPEG q30": dict(noise=1 / 8, jpeg=30),
}


def sources(side: int) -> dict[str, np.ndarray]:
    """The real images, enlarged and mirrored out to at least ``side`` px."""
    sem = tifffile.imread(DATA / "sem_texture" / "retic.tif")[:1024].astype(np.float64) / 255
    he = tifffile.imread(DATA / "brightfield_he" / "cmu_small_region.svs").mean(-1) / 255
    out = {"SEM": scipy.ndimage.zoom(sem, 2, order=3), "H&E": he[800:, 200:]}  # tissue
    for name, img in out.items():
        pad = [(0, max(side - n, 0)) for n in img.shape]
        out[name] = np.pad(img, pad, mode="symmetric") if any(p for _, p in pad) else img
    return out


def make_job(image, grid, tile, overlap, seed, **kw):
    """Tiles and the README recipe's pairs of one ground-truth grid."""
    synth = synthetic_grid(image, grid, tile, overlap, seed=seed, **{**MICROSCOPE, **kw})
    rows, cols = grid
    ov = overlap * tile
    pairs, p0, p0_, sizes = [], [], [], []
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if c + 1 < cols:  # right neighbour
                pairs.append((i, i + 1))
                p0.append((tile - ov / 2, tile / 2))
                p0_.append((ov / 2, tile / 2))
                sizes.append((0.15 * tile, 0.8 * tile))
            if r + 1 < rows:  # neighbour below
                pairs.append((i, i + cols))
                p0.append((tile / 2, tile - ov / 2))
                p0_.append((tile / 2, ov / 2))
                sizes.append((0.8 * tile, 0.15 * tile))
    pairs, p0, sizes = np.array(pairs), np.array(p0), np.array(sizes)
    truth = synth.truth[pairs[:, 0]] - synth.truth[pairs[:, 1]]  # p_ - p of a true match
    # a window on blank slide has no answer: such pairs are counted, not scored
    corner = synth.truth[pairs[:, 0]] + p0 - sizes / 2
    detail = image - scipy.ndimage.gaussian_filter(image, 8)
    texture = np.array([detail[int(y):int(y + h), int(x):int(x + w)].std()
                        for (x, y), (w, h) in zip(corner, sizes)])
    return dict(tiles=np.stack(synth.tiles), pairs=pairs, p0=p0, p0_=np.array(p0_),
                sizes=sizes, iters=np.int64(3)), truth, texture >= BLANK


def run_worker(method: str, job: dict) -> dict:
    python = sys.executable if method == "ours" else str(peer_python())
    with tempfile.TemporaryDirectory(prefix="recipe-") as tmp:
        src, dst = Path(tmp, "in.npz"), Path(tmp, "out.npz")
        np.savez(src, **job)
        proc = subprocess.run([python, str(WORKER), method, str(src), str(dst)],
                              capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            raise RuntimeError(f"{method} worker failed:\n{proc.stderr}")
        with np.load(dst) as out:
            return {k: out[k] for k in out.files}


def errors(out: dict, truth: np.ndarray) -> np.ndarray:
    return np.hypot(*((out["p_"] - out["p"]) - truth).T)


def methods() -> list[str]:
    return ["ours"] + (["original"] if peer_available() else [])


def measure(images, grid, tile, conditions, seeds):
    """Per condition and method: errors over all jobs and each job's pairs/s."""
    rows = {}
    for cond in conditions:
        res = {m: {"err": [], "rate": [], "first": []} for m in methods()}
        blank = 0
        for name, image in images.items():
            for seed in seeds:
                job, truth, textured = make_job(image, grid, tile, 0.15, seed, **CONDITIONS[cond])
                blank += int((~textured).sum())
                for m in methods():
                    out = run_worker(m, job)
                    res[m]["err"].append(errors(out, truth)[textured])
                    res[m]["rate"].append(len(truth) / float(out["seconds"]))
                    res[m]["first"].append(float(out["first_seconds"]))
        row = {}
        for m, r in res.items():
            err = np.concatenate(r["err"])
            row[m] = {"pairs": int(err.size), "rms": float(np.sqrt(np.mean(err**2))),
                      "max": float(err.max()), "pairs_per_s": float(np.median(r["rate"])),
                      "first_pair_s": float(np.median(r["first"])), "blank_pairs": blank}
        rows[cond] = row
    return rows


def table(title: str, rows: dict) -> str:
    ms = methods()
    lines = [f"### {title}", "",
             "| condition | pairs scored | " + " | ".join(f"{m}: RMS / max (px), pairs/s" for m in ms)
             + (" | RMS ours / original | pairs/s ours / original |" if len(ms) > 1 else " |"),
             "|---|---|" + "---|" * len(ms) + ("---|---|" if len(ms) > 1 else "")]
    for cond, row in rows.items():
        cells = [f"{row[m]['rms']:.4f} / {row[m]['max']:.3f}, {row[m]['pairs_per_s']:.0f}"
                 for m in ms]
        o = row["ours"]
        scored = f"{o['pairs']}" + (f" (+{o['blank_pairs']} blank)" if o["blank_pairs"] else "")
        line = f"| {cond} | {scored} | " + " | ".join(cells) + " |"
        if len(ms) > 1:
            o, p = row["ours"], row["original"]
            line += f" {o['rms'] / p['rms']:.2f} | {o['pairs_per_s'] / p['pairs_per_s']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, fewer conditions")
    args = parser.parse_args(argv)
    seeds = (0,) if args.quick else (0, 1, 2)
    small_conditions = list(CONDITIONS)
    large_conditions = ["SNR 1"] if args.quick else ["SNR 4", "SNR 1"]
    small = measure(sources(2100), (4, 4), 512, small_conditions, seeds)
    large = measure(sources(7300), (8, 8), 1024, large_conditions, seeds[:1])
    meta = {"python": platform.python_version(), "numpy": np.__version__,
            "spectralign": spectralign.__version__, "peers": peer_available(),
            "microscope": MICROSCOPE, "seeds": list(seeds)}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(
        {"meta": meta, "grid_4x4_512": small, "grid_8x8_1024": large}, indent=2))
    print(table("4 x 4 tiles of 512 px (24 pairs a job; SEM and H&E, "
                f"{len(seeds)} seed(s) each)", small))
    print()
    print(table("8 x 8 tiles of 1024 px (112 pairs a job; SEM and H&E)", large))
    if not peer_available():
        print("\n(original skipped: run `bash benchmarks/setup_peer_env.sh` first)")


if __name__ == "__main__":
    main()
