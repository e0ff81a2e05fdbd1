"""What every pipeline starts from: nominal grid positions from a layout,
and the few tiles that matching needs at once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import LayoutError
from ..io.image import Image


_CACHE_TILES_MIN = 4


def grid_positions(n: int, grid: tuple[int, int], tilesize: tuple[int, int],
                   overlap: float | tuple[float, float] = 0.15, *, layout: str = "raster",
                   major: str = "row", flip: tuple[bool, bool] = (False, False)
                   ) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Grid cell and nominal top-left position of each of ``n`` tiles.

    Parameters
    ----------
    n : int
        Number of tiles, in acquisition order.
    grid : (rows, cols)
    tilesize : (width, height)
    overlap : float or (float, float)
        Fraction of a tile shared with its neighbour, in x and y.
    layout : "raster" or "snake"
        Snake: every other row (column, if column-major) runs backwards.
    major : "row" or "col"
        Whether acquisition fills rows first (row-major) or columns first.
    flip : (bool, bool)
        Mirror the grid in x (columns right to left) and/or y (rows bottom
        to top).

    Returns
    -------
    cells : list of (row, col)
    positions : (n, 2) float array
        Nominal ``(x, y)`` of each tile's top-left corner.
    """
    rows, cols = (int(v) for v in grid)
    if rows < 1 or cols < 1:
        raise LayoutError(f"Expected a grid of at least 1 x 1. Got {rows} x {cols}.")
    if n != rows * cols:
        raise LayoutError(f"Expected {rows} x {cols} = {rows * cols} tiles for the grid. "
                          f"Got {n}; check --grid (ROWSxCOLS) and the tile pattern.")
    if layout not in ("raster", "snake"):
        raise LayoutError(f"Expected layout 'raster' or 'snake'. Got {layout!r}.")
    if major not in ("row", "col"):
        raise LayoutError(f"Expected major 'row' or 'col'. Got {major!r}.")
    ox, oy = (overlap, overlap) if np.isscalar(overlap) else overlap
    if not (0 <= ox < 1 and 0 <= oy < 1):
        raise LayoutError(f"Expected overlap fractions in [0, 1). Got {overlap!r}.")
    w, h = tilesize
    cells = []
    for i in range(n):
        if major == "row":
            r, c = divmod(i, cols)
            if layout == "snake" and r % 2:
                c = cols - 1 - c
        else:
            c, r = divmod(i, rows)
            if layout == "snake" and c % 2:
                r = rows - 1 - r
        if flip[0]:
            c = cols - 1 - c
        if flip[1]:
            r = rows - 1 - r
        cells.append((r, c))
    pos = np.array([(c * w * (1 - ox), r * h * (1 - oy)) for r, c in cells], dtype=float)
    return cells, pos


@dataclass(frozen=True)
class MatchOptions:
    """How every pipeline matches overlaps (see :func:`stitch_grid`).

    Attributes
    ----------
    windows : int
        Small windows per overlap.
    window : int, optional
        Their size (default: from the overlap).
    min_overlap : float
        Pairs sharing less than this (px) in either axis are not matched.
    snr_threshold : float, optional
        SNR a window must reach (default: learned from the data).
    workers : int, optional
        Threads matching overlaps at once (default: the CPUs available).
    progress : bool or callable, optional
        True for a progress bar, or a function wrapping an iterable.
    """

    windows: int = 7
    window: int | None = None
    min_overlap: float = 16
    snr_threshold: float | None = None
    workers: int | None = None
    progress: Callable[[Iterable], Iterable] | bool | None = None

    def __post_init__(self) -> None:
        if int(self.windows) < 1:
            raise ValueError(f"Expected windows >= 1. Got {self.windows!r} instead.")
        if self.window is not None and int(self.window) < 8:
            raise ValueError(f"Expected window >= 8 px. Got {self.window!r} instead.")
        if self.workers is not None and int(self.workers) < 1:
            raise ValueError(f"Expected workers >= 1. Got {self.workers!r} instead.")


def progress_wrapper(progress: Callable[[Iterable], Iterable] | bool | None,
                     desc: str) -> Callable[[Iterable], Iterable]:
    """``progress`` as a function wrapping an iterable: a tqdm bar named
    ``desc`` for True, nothing for None or False."""
    if progress is True:
        from tqdm.auto import tqdm

        return lambda it: tqdm(it, desc=desc, unit="pair")
    return progress or (lambda it: it)


class _Sized:
    """An iterator with a length, so that progress bars know the total."""

    def __init__(self, it: Iterable, n: int):
        self.it, self.n = it, n

    def __iter__(self):
        return iter(self.it)

    def __len__(self) -> int:
        return self.n


class _TileCache:
    """The few tiles that matching needs at once, as float Images (thread-safe)."""

    def __init__(self, sources: Sequence[Any], size: int):
        self.sources, self.size = sources, max(size, _CACHE_TILES_MIN)
        self._images: OrderedDict[int, Image] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, i: int) -> Image:
        with self._lock:
            img = self._images.get(i)
            if img is not None:
                self._images.move_to_end(i)
                return img
        src = self.sources[i]
        img = src if isinstance(src, Image) else Image(src)  # read outside the lock
        with self._lock:
            self._images[i] = img
            while len(self._images) > self.size:
                self._images.popitem(last=False)
        return img
