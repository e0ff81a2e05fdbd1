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
        Has ``read(y0, y1, x0, x1) -> ndarray`` (see ``spectralign.io.sources``).
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
    window = _window(item, xs[0], ys[0], len(xs), len(ys), order)
    if window is None:
        return None
    u0, v0, u1, v1 = window
    sub = np.asarray(item.source.read(v0, v1, u0, u1), dtype=np.float64)
    if item.is_translation:
        # fractions from the tile's offset alone, so that every chunk
        # interpolates with bit-identical weights (xs, ys are whole numbers)
        tu, tv = np.floor(inv[0, 2]), np.floor(inv[1, 2])
        fu, fv = inv[0, 2] - tu, inv[1, 2] - tv
        iu = np.round(xs).astype(np.int64) + int(tu) - u0
        iv = np.round(ys).astype(np.int64) + int(tv) - v0
        if order <= 1 or (fu < _EPS and fv < _EPS):
            return _bilinear(sub, iu, iv, fu, fv, order), uu, vv
    # model grid -> sub-window (row, col): one affine map, computed in C
    matrix = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
    start = inv[:, :2] @ (xs[0], ys[0]) + inv[:, 2]
    offset = (start[1] - v0, start[0] - u0)
    vals = scipy.ndimage.affine_transform(sub, matrix, offset, output_shape=(len(ys), len(xs)),
                                          order=order, mode="nearest", prefilter=order > 1)
    return vals, uu, vv


def _window(item: TileItem, x0: float, y0: float, width: int, height: int, order: int
            ) -> tuple[int, int, int, int] | None:
    """Tile pixels ``(u0, v0, u1, v1)`` that the chunk's pixels sample
    (with an interpolation margin), or None if the tile misses the chunk.
    The map is affine, so the chunk's corners bound what it samples."""
    inv = item.inverse
    cx = np.array([x0, x0 + width - 1, x0, x0 + width - 1], dtype=np.float64)
    cy = np.array([y0, y0, y0 + height - 1, y0 + height - 1], dtype=np.float64)
    uu = inv[0, 0] * cx + inv[0, 1] * cy + inv[0, 2]
    vv = inv[1, 0] * cx + inv[1, 1] * cy + inv[1, 2]
    margin = max(order, 1) + 1
    u0 = max(int(np.floor(uu.min())) - margin, 0)
    u1 = min(int(np.ceil(uu.max())) + margin + 1, item.width)
    v0 = max(int(np.floor(vv.min())) - margin, 0)
    v1 = min(int(np.ceil(vv.max())) + margin + 1, item.height)
    if u0 >= u1 or v0 >= v1:
        return None
    return u0, v0, u1, v1


def _bilinear(sub: np.ndarray, iu: np.ndarray, iv: np.ndarray, fu: float, fv: float,
              order: int) -> np.ndarray:
    """Translation by whole pixels ``iu, iv`` plus fractions ``fu, fv`` in
    [0, 1): a copy, or bilinear (order 1) / nearest (order 0) interpolation,
    with edge pixels repeated beyond the window."""
    h, w = sub.shape
    if order == 0:
        iu, iv = iu + int(fu >= 0.5), iv + int(fv >= 0.5)
        fu = fv = 0.0
    r0, c0 = np.clip(iv, 0, h - 1), np.clip(iu, 0, w - 1)
    r1, c1 = np.clip(iv + 1, 0, h - 1), np.clip(iu + 1, 0, w - 1)
    out = sub[np.ix_(r0, c0)]
    if fu >= _EPS:
        out = out + fu * (sub[np.ix_(r0, c1)] - out)
    if fv >= _EPS:
        below = sub[np.ix_(r1, c0)]
        if fu >= _EPS:
            below = below + fu * (sub[np.ix_(r1, c1)] - below)
        out = out + fv * (below - out)
    return out


def blend_chunk(x0: float, y0: float, height: int, width: int, items: list[TileItem], *,
                method: str, blend: float, order: int, dtype: np.dtype,
                fill: float = 0.0) -> np.ndarray:
    """The canvas pixels ``[y0 : y0 + height, x0 : x0 + width]`` (model px).

    ``method``: ``"mean"`` (feather-weighted mean), ``"max"``, ``"first"``
    or ``"last"`` (the first or last tile in ``items`` that covers a pixel
    wins).  Integer ``dtype`` output is rounded and clipped to its range.
    """
    from . import kernels as _kernels  # imports numba: only where rendering happens

    xs = x0 + np.arange(width, dtype=np.float64)
    ys = y0 + np.arange(height, dtype=np.float64)
    acc = np.zeros((height, width))
    cover = np.zeros((height, width))
    for item in items:
        if order <= 1 and _kernels.backend() == "numba":
            window = _window(item, x0, y0, width, height, order)
            if window is None:
                continue
            u0, v0, u1, v1 = window
            sub = np.ascontiguousarray(item.source.read(v0, v1, u0, u1))
            if sub.dtype.kind not in "uif":
                sub = sub.astype(np.float64)
            _kernels.accumulate(acc, cover, x0, y0, item.inverse, sub, u0, v0, item.width,
                                item.height, blend, order, method)
            continue
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
