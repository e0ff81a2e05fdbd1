"""Placement at scale: time and peak memory from 10^3 to 10^6 tiles, and the
ratio against the dense normal-equation solver of the original package.

    python benchmarks/bench_placement.py            # full run (~5 min)
    python benchmarks/bench_placement.py --quick    # small sizes only

Each case runs in a fresh subprocess so that its peak resident memory
(``VmHWM``, whole process, Python and numpy included) is its own.  The
grid is n x n tiles of 512 px at a 450 px step with random stage error, four
matches per neighbouring pair (right and down) with 0.1 px noise; the
placement runs with its default settings (robust rejection on).

The dense method is the original package's, stated simply: the normal
equations of the same least-squares problem as one dense matrix, with the
gauge as Lagrange multipliers, solved by ``np.linalg.solve``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

CHILD = r"""
import json, resource, sys, time
import numpy as np
import spectralign

n, model, method = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = np.random.default_rng(0)
per, tile, step = 4, 512.0, 450.0
idx = np.arange(n * n).reshape(n, n)
pos = np.stack(np.meshgrid(np.arange(n) * step, np.arange(n) * step), -1).reshape(-1, 2)
pos = pos + rng.normal(0, 10, pos.shape)
angle = rng.normal(0, 0.01, n * n) if model == "affine" else np.zeros(n * n)
a = np.repeat(np.concatenate([idx[:, :-1].ravel(), idx[:-1].ravel()]), per)
b = np.repeat(np.concatenate([idx[:, 1:].ravel(), idx[1:].ravel()]), per)
P = rng.uniform(0, tile, (len(a), 2))
cos, sin = np.cos(angle), np.sin(angle)
rot = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)
model_pts = np.einsum("nij,nj->ni", rot[a], P) + pos[a]
Q = np.einsum("nji,nj->ni", rot[b], model_pts - pos[b]) + rng.normal(0, 0.1, P.shape)
def peak_mb():  # this process image's own peak resident set
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


base = peak_mb()

t0 = time.perf_counter()
if method == "ours":
    pl = spectralign.Placement()
    pl.addmatches(a, b, P, Q)
    t1 = time.perf_counter()
    res = pl.solve(model)
    out = dict(add_s=t1 - t0, rms=res.rms, dropped=res.ndropped, rounds=res.rounds)
else:
    # dense normal equations, filled with numpy (not element by element, which
    # would only make the original slower), gauge by Lagrange multipliers
    t = n * n
    if model == "translation":
        k = 1
        rows = [(a, np.ones(len(a))), (b, -np.ones(len(a)))]
        rhs = Q - P
    else:
        k = 3
        rhs = np.zeros((len(a), 2))
    size = k * t + k
    N = np.zeros((size, size))
    B = np.zeros((size, 2))
    if model == "translation":
        for (ti, si) in rows:
            for (tj, sj) in rows:
                np.add.at(N, (ti, tj), si * sj)
        np.add.at(B, a, rhs)
        np.add.at(B, b, -rhs)
        N[t, :t] = N[:t, t] = 1.0
    else:
        ca = np.column_stack([P, np.ones(len(a))])
        cb = -np.column_stack([Q, np.ones(len(a))])
        for (ti, ci) in ((a, ca), (b, cb)):
            for (tj, cj) in ((a, ca), (b, cb)):
                for u in range(3):
                    for v in range(3):
                        np.add.at(N, (3 * ti + u, 3 * tj + v), ci[:, u] * cj[:, v])
        for u in range(3):  # mean of each parameter fixed (identity gauge)
            N[3 * t + u, u:3 * t:3] = N[u:3 * t:3, 3 * t + u] = 1.0
        B[3 * t:3 * t + 2, 0] = (t, 0)
        B[3 * t:3 * t + 2, 1] = (0, t)
    x = np.linalg.solve(N, B)
    out = dict(rms=float("nan"))
elapsed = time.perf_counter() - t0
out.update(tiles=n * n, matches=len(a), model=model, method=method, seconds=elapsed,
           peak_mb=peak_mb(), base_mb=base)
print(json.dumps(out))
"""


def run_case(n: int, model: str, method: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), model, method],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    args = parser.parse_args()
    sizes = {"translation": [32, 100, 316] + ([] if args.quick else [1000]),
             "affine": [32, 100] + ([] if args.quick else [300])}
    dense = {"translation": 32 if args.quick else 64, "affine": 16 if args.quick else 32}
    rows = []
    for model, ns in sizes.items():
        for n in ns:
            r = run_case(n, model, "ours")
            rows.append(r)
            print(f"{model:11s} {r['tiles']:>9,d} tiles {r['matches']:>10,d} matches: "
                  f"{r['seconds']:7.2f} s, peak {r['peak_mb']:7.0f} MB, rms {r['rms']:.3f} px, "
                  f"{r['rounds']} solve(s), {r['dropped']} dropped", flush=True)
        n = dense[model]
        d = run_case(n, model, "dense")
        o = run_case(n, model, "ours")
        rows += [d, o]
        print(f"{model:11s} {n * n:>9,d} tiles, dense: {d['seconds']:.2f} s, "
              f"peak {d['peak_mb']:.0f} MB; ours {o['seconds']:.3f} s, peak {o['peak_mb']:.0f} MB; "
              f"ratio {d['seconds'] / o['seconds']:.0f}x", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "placement.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
