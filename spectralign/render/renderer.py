"""Renderer: blends placed tiles into a lazy, chunked model-space canvas."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Hashable, Mapping

import numpy as np

from . import blend as _blend
from ..io import ome_zarr as ome
from ..io.sources import as_source
from ..affine import Affine
from ..errors import EmptyCanvasError, InvalidSizeError, TileShapeError, UnknownTileError
from ..io.image import parse_size

__all__ = ["Renderer"]


class _Plan:
    """Everything a chunk task needs; picklable, shared by all tasks."""

    def __init__(self, levels, x0, y0, shape, chunk, method, blend, order, dtype, fill):
        self.levels = levels  # list of lists of TileItem
        self.x0, self.y0 = x0, y0
        self.shape = shape  # (height, width)
        self.chunk = chunk
        self.method, self.blend, self.order = method, blend, order
        self.dtype, self.fill = dtype, fill
        self.index = [self._index(items) for items in levels]

    def _index(self, items):
        """Which tiles touch each chunk: {(ci, cj): [item, ...]}."""
        out: dict[tuple[int, int], list] = {}
        h, w = self.shape
        for item in items:
            x_lo, y_lo, x_hi, y_hi = _bounds(Affine(item.inverse).inverse(), item.width,
                                             item.height)
            c0 = max(int(math.floor(x_lo - self.x0)) - 1, 0) // self.chunk
            c1 = min(int(math.ceil(x_hi - self.x0)) + 1, w - 1) // self.chunk
            r0 = max(int(math.floor(y_lo - self.y0)) - 1, 0) // self.chunk
            r1 = min(int(math.ceil(y_hi - self.y0)) + 1, h - 1) // self.chunk
            for i in range(r0, r1 + 1):
                for j in range(c0, c1 + 1):
                    out.setdefault((i, j), []).append(item)
        return out

    def block(self, level: int, i: int, j: int) -> np.ndarray:
        h, w = self.shape
        r0, c0 = i * self.chunk, j * self.chunk
        bh, bw = min(self.chunk, h - r0), min(self.chunk, w - c0)
        return _blend.blend_chunk(self.x0 + c0, self.y0 + r0, bh, bw,
                                  self.index[level].get((i, j), []), method=self.method,
                                  blend=self.blend, order=self.order, dtype=self.dtype,
                                  fill=self.fill)


def _render_block(plan: _Plan, level: int, i: int, j: int, ndim: int) -> np.ndarray:
    out = plan.block(level, i, j)
    return out[None] if ndim == 3 else out


def _render_and_store(plan: _Plan, level: int, i: int, j: int, ndim: int, array_path: str,
                      mark: str) -> int:
    c = plan.chunk
    data = _render_block(plan, level, i, j, ndim)
    region = (slice(i * c, i * c + data.shape[-2]), slice(j * c, j * c + data.shape[-1]))
    if ndim == 3:
        region = (slice(level, level + 1),) + region
    return ome.store_block(data, array_path, region, mark)


def _bounds(afm: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    """Model-space bounding box (x0, y0, x1, y1) of a tile's pixel centres."""
    corners = afm(np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]],
                           float))
    return (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max())


#: Options of :meth:`Renderer.to_zarr` (the rest of a ``to_zarr(**options)``
#: call on a result go to its ``renderer``).
STORE_OPTIONS = ("resume", "overwrite", "pixel_size", "unit", "pyramid", "name")


def split_store_options(options: dict) -> tuple[dict, dict]:
    """``options`` as (Renderer options, :meth:`Renderer.to_zarr` options)."""
    store = {k: v for k, v in options.items() if k in STORE_OPTIONS}
    return {k: v for k, v in options.items() if k not in STORE_OPTIONS}, store


class Renderer:
    """Blend placed tiles into one model-space canvas, chunk by chunk.

    Parameters
    ----------
    rigid : mapping of tile -> (x, y), optional
        Translation of each tile (as from :meth:`Placement.rigid`): tile
        pixel ``(0, 0)`` lands at ``(x, y)``.
    affine : mapping of tile -> Affine, optional
        Tile-to-model transform of each tile (as from
        :meth:`Placement.affine`).  Give ``rigid`` or ``affine``.
    tilesize : (W, H) or int, or mapping of tile -> (W, H)
        Size of every tile, or of each tile.
    clip : bool or (x0, y0, w, h)
        The canvas: ``False`` covers every tile; ``True`` keeps only whole
        model pixels inside the bounding box of all tiles (drops the
        fractional rim); a rectangle is used as given (model pixels).
    blend : float
        Width (px) over which each tile's weight falls to zero at its edges
        (``0``: hard edges, plain mean in overlaps).
    method : {"mean", "max", "first", "last"}
        How overlapping tiles combine: feather-weighted mean, maximum, or
        the first or last tile rendered that covers a pixel.
    order : int
        Spline order of the interpolation for sub-pixel and affine
        placement (1: bilinear).  Tiles at integer positions are copied.
    chunk : int
        Canvas chunk size (px); each chunk is one task, and memory use is
        a few chunks plus the tile parts they read.
    fill : float
        Value of canvas pixels that no tile covers.

    Examples
    --------
    >>> import numpy as np, spectralign
    >>> pos = {"a": (0, 0), "b": (90, 5)}
    >>> r = spectralign.Renderer(rigid=pos, tilesize=(100, 80), blend=10)
    >>> r.render("a", np.ones((80, 100), np.uint8))
    >>> r.render("b", np.ones((80, 100), np.uint8))
    >>> r.image.shape, r.image.dtype.name
    ((85, 190), 'uint8')
    """

    def __init__(self, rigid: Mapping | None = None, affine: Mapping | None = None,
                 tilesize: Any = None, clip: Any = False, blend: float = 10, *,
                 method: str = "mean", order: int = 1, chunk: int = 1024, fill: float = 0):
        if (rigid is None) == (affine is None):
            raise ValueError("Expected exactly one of rigid= or affine=. Got "
                             f"{'both' if rigid is not None else 'neither'} instead.")
        if rigid is not None:
            transforms = {t: Affine.translator(p) for t, p in rigid.items()}
        else:
            transforms = {t: a if isinstance(a, Affine) else Affine(a) for t, a in affine.items()}
        if not transforms:
            raise EmptyCanvasError("Expected at least one placed tile. Got an empty placement.")
        if method not in _blend.METHODS:
            raise ValueError(f"Expected method in {_blend.METHODS}. Got {method!r} instead.")
        if not (blend >= 0) or int(order) != order or not 0 <= order <= 5:
            raise ValueError(f"Expected blend >= 0 and order in 0..5. Got blend={blend!r}, "
                             f"order={order!r} instead.")
        if int(chunk) != chunk or chunk < 16:
            raise InvalidSizeError(f"Expected a chunk size >= 16. Got {chunk!r} instead.")
        self._transforms = transforms
        self._sizes = self._parse_tilesize(tilesize)
        self.blend, self.method, self.order = float(blend), method, int(order)
        self.chunk, self.fill = int(chunk), fill
        self._x0, self._y0, self._shape = self._geometry(clip)
        self._levels: list[list[tuple[Hashable, Any]]] = [[]]
        self._dtype: np.dtype | None = None

    # -- the canvas geometry -------------------------------------------------

    def _parse_tilesize(self, tilesize: Any) -> dict[Hashable, tuple[int, int]]:
        if tilesize is None:
            raise InvalidSizeError("Expected tilesize=(W, H) or {tile: (W, H)}. Got none.")
        if isinstance(tilesize, Mapping):
            missing = [t for t in self._transforms if t not in tilesize]
            if missing:
                raise InvalidSizeError(
                    f"Expected a tile size for every placed tile. Got none for "
                    f"{missing[:8]!r}{' ...' if len(missing) > 8 else ''}.")
            return {t: parse_size(tilesize[t]) for t in self._transforms}
        size = parse_size(tilesize)
        return {t: size for t in self._transforms}

    def _geometry(self, clip: Any) -> tuple[int, int, tuple[int, int]]:
        boxes = np.array([_bounds(a, *self._sizes[t]) for t, a in self._transforms.items()])
        lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
        if clip is False or clip is None:
            x0, y0 = np.floor(lo + 1e-6).astype(int)
            x1, y1 = np.ceil(hi - 1e-6).astype(int)
        elif clip is True:
            x0, y0 = np.ceil(lo - 1e-6).astype(int)
            x1, y1 = np.floor(hi + 1e-6).astype(int)
        else:
            try:
                cx, cy, cw, ch = (float(v) for v in clip)
            except (TypeError, ValueError) as exc:
                raise InvalidSizeError(
                    f"Expected clip as False, True or (x0, y0, w, h). Got {clip!r} instead."
                ) from exc
            if cw < 1 or ch < 1:
                raise InvalidSizeError(f"Expected a clip rectangle of positive size. Got {clip!r}.")
            if cx > hi[0] or cy > hi[1] or cx + cw - 1 < lo[0] or cy + ch - 1 < lo[1]:
                raise EmptyCanvasError(
                    f"Expected a clip rectangle that overlaps the tiles. Got {clip!r}, but the "
                    f"tiles span x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}.")
            x0, y0 = int(round(cx)), int(round(cy))
            x1, y1 = x0 + int(round(cw)) - 1, y0 + int(round(ch)) - 1
        if x1 < x0 or y1 < y0:
            raise EmptyCanvasError("The tiles cover no whole model pixel; use clip=False.")
        return int(x0), int(y0), (int(y1 - y0 + 1), int(x1 - x0 + 1))

    @property
    def origin(self) -> tuple[int, int]:
        """Model coordinates ``(x, y)`` of canvas pixel ``[0, 0]``."""
        return self._x0, self._y0

    @property
    def shape(self) -> tuple[int, int]:
        """Canvas ``(height, width)`` in pixels."""
        return self._shape

    # -- tiles ------------------------------------------------------------------

    def add(self, tile: Hashable, img: Any) -> None:
        """Add a tile to the current z-level (``render`` is the same method,
        the original package's name for it: nothing is drawn until the
        canvas is computed).

        ``img`` is a 2-D array, an :class:`Image`, a lazy array (memory-mapped,
        zarr, dask) or a path; nothing is read until the canvas is computed,
        and then only the parts that each chunk needs.

        Raises
        ------
        UnknownTileError
            If the tile has no transform.
        TileShapeError
            If the image's shape is not the tile's declared size.
        """
        if tile not in self._transforms:
            raise UnknownTileError(
                f"Expected a placed tile. Got {tile!r}, which has no transform; placed tiles "
                f"include {list(self._transforms)[:8]!r}.")
        source = as_source(img)
        w, h = self._sizes[tile]
        if source.shape != (h, w):
            raise TileShapeError(
                f"Expected tile {tile!r} of {w} x {h} px (width x height) as declared in "
                f"tilesize. Got an image of {source.shape[1]} x {source.shape[0]} px instead.")
        if self._dtype is None:
            self._dtype = source.dtype
        self._levels[-1].append((tile, source))

    def next_level(self) -> None:
        """Start a new z-level; the tiles added so far stay as the level below
        (``clear`` is the same method, the original package's name)."""
        if self._levels[-1]:
            self._levels.append([])

    #: The original package's names: ``render(t, img)`` adds a tile, and
    #: ``clear()`` starts the next z-level.
    render = add
    clear = next_level

    def _plan(self) -> _Plan:
        levels = [lv for lv in self._levels if lv]
        if not levels:
            raise EmptyCanvasError("Expected rendered tiles. Got none; call add() (or render()) "
                                   "first.")
        items = [[_blend.TileItem(np.asarray(self._transforms[t].inverse().matrix), src,
                                  *self._sizes[t]) for t, src in lv] for lv in levels]
        return _Plan(items, self._x0, self._y0, self._shape, self.chunk, self.method,
                     self.blend, self.order, self._dtype, self.fill)

    # -- outputs ----------------------------------------------------------------

    def _array(self, plan: _Plan, levels: list[int], ndim: int) -> Any:
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        h, w = self._shape
        c = self.chunk
        rows = tuple(min(c, h - r) for r in range(0, h, c))
        cols = tuple(min(c, w - x) for x in range(0, w, c))
        name = "spectralign-canvas-" + tokenize(id(plan), levels, ndim)
        plan_key = "spectralign-plan-" + tokenize(id(plan))
        dsk: dict[Any, Any] = {plan_key: plan}
        for z, level in enumerate(levels):
            for i in range(len(rows)):
                for j in range(len(cols)):
                    key = (name, z, i, j) if ndim == 3 else (name, i, j)
                    dsk[key] = (_render_block, plan_key, level, i, j, ndim)
        chunks = ((1,) * len(levels), rows, cols) if ndim == 3 else (rows, cols)
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        return da.Array(graph, name, chunks, dtype=plan.dtype)

    @property
    def canvas(self) -> Any:
        """The current z-level as a lazy ``(height, width)`` dask array."""
        plan = self._plan()
        return self._array(plan, [len(plan.levels) - 1], 2)

    @property
    def volume(self) -> Any:
        """Every z-level as a lazy ``(z, height, width)`` dask array."""
        plan = self._plan()
        return self._array(plan, list(range(len(plan.levels))), 3)

    @property
    def image(self) -> np.ndarray:
        """The current z-level, computed (for canvases that fit in memory)."""
        return np.asarray(self.canvas.compute())

    def to_zarr(self, path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                pixel_size: float = 1.0, unit: str = "micrometer", pyramid: bool = True,
                name: str = "montage") -> Path:
        """Write every z-level as an OME-Zarr 0.5 image, chunk by chunk.

        A single z-level is written as ``(y, x)``, several as ``(z, y, x)``,
        with a 2 x 2-binned pyramid down to one chunk.  Chunks that no tile
        covers are not stored.  The current dask scheduler runs the work
        (``dask.distributed`` included); wrap the call in
        ``dask.diagnostics.ProgressBar()`` to see progress.

        Parameters
        ----------
        path : path
            The store (a folder, conventionally ``*.ome.zarr``).
        resume : bool
            Finish an interrupted render of the same tiles and settings:
            chunks already written are kept; the result is byte-identical to
            an uninterrupted render.
        overwrite : bool
            Replace an existing spectralign store at ``path``.  A path holding
            anything else is never touched.
        pixel_size, unit : float, str
            Physical size of a canvas pixel, written in the OME metadata.
        pyramid : bool
            Also write the binned levels.

        Raises
        ------
        StoreExistsError
            If ``path`` holds something else, or a render and neither
            ``resume`` nor ``overwrite`` was given.
        """
        import dask
        import zarr

        path = Path(path)
        plan = self._plan()
        nz = len(plan.levels)
        ndim = 3 if nz > 1 else 2
        shape = ((nz,) if ndim == 3 else ()) + self._shape
        chunks = ((1,) if ndim == 3 else ()) + (self.chunk, self.chunk)
        nlevels = ome.pyramid_levels(shape, self.chunk) if pyramid else 1
        fp = ome.fingerprint(self._describe(shape))
        resuming = ome.prepare(path, fp=fp, resume=resume, overwrite=overwrite)
        ours = {"fingerprint": fp, "complete": False}
        if resuming:
            root = zarr.open_group(path, mode="r+")
        else:
            root = zarr.open_group(path, mode="w", zarr_format=3)
            root.attrs.update({"ome": ome.multiscales(ndim, nlevels, pixel_size, unit, name),
                               "spectralign": ours})
            root.create_array(
                "0", shape=shape, chunks=chunks, dtype=plan.dtype, fill_value=self.fill,
                dimension_names=list("zyx"[3 - ndim:]), config={"write_empty_chunks": False})
        (path / ome.PROGRESS).mkdir(exist_ok=True)
        done = ome.done_blocks(path)
        h, w = self._shape
        c = self.chunk
        plan_d = dask.delayed(plan, pure=True)
        tasks = []
        for z in range(nz):
            for i in range(-(-h // c)):
                for j in range(-(-w // c)):
                    key = (z, i, j)
                    if ".".join(map(str, key)) in done:
                        continue
                    tasks.append(dask.delayed(_render_and_store, pure=False)(
                        plan_d, z, i, j, ndim, str(path / "0"), str(ome.marker(path, key))))
        dask.compute(*tasks)
        if nlevels > 1:
            ome.write_pyramid(root, path, nlevels, chunks)
        ome.finish(root, path, fp)
        return path

    def _describe(self, shape: tuple[int, ...]) -> dict[str, Any]:
        levels = [[(repr(t), self._transforms[t].matrix.tolist(), self._sizes[t],
                    getattr(src, "path", None) or [list(src.shape), str(src.dtype)])
                   for t, src in lv] for lv in self._levels if lv]
        return {"shape": shape, "origin": self.origin, "chunk": self.chunk,
                "method": self.method, "blend": self.blend, "order": self.order,
                "fill": self.fill, "dtype": str(self._dtype), "levels": levels}

    def __repr__(self) -> str:
        n = sum(len(lv) for lv in self._levels)
        return (f"Renderer({len(self._transforms)} tiles placed, {n} rendered, canvas "
                f"{self._shape[1]} x {self._shape[0]} px at {self.origin})")
