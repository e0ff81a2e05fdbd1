"""Small real data sets shipped with spectralign, for examples and tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .image import Image

__all__ = ["GridDataset", "stitch2d_grid"]


@dataclass(frozen=True)
class GridDataset:
    """A grid of tiles with a reference placement.

    Attributes
    ----------
    tiles : dict of (row, col) -> Image
    reference : dict of (row, col) -> (2,) float array
        Top-left ``(x, y)`` of each tile from another aligner (a reference,
        not ground truth).
    rows, cols : int
    overlap : (float, float)
        Nominal overlap fraction ``(x, y)`` between neighbours.
    """

    tiles: dict
    reference: dict
    rows: int
    cols: int
    overlap: tuple[float, float]


def stitch2d_grid() -> GridDataset:
    """The real SEM grid of six 512 x 442 tiles (3 rows x 2 columns).

    Back-scatter SEM tiles of a meteorite whose brightness varies from tile
    to tile; MIT licence (the stitch2d project's test tiles).  The nominal
    overlap is about 23 % in x and 12 % in y; the true steps are about 380
    px in x and 396 px in y (26 % and 10 %).

    The files are named ``Grid@<col> <row>`` and ``reference_positions.json``
    lists each tile's top-left as ``(y, x)`` despite the key's name; both
    were checked against the pixels (normalized cross-correlation of 0.74
    and 0.77 in the overlaps at those offsets, below 0.1 at the transposed
    ones).  This function returns tiles keyed ``(row, col)`` and reference
    positions as true ``(x, y)``.

    Examples
    --------
    >>> from spectralign.datasets import stitch2d_grid
    >>> grid = stitch2d_grid()
    >>> grid.rows, grid.cols, grid.tiles[0, 0].shape
    (3, 2, (442, 512))
    """
    folder = resources.files("spectralign") / "data" / "stitch2d_grid"
    meta = json.loads((folder / "reference_positions.json").read_text())
    tiles, reference = {}, {}
    for name, xy in meta["positions_xy"].items():
        c, r = (int(v) for v in name.split("@")[1].split("]")[0].split())
        with resources.as_file(folder / name) as path:
            tiles[r, c] = Image(path)
        reference[r, c] = np.asarray(xy[::-1], dtype=np.float64)
    rows = 1 + max(r for r, _ in tiles)
    cols = 1 + max(c for _, c in tiles)
    return GridDataset(tiles, reference, rows, cols, (0.23, 0.12))
