"""register() against OpenCV (ECC, SIFT + RANSAC) and scikit-image, one run.

Every task is cut from the real images in ``../shared/data`` (SEM texture,
H&E, fluorescence, serial-section TEM, each blurred by sigma 0.8 px as by
optics) by order-5 spline sampling through a known transform, so the
ground truth is exact:

rotation
    fixed and moving: the same spot, moving turned by U(-20, 20) degrees
    about the centre; 128 and 256 px; clean, Gaussian noise of 0.1 of the
    range, or JPEG quality 30 (both images).  Ours ``model="rigid"``.
affine
    384 px; rotation <= 2 deg, scales 0.97-1.03, shear <= 0.02, shift <= 3 %;
    gray vs gray (noise 0.01), Otsu-binarized fixed vs gray moving, and gray
    vs gray with moving vignetted off-centre (to 40-70 % at the far corner)
    under another gain and offset.
    Error: the largest of the four corners' distances.  Ours ``"affine"``.
masked
    256 px, a subpixel shift of up to 8 px, a static beam block (a disk on
    a bar to the edge, 15-40 % of the area, constant dark) in both; noise
    0.02.  Ours ``"translation"`` with both masks.
large
    the affine task at 1400 px on the sources enlarged 2x (10 pairs).
denoise
    the rotation task at 128 px under noise 0.1 and 0.2 and JPEG 30 and 10,
    ours with each prefilter of ``register(denoise=...)``.
noprior
    two 320 px crops overlapping by 50-90 % of their area, moving turned by
    +-10 deg and scaled 0.9-1.1; noise 0.03.  Error: RMS over a grid of
    points in the overlap; "within 2 px" uses the largest.  Ours
    ``"similarity"``.

Spots are drawn again where less than a third of either crop's 32 px
blocks show content (H&E and the fluorescence tile are half blank, and no
method aligns two blank crops); the same pairs go to every method.

``--sources other`` cuts the same tasks from seven images they were never
tuned on (:func:`other_sources`), some of them faint (moon) or smooth
(the phase-contrast cell).

Peers run in ``benchmarks/.peer-env`` (``register_peers.py``); their time
and ours are per pair, wall clock, after a warm-up pair.  The methods take
turns on chunks of ``--chunk`` pairs (10), so that the shared machine's
slow and fast stretches fall on all of them alike.

Usage: ``python benchmarks/bench_register.py [--quick] [--tasks rotation,affine,...]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

import spectralign
from spectralign import Affine
from spectralign.datasets import _jpeg_roundtrip

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
PEER_PY = HERE / ".peer-env" / "bin" / "python"


def sources() -> list[tuple[str, np.ndarray]]:
    import tifffile
    import imageio.v3 as iio  # noqa: F401  (scikit-image brings imageio)

    out = []
    sem = tifffile.imread(DATA / "sem_texture" / "retic.tif")[:1024].astype(np.float64) / 255
    out.append(("sem", sem))
    rgb = tifffile.imread(DATA / "brightfield_he" / "cmu_small_region.svs")
    out.append(("he", rgb[..., :3].mean(axis=-1)[200:1400, 200:1400] / 255))
    fl = tifffile.imread(DATA / "fluorescence_pair" / "tile0.tif").astype(np.float64)
    out.append(("fluo", fl / np.percentile(fl, 99.9)))
    from imageio.v3 import imread
    tem = np.hstack([imread(DATA / "sstem_stack" / f"{k}.png") for k in (0, 10, 20)])
    out.append(("tem", tem.astype(np.float64) / 255))
    return [(name, ndi.gaussian_filter(img, 0.8)) for name, img in out]


def other_sources() -> list[tuple[str, np.ndarray]]:
    """Images the tasks above were never tuned on (``--sources other``):
    the SEM grid's tiles side by side, the YFP tile (root cells), the
    second fluorescence tile, and scikit-image's phase-contrast cell, moon,
    immunohistochemistry and gravel pictures."""
    import tifffile
    import skimage.data
    from imageio.v3 import imread

    def gray(a):
        a = np.asarray(a, dtype=np.float64)
        return a.mean(axis=-1) if a.ndim == 3 else a

    grid = np.hstack([gray(imread(DATA / "stitch2d_grid" / f"stitch2d_ex[Grid@0 {k}].jpg"))
                      for k in range(3)])
    yfp = gray(imread(DATA / "yfp_montage_pair" / "C2-20250523_montage_YFP_ideal_02.jpg"))
    fl = tifffile.imread(DATA / "fluorescence_pair" / "tile1.tif").astype(np.float64)
    out = [("grid", grid / 255), ("yfp", yfp / yfp.max()), ("fluo1", fl / np.percentile(fl, 99.9)),
           ("cell", gray(skimage.data.cell()) / 255), ("moon", gray(skimage.data.moon()) / 255),
           ("ihc", gray(skimage.data.immunohistochemistry()) / 255),
           ("gravel", gray(skimage.data.gravel()) / 255)]
    return [(name, ndi.gaussian_filter(img, 0.8)) for name, img in out]


def sample(src: np.ndarray, a: Affine, shape: tuple[int, int]) -> np.ndarray:
    """out[y, x] = src at a((x, y)) (order-5 spline)."""
    lin = a.linear[::-1, ::-1]
    off = a.matrix[::-1, 2]
    return ndi.affine_transform(src, lin, offset=off, output_shape=shape, order=5,
                                mode="reflect")


def noisy(img, rng, cond):
    lo, hi = float(img.min()), float(img.max())
    if cond == "clean":
        return img
    if cond.startswith("noise"):
        return img + rng.normal(0, float(cond[5:]) * (hi - lo), img.shape)
    if cond.startswith("jpeg"):
        return _jpeg_roundtrip(img, lo, hi, int(cond[4:]))
    raise ValueError(cond)


def centre_in(src, rng, margin):
    h, w = src.shape
    if min(h, w) < 2 * margin:
        raise ValueError("source too small for this task")
    return np.array([rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)])


def make_rotation(src, rng, n, cond):
    c = centre_in(src, rng, 0.75 * n)
    ang = rng.uniform(-20, 20)
    half = Affine.translator((-(n - 1) / 2, -(n - 1) / 2))
    truth = half.inverse() @ Affine.rotator(np.radians(ang)) @ half
    fixed = sample(src, Affine.translator(c) @ half, (n, n))
    moving = sample(src, Affine.translator(c) @ half @ truth, (n, n))
    full = np.ones((n, n), bool)
    return dict(f=noisy(fixed, rng, cond), m=noisy(moving, rng, cond), fm=full, mm=full,
                truth=truth, angle=ang, n=n, clean=fixed, clean_m=moving)


def vignetted(img, rng):
    """An off-centre vignette (down to 40-70 % at the far corner), a gain
    and an offset: one image lit unlike the other."""
    n = img.shape[0]
    cx, cy = rng.uniform(0.2, 0.8, 2)
    yy, xx = np.mgrid[:n, :n] / n
    r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / max(cx, 1 - cx, cy, 1 - cy) ** 2 / 2
    return img * (1 - rng.uniform(0.3, 0.6) * r2) * rng.uniform(0.7, 1.4) + rng.uniform(-0.1, 0.1)


def make_affine(src, rng, n, binarize, vignette=False):
    c = centre_in(src, rng, 0.7 * n)
    ang = np.radians(rng.uniform(-2, 2))
    lin = (Affine.rotator(ang).linear @ np.diag(rng.uniform(0.97, 1.03, 2))
           @ np.array([[1, rng.uniform(-0.02, 0.02)], [0, 1]]))
    half = Affine.translator((-(n - 1) / 2, -(n - 1) / 2))
    truth = Affine.translator(rng.uniform(-0.03, 0.03, 2) * n) @ half.inverse() @ Affine(lin) @ half
    fixed = sample(src, Affine.translator(c) @ half, (n, n))
    moving = sample(src, Affine.translator(c) @ half @ truth, (n, n))
    clean, clean_m = fixed, moving
    fixed, moving = noisy(fixed, rng, "noise0.01"), noisy(moving, rng, "noise0.01")
    if vignette:
        moving = vignetted(moving, rng)
    if binarize:
        from skimage.filters import threshold_otsu
        fixed = (fixed > threshold_otsu(fixed)).astype(np.float64)
    full = np.ones((n, n), bool)
    return dict(f=fixed, m=moving, fm=full, mm=full, truth=truth, n=n, clean=clean,
                clean_m=clean_m)


def beam_block(rng, n):
    """A dark disk on a bar to the nearest edge, covering 15-40 % of the area."""
    target = rng.uniform(0.15, 0.40)
    yy, xx = np.mgrid[:n, :n]
    cx, cy = rng.uniform(0.35, 0.65, 2) * n
    for r in np.linspace(0.05, 0.45, 80) * n:
        disk = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        bar = (np.abs(yy - cy) <= 0.3 * r) & (xx >= cx)
        block = disk | bar
        if block.mean() >= target:
            break
    return block


def make_masked(src, rng, n):
    c = centre_in(src, rng, 0.75 * n)
    d = rng.uniform(-8, 8, 2)
    half = Affine.translator((-(n - 1) / 2, -(n - 1) / 2))
    fixed = sample(src, Affine.translator(c) @ half, (n, n))
    moving = sample(src, Affine.translator(c - d) @ half, (n, n))
    block = beam_block(rng, n)
    lo = float(min(fixed.min(), moving.min()))
    clean, clean_m = np.where(block, lo, fixed), np.where(block, lo, moving)
    fixed, moving = noisy(fixed, rng, "noise0.02"), noisy(moving, rng, "noise0.02")
    fixed[block] = lo
    moving[block] = lo
    return dict(f=fixed, m=moving, fm=~block, mm=~block, truth=Affine.translator(-d), n=n,
                blocked=float(block.mean()), clean=clean, clean_m=clean_m)


def make_noprior(src, rng, n):
    c1 = centre_in(src, rng, 1.3 * n)
    o = rng.uniform(0.5, 0.9)
    if rng.random() < 0.5:  # along one axis
        off = np.array([(1 - o) * n, 0.0])[rng.permutation(2)]
    else:
        off = np.full(2, (1 - np.sqrt(o)) * n)
    off *= rng.choice([-1, 1], 2)
    lin = Affine.rotator(np.radians(rng.uniform(-10, 10))) @ Affine.scaler(rng.uniform(0.9, 1.1))
    half = Affine.translator((-(n - 1) / 2, -(n - 1) / 2))
    truth = Affine.translator(off) @ half.inverse() @ lin @ half
    fixed = sample(src, Affine.translator(c1) @ half, (n, n))
    moving = sample(src, Affine.translator(c1) @ half @ truth, (n, n))
    full = np.ones((n, n), bool)
    return dict(f=noisy(fixed, rng, "noise0.03"), m=noisy(moving, rng, "noise0.03"),
                fm=full, mm=full, truth=truth, n=n, overlap=o, clean=fixed, clean_m=moving)


def content(img: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the valid 32 px blocks of a clean crop that show
    something (standard deviation >= 0.02 of the source's range)."""
    h, w = (d // 32 * 32 for d in img.shape)
    b = img[:h, :w].reshape(h // 32, 32, w // 32, 32)
    ok = mask[:h, :w].reshape(h // 32, 32, w // 32, 32).all(axis=(1, 3))
    return float((b.std(axis=(1, 3))[ok] >= 0.02).mean()) if ok.any() else 0.0


def make_pairs(make, srcs, rng, count):
    """count pairs cycling through the sources, skipping those too small
    for the task (TEM sections for the 384 px affine, say), and drawing a
    spot again where less than a third of either crop shows content
    (H&E and fluorescence are half blank: no method can align two blank
    crops, and the same pairs go to every method)."""
    pairs, names = [], []
    for i in range(count):
        for k in range(len(srcs)):
            name, src = srcs[(i + k) % len(srcs)]
            try:
                for _ in range(100):
                    p = make(src, rng)
                    if min(content(p["clean"], p["fm"]), content(p["clean_m"], p["mm"])) >= 1 / 3:
                        break
            except ValueError:
                continue
            pairs.append(p)
            names.append(name)
            break
    return pairs, names


def corner_error(est, truth, n):
    c = np.array([[0, 0], [n - 1, 0], [0, n - 1], [n - 1, n - 1]], float)
    return float(np.linalg.norm(est(c) - truth(c), axis=1).max())


def overlap_errors(est, truth, n):
    g = np.linspace(0, n - 1, 9)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    inside = truth(pts)
    pts = pts[(inside >= 0).all(1) & (inside <= n - 1).all(1)]
    e = np.linalg.norm(est(pts) - truth(pts), axis=1)
    return float(np.sqrt(np.mean(e ** 2))), float(e.max())


def run_peer(method, pairs):
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        arrays = {"method": method, "n": len(pairs)}
        for i, p in enumerate(pairs):
            arrays.update({f"f{i}": p["f"].astype(np.float32), f"m{i}": p["m"].astype(np.float32),
                           f"fm{i}": p["fm"], f"mm{i}": p["mm"]})
        np.savez(src, **arrays)
        subprocess.run([str(PEER_PY), str(HERE / "register_peers.py"), str(src), str(dst)],
                       check=True)
        out = np.load(dst)
        return [None if np.isnan(m).any() else Affine(m) for m in out["matrix"]], out["seconds"]


def run_ours(model, pairs, masked=False, denoise=None):
    first = pairs[0]
    spectralign.register(first["f"], first["m"], model)  # warm-up
    ests, secs = [], []
    for p in pairs:
        kw = dict(fixed_mask=p["fm"], moving_mask=p["mm"]) if masked else {}
        kw["denoise"] = denoise
        t0 = time.perf_counter()
        try:
            est = spectralign.register(p["f"], p["m"], model, **kw).transform
        except spectralign.SpectralignError:
            est = None
        secs.append(time.perf_counter() - t0)
        ests.append(est)
    return ests, np.array(secs)


def score(task, pairs, ests):
    errs = []
    for p, est in zip(pairs, ests):
        if est is None:
            errs.append(np.inf)
        elif task == "rotation":
            errs.append(abs(np.degrees(est.angle()) - p["angle"]))
        elif task in ("affine", "large"):
            errs.append(corner_error(est, p["truth"], p["n"]))
        elif task == "masked":
            errs.append(float(np.linalg.norm(est.translation() - p["truth"].translation())))
        else:
            rms, worst = overlap_errors(est, p["truth"], p["n"])
            errs.append(worst if worst > 2 else rms)
    return np.array(errs)


TASKS = {
    "rotation": ([(f"{n} px {cond}", (lambda s, r, n=n, c=cond: make_rotation(s, r, n, c)))
                  for n in (128, 256) for cond in ("clean", "noise0.1", "jpeg30")],
                 "rigid", ["sift_similarity", "ecc_euclidean", "skimage_fm"], 0.5),
    "affine": ([("gray vs gray", lambda s, r: make_affine(s, r, 384, False)),
                ("binarized vs gray", lambda s, r: make_affine(s, r, 384, True)),
                ("gray vs vignetted gray", lambda s, r: make_affine(s, r, 384, False, True))],
               "affine", ["ecc_affine", "sift_affine"], 1.0),
    "masked": ([("beam block 15-40 %", lambda s, r: make_masked(s, r, 256))],
               "translation", ["skimage_masked", "ecc_translation_masked"], 0.5),
    "noprior": ([("overlap 50-90 %, +-10 deg, 0.9-1.1x", lambda s, r: make_noprior(s, r, 320))],
                "similarity", ["sift_similarity"], 2.0),
    # big scans: the affine task at 1400 px on the sources enlarged 2x
    "large": ([("1400 px gray vs gray", lambda s, r: make_affine(ndi.zoom(s, 2, order=3), r,
                                                                 1400, False))],
              "affine", ["ecc_affine", "sift_affine"], 1.0),
    # the prefilters of register(denoise=...), ours only
    "denoise": ([(f"128 px {cond}", (lambda s, r, c=cond: make_rotation(s, r, 128, c)))
                 for cond in ("noise0.1", "noise0.2", "jpeg30", "jpeg10")],
                "rigid", [], 0.5),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 pairs per condition (100 otherwise)")
    ap.add_argument("--tasks", default=",".join(TASKS),
                    help=f"comma-separated, of {', '.join(TASKS)} (default all)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--sources", choices=("bench", "other"), default="bench",
                    help="the images pairs are cut from: the bench's four, or seven others "
                         "(SEM grid, YFP, second fluorescence tile, scikit-image's cell, moon, "
                         "immunohistochemistry, gravel)")
    ap.add_argument("--chunk", type=int, default=10,
                    help="pairs each method runs before the next takes its turn (0: all)")
    args = ap.parse_args(argv)
    count = 20 if args.quick else 100
    srcs = sources() if args.sources == "bench" else other_sources()
    peers = PEER_PY.is_file()
    if not peers:
        print("peer environment missing (bash benchmarks/setup_peer_env.sh): ours only")
    unit = {"rotation": "deg", "affine": "px", "masked": "px", "noprior": "px", "denoise": "deg",
            "large": "px"}
    print(f"{'task':10} {'condition':34} {'method':24} {'within':>7} {'mean':>8} {'median':>8} "
          f"{'rms':>8} {'ms/pair':>8}")
    for task in args.tasks.split(","):
        conditions, model, peer_methods, tol = TASKS[task]
        for k, (label, make) in enumerate(conditions):
            rng = np.random.default_rng([args.seed, list(TASKS).index(task), k])
            pairs, _ = make_pairs(make, srcs, rng, min(count, 10) if task == "large" else count)
            if task == "denoise":
                from spectralign.registration.denoise import DENOISERS

                runners = [(f"denoise={name}", lambda ps, d=name: run_ours(model, ps, denoise=d))
                           for name in [None, *DENOISERS]]
            else:
                runners = [(f"spectralign {model}",
                            lambda ps: run_ours(model, ps, masked=task == "masked"))]
            if peers:
                runners += [(m, lambda ps, m=m: run_peer(m, ps)) for m in peer_methods]
            # every method in turn on each chunk of pairs: the machine's
            # slow and fast stretches fall on all of them alike
            done = {name: ([], []) for name, _ in runners}
            step = args.chunk or len(pairs)
            for start in range(0, len(pairs), step):
                for name, run in runners:
                    ests, secs = run(pairs[start:start + step])
                    done[name][0].extend(ests)
                    done[name][1].extend(secs)
            runs = [(name, ests, np.array(secs)) for name, (ests, secs) in done.items()]
            for name, ests, secs in runs:
                e = score(task, pairs, ests)
                ok = e <= tol
                fin = e[ok]
                print(f"{task:10} {label:34} {name:24} {ok.mean():7.0%} "
                      f"{(fin.mean() if len(fin) else np.nan):8.4f} "
                      f"{(np.median(e)):8.4f} {(np.sqrt(np.mean(fin ** 2)) if len(fin) else np.nan):8.4f} "
                      f"{1000 * np.median(secs):8.1f}", flush=True)
            print(f"{'':10} (errors in {unit[task]}; mean and rms over pairs within {tol:g}; "
                  f"median over all)")


if __name__ == "__main__":
    sys.exit(main())
