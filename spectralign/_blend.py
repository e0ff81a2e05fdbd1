"""Pure maths of rendering: feather weights and the blend of one output chunk.

Pixel convention: tile pixel ``[i, j]`` is the point ``(x, y) = (j, i)`` of
tile space; canvas pixel ``[r, c]`` is the model point ``(x0 + c, y0 + r)``.
A tile at an integer translation is therefore copied, not interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage

METHODS = ("mean", "max", "first", "last")
_EPS = 1e-6


@dataclass(frozen=True)
class TileItem:
    """One tile as the blend sees it.

    Attributes
    ----------
    inverse : (2, 3) float array
        Model-to-tile transform.
    source : object
        Has ``read(y0, y1, x0, x1) -> ndarray`` (see ``spectralign._source``).
    width, height : int
        Tile size in pixels.
    """

    inverse: np.ndarray
    source: Any
    width: int
    height: int

    @property
    def is_translation(self) -> bool:
        return bool(np.allclose(self.inverse[:, :2], np.eye(2), rtol=0, atol=1e-12))


def feather(u: np.ndarray, v: np.ndarray, width: int, height: int, blend: float) -> np.ndarray:
    """Weight of tile points ``(u, v)``: 0 outside the tile, rising linearly
    over ``blend`` px from the edges (``blend = 0``: 1 everywhere inside).

    The edge pixels themselves get ``0.5 / blend`` (never 0), so a pixel
    that only one tile covers takes that tile's value exactly.
    """
    inside = ((u >= -_EPS) & (u <= width - 1 + _EPS) & (v >= -_EPS) & (v <= height - 1 + _EPS))
    if blend <= 0:
        return inside.astype(np.float64)
    du = np.minimum(u, width - 1 - u) + 0.5
    dv = np.minimum(v, height - 1 - v) + 0.5
    w = np.clip(du / blend, 0.0, 1.0) * np.clip(dv / blend, 0.0, 1.0)
    return np.where(inside, np.maximum(w, 0.5 / blend), 0.0)


def sample(item: TileItem, xs: np.ndarray, ys: np.ndarray, order: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Tile values and tile coordinates at the model grid ``xs`` x ``ys``.

    Returns ``(values, u, v)`` as (len(ys), len(xs)) arrays (for a
    translation, u and v are broadcastable 1-D rows/columns), or None if the
    tile does not reach the grid.  Only the part of the tile under the grid
    (plus an interpolation margin) is read.
    """
    inv = item.inverse
    if item.is_translation:
        u = xs + inv[0, 2]
        v = ys + inv[1, 2]
        uu, vv = u[None, :], v[:, None]
    else:
        gx, gy = np.meshgrid(xs, ys)
        uu = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
        vv = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    margin = max(order, 1) + 1
    u0 = max(int(np.floor(uu.min())) - margin, 0)
    u1 = min(int(np.ceil(uu.max())) + margin + 1, item.width)
    v0 = max(int(np.floor(vv.min())) - margin, 0)
    v1 = min(int(np.ceil(vv.max())) + margin + 1, item.height)
    if u0 >= u1 or v0 >= v1:
        return None
    sub = np.asarray(item.source.read(v0, v1, u0, u1), dtype=np.float64)
    if item.is_translation:
        fu, fv = u[0] - np.round(u[0]), v[0] - np.round(v[0])
        if abs(fu) < _EPS and abs(fv) < _EPS:  # integer offset: copy
            iu = np.clip(np.round(u).astype(np.int64) - u0, 0, u1 - u0 - 1)
            iv = np.clip(np.round(v).astype(np.int64) - v0, 0, v1 - v0 - 1)
            return sub[np.ix_(iv, iu)], uu, vv
        gu, gv = np.meshgrid(u - u0, v - v0)
    else:
        gu, gv = uu - u0, vv - v0
    vals = scipy.ndimage.map_coordinates(sub, [gv, gu], order=order, mode="nearest",
                                         prefilter=order > 1)
    return vals, uu, vv


def blend_chunk(x0: float, y0: float, height: int, width: int, items: list[TileItem], *,
                method: str, blend: float, order: int, dtype: np.dtype,
                fill: float = 0.0) -> np.ndarray:
    """The canvas pixels ``[y0 : y0 + height, x0 : x0 + width]`` (model px).

    ``method``: ``"mean"`` (feather-weighted mean), ``"max"``, ``"first"``
    or ``"last"`` (the first or last tile in ``items`` that covers a pixel
    wins).  Integer ``dtype`` output is rounded and clipped to its range.
    """
    xs = x0 + np.arange(width, dtype=np.float64)
    ys = y0 + np.arange(height, dtype=np.float64)
    acc = np.zeros((height, width))
    cover = np.zeros((height, width))
    for item in items:
        got = sample(item, xs, ys, order)
        if got is None:
            continue
        vals, u, v = got
        w = np.broadcast_to(feather(u, v, item.width, item.height, blend), (height, width))
        hit = w > 0
        if method == "mean":
            acc += w * vals
            cover += w
        elif method == "max":
            acc = np.where(hit & ((cover == 0) | (vals > acc)), vals, acc)
            cover += hit
        elif method == "first":
            acc = np.where(hit & (cover == 0), vals, acc)
            cover += hit
        else:
            acc = np.where(hit, vals, acc)
            cover += hit
    out = np.full((height, width), float(fill))
    covered = cover > 0
    if method == "mean":
        out[covered] = acc[covered] / cover[covered]
    else:
        out[covered] = acc[covered]
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype)
