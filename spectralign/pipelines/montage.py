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

import glob as _glob
import json
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from ..affine import Affine
from ..errors import LayoutError, NoMatchesError, NoTilesError, SpectralignWarning
from ..io.image import Image
from ..match.matcher import Matcher
from ..place.placement import Placement
from ..place.result import PlacementResult
from .quality import seam_scores
from ..io.tileconfig import read_tileconfig, write_tileconfig

__all__ = ["stitch_grid", "stitch_sections", "Montage", "OverlapFit", "grid_positions", "natural_sorted",
           "ome_stage_positions"]

_PRIOR_WEIGHT = 1e-6  # per anchor point; a match weighs 1
#: The default pull of each model towards the next simpler one's solution
#: (see ``regularize`` in :func:`stitch_grid` and :func:`align_stack`): in a
#: grid every tile is held by neighbours on all sides, and only the affine
#: shear across narrow overlaps needs damping; along a stack each pair's scale
#: is free and its matching noise adds up (over the 30 ssTEM sections:
#: similarity 0.970-1.027 plain, 0.986-1.013 at 1, 0.992-1.007 at 3; affine
#: 0.933-1.102 plain, 0.988-1.014 at (3, 3): towards a similarity itself
#: pulled to scale 1; median seam NCC between neighbours 0.403 / 0.404 and
#: 0.416 / 0.413; over the first 10 sections, 1 still left 0.987-1.022).
_REGULARIZE = {"grid": {"affine": 0.1}, "stack": {"similarity": 3.0, "affine": (3.0, 3.0)}}
_CACHE_TILES_MIN = 4


# ------------------------------------------------------------------ inputs


def natural_sorted(names: Iterable[str]) -> list[str]:
    """Sort file names with their numbers in numeric order (``t2`` < ``t10``)."""
    def key(s: str):
        return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", s)]
    return sorted(names, key=key)


#: File name endings taken as images from a folder or glob pattern.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp",
                  ".jp2", ".j2k", ".jxl", ".avif", ".pgm", ".ppm")


def _collect(tiles: Any) -> tuple[list[Any], list[str]]:
    """Tiles as a list of sources and their names.  From a folder or glob
    pattern, image files only (by their ending, ``IMAGE_SUFFIXES``): notes,
    JSON reports and TileConfiguration files beside the tiles are skipped."""
    if isinstance(tiles, (str, os.PathLike)):
        pattern = str(tiles)
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "*")
        found = [f for f in natural_sorted(_glob.glob(pattern)) if os.path.isfile(f)]
        files = [f for f in found if f.lower().endswith(IMAGE_SUFFIXES)]
        if not files:
            other = (f" (only {', '.join(os.path.basename(f) for f in found[:5])}"
                     f"{', ...' if len(found) > 5 else ''}, not images)" if found else "")
            raise NoTilesError(f"Expected tile images matching {str(tiles)!r}. Got none{other}; "
                               f"check the folder and the pattern (e.g. 'tiles/*.tif').")
        return files, [os.path.basename(f) for f in files]
    items = list(tiles)
    if not items:
        raise NoTilesError("Expected at least one tile. Got an empty sequence.")
    names = [os.path.basename(str(t)) if isinstance(t, (str, os.PathLike)) else f"tile_{i:04d}"
             for i, t in enumerate(items)]
    return items, names


def _shape(tile: Any) -> tuple[int, int]:
    """(height, width) of a tile without reading its pixels where possible."""
    if isinstance(tile, (str, os.PathLike)):
        from ..io.sources import FileSource

        return FileSource(tile).shape
    shape = getattr(tile, "shape", None)
    if shape is None:
        shape = np.asarray(tile).shape
    return tuple(int(s) for s in shape[:2])


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


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class OverlapFit:
    """How one overlap matched and fits the placement.

    Attributes
    ----------
    t, t_ : hashable
        The two tiles.
    nominal : (2,) float array
        Offset ``(x, y)`` of ``t_`` from ``t`` that the layout or stage gave.
    found : (2,) float array
        Offset measured by the coarse window (NaN if it failed).
    windows, kept : int
        Small windows matched, and kept (SNR above the threshold and
        agreeing with the coarse offset).
    snr : float
        Median SNR of the small windows (coarse SNR if none was matched).
    rms : float
        RMS residual (px) of the kept windows under the final placement.
    seam_ncc, seam_rms : float
        How well the two tiles' pixels agree over the overlap under the
        final placement (:func:`spectralign.pipelines.quality.seam_scores`: NCC, and
        RMS difference in the tiles' units); NaN where not scored.
    stage_ncc : float
        The same NCC with the tiles where the stage layout put them.
    source : str
        What ties the two tiles in the placement: ``"windows"`` (kept small
        windows), ``"coarse"`` (no small window was kept, but the coarse
        offset makes the seam clearly better than the stage offset does, so
        the pair is tied by it), or ``""`` (nothing: the pair does not
        constrain the placement).
    """

    t: Hashable
    t_: Hashable
    nominal: np.ndarray
    found: np.ndarray
    windows: int
    kept: int
    snr: float
    rms: float
    seam_ncc: float = float("nan")
    seam_rms: float = float("nan")
    stage_ncc: float = float("nan")
    source: str = ""


@dataclass(eq=False)
class Montage:
    """A placed grid of tiles, its quality, and a way to render it.

    Attributes
    ----------
    placement : PlacementResult
        The fit, with per-match residuals, dropped matches and components.
    tiles : dict
        ``{tile: source}`` as given (paths stay paths: rendering reads them
        lazily).
    names : dict
        ``{tile: name}``: the file name, or ``tile_NNNN`` for arrays.
    nominal : dict
        ``{tile: (x, y)}`` stage or layout positions.
    overlaps : list of OverlapFit
    snr_threshold : float
        SNR a small window had to beat to be kept.
    unmatched : list
        Tiles that nothing ties to a neighbour: placed with the stage
        layout's offsets to their placed neighbours (or at their stage
        position, where no neighbour is placed).
    tilesize : (width, height)
    sections : list of lists, optional
        For a stack of montaged sections: the tiles of each section, in
        order; rendering then gives one z-level per section.
    """

    placement: PlacementResult
    tiles: dict
    names: dict
    nominal: dict
    overlaps: list
    snr_threshold: float
    unmatched: list
    tilesize: tuple[int, int]
    cells: dict = field(default_factory=dict)
    sections: list | None = None

    @property
    def positions(self) -> dict[Hashable, np.ndarray]:
        """``{tile: (x, y)}``: top-left corner of each tile in the montage."""
        return self.placement.positions

    @property
    def transforms(self) -> dict[Hashable, Affine]:
        """``{tile: Affine}``: tile-to-montage transforms."""
        return self.placement.transforms

    def renderer(self, **options: Any):
        """A :class:`Renderer` with every tile rendered (lazily for files).

        ``options`` go to :class:`Renderer` (``blend``, ``chunk``,
        ``method``, ...); the default feather is a quarter of the smallest
        overlap, at least 10 px.
        """
        from ..render.renderer import Renderer

        if options.get("blend") is None:
            options["blend"] = self._default_blend()
        if self.placement.model == "translation":
            ren = Renderer(rigid=self.positions, tilesize=self.tilesize, **options)
        else:
            ren = Renderer(affine=self.transforms, tilesize=self.tilesize, **options)
        for z, level in enumerate(self.sections or [list(self.tiles)]):
            if z:
                ren.clear()  # one z-level per section
            for t in level:
                ren.render(t, self.tiles[t])
        return ren

    def to_zarr(self, path: str | os.PathLike, **options: Any) -> Path:
        """Render the montage to OME-Zarr (see :meth:`Renderer.to_zarr`).

        Options ``resume``, ``overwrite``, ``pixel_size``, ``unit``,
        ``pyramid`` and ``name`` go to ``to_zarr``; the rest to
        :meth:`renderer`.
        """
        keys = ("resume", "overwrite", "pixel_size", "unit", "pyramid", "name")
        store = {k: options.pop(k) for k in keys if k in options}
        return self.renderer(**options).to_zarr(path, **store)

    def _default_blend(self) -> float:
        gaps = [self.tilesize[0] - abs(o.nominal[0]) for o in self.overlaps
                if abs(o.nominal[1]) < 1e-9] + [self.tilesize[1] - abs(o.nominal[1])
                                                 for o in self.overlaps
                                                 if abs(o.nominal[0]) < 1e-9]
        return max(10.0, 0.25 * min(gaps)) if gaps else 10.0

    # -- reports and exports ----------------------------------------------

    @property
    def extent_ratio(self) -> tuple[float, float]:
        """Width and height of the placed montage over those of the stage
        layout (bounding boxes of the tiles): 1 where the placement kept
        the layout's size."""
        return _extent_ratio(self.transforms, self.nominal, self.tilesize)

    def worst(self, n: int = 5) -> list[OverlapFit]:
        """The ``n`` matched overlaps with the largest residual RMS."""
        matched = [o for o in self.overlaps if o.kept and np.isfinite(o.rms)]
        return sorted(matched, key=lambda o: -o.rms)[:n]

    def label(self, t: Hashable) -> str:
        """How the report names tile ``t``: its grid cell, or (tiles placed
        from positions) its file name."""
        name = self.names.get(t)
        if isinstance(t, (int, np.integer)) and name and not name.startswith("tile_"):
            return name
        return repr(t)

    def report(self, n: int = 5) -> str:
        """A plain-text quality report."""
        lab = self.label
        res = self.placement
        kept = sum(o.kept for o in self.overlaps)
        total = sum(o.windows for o in self.overlaps)
        lines = [f"{len(self.tiles)} tiles, {len(self.overlaps)} overlaps, {kept} of {total} "
                 f"windows kept (SNR threshold {self.snr_threshold:.1f}), "
                 f"{res.ndropped} dropped by the placement",
                 f"residuals: RMS {res.rms:.3f} px, max {res.max:.3f} px (RMS "
                 f"{res.pixel_rms:.3f} tile px); tile scales {res.scales.min():.4f} to "
                 f"{res.scales.max():.4f}; extent / stage layout's: "
                 f"{' x '.join(f'{v:.4f}' for v in self.extent_ratio)}"]
        coarse = [o for o in self.overlaps if o.source == "coarse"]
        if coarse:
            lines.append(f"{len(coarse)} overlap(s) tied by their coarse offset alone (no small "
                         f"window kept; the pixels agree clearly better there than at the "
                         f"stage): {', '.join(f'{lab(o.t)} - {lab(o.t_)}' for o in coarse[:5])}")
        empty = [o for o in self.overlaps if not o.source]
        if empty:
            lines.append(f"{len(empty)} overlap(s) that do not tie their tiles (small, "
                         f"textureless or periodic overlaps, diagonal corners): "
                         f"{', '.join(f'{lab(o.t)} - {lab(o.t_)}' for o in empty[:5])}")
        if self.unmatched:
            lines.append(f"WARNING: {len(self.unmatched)} tile(s) without a kept match, placed "
                         f"with the stage layout's offsets to their neighbours: "
                         f"{', '.join(lab(t) for t in self.unmatched[:10])}")
        lines.append("worst overlaps (RMS px, SNR, kept/windows):")
        for o in self.worst(n):
            lines.append(f"  {lab(o.t)} - {lab(o.t_)}: {o.rms:.3f}, {o.snr:.1f}, "
                         f"{o.kept}/{o.windows}")
        scored = [o for o in self.overlaps if np.isfinite(o.seam_ncc)]
        if scored:
            ncc = np.array([o.seam_ncc for o in scored])
            stage = np.array([o.stage_ncc for o in scored])
            lines.append(f"seams (pixel NCC over each overlap): median {np.median(ncc):.3f}, "
                         f"min {ncc.min():.3f}; at the stage layout: median "
                         f"{np.nanmedian(stage):.3f}")
            lines.append("worst seams (NCC placed / at the stage):")
            for o in sorted(scored, key=lambda o: o.seam_ncc)[:n]:
                lines.append(f"  {lab(o.t)} - {lab(o.t_)}: {o.seam_ncc:.3f} / {o.stage_ncc:.3f}")
        return "\n".join(lines)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Positions, transforms and quality as JSON (written to ``path`` if given)."""
        def key(t):
            return self.names.get(t, repr(t))
        doc = {
            "tilesize": list(self.tilesize),
            "model": self.placement.model,
            "tiles": [{"name": key(t), "id": repr(t), "cell": list(self.cells.get(t, ())),
                       "nominal": [float(v) for v in self.nominal[t]],
                       "position": [float(v) for v in self.positions[t]],
                       "transform": np.asarray(self.transforms[t].matrix).tolist()}
                      for t in self.tiles],
            "overlaps": [{"a": key(o.t), "b": key(o.t_), "source": o.source,
                          "windows": o.windows, "kept": o.kept,
                          "snr": _num(o.snr), "rms": _num(o.rms),
                          "seam_ncc": _num(o.seam_ncc), "seam_rms": _num(o.seam_rms),
                          "stage_ncc": _num(o.stage_ncc),
                          "found": [_num(v) for v in o.found]} for o in self.overlaps],
            "snr_threshold": self.snr_threshold,
            "residual_rms": _num(self.placement.rms),
            "residual_rms_tile_px": _num(self.placement.pixel_rms),
            "tile_scales": [float(self.placement.scales.min()),
                            float(self.placement.scales.max())],
            "extent_ratio": list(self.extent_ratio),
            "residual_max": _num(self.placement.max),
            "unmatched": [key(t) for t in self.unmatched],
        }
        text = json.dumps(doc, indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Positions and affine transforms as CSV, one row per tile:
        ``name, row, col, x, y, a00, a01, a02, a10, a11, a12`` (the
        tile-to-montage matrix ``[[a00, a01, a02], [a10, a11, a12]]``)."""
        import csv

        path = Path(path)
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["name", "row", "col", "x", "y",
                          "a00", "a01", "a02", "a10", "a11", "a12"])
            for t in self.tiles:
                cell = self.cells.get(t, ("", ""))
                m = np.asarray(self.transforms[t].matrix).ravel()
                out.writerow([self.names[t], *cell, *(repr(float(v)) for v in self.positions[t]),
                              *(repr(float(v)) for v in m)])
        return path

    def to_overlaps_csv(self, path: str | os.PathLike) -> Path:
        """The quality of every overlap as CSV, one row per overlap: ``a, b,
        source, windows, kept, snr, rms, seam_ncc, seam_rms, stage_ncc,
        found_x, found_y`` (see :class:`OverlapFit`; empty where not
        measured)."""
        import csv

        def num(v):
            return "" if not np.isfinite(v) else repr(float(v))

        path = Path(path)
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["a", "b", "source", "windows", "kept", "snr", "rms", "seam_ncc",
                          "seam_rms", "stage_ncc", "found_x", "found_y"])
            for o in self.overlaps:
                out.writerow([self.label(o.t), self.label(o.t_), o.source, o.windows, o.kept,
                              num(o.snr), num(o.rms), num(o.seam_ncc), num(o.seam_rms),
                              num(o.stage_ncc), num(o.found[0]), num(o.found[1])])
        return path

    def write_tileconfig(self, path: str | os.PathLike) -> Path:
        """Write the placed positions as a Fiji ``TileConfiguration.registered.txt``."""
        return write_tileconfig(path, {self.names[t]: self.positions[t] for t in self.tiles})

    def plot(self, folder: str | os.PathLike, n: int = 3) -> list[Path]:
        """Save pictures of the fit as PNG (needs matplotlib): the residual,
        SNR and seam NCC of each overlap drawn over the tile layout
        (``overlaps.png``), and both tiles over the overlap with their
        difference for the ``n`` worst seams (``worst_seam_K.png``) and
        the ``n`` worst residuals (``worst_residual_K.png``); long strips
        are cut into rows of pieces.  Returns the files written."""
        from .plots import plot_montage

        return plot_montage(self, Path(folder), n)


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


# ------------------------------------------------------------------ matching


def _overlap(pa, pb, size):
    """Model rectangle (x0, y0, x1, y1) shared by two tiles, or None."""
    w, h = size
    x0, y0 = max(pa[0], pb[0]), max(pa[1], pb[1])
    x1, y1 = min(pa[0], pb[0]) + w, min(pa[1], pb[1]) + h
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _pairs(nominal: np.ndarray, size: tuple[int, int], min_overlap: float) -> list[tuple[int, int]]:
    from scipy.spatial import cKDTree

    radius = float(np.hypot(*size))
    out = []
    for i, j in sorted(cKDTree(nominal).query_pairs(radius)):
        rect = _overlap(nominal[i], nominal[j], size)
        if rect is not None and min(rect[2] - rect[0], rect[3] - rect[1]) >= min_overlap:
            out.append((i, j))
    return out


def _pow2_at_most(v: float, lo: int = 16) -> int:
    """Largest power of two <= v (at least ``lo``)."""
    return max(lo, 1 << int(np.floor(np.log2(max(v, 1)))))


def _coarse_geometry(rect, pa, pb, size):
    """Centre in each tile and the size of the coarse window of an overlap:
    twice the overlap across it (so that a stage error of a good part of
    the overlap still leaves shared content), 80 % of it along it."""
    w, h = size
    ow, oh = rect[2] - rect[0], rect[3] - rect[1]
    centre = np.array([(rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2])
    win = np.array([min(2 * ow, 0.8 * w) if ow < oh else 0.8 * ow,
                    min(2 * oh, 0.8 * h) if oh <= ow else 0.8 * oh])
    win = [_smooth_at_most(max(v, 16)) for v in win]
    return centre - pa, centre - pb, (win[0], win[1])


def _smooth_at_most(v: float) -> int:
    """Largest 2-3-5-smooth integer <= v: a size FFTs handle fast."""
    n = int(np.floor(v))
    while True:
        k = n
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return n
        n -= 1


def _fine_points(rect_found, nwin, win):
    """Centres (model px) of ``nwin`` windows of size ``win = (w, h)``
    along the overlap's long axis, staggered across it (alternately to
    either side, as far as the strip leaves room): windows on one line
    would leave the affine model's shear across the overlap undetermined."""
    x0, y0, x1, y1 = rect_found
    ow, oh = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    along, across = (0, 1) if ow >= oh else (1, 0)
    extent = (ow, oh)
    span = max(extent[along] - win[along], 0)
    room = max(extent[across] - win[across], 0) / 2
    t = np.linspace(-span / 2, span / 2, nwin) if nwin > 1 else np.zeros(1)
    side = np.where(np.arange(len(t)) % 2, 1.0, -1.0) * room if nwin > 1 else np.zeros(1)
    out = np.empty((len(t), 2))
    out[:, along] = (cx, cy)[along] + t
    out[:, across] = (cx, cy)[across] + side
    return out


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
    sources, names = _collect(tiles)
    if keys is not None:
        names = [os.path.basename(str(src)) if isinstance(src, (str, os.PathLike)) else str(k)
                 for k, src in zip(keys, sources)]
    shapes = {_shape(s) for s in sources}
    if len(shapes) != 1:
        raise LayoutError(f"Expected tiles of one size. Got sizes (height, width) "
                          f"{sorted(shapes)}; stitch tiles of each size separately.")
    h, w = shapes.pop()
    size = (w, h)
    cells: list = []
    if positions is not None:
        nominal = _stage_positions(positions, names, sources, keys)
        ids: list = keys if keys is not None else list(range(len(sources)))
    else:
        if grid is None:
            raise LayoutError("Expected grid=(rows, cols) or positions=. Got neither.")
        cells, nominal = grid_positions(len(sources), grid, size, overlap, layout=layout,
                                        major=major, flip=flip)
        ids = list(cells)
    pairs = _pairs(nominal, size, min_overlap)
    cols = grid[1] if grid is not None else int(np.sqrt(len(sources))) + 1
    return _stitch(sources, names, ids, nominal, pairs, size, cells, model=model,
                   regularize=regularize, windows=windows, window=window,
                   snr_threshold=snr_threshold, workers=workers, progress=progress,
                   cache_size=2 * cols + 2)


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
        src, nm = _collect(tiles)
        shapes = {_shape(t) for t in src}
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
    return _stitch(sources, names, ids, nominal, pairs, size, cells, model=model,
                   regularize=regularize, windows=windows, window=window,
                   snr_threshold=snr_threshold, workers=workers, progress=progress,
                   cache_size=2 * n + 2 * grid[1] + 2, sections=levels)


def _stitch(sources, names, ids, nominal, pairs, size, cells, *, model, regularize, windows,
            window, snr_threshold, workers, progress, cache_size, sections=None) -> "Montage":
    """Match ``pairs`` (indices into ``sources``), place, and make the Montage."""
    regularize = _regularization(model, regularize)
    if progress is True:
        from tqdm.auto import tqdm

        progress = lambda it: tqdm(it, desc="matching overlaps", unit="pair")  # noqa: E731
    wrap = progress or (lambda it: it)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    workers = max(1, int(workers))
    cache = _TileCache(sources, cache_size + 4 * workers)
    thresholds = ((float(snr_threshold),) * 2 if snr_threshold is not None
                  else _learn_threshold(cache, nominal, pairs, size, windows, window))
    def one(pair):
        return _match_pair(cache, pair[0], pair[1], nominal, size, windows, window, thresholds)

    if workers == 1:
        fits = [one(pair) for pair in wrap(pairs)]
    else:  # pairs in raster order over threads; results kept in pair order
        with ThreadPoolExecutor(workers) as pool:
            fits = list(wrap(_Sized(pool.map(one, pairs), len(pairs))))
    if not any(len(p) for p, _, _ in fits):
        raise NoMatchesError(
            f"Expected matches between overlapping tiles. Got none in {len(pairs)} overlapping "
            f"pair(s) (SNR thresholds {thresholds[0]:.1f} / {thresholds[1]:.1f}); check the "
            f"grid, layout and overlap, or the tiles' content.")
    tiles = dict(zip(ids, sources))
    stage_pos = {t: nominal[k] for k, t in enumerate(ids)}
    stage = seam_scores(tiles, stage_pos, [(ids[i], ids[j]) for i, j in pairs])

    def placed(fits, last=None):
        """Place, and score the seams (only those of moved tiles, given the
        ``last`` placement and its scores)."""
        result, fits = _place(model, ids, nominal, pairs, fits, regularize)
        overlaps = [(ids[i], ids[j], info) for (i, j), (_, _, info) in zip(pairs, fits)]
        fitted = _overlap_fits(result, overlaps)
        if last is None:
            return result, fits, overlaps, _with_seams(fitted, tiles, result.transforms, stage)
        before = last[0].transforms
        moved = {t for t, a in result.transforms.items()
                 if np.abs(np.asarray(a.matrix) - np.asarray(before[t].matrix)).max() > 1e-3}
        redo = [k for k, o in enumerate(fitted) if o.t in moved or o.t_ in moved]
        new = _with_seams([fitted[k] for k in redo], tiles, result.transforms,
                          [stage[k] for k in redo])
        scored = [replace(o, seam_ncc=p.seam_ncc, seam_rms=p.seam_rms, stage_ncc=p.stage_ncc)
                  for o, p in zip(fitted, last[3])]
        for k, o in zip(redo, new):
            scored[k] = o
        return result, fits, overlaps, scored

    result, fits, overlaps, scored = placed(fits)
    # robust by the pixels: a tie that the placement leaves far from its matches,
    # or whose seam it left worse than the stage's, is let go when the seams
    # around it then agree better (two wrong pairs among six can outvote the
    # residuals' robust scale, and nothing else would show them)
    tried: set = set()
    for _ in range(_PIXEL_TRIALS):
        suspects = [k for k, o in enumerate(scored) if o.source and k not in tried and
                    (o.rms > _PIXEL_RESIDUAL or o.seam_ncc < o.stage_ncc - _SEAM_WORSE)]
        if not suspects:
            break
        k = max(suspects, key=lambda k: scored[k].rms if np.isfinite(scored[k].rms) else 0.0)
        tried.add(k)
        trial = list(fits)
        trial[k] = (np.zeros((0, 2)), np.zeros((0, 2)),
                    dict(fits[k][2], source="", kept=0, weights=None, let_go=True))
        if not any(len(p) for p, _, _ in trial):
            break
        again = placed(trial, (result, fits, overlaps, scored))
        before = np.nansum([o.seam_ncc for o in scored])
        if np.nansum([o.seam_ncc for o in again[3]]) > before + 0.01:
            result, fits, overlaps, scored = again
    tied = {k for (i, j), (p, _, _) in zip(pairs, fits) if len(p) for k in (i, j)}
    unmatched = [ids[k] for k in range(len(ids)) if k not in tied]
    if unmatched:
        warnings.warn(f"{len(unmatched)} tile(s) have no kept match with a neighbour and keep "
                      f"the stage layout's offsets to their neighbours: {unmatched[:10]!r}",
                      SpectralignWarning, stacklevel=3)
    matched_pairs = [(i, j) for (i, j), (p, _, _) in zip(pairs, fits) if len(p)]
    if matched_pairs:
        pieces = _pieces(len(ids), matched_pairs)
        if len(pieces) > 1:
            shown = "; ".join(repr([ids[k] for k in piece[:4]])[:-1]
                              + (", ...]" if len(piece) > 4 else "]") for piece in pieces[:4])
            warnings.warn(
                f"The matched tiles form {len(pieces)} separate pieces (of "
                f"{', '.join(str(len(p)) for p in pieces)} tiles) that no kept match joins: "
                f"their places relative to each other come from the stage layout alone. "
                f"Check the layout (flip, major, snake/raster) and the overlap. Pieces: "
                f"{shown}", SpectralignWarning, stacklevel=3)
    departed = [np.hypot(*(info["found"] - info["nominal"])) for _, _, info in overlaps
                if info.get("source")]
    _check_size(result, stage_pos, size, max(departed, default=0.0))
    _warn_worse(scored, [bool(info.get("let_go")) for _, _, info in overlaps])
    fits = scored
    return Montage(placement=result, tiles=dict(zip(ids, sources)), names=dict(zip(ids, names)),
                   nominal={t: nominal[k] for k, t in enumerate(ids)}, overlaps=fits,
                   snr_threshold=thresholds[1], unmatched=unmatched, tilesize=size,
                   cells=dict(zip(ids, cells)) if cells else {}, sections=sections)


#: A pair tied by weak evidence (shown by its pixels, not by its SNR) is let go
#: when the placement leaves it this far (px RMS) from its matches.
_WEAK_RESIDUAL = 2.0


def _regularization(model: str, regularize, kind: str = "grid"):
    """The pull towards the next simpler model: by default (``None``) that
    of ``_REGULARIZE`` for a ``"grid"`` or a ``"stack"``; checked."""
    from ..place.placement import _pulls

    if regularize is None:
        return _REGULARIZE[kind].get(model, 0.0)
    try:
        _pulls(model, regularize)
    except ValueError:
        raise ValueError(f"Expected regularize >= 0, and only with model='similarity' or "
                         f"'affine'. Got regularize={regularize!r} with model={model!r}."
                         ) from None
    return regularize


def _place(model, ids, nominal, pairs, fits, regularize=0.0):
    """Place the tiles by the matched pairs.

    Pairs tied by weak evidence (periodic or sparse content, shown by the
    pixels rather than the SNR) are let go, the worst first, while the
    placement leaves them more than ``_WEAK_RESIDUAL`` px from their
    matches: a period's shift fits its own pair and nothing else.  Tiles
    that nothing ties then move with their tied neighbours (keeping the
    stage layout's offsets to them), so that they do not tear the seams
    that the stage layout had right.  Returns the result and the fits.
    """
    fits = list(fits)
    for _ in range(10):
        pl = Placement()
        for (i, j), (p, p_, info) in zip(pairs, fits):
            if len(p):
                pl.addmatches(ids[i], ids[j], p, p_, weights=info.get("weights"))
        for k, t in enumerate(ids):  # faint stage priors: the gauge of each piece
            pl.addprior(t, tuple(nominal[k]), weight=_PRIOR_WEIGHT)
        result = pl.solve(model, regularize=regularize)
        rms = {}
        for pf in result.pairs:
            rms[(pf.t, pf.t_)] = rms[(pf.t_, pf.t)] = pf.rms
        bad = {k: rms.get((ids[i], ids[j]), 0.0)
               for k, ((i, j), (p, _, info)) in enumerate(zip(pairs, fits))
               if len(p) and info.get("weak")}
        bad = {k: r for k, r in bad.items() if r > _WEAK_RESIDUAL}
        if not bad:
            break
        worst = max(bad.values())
        for k, r in bad.items():
            if r >= 0.5 * worst:
                info = dict(fits[k][2], source="", kept=0, weights=None, let_go=True)
                fits[k] = (np.zeros((0, 2)), np.zeros((0, 2)), info)
    tied = {k for (i, j), (p, _, _) in zip(pairs, fits) if len(p) for k in (i, j)}
    if tied and len(tied) < len(ids):
        index = {t: n for n, t in enumerate(result.tiles)}
        mats = result.fit.mats.copy()
        near: dict[int, list[int]] = {}
        for i, j in pairs:
            near.setdefault(i, []).append(j)
            near.setdefault(j, []).append(i)
        placed = set(tied)
        while True:  # in rings around the tied tiles
            ring = {k: [n for n in near.get(k, ()) if n in placed]
                    for k in range(len(ids)) if k not in placed}
            ring = {k: v for k, v in ring.items() if v}
            if not ring:
                break
            for k, nbrs in ring.items():
                m = [mats[index[ids[n]]].copy() for n in nbrs]
                for mm, n in zip(m, nbrs):
                    mm[:, 2] += mm[:, :2] @ (nominal[k] - nominal[n])
                mats[index[ids[k]]] = np.mean(m, axis=0)
            placed.update(ring)
        result = replace(result, fit=replace(result.fit, mats=mats))
    return result, fits


def _pieces(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """Connected pieces (of two tiles or more) of the graph of matched pairs,
    largest first."""
    from ..place import lsq as _lsq

    ia, ib = np.array(edges).T
    _, labels = _lsq.components(n, ia, ib)
    members = np.unique(np.concatenate([ia, ib]))
    out = [sorted(int(k) for k in members[labels[members] == g])
           for g in np.unique(labels[members])]
    return sorted(out, key=len, reverse=True)


_UNITS = {"m": 1e6, "mm": 1e3, "µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3,
          "pm": 1e-6, "Å": 1e-4}


def ome_stage_positions(sources: Sequence[Any]) -> np.ndarray:
    """Stage positions ``(x, y)`` in pixels from each OME-TIFF's metadata.

    The first plane's ``PositionX`` / ``PositionY`` divided by the pixel's
    ``PhysicalSizeX`` / ``PhysicalSizeY`` (units converted where they
    differ).  Stage axes are taken to run with the image axes.

    Raises
    ------
    LayoutError
        If a tile is not an OME-TIFF with both positions and pixel sizes.
    """
    import xml.etree.ElementTree as ET

    import tifffile

    out = np.empty((len(sources), 2))
    for k, src in enumerate(sources):
        name = str(src)
        try:
            with tifffile.TiffFile(name) as tif:
                xml = tif.ome_metadata
        except (OSError, ValueError, TypeError) as exc:
            raise LayoutError(f"Expected OME-TIFF tiles for positions='ome'. Could not read "
                              f"{name!r}: {exc}") from None
        if not xml:
            raise LayoutError(f"Expected OME-TIFF tiles for positions='ome'. {name!r} has no "
                              f"OME metadata; give positions= as a dict or TileConfiguration.")
        root = ET.fromstring(xml)
        pixels = next((e for e in root.iter() if e.tag.endswith("Pixels")), None)
        plane = next((e for e in root.iter() if e.tag.endswith("Plane")), None)
        try:
            px = []
            for axis in ("X", "Y"):
                size = float(pixels.get(f"PhysicalSize{axis}"))
                pos = float(plane.get(f"Position{axis}"))
                su = _UNITS[pixels.get(f"PhysicalSize{axis}Unit", "µm")]
                pu = _UNITS[plane.get(f"Position{axis}Unit", "µm")]
                px.append(pos * pu / (size * su))
        except (AttributeError, TypeError, ValueError, KeyError):
            raise LayoutError(f"Expected PositionX/PositionY and PhysicalSizeX/PhysicalSizeY in "
                              f"the OME metadata of {name!r}. Got them incomplete or in unknown "
                              f"units.") from None
        out[k] = px
    return out


def _stage_positions(positions: Any, names: list[str], sources=None, keys=None) -> np.ndarray:
    if isinstance(positions, str) and positions == "ome":
        return ome_stage_positions(sources)
    if isinstance(positions, (str, os.PathLike)):
        entries = read_tileconfig(positions)
        table = {os.path.basename(e.file): e.position[:2] for e in entries}
    else:
        table = dict(positions)
    out = np.empty((len(names), 2))
    for k, name in enumerate(names):
        for key in ((keys[k],) if keys is not None else ()) + (k, name):
            if key in table:
                out[k] = np.asarray(table[key], dtype=float)[:2]
                break
        else:
            raise LayoutError(f"Expected a stage position for every tile. Got none for "
                              f"{name!r} (tile {k}); positions are keyed by index or file name.")
    return out


#: The lowest SNR a window may have to count at all, whatever was learned.
_SNR_FLOOR = 5.0
#: How much better (pixel NCC over the overlap) a coarse offset must make the
#: seam than the stage offset does, to be taken when the SNR alone does not
#: show it (periodic or sparse content, whose windows also match elsewhere).
_VERIFY_MARGIN = 0.1
#: ... and the seam there must agree at least this well (unrelated content
#: reaches 0.2-0.3 over a small corner).
_VERIFY_NCC = 0.5


def _pair_ncc(a, b, offsets) -> np.ndarray:
    """Seam NCC of tiles ``a`` and ``b`` with ``b`` at each of ``offsets``
    from ``a``, all over the same points of ``a`` (the part of ``a`` that
    ``b`` covers at every offset), so that the scores compare fairly; -1
    where that part is too small to score."""
    from ..io.sources import as_source
    from .quality import _sample

    offsets = np.asarray(offsets, float).reshape(-1, 2)
    (h1, w1), (h2, w2) = a.shape, b.shape
    lo = np.maximum(offsets.max(0), 0) + 1
    hi = np.minimum(offsets.min(0) + (w2, h2), (w1, h1)) - 2
    size = hi - lo
    if np.any(size < 8):
        return np.full(len(offsets), -1.0)
    step = max(1.0, float(np.sqrt(size[0] * size[1] / 20_000)))
    xs, ys = np.arange(lo[0], hi[0], step), np.arange(lo[1], hi[1], step)
    pts = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    sa, sb = as_source(a), as_source(b)
    v1 = _sample(sa, Affine(), pts, h1, w1, 1.0)
    d1 = v1 - v1.mean()
    out = []
    for off in offsets:
        v2 = _sample(sb, Affine.translator(-off), pts, h2, w2, 1.0)
        d2 = v2 - v2.mean()
        den = np.sqrt((d1 * d1).sum() * (d2 * d2).sum())
        out.append(float((d1 * d2).sum() / den) if den > 0 else -1.0)
    return np.array(out)


def _shown(a, b, found, nominal_off) -> bool:
    """Do the pixels show ``found`` (clearly better seam than the stage offset)?"""
    s = _pair_ncc(a, b, [found, nominal_off])
    return bool(s[0] >= max(s[1] + _VERIFY_MARGIN, _VERIFY_NCC))


def _match_pair(cache, i, j, nominal, size, nwin, window, thresholds):
    """Coarse window, then a row of small windows, for tiles i and j.

    A coarse offset that the learned SNR threshold does not accept is still
    taken when the pixels show it: the seam agrees clearly better there than
    at the stage offset (periodic content such as graph paper, whose windows
    also match at a period's shift, or sparse content).  The small windows of
    such a pair need only the SNR floor and agreement with the coarse offset.
    When no small window is kept but the coarse offset is shown by the
    pixels, the pair is tied by the coarse offset alone (``source`` is
    ``"coarse"``).
    """
    pa, pb = nominal[i], nominal[j]
    rect = _overlap(pa, pb, size)
    a, b = cache[i], cache[j]
    m = Matcher(a, b)
    c1, c2, cwin = _coarse_geometry(rect, pa, pb, size)
    first = m.refine(c1, c2, cwin, iters=1)
    coarse = m.refine(first.p, first.p_, cwin, iters=4, tolerance=0.05)
    found = coarse.p - coarse.p_  # offset of b from a
    nominal_off = pb - pa
    info = dict(nominal=nominal_off, found=np.full(2, np.nan), windows=0, kept=0,
                snr=float(coarse.snr), source="")
    none = np.zeros((0, 2)), np.zeros((0, 2)), info
    if not np.isfinite(coarse.snr):
        return none
    significant = coarse.snr >= thresholds[0]
    shown = None  # do the pixels show the coarse offset? (computed when needed)
    # a diagonal neighbour's corner is too small for the pixels to decide: its
    # coarse offset must be significant, and it needs windows of its own
    corner = rect[2] - rect[0] < 0.5 * size[0] and rect[3] - rect[1] < 0.5 * size[1]
    if corner and not significant:
        return none
    step = found - (first.p - first.p_)
    if np.hypot(*step) > max(3.0, 0.1 * min(cwin)):
        # the peak moved on by a whole step after the first iteration: periodic
        # content, whose peaks repeat (each new window finds the next one).  The
        # pixels choose among the repeats along that step and the stage offset:
        # the best seam, and of seams as good, the one nearest the stage offset
        f1 = first.p - first.p_
        cands = [nominal_off] + [f1 + k * step for k in range(-3, 4)]
        cands = [c for c in cands if _overlap(pa, pa + c, size) is not None]
        score = _pair_ncc(a, b, cands)
        near = np.array([np.hypot(*(c - nominal_off)) for c in cands])
        good = np.flatnonzero(score >= score.max() - 0.02)
        best = int(good[np.argmin(near[good])])
        found = cands[best]
        significant = False
        shown = best > 0 and score[best] >= max(score[0] + _VERIFY_MARGIN, _VERIFY_NCC)
        if not shown:
            return none
    if _overlap(pa, pa + found, size) is None:
        return none
    if not significant:
        shown = _shown(a, b, found, nominal_off)
        if not shown:
            return none
    info["found"] = found
    rect_f = _overlap(pa, pa + found, size)
    ow, oh = rect_f[2] - rect_f[0], rect_f[3] - rect_f[1]
    if min(ow / size[0], oh / size[1]) > 0.5:  # tiles of neighbouring sections: a grid
        side = min(256, _pow2_at_most(min(ow, oh) / 4))
        win = (int(window or side),) * 2
        gx = np.linspace(rect_f[0] + win[0], rect_f[2] - win[0], 3)
        gy = np.linspace(rect_f[1] + win[1], rect_f[3] - win[1], 3)
        centres = np.array([(x, y) for y in gy for x in gx])
    else:
        win = _fine_window(rect_f, window)
        centres = _fine_points(rect_f, nwin, win)
    P = centres - pa
    P_ = centres - (pa + found)
    fine = m.refine_many(P, P_, win, iters=2, tolerance=0.05, workers=1)
    # windows at the exact subpixel points: free of the whole-pixel pull
    fine = m.refine_many(fine.p, fine.p_, win, iters=2, tolerance=0.01, workers=1,
                         interpolate=True)
    # keep windows that are significant and agree with the coarse offset
    agree = np.hypot(*((fine.p - fine.p_) - found).T) < max(3.0, 0.1 * min(win))
    level = thresholds[1] if significant else _SNR_FLOOR
    keep = (fine.snr >= level) & agree & np.isfinite(fine.snr)
    if keep.sum() < max(2, (len(keep) + 1) // 2):
        # a real overlap shows in most of its windows; one or two lucky windows
        # agreeing with a coarse peak that was itself luck are not a match
        keep[:] = False
    info.update(windows=len(P), kept=int(keep.sum()), snr=float(np.median(fine.snr)),
                weak=not significant)
    if keep.any():
        info["source"] = "windows"
        # the spread of a correlation peak's position goes as 1 / SNR^2: windows
        # weigh by SNR^2 (relative to the threshold, to keep the weights near 1)
        info["weights"] = (fine.snr[keep] / thresholds[1]) ** 2
        return fine.p[keep], fine.p_[keep], info
    if shown is None:
        shown = not corner and _shown(a, b, found, nominal_off)
    if not shown:
        return none
    # the coarse offset alone: a translation between the tiles, at the windows'
    # centres (two points or more, so that every model stays determined),
    # weighing as much in all as one window at the threshold
    info["source"] = "coarse"
    info["weak"] = True
    info["weights"] = np.full(len(P), 1.0 / len(P))
    return P, P - found, info


def _learn_threshold(cache, nominal, pairs, size, nwin, window) -> tuple[float, float]:
    """What a match that means nothing scores on these tiles.

    The coarse and small windows of real overlaps are cut again from a tile
    that does not overlap the first one; the thresholds are the best SNR
    they reach, times 1.25 (at least 5).  Returns (coarse, small).
    """
    n = len(nominal)
    paired = set(pairs)
    rng = np.random.default_rng(0)
    coarse, small = [5.0 / 1.25], [5.0 / 1.25]
    for i, j in pairs[: min(len(pairs), 8)]:
        others = [k for k in range(n) if k not in (i, j) and (min(i, k), max(i, k)) not in paired
                  and _overlap(nominal[i], nominal[k], size) is None]
        if not others:
            continue
        k = int(rng.choice(others))
        rect = _overlap(nominal[i], nominal[j], size)
        c1, c2, cwin = _coarse_geometry(rect, nominal[i], nominal[j], size)
        m = Matcher(cache[i], cache[k])
        coarse.append(m.refine(c1, c2, cwin, iters=1).snr)
        win = _fine_window(rect, window)
        centres = _fine_points(rect, nwin, win)
        fine = m.refine_many(centres - nominal[i], centres - nominal[j], win, iters=1, workers=1)
        small.extend(fine.snr.tolist())
    def level(v):
        v = np.asarray(v, float)
        return float(max(5.0, 1.25 * np.max(v[np.isfinite(v)])))
    return level(coarse), level(small)


def _fine_window(rect, window) -> tuple[int, int]:
    """(width, height) of the small windows of an overlap: across the strip
    the largest power of two within 80 % of it (16 to 128 px), along it
    twice that (within the strip); ``window`` makes them square."""
    if window:
        return int(window), int(window)
    ow, oh = rect[2] - rect[0], rect[3] - rect[1]
    across = min(128, _pow2_at_most(0.8 * min(ow, oh)))
    along = int(min(2 * across, _pow2_at_most(max(ow, oh) / 2, across)))
    return (along, across) if ow >= oh else (across, along)


#: A montage whose extent departs from the stage layout's by more than this
#: fraction, or a tile whose scale departs from 1 by more, is reported.
_SIZE_TOLERANCE = 0.02


def _extent_ratio(transforms: Mapping, nominal: Mapping, tilesize) -> tuple[float, float]:
    w, h = tilesize
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float)
    placed = np.vstack([transforms[t](corners) for t in transforms])
    stage = np.vstack([corners + np.asarray(nominal[t], float) for t in transforms])
    ext = lambda pts: pts.max(0) - pts.min(0)  # noqa: E731
    r = ext(placed) / ext(stage)
    return float(r[0]), float(r[1])


def _check_size(result: PlacementResult, nominal: dict, tilesize, stage_error=0.0) -> None:
    """Warn where the placement changed a tile's scale, or the montage's
    extent by more than a few percent plus what the stage's errors
    (``stage_error``: the largest offset, px, by which a matched overlap
    departed from the layout) can explain."""
    ratio = _extent_ratio(result.transforms, nominal, tilesize)
    corners = np.vstack([np.asarray(nominal[t], float) for t in nominal])
    extent = corners.max(0) - corners.min(0) + tilesize
    slack = 3 * _SIZE_TOLERANCE / 2 + 2 * stage_error / extent
    lo, hi = float(result.scales.min()), float(result.scales.max())
    problems = []
    if any(abs(r - 1) > d for r, d in zip(ratio, slack)):
        problems.append(f"the montage is {ratio[0]:.3f} x {ratio[1]:.3f} the stage layout's "
                        f"width x height")
    if max(1 - lo, hi - 1) > _SIZE_TOLERANCE:
        problems.append(f"tile scales run from {lo:.3f} to {hi:.3f}")
    if problems:
        warnings.warn(f"The {result.model} placement changed sizes: {'; '.join(problems)}. "
                      f"Check the tiles' matches, or use a model with fewer degrees of freedom "
                      f"(translation or euclidean), or regularize the affine model.",
                      SpectralignWarning, stacklevel=4)


#: Ties the placement leaves this far (px RMS) from their matches are suspects,
#: let go when the seams then agree better; at most this many are tried.
_PIXEL_RESIDUAL = 2.0
_PIXEL_TRIALS = 8

#: A seam this much worse (NCC) than at the stage layout is reported.
_SEAM_WORSE = 0.05


def _with_seams(fits: list[OverlapFit], tiles: dict, transforms: dict, stage: list
                ) -> list[OverlapFit]:
    """The overlaps with their seam scores under the placement, and
    ``stage``'s (the seams at the stage layout)."""
    placed = seam_scores(tiles, transforms, [(o.t, o.t_) for o in fits])
    return [replace(o, seam_ncc=a.ncc, seam_rms=a.rms, stage_ncc=b.ncc)
            for o, a, b in zip(fits, placed, stage)]


def _warn_worse(fits: list[OverlapFit], let_go: list[bool]) -> None:
    """Warn where the placement made a seam worse than the stage layout's
    (tied there, or let go because the seams around it agreed better)."""
    worse = [o for o, gone in zip(fits, let_go)
             if (o.source or gone) and o.seam_ncc < o.stage_ncc - _SEAM_WORSE]
    if worse:
        listed = ", ".join(f"{o.t!r}-{o.t_!r} ({o.seam_ncc:.2f} < {o.stage_ncc:.2f})"
                           for o in worse[:5])
        warnings.warn(f"{len(worse)} seam(s) agree worse under the placement than at the stage "
                      f"layout (pixel NCC over the overlap): {listed}; check those tiles' "
                      f"matches and the layout.", SpectralignWarning, stacklevel=4)


def _overlap_fits(result: PlacementResult, overlaps) -> list[OverlapFit]:
    by_pair = {(p.t, p.t_): p for p in result.pairs}
    out = []
    for t, t_, info in overlaps:
        pf = by_pair.get((t, t_), by_pair.get((t_, t)))
        out.append(OverlapFit(t, t_, np.asarray(info["nominal"], float),
                              np.asarray(info["found"], float), info["windows"], info["kept"],
                              info["snr"], float(pf.rms) if pf is not None else float("nan"),
                              source=info.get("source", "")))
    return out
