"""Quality judged by the pixels: how well two placed tiles agree where they overlap.

A placement's residuals say how well the *matches* fit; a seam score says
how well the *images* agree under the placement, which also catches what
the matches cannot (a montage shrunk so that every residual is small, a
tile placed by a wrong match that nothing contradicts).  Both tiles are
resampled at the same model points of their overlap (bilinear, after a
light Gaussian smoothing that keeps the score about structure, not about
pixel noise) and compared: normalized cross-correlation (1: the same
picture; about 0: unrelated) and the RMS difference in the tiles' own
intensity units.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..affine import Affine

__all__ = ["Seam", "seam_scores", "overlap_images"]

#: Model points sampled per overlap, at most.
_POINTS = 10_000
_MIN_SIDE = 8  # px: narrower overlaps are not scored


@dataclass(frozen=True)
class Seam:
    """The agreement of two placed tiles over their overlap.

    Attributes
    ----------
    t, t_ : hashable
    ncc : float
        Normalized cross-correlation of the two tiles resampled at the same
        model points (NaN where they do not overlap by ``8`` px both ways,
        or an overlap is flat).
    rms : float
        RMS difference of the resampled pixels, in the tiles' units.
    points : int
        Model points compared.
    """

    t: Hashable
    t_: Hashable
    ncc: float
    rms: float
    points: int


def _transform(a: Any) -> Affine:
    if isinstance(a, Affine):
        return a
    a = np.asarray(a, float)
    if a.shape == (2,):
        return Affine.translator(a)
    return Affine(a)


def _box(a: Affine, h: int, w: int) -> np.ndarray:
    corners = a(np.array([[0, 0], [w, 0], [0, h], [w, h]], float))
    return np.concatenate([corners.min(0), corners.max(0)])


def _sample(source, inv: Affine, pts: np.ndarray, h: int, w: int, smooth: float) -> np.ndarray:
    import scipy.ndimage

    xy = inv(pts)
    margin = int(np.ceil(3 * smooth)) + 2
    x0 = max(int(np.floor(xy[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(xy[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(xy[:, 0].max())) + margin + 1, w)
    y1 = min(int(np.ceil(xy[:, 1].max())) + margin + 1, h)
    region = np.asarray(source.read(y0, y1, x0, x1), dtype=np.float64)
    if smooth > 0:
        region = scipy.ndimage.gaussian_filter(region, smooth, mode="nearest")
    coords = np.array([xy[:, 1] - y0, xy[:, 0] - x0])  # pixel (col, row) is point (x, y)
    return scipy.ndimage.map_coordinates(region, coords, order=1, mode="nearest")


def _ncc(v1: np.ndarray, v2: np.ndarray) -> float:
    """Normalized cross-correlation of two samples (NaN where one is flat)."""
    d1, d2 = v1 - v1.mean(), v2 - v2.mean()
    den = np.sqrt((d1 * d1).sum() * (d2 * d2).sum())
    return float((d1 * d2).sum() / den) if den > 0 else float("nan")


def _overlap_grid(a: Affine, b: Affine, shape1, shape2, step: float | None):
    """Model points of the overlap of two placed tiles, on a grid of
    ``step`` px (default: about ``_POINTS`` points), as (ny, nx, 2); or None."""
    (h1, w1), (h2, w2) = shape1, shape2
    box1, box2 = _box(a, h1, w1), _box(b, h2, w2)
    lo = np.maximum(box1[:2], box2[:2]) + 1
    hi = np.minimum(box1[2:], box2[2:]) - 1
    size = hi - lo
    if np.any(size < _MIN_SIDE):
        return None
    if step is None:
        step = max(1.0, float(np.sqrt(size[0] * size[1] / _POINTS)))
    xs = np.arange(lo[0] + step / 2, hi[0], step)
    ys = np.arange(lo[1] + step / 2, hi[1], step)
    return np.stack(np.meshgrid(xs, ys), -1)


def _inside(inv: Affine, pts: np.ndarray, h: int, w: int) -> np.ndarray:
    xy = inv(pts)
    return (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)


def overlap_images(tiles: Mapping[Hashable, Any], transforms: Mapping[Hashable, Any],
                   t: Hashable, t_: Hashable, *, max_pixels: int = 4_000_000
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Both tiles resampled on the same model pixels of their overlap.

    The pictures a seam score compares (without smoothing), one model
    pixel apart (or coarser, to stay under ``max_pixels``): for looking at
    a seam by eye.  Pixels outside either tile are NaN.  None where the
    tiles do not overlap.
    """
    from ..io.sources import as_source

    sa, sb = as_source(tiles[t]), as_source(tiles[t_])
    a, b = _transform(transforms[t]), _transform(transforms[t_])
    grid = _overlap_grid(a, b, sa.shape, sb.shape, 1.0)
    if grid is None:
        return None
    if grid.shape[0] * grid.shape[1] > max_pixels:
        step = float(np.sqrt(grid.shape[0] * grid.shape[1] / max_pixels))
        grid = _overlap_grid(a, b, sa.shape, sb.shape, step)
    ny, nx = grid.shape[:2]
    pts = grid.reshape(-1, 2)
    out = []
    for src, aff in ((sa, a), (sb, b)):
        inv = aff.inverse()
        (h, w) = src.shape
        v = np.full(len(pts), np.nan)
        ok = _inside(inv, pts, h, w)
        if ok.any():
            v[ok] = _sample(src, inv, pts[ok], h, w, 0.0)
        out.append(v.reshape(ny, nx))
    return out[0], out[1]


def seam_scores(tiles: Mapping[Hashable, Any], transforms: Mapping[Hashable, Any],
                pairs: Iterable[tuple[Hashable, Hashable]], *, smooth: float = 1.0
                ) -> list[Seam]:
    """Score how well placed tiles agree over each overlap, by their pixels.

    Parameters
    ----------
    tiles : {tile: array, Image, lazy array or file path}
    transforms : {tile: Affine, (2, 3) matrix or (x, y) position}
        Tile-to-model transforms, e.g. ``placement.transforms``, a
        ``Montage``'s, or another tool's solution (from
        :func:`read_tileconfig`), so that answers can be compared on the
        same tiles.
    pairs : iterable of (tile, tile)
        The overlaps to score.
    smooth : float
        Gaussian sigma (px) applied to the tiles before resampling.

    Returns
    -------
    list of Seam
        One per pair, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralign.pipelines.quality import seam_scores
    >>> rng = np.random.default_rng(0)
    >>> scene = rng.random((200, 300))
    >>> tiles = {"a": scene[:, :200], "b": scene[:, 100:]}
    >>> good, bad = (seam_scores(tiles, {"a": (0, 0), "b": (x, 0)}, [("a", "b")])[0]
    ...              for x in (100, 103))
    >>> round(good.ncc, 2), bad.ncc < 0.5
    (1.0, True)
    """
    from ..io.sources import as_source

    sources = {}
    out = []
    for t, t_ in pairs:
        for k in (t, t_):
            if k not in sources:
                sources[k] = as_source(tiles[k])
        (h1, w1), (h2, w2) = sources[t].shape, sources[t_].shape
        a, b = _transform(transforms[t]), _transform(transforms[t_])
        grid = _overlap_grid(a, b, (h1, w1), (h2, w2), None)
        if grid is None:
            out.append(Seam(t, t_, float("nan"), float("nan"), 0))
            continue
        pts = grid.reshape(-1, 2)
        # keep the points inside both tiles (the boxes of turned tiles are larger)
        inv1, inv2 = a.inverse(), b.inverse()
        pts = pts[_inside(inv1, pts, h1, w1) & _inside(inv2, pts, h2, w2)]
        if len(pts) < _MIN_SIDE * _MIN_SIDE:
            out.append(Seam(t, t_, float("nan"), float("nan"), int(len(pts))))
            continue
        v1 = _sample(sources[t], inv1, pts, h1, w1, smooth)
        v2 = _sample(sources[t_], inv2, pts, h2, w2, smooth)
        out.append(Seam(t, t_, _ncc(v1, v2), float(np.sqrt(np.mean((v1 - v2) ** 2))),
                        int(len(pts))))
    return out
