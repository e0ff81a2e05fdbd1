"""The tile graph as arrays: matches and anchors (System), each tile's
normalized frame, connected pieces, and the parameters of each model's
transform.  Pure functions on arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph


MODELS = ("translation", "euclidean", "similarity", "affine")


@dataclass(frozen=True)
class Model:
    """What the solver needs to know of one model of tile transform.

    Attributes
    ----------
    name : str
    nparam : int
        Parameters per tile and per unknown column (translation: 1 per axis;
        affine: 3 per output coordinate; similarity and euclidean: 4 and 3,
        both axes together).
    decoupled : bool
        The x and y output coordinates are solved apart (one column each).
    scales : bool
        The model can scale tiles: its gauge must fix the mean linear part,
        and least squares rewards shrinking.
    simpler : str or None
        The model that ``regularize`` pulls it towards.
    needs : str
        The points a tile needs, in words (for errors).
    min_points : int
        How many distinct points a tile needs, at least.
    """

    name: str
    nparam: int
    decoupled: bool
    scales: bool
    simpler: str | None
    needs: str
    min_points: int


#: The models, by name: one table instead of branches on the name.
MODEL = {
    "translation": Model("translation", 1, True, False, None, "one match", 1),
    "euclidean": Model("euclidean", 3, False, False, None, "two distinct points", 2),
    "similarity": Model("similarity", 4, False, True, "euclidean", "two distinct points", 2),
    "affine": Model("affine", 3, True, True, "similarity",
                    "three points that are not on one line", 3),
}
_NPARAM = {name: m.nparam for name, m in MODEL.items()}
_DECOUPLED = {name: m.decoupled for name, m in MODEL.items()}


_APPLY_CHUNK = 1 << 18


@dataclass(frozen=True)
class System:
    """Matches and anchors of one placement, as arrays.

    Attributes
    ----------
    ntiles : int
    ia, ib : (M,) int arrays
        Tiles of each match; ``P[i]`` lies in ``ia[i]``, ``Q[i]`` in ``ib[i]``.
    P, Q : (M, 2) float arrays
        Matching points ``(x, y)`` in tile coordinates.
    w : (M,) float array
        Match weights (>= 0).
    at : (K,) int array
        Tile of each anchor point.
    ax, ay : (K, 2) float arrays
        Anchor point in tile coordinates and where it must land in model space.
    aw : (K,) float array
        Anchor weights.
    """

    ntiles: int
    ia: np.ndarray
    ib: np.ndarray
    P: np.ndarray
    Q: np.ndarray
    w: np.ndarray
    at: np.ndarray
    ax: np.ndarray
    ay: np.ndarray
    aw: np.ndarray

    @property
    def nmatches(self) -> int:
        return len(self.ia)


def _point_moments(system: System, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-tile count, mean and covariance of the points with weight > 0."""
    keep = weights > 0
    tiles = np.concatenate([system.ia[keep], system.ib[keep], system.at])
    pts = np.concatenate([system.P[keep], system.Q[keep], system.ax])
    n = np.bincount(tiles, minlength=system.ntiles).astype(np.float64)
    safe = np.maximum(n, 1)
    mean = np.stack([np.bincount(tiles, pts[:, k], system.ntiles) / safe for k in (0, 1)], 1)
    d = pts - mean[tiles]
    cov = np.empty((system.ntiles, 2, 2))
    cov[:, 0, 0] = np.bincount(tiles, d[:, 0] ** 2, system.ntiles) / safe
    cov[:, 1, 1] = np.bincount(tiles, d[:, 1] ** 2, system.ntiles) / safe
    cov[:, 0, 1] = cov[:, 1, 0] = np.bincount(tiles, d[:, 0] * d[:, 1], system.ntiles) / safe
    return n, mean, cov


def frames(system: System, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``c`` (T, 2) and spread ``s`` (T,) of each tile's points."""
    _, mean, cov = _point_moments(system, weights)
    spread = np.sqrt(cov[:, 0, 0] + cov[:, 1, 1])
    return mean, np.maximum(spread, 1.0)


def underdetermined(model: str, system: System, weights: np.ndarray) -> np.ndarray:
    """Tiles whose points cannot fix the model's parameters.

    Translation needs one point, the euclidean and similarity models two
    distinct points, the affine model three points that are not collinear.
    """
    if model == "translation":
        keep = weights > 0
        n = np.bincount(np.concatenate([system.ia[keep], system.ib[keep], system.at]),
                        minlength=system.ntiles)
        return np.flatnonzero(n < 1)
    n, _, cov = _point_moments(system, weights)
    eig = np.linalg.eigvalsh(cov)  # ascending, per tile
    scale = np.maximum(eig[:, 1], 1.0)
    if MODEL[model].min_points == 3:
        bad = (n < 3) | (eig[:, 0] <= 1e-9 * scale)
    else:
        bad = (n < 2) | (eig[:, 1] <= 1e-12)
    return np.flatnonzero(bad)


def components(ntiles: int, ia: np.ndarray, ib: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the graph with edges ``ia[i] -- ib[i]``."""
    adj = sp.coo_matrix((np.ones(len(ia), np.int8), (ia, ib)), shape=(ntiles, ntiles))
    return csgraph.connected_components(adj, directed=False)


def identity_params(model: str, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Parameters (T, k, m) of the identity transform for tiles with frames c, s."""
    return matrices_to_params(model, np.broadcast_to(np.eye(2, 3), (len(s), 2, 3)), c, s)


def matrices_to_params(model: str, mats: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    lin, b = mats[:, :, :2], mats[:, :, 2]
    u = np.einsum("tij,tj->ti", lin, c) + b  # T(c)
    if model == "translation":
        return b[:, None, :]
    if model == "affine":
        return np.stack([lin[:, :, 0] * s[:, None], lin[:, :, 1] * s[:, None], u], 1)
    if model == "similarity":
        return np.stack([lin[:, 0, 0] * s, lin[:, 1, 0] * s, u[:, 0], u[:, 1]], 1)[:, :, None]
    angle = np.arctan2(lin[:, 1, 0] - lin[:, 0, 1], lin[:, 0, 0] + lin[:, 1, 1])
    return np.stack([angle, u[:, 0], u[:, 1]], 1)[:, :, None]


def params_to_matrices(model: str, theta: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Tile-to-model matrices (T, 2, 3) from parameters (T, k, m)."""
    t = len(s)
    mats = np.zeros((t, 2, 3))
    if model == "translation":
        mats[:, 0, 0] = mats[:, 1, 1] = 1.0
        mats[:, :, 2] = theta[:, 0, :]
        return mats
    if model == "affine":
        lin = np.stack([theta[:, 0, :], theta[:, 1, :]], 2) / s[:, None, None]  # [axis, col]
        u = theta[:, 2, :]
    elif model == "similarity":
        a, b = theta[:, 0, 0] / s, theta[:, 1, 0] / s
        lin = np.stack([np.stack([a, -b], 1), np.stack([b, a], 1)], 1)
        u = theta[:, 2:, 0]
    else:
        cos, sin = np.cos(theta[:, 0, 0]), np.sin(theta[:, 0, 0])
        lin = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)
        u = theta[:, 1:, 0]
    mats[:, :, :2] = lin
    mats[:, :, 2] = u - np.einsum("tij,tj->ti", lin, c)
    return mats


def apply(mats: np.ndarray, tiles: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``T_tiles[i](points[i])`` for (N,) tiles and (N, 2) points."""
    out = np.empty((len(tiles), 2))
    translation = bool(np.all(mats[:, :, :2] == np.eye(2)))
    for i in range(0, len(tiles), _APPLY_CHUNK):  # bounded temporaries
        t, p = tiles[i:i + _APPLY_CHUNK], points[i:i + _APPLY_CHUNK]
        if translation:
            out[i:i + _APPLY_CHUNK] = p + mats[t, :, 2]
        else:
            m = mats[t]
            out[i:i + _APPLY_CHUNK] = np.einsum("nij,nj->ni", m[:, :, :2], p) + m[:, :, 2]
    return out


def residuals(mats: np.ndarray, system: System) -> np.ndarray:
    """(M, 2) model-space misfit ``T_a(p) - T_b(p_)`` of every match, px."""
    return apply(mats, system.ia, system.P) - apply(mats, system.ib, system.Q)


def scale_groups(system: System, weights: np.ndarray) -> list[np.ndarray]:
    """The tiles of each piece of the match graph with at least two tiles."""
    live = weights > 0
    ia, ib = system.ia[live], system.ib[live]
    _, labels = components(system.ntiles, ia, ib)
    matched = np.zeros(system.ntiles, bool)
    matched[ia] = matched[ib] = True
    groups = [np.flatnonzero(matched & (labels == g)) for g in np.unique(labels[matched])]
    return [g for g in groups if len(g) >= 2]
