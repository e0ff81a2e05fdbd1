"""Matcher benchmark: accuracy and speed against peers, in one run.

Usage::

    bash benchmarks/setup_peer_env.sh          # once: the peers' environment
    python benchmarks/bench_matcher.py [--quick]

Accuracy: 256 x 256 window pairs cut from the real SEM texture and H&E
images at known subpixel offsets (Fourier shift of a crop twice the window,
offsets up to a quarter window), with Gaussian noise of 0, 0.5 and 1 times
the crop's standard deviation added to each window.  Every method sees the
same pairs.  Ours runs through the public API exactly as the original
README uses it: ``Matcher(a, b).refine(c, c, 256, iters=3)``.

Speed: single-thread calls per second on 512 and 1024 windows (one
refinement iteration each: cut, apodize, two forward FFTs, whitening, one
inverse FFT, subpixel peak), the time of the three FFTs alone (the floor),
and the batch form against a Python loop over ``refine`` on 256 windows.

Figures go to stdout as Markdown and to ``benchmarks/results/matcher.json``.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tifffile  # noqa: E402

import spectralign  # noqa: E402
from spectralign.match import loader as _loader  # noqa: E402
from spectralign.match.fft import MEASURE_AFTER, RealFFT2, backend  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import DATA, known_shift_pairs  # noqa: E402
from peers import peer_available, run_peer  # noqa: E402

PEERS = {"original 0.2.0 (funcs.swim)": "original",
         "skimage upsample 20": "skimage_up20",
         "skimage upsample 20, unnormalized": "skimage_unnorm"}


def load_images():
    sem = tifffile.imread(DATA / "sem_texture" / "retic.tif")[:1024].astype(np.float32) / 255
    he = tifffile.imread(DATA / "brightfield_he" / "cmu_small_region.svs")
    return {"sem": sem, "he": he.mean(axis=-1).astype(np.float32) / 255}


def make_pairs(images, per_image, size, noise, seed):
    rng = np.random.default_rng(seed)
    a_all, b_all, d_all = [], [], []
    for img in images.values():
        for a, b, d in known_shift_pairs(img, per_image, size, rng):
            if noise:
                s = np.std(a)
                a = a + rng.normal(0, noise * s, a.shape).astype(np.float32)
                b = b + rng.normal(0, noise * s, b.shape).astype(np.float32)
            a_all.append(a)
            b_all.append(b)
            d_all.append(d)
    return np.stack(a_all), np.stack(b_all), np.array(d_all)


def ours(a, b, size, iters=3):
    c = (size / 2, size / 2)
    out = []
    for x, y in zip(a, b):
        p, p_ = spectralign.Matcher(x, y).refine(c, c, size, iters=iters)
        out.append(p_ - p)
    return np.array(out)


def stats(est, truth):
    err = np.hypot(*(est - truth).T)
    return {"rms": float(np.sqrt(np.mean(err**2))), "max": float(err.max()),
            "p95": float(np.percentile(err, 95))}


def accuracy(images, per_image, noises):
    rows = []
    for noise in noises:
        a, b, d = make_pairs(images, per_image, 256, noise, seed=int(noise * 10) + 1)
        row = {"noise": noise, "pairs": len(d), "ours": stats(ours(a, b, 256), d)}
        if peer_available():
            for name, mode in PEERS.items():
                row[name] = stats(run_peer(mode, a, b, repeats=1)["shift"], d)
        rows.append(row)
    return rows


def timeit(fn, min_time=1.0):
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def speed(images, sizes, reps):
    img = np.pad(images["sem"], 600, mode="reflect")
    matcher = spectralign.Matcher(img, img)
    rows = []
    for size in sizes:
        p = np.array([img.shape[1] / 2, img.shape[0] / 2])
        # a warm process: the compiled loops loaded and this size's FFT
        # plan measured (both happen by themselves once matching has gone
        # on for a while); the floor gets a measured plan too
        _loader.wait()
        timeit(lambda: matcher.refine(p, p + (3.3, -2.7), size, iters=1), MEASURE_AFTER + 0.5)
        plan = RealFFT2(1, (size, size), 1, measure=True)
        # interleave short runs of ours and of the FFT floor, so that the
        # machine's load drifts equally over both; report medians
        ours_t, fft_t = [], []
        for _ in range(9):
            ours_t.append(timeit(lambda: matcher.refine(p, p + (3.3, -2.7), size, iters=1), 0.3))
            fft_t.append(timeit(lambda: (plan.forward(), plan.backward()), 0.3))
        t_ours, t_fft = float(np.median(ours_t)), float(np.median(fft_t))
        row = {"size": size, "ours_s": t_ours, "three_ffts_s": t_fft,
               "ours_over_floor": float(np.median(np.divide(ours_t, fft_t)))}
        if peer_available():
            y0, x0 = 200, 300
            a = img[y0:y0 + size, x0:x0 + size][None].repeat(reps, 0)
            b = img[y0 + 3:y0 + 3 + size, x0 + 2:x0 + 2 + size][None].repeat(reps, 0)
            for name, mode in PEERS.items():
                t = run_peer(mode, a, b, repeats=2)["seconds_per_call"]
                row[name + " s"] = t
                row[name + " / ours"] = t / t_ours
        rows.append(row)
    return rows


def batch_speed(images, n, size=256):
    img = images["sem"]
    rng = np.random.default_rng(0)
    P = rng.uniform(size, 1024 - size, (n, 2))
    P_ = P + rng.uniform(-4, 4, (n, 2))
    matcher = spectralign.Matcher(img, img)
    _loader.wait()

    def loop():
        for p, p_ in zip(P, P_):
            matcher.refine(p, p_, size)

    t_loop = timeit(loop, 2.0)
    t_one = timeit(lambda: matcher.refine_many(P, P_, size, workers=1), 2.0)
    t_all = timeit(lambda: matcher.refine_many(P, P_, size), 2.0)
    return {"pairs": n, "size": size, "loop_s": t_loop, "batch_1_thread_s": t_one,
            "batch_all_threads_s": t_all, "speedup_1_thread": t_loop / t_one,
            "speedup_all_threads": t_loop / t_all,
            "threads": len(os.sched_getaffinity(0))}


def report(acc, spd, bat):
    lines = ["### Accuracy: RMS / max error (px), 256 x 256 windows", ""]
    names = ["ours"] + [k for k in PEERS if k in acc[0]]
    lines.append("| noise (x image std) | pairs | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for row in acc:
        cells = [f"{row[k]['rms']:.4f} / {row[k]['max']:.3f}" for k in names]
        lines.append(f"| {row['noise']} | {row['pairs']} | " + " | ".join(cells) + " |")
    lines += ["", "### Speed: one refinement iteration, single thread", ""]
    peer_cols = [k for k in PEERS if k + " s" in spd[0]]
    lines.append("| window | ours (ms) | 3 FFTs (ms) | ours / 3 FFTs | "
                 + " | ".join(f"{k}: ms (x ours)" for k in peer_cols) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(peer_cols))
    for row in spd:
        cells = [f"{row[k + ' s'] * 1e3:.2f} ({row[k + ' / ours']:.1f}x)" for k in peer_cols]
        lines.append(f"| {row['size']} | {row['ours_s'] * 1e3:.2f} | {row['three_ffts_s'] * 1e3:.2f}"
                     f" | {row['ours_over_floor']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", f"### Batch: {bat['pairs']} pairs of {bat['size']} x {bat['size']} windows", "",
              "| loop over refine (s) | refine_many, 1 thread (s) | refine_many, "
              f"{bat['threads']} threads (s) |", "|---|---|---|",
              f"| {bat['loop_s']:.3f} | {bat['batch_1_thread_s']:.3f} "
              f"({bat['speedup_1_thread']:.2f}x) | {bat['batch_all_threads_s']:.3f} "
              f"({bat['speedup_all_threads']:.2f}x) |"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs, for a smoke run")
    args = parser.parse_args(argv)
    images = load_images()
    per_image = 20 if args.quick else 100
    acc = accuracy(images, per_image, (0.0, 0.5, 1.0))
    spd = speed(images, (512, 1024), reps=5 if args.quick else 20)
    bat = batch_speed(images, 64 if args.quick else 256)
    meta = {"python": platform.python_version(), "numpy": np.__version__,
            "fft_backend": backend(), "spectralign": spectralign.__version__,
            "cpus": os.cpu_count(), "peers": peer_available()}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "matcher.json").write_text(json.dumps(
        {"meta": meta, "accuracy": acc, "speed": spd, "batch": bat}, indent=2))
    print(report(acc, spd, bat))
    if not peer_available():
        print("\n(peers skipped: run `bash benchmarks/setup_peer_env.sh` first)")


if __name__ == "__main__":
    main()
