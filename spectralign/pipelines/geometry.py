"""Overlap geometry and window policies: which pairs overlap, where the
coarse window of an overlap goes and how large it is, where the small
windows go (staggered across the strip) and how large they are.

Pure functions of positions and sizes, in model pixels ``(x, y)``;
rectangles are ``(x0, y0, x1, y1)``."""

from __future__ import annotations

from typing import Mapping

import numpy as np


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

def _extent_ratio(transforms: Mapping, nominal: Mapping, tilesize) -> tuple[float, float]:
    w, h = tilesize
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float)
    placed = np.vstack([transforms[t](corners) for t in transforms])
    stage = np.vstack([corners + np.asarray(nominal[t], float) for t in transforms])
    ext = lambda pts: pts.max(0) - pts.min(0)  # noqa: E731
    r = ext(placed) / ext(stage)
    return float(r[0]), float(r[1])
