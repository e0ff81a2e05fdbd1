"""Grid montages end to end: find overlaps, match, place, report, render.

:func:`stitch_grid` takes tiles and a layout (or stage positions) and
returns a :class:`Montage`: the placement, the quality of every overlap,
and a way to render.  It is built from the three core classes:

1. Nominal tile positions come from the layout (rows x cols, overlap,
   raster or snake order, row- or column-major, flips) or from given stage
   positions.  Every pair of tiles whose nominal rectangles overlap by at
   least ``min_overlap`` px in both axes is matched, diagonal neighbours
   included.
2. Each overlap is matched coarse to fine with :class:`Matcher`: one window
   twice as wide as the nominal overlap finds the offset even when the
   stage is off by a good part of the overlap; then a row of small windows
   along the found overlap gives the matches that the placement uses.
3. Windows are kept when their SNR beats a threshold learned from the data:
   the same windows cut from pairs of tiles that do *not* overlap show what
   a meaningless match scores.  Where content is periodic or sparse (graph
   paper, blank resin with a few features) windows also match a period off,
   and the threshold is high; there the pixels decide: a coarse offset is
   taken when the two tiles agree clearly better there than at the stage
   offset, and its windows need only agree with it.
4. :class:`Placement` places every tile (robust to bad matches), with a
   faint prior at the stage position as the gauge.  Pairs tied only by the
   pixels' evidence are let go where the placement cannot fit them (a
   period's shift fits nothing else), and a tile without any tie keeps the
   stage layout's offsets to its placed neighbours (and is reported), so
   that it does not tear seams the stage had right.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import LayoutError, NoMatchesError
from ..io.files import collect_tiles, tile_shape
from ..io.stage import stage_positions
from ..match.matcher import default_workers
from .geometry import _pairs
from .inputs import MatchOptions, _Sized, _TileCache, grid_positions, progress_wrapper
from .matching import _learn_threshold, _match_pair
from .montage import Montage
from .placing import _place_by_pixels, _regularization, _warn_about


def stitch_grid(tiles: Any, grid: tuple[int, int] | None = None,
                overlap: float | tuple[float, float] = 0.15, *, layout: str = "raster",
                major: str = "row", flip: tuple[bool, bool] = (False, False),
                positions: Mapping | str | os.PathLike | None = None,
                model: str = "translation", regularize: float | None = None,
                windows: int = 7, window: int | None = None,
                min_overlap: float = 16, snr_threshold: float | None = None,
                workers: int | None = None,
                progress: Callable[[Iterable], Iterable] | bool | None = None) -> Montage:
    """Stitch a grid of tiles: match every overlap, place, report.

    Parameters
    ----------
    tiles : str, path, sequence or dict
        A glob pattern or folder (files in natural order: ``t2`` before
        ``t10``), or a sequence of files, arrays, Images or lazy arrays in
        acquisition order, or ``{tile id: source}`` (with ``positions``
        keyed by the same ids; the ids are kept).
    grid : (rows, cols), optional
        The layout; needed unless ``positions`` is given.
    overlap : float or (float, float)
        Nominal fraction of a tile shared with its neighbour (x, y).  A
        guess is enough: the coarse window finds stage errors up to about
        half the overlap.
    layout, major, flip
        Acquisition order: ``"raster"`` or ``"snake"``, ``"row"`` or
        ``"col"``-major, and mirroring in x and/or y (see
        :func:`grid_positions`).
    positions : dict, path or "ome", optional
        Stage positions instead of a layout: ``{index or file name: (x,
        y)}`` in pixels (top-left corners), a Fiji ``TileConfiguration.txt``
        whose file names are the tiles', or ``"ome"`` to read them from each
        OME-TIFF tile's metadata (see :func:`ome_stage_positions`).
    model : str
        Placement model: ``"translation"`` (default), ``"euclidean"``,
        ``"similarity"`` or ``"affine"``.  Whatever the model, each piece
        of the tile graph keeps a mean scale of 1 (the montage cannot
        shrink).
    regularize : float, optional
        Similarity and affine models: how strongly each tile's linear part
        is pulled towards the next simpler model's solution (affine:
        similarity; similarity: euclidean, scale 1), relative to its own
        matches (see :meth:`Placement.solve`).  Each overlap's windows lie
        in a narrow strip, which leaves an affine tile's shear and scale
        across the overlaps fitted mostly to noise; the affine default,
        0.1, damps that while leaving the shear and anisotropic scale that
        the matches do show.  The similarity default is 0 (plain).  0 for
        either is the plain model.
    windows : int
        Small windows per overlap (along its long axis).
    window : int, optional
        Size of the small windows (default: the largest power of two that
        fits the overlap, at most 128).
    min_overlap : float
        Pairs whose nominal rectangles share less than this (px) in either
        axis are not matched.
    snr_threshold : float, optional
        SNR a small window must reach; default: learned from pairs of tiles
        that do not overlap (their best SNR, times 1.25).
    workers : int, optional
        Threads matching overlaps at once (default: the CPUs available);
        the result does not depend on it.
    progress : bool or callable, optional
        True for a tqdm progress bar over the overlaps; or a function that
        wraps an iterable (e.g. ``tqdm.tqdm``).  Nothing is printed by
        default.

    Returns
    -------
    Montage

    Raises
    ------
    NoTilesError
        If the pattern matches no file.
    LayoutError
        If the grid does not match the tile count, or tiles differ in size.
    TileConfigError
        If a TileConfiguration line cannot be read.

    Examples
    --------
    >>> import spectralign
    >>> grid = spectralign.datasets.stitch2d_grid()
    >>> tiles = [grid.tiles[r, c] for r in range(grid.rows) for c in range(grid.cols)]
    >>> m = spectralign.stitch_grid(tiles, grid=(3, 2), overlap=(0.23, 0.12))
    >>> len(m.positions), m.unmatched
    (6, [])
    """
    keys = None
    if isinstance(tiles, Mapping):  # {tile id: source}, placed by stage positions
        if positions is None:
            raise LayoutError("Expected positions= with tiles given as a dict (their ids "
                              "say nothing about the layout). Got none.")
        keys = list(tiles)
        tiles = [tiles[k] for k in keys]
    sources, names = collect_tiles(tiles)
    if keys is not None:
        names = [os.path.basename(str(src)) if isinstance(src, (str, os.PathLike)) else str(k)
                 for k, src in zip(keys, sources)]
    shapes = {tile_shape(s) for s in sources}
    if len(shapes) != 1:
        raise LayoutError(f"Expected tiles of one size. Got sizes (height, width) "
                          f"{sorted(shapes)}; stitch tiles of each size separately.")
    h, w = shapes.pop()
    size = (w, h)
    cells: list = []
    if positions is not None:
        nominal = stage_positions(positions, names, sources, keys)
        ids: list = keys if keys is not None else list(range(len(sources)))
    else:
        if grid is None:
            raise LayoutError("Expected grid=(rows, cols) or positions=. Got neither.")
        cells, nominal = grid_positions(len(sources), grid, size, overlap, layout=layout,
                                        major=major, flip=flip)
        ids = list(cells)
    pairs = _pairs(nominal, size, min_overlap)
    cols = grid[1] if grid is not None else int(np.sqrt(len(sources))) + 1
    options = MatchOptions(windows, window, min_overlap, snr_threshold, workers, progress)
    return _stitch(sources, names, ids, nominal, pairs, size, cells, model=model,
                   regularize=regularize, options=options, cache_size=2 * cols + 2)


def stitch_sections(sections: Sequence[Any], grid: tuple[int, int],
                    overlap: float | tuple[float, float] = 0.15, *, layout: str = "raster",
                    major: str = "row", flip: tuple[bool, bool] = (False, False),
                    model: str = "translation", regularize: float | None = None,
                    windows: int = 7, window: int | None = None,
                    min_overlap: float = 16, snr_threshold: float | None = None,
                    workers: int | None = None,
                    progress: Callable[[Iterable], Iterable] | bool | None = None) -> Montage:
    """Stitch a stack of montaged sections in one placement.

    Every section is a grid of tiles with the same layout; tiles are
    matched with their neighbours in the section (as in
    :func:`stitch_grid`) and with the tile in the same grid cell of the next
    section (a 3 x 3 grid of windows), and all of them are placed at once,
    so each section's montage is both seamless and aligned to its
    neighbours.  Tile ids are ``(z, row, col)``.

    Parameters
    ----------
    sections : sequence
        One entry per section, first section first: a glob pattern, folder
        or sequence of tiles, as ``tiles`` in :func:`stitch_grid`.
    grid, overlap, layout, major, flip, model, regularize, windows, window,
    min_overlap, snr_threshold, workers, progress
        As in :func:`stitch_grid`.

    Returns
    -------
    Montage
        With ``sections`` set: it renders one z-level per section, and
        ``to_zarr`` writes a ``(z, y, x)`` volume.
    """
    if len(sections) < 1:
        raise LayoutError("Expected at least one section. Got none.")
    sources, names, ids, nominal, cells, levels = [], [], [], [], [], []
    size = None
    for z, tiles in enumerate(sections):
        src, nm = collect_tiles(tiles)
        shapes = {tile_shape(t) for t in src}
        if len(shapes) != 1 or (size is not None and (size[1], size[0]) not in shapes):
            raise LayoutError(f"Expected tiles of one size in every section. Got sizes "
                              f"(height, width) {sorted(shapes)} in section {z}.")
        h, w = shapes.pop()
        size = (w, h)
        cl, pos = grid_positions(len(src), grid, size, overlap, layout=layout, major=major,
                                 flip=flip)
        level = [(z, r, c) for r, c in cl]
        sources += src
        names += nm
        ids += level
        nominal.append(pos)
        cells += cl
        levels.append(level)
    nominal = np.vstack(nominal)
    n = len(sources) // len(sections)
    pairs = []
    for z in range(len(sections)):
        base = z * n
        pairs += [(base + i, base + j) for i, j in _pairs(nominal[base:base + n], size,
                                                          min_overlap)]
        if z + 1 < len(sections):  # the same cell in the next section
            pairs += [(base + k, base + n + k) for k in range(n)]
    options = MatchOptions(windows, window, min_overlap, snr_threshold, workers, progress)
    return _stitch(sources, names, ids, nominal, pairs, size, cells, model=model,
                   regularize=regularize, options=options,
                   cache_size=2 * n + 2 * grid[1] + 2, sections=levels)


def _stitch(sources, names, ids, nominal, pairs, size, cells, *, model, regularize,
            options: MatchOptions, cache_size, sections=None) -> "Montage":
    """Match ``pairs`` (indices into ``sources``), place, and make the Montage."""
    regularize = _regularization(model, regularize)
    wrap = progress_wrapper(options.progress, "matching overlaps")
    workers = max(1, default_workers() if options.workers is None else int(options.workers))
    windows, window = options.windows, options.window
    cache = _TileCache(sources, cache_size + 4 * workers)
    thresholds = ((float(options.snr_threshold),) * 2 if options.snr_threshold is not None
                  else _learn_threshold(cache, nominal, pairs, size, windows, window))

    def one(pair):
        return _match_pair(cache, pair[0], pair[1], nominal, size, windows, window, thresholds)

    if workers == 1:
        fits = [one(pair) for pair in wrap(pairs)]
    else:  # pairs in raster order over threads; results kept in pair order
        with ThreadPoolExecutor(workers) as pool:
            fits = list(wrap(_Sized(pool.map(one, pairs), len(pairs))))
    if not any(pm.tied for pm in fits):
        raise NoMatchesError(
            f"Expected matches between overlapping tiles. Got none in {len(pairs)} overlapping "
            f"pair(s) (SNR thresholds {thresholds[0]:.1f} / {thresholds[1]:.1f}); check the "
            f"grid, layout and overlap, or the tiles' content.")
    tiles = dict(zip(ids, sources))
    result, fits, scored = _place_by_pixels(model, regularize, ids, nominal, pairs, fits, tiles)
    unmatched = _warn_about(result, ids, nominal, pairs, fits, scored, size)
    return Montage(placement=result, tiles=dict(zip(ids, sources)), names=dict(zip(ids, names)),
                   nominal={t: nominal[k] for k, t in enumerate(ids)}, overlaps=scored,
                   snr_threshold=thresholds[1], unmatched=unmatched, tilesize=size,
                   cells=dict(zip(ids, cells)) if cells else {}, sections=sections)
