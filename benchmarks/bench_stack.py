"""``align_stack`` on the real serial-section TEM stack in ../shared/data/sstem_stack.

    python benchmarks/bench_stack.py

Each section is moved by a known rigid transform (translation +-30 px,
rotation +-1 degree about its centre; order-5 spline) and the stack is
aligned again.  Reported, per seed:

- copies: 30 copies of section 0 moved that way, the one stack whose true
  alignment is known: corner error of each section after removing the
  common transform (max and RMS over sections);
- repeat: the real stack, perturbed, against the same aligner on the stack
  as published: how much the result depends on where the sections start
  (corner distance after undoing the known perturbation);
- coherence: mean correlation of neighbouring sections (smoothed centre
  crops) as published, perturbed and realigned;
- the time of one ``align_stack`` of 30 sections.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.ndimage

import spectralign
from spectralign.datasets import perturb_sections

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sstem_stack"
CORNERS = np.array([[0, 0], [512, 0], [0, 512], [512, 512]], float)


def perturb(images, rng):
    return perturb_sections(images, shift=30, angle=1, seed=rng)


def corner_spread(mapped):
    """Per section, RMS corner distance after removing the common offset."""
    mapped = mapped - mapped.mean(axis=0)
    return np.sqrt((mapped ** 2).sum(-1).mean(-1))


def coherence(volume):
    vals = []
    for z in range(len(volume) - 1):
        a, b = (scipy.ndimage.gaussian_filter(np.asarray(volume[k], float)[128:-128, 128:-128], 2)
                for k in (z, z + 1))
        a, b = a - a.mean(), b - b.mean()
        vals.append((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
    return float(np.mean(vals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    sections = [spectralign.Image(str(DATA / f"{z}.png")) for z in range(30)]
    t0 = time.perf_counter()
    published = spectralign.align_stack(sections)
    took = time.perf_counter() - t0
    base = np.array([published.transforms[z](CORNERS) for z in range(30)])
    print(f"align_stack, 30 sections of 512 px: {took:.2f} s")
    print(f"coherence as published: {coherence(sections):.3f}")
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        copies, ctruth = perturb([sections[0]] * 30, rng)
        st = spectralign.align_stack(copies)
        err = corner_spread(np.array([st.transforms[z](ctruth[z](CORNERS)) for z in range(30)]))
        moved, truth = perturb(sections, rng)
        sm = spectralign.align_stack(moved)
        again = np.array([sm.transforms[z](truth[z](CORNERS)) for z in range(30)])
        rep = corner_spread(again - base)
        vol = sm.renderer(chunk=512).volume.compute()
        print(f"seed {seed}: copies max {err.max():.3f} / RMS {np.sqrt(np.mean(err ** 2)):.3f} px;"
              f" repeat max {rep.max():.1f} / RMS {np.sqrt(np.mean(rep ** 2)):.1f} px;"
              f" coherence perturbed {coherence(moved):.3f}, realigned {coherence(vol):.3f}")


if __name__ == "__main__":
    main()
