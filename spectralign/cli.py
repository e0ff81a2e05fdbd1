"""The ``spectralign`` command line: the only module that prints."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import __version__
from .datasets import stitch2d_grid
from .matcher import Matcher
from .placement import Placement
from .renderer import Renderer

__all__ = ["main"]


def _example(args: argparse.Namespace) -> int:
    """Match, place and render the real SEM grid shipped with spectralign."""
    grid = stitch2d_grid()
    h, w = grid.tiles[0, 0].shape
    ox, oy = grid.overlap
    step = np.array([w * (1 - ox), h * (1 - oy)])
    print(f"spectralign {__version__}: matching the shipped {grid.rows} x {grid.cols} "
          f"SEM grid ({w} x {h} tiles, nominal overlap {ox:.0%} in x, {oy:.0%} in y)")
    print(f"{'pair':<18}{'found offset (x, y)':>24}{'reference':>22}{'diff':>8}{'SNR':>8}")
    t0 = time.perf_counter()
    worst = 0.0
    pairs = 0
    placement = Placement()
    for (r, c), img in sorted(grid.tiles.items()):
        for dr, dc in ((0, 1), (1, 0)):
            t_ = (r + dr, c + dc)
            if t_ not in grid.tiles:
                continue
            nominal = step * (dc, dr)
            # a window centred in the nominal overlap, as long as the overlap
            overlap = np.array([w, h]) - nominal
            centre = np.where((dc, dr), nominal + overlap / 2, (w / 2, h / 2))
            size = np.where((dc, dr), overlap * 0.8, (w * 0.8, h * 0.8))
            match = Matcher(img, grid.tiles[t_]).refine(centre, centre - nominal, size, iters=5)
            p, p_ = match
            placement.addmatch((r, c), t_, p, p_)
            found = p - p_
            ref = grid.reference[t_] - grid.reference[r, c]
            diff = float(np.hypot(*(found - ref)))
            worst = max(worst, diff)
            pairs += 1
            pair = f"{(r, c)}->{t_}"
            print(f"{pair:<18}{found[0]:>12.2f}{found[1]:>12.2f}"
                  f"{ref[0]:>11.2f}{ref[1]:>11.2f}{diff:>8.2f}{match.snr:>8.1f}")
    print(f"matched {pairs} pairs in {time.perf_counter() - t0:.2f} s; largest difference "
          f"from the reference aligner {worst:.2f} px")
    result = placement.solve()
    pos = result.positions
    offset = np.mean([pos[t] - grid.reference[t] for t in pos], axis=0)
    err = max(float(np.hypot(*(pos[t] - offset - grid.reference[t]))) for t in pos)
    print(f"placed {len(pos)} tiles: residual RMS {result.rms:.2f} px, largest distance from "
          f"the reference positions {err:.2f} px")
    renderer = Renderer(rigid=pos, tilesize=(w, h), blend=20)
    for t, img in grid.tiles.items():
        renderer.render(t, img)
    if args.output:
        out = renderer.to_zarr(args.output, overwrite=args.overwrite)
        print(f"wrote the {renderer.shape[1]} x {renderer.shape[0]} px montage to {out}")
    else:
        montage = renderer.image
        print(f"rendered a {montage.shape[1]} x {montage.shape[0]} px montage "
              f"(write it with: spectralign example -o montage.ome.zarr)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectralign",
        description="Spectral stitching of microscopy tiles and serial sections.")
    parser.add_argument("--version", action="version", version=f"spectralign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ex = sub.add_parser("example", help="match, place and render the real SEM grid shipped with spectralign",
                        description=_example.__doc__)
    ex.add_argument("-o", "--output", default=None,
                    help="write the montage here as OME-Zarr (e.g. montage.ome.zarr)")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace an earlier montage at --output")
    ex.set_defaults(func=_example)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["example"])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
