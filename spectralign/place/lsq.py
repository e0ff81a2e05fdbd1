"""Pure maths of placement: sparse least squares for tile transforms.

Every tile ``t`` gets a transform ``T_t`` from tile to model space.  A match
``(t, t_, p, p_)`` asks for ``T_t(p) == T_t_(p_)``; an anchor (a prior)
asks for ``T_t(x) == y`` with ``y`` fixed.  Weighted least squares over all
of them, with the model's parameters per tile, is a sparse linear system
(or, for the euclidean model, a short sequence of them).

For conditioning, each tile's transform is written about the centre ``c_t``
and spread ``s_t`` of the tile's own points::

    T_t(p) = L_t (p - c_t) / s_t + u_t

so that every unknown is in pixels and the normal equations stay well
conditioned whatever the tile size.  Matrices are assembled from numpy index
arrays into ``scipy.sparse`` (no Python loop per entry) and solved by a sparse
LU factorization of the normal equations.

Nothing here knows tile ids: tiles are integers ``0 .. ntiles - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as sla

MODELS = ("translation", "euclidean", "similarity", "affine")

# unknowns per tile in one linear system, and whether x and y decouple
_NPARAM = {"translation": 1, "affine": 3, "similarity": 4, "euclidean": 3}
_DECOUPLED = {"translation": True, "affine": True, "similarity": False, "euclidean": False}

_RAYLEIGH_MEDIAN = float(np.sqrt(2 * np.log(2)))  # median of |N(0, I_2)|
_EUCLIDEAN_STEPS = 20
_EUCLIDEAN_TOL = 1e-7  # px
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


# -- tile frames and checks ------------------------------------------------


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
    if model == "affine":
        bad = (n < 3) | (eig[:, 0] <= 1e-9 * scale)
    else:
        bad = (n < 2) | (eig[:, 1] <= 1e-12)
    return np.flatnonzero(bad)


def components(ntiles: int, ia: np.ndarray, ib: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the graph with edges ``ia[i] -- ib[i]``."""
    adj = sp.coo_matrix((np.ones(len(ia), np.int8), (ia, ib)), shape=(ntiles, ntiles))
    return csgraph.connected_components(adj, directed=False)


# -- parameters <-> matrices -------------------------------------------------


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


# -- assembly -----------------------------------------------------------------


def _design(model: str, system: System, c: np.ndarray, s: np.ndarray,
            current: np.ndarray | None) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """Design matrix A, right-hand side B and row weights of one linear system.

    Decoupled models (translation, affine) share one matrix between the x and
    y equations: B has two columns.  The similarity and euclidean models have
    one row per coordinate.  For the euclidean model the system is the
    Gauss-Newton step about the ``current`` matrices.
    """
    ia, ib, at = system.ia, system.ib, system.at
    m, kk, t = len(ia), len(at), system.ntiles
    k = _NPARAM[model]
    if model == "translation":
        rows = np.concatenate([np.arange(m), np.arange(m), m + np.arange(kk)])
        cols = np.concatenate([ia, ib, at])
        vals = np.concatenate([np.ones(m), -np.ones(m), np.ones(kk)])
        rhs = np.concatenate([system.Q - system.P, system.ay - system.ax])
        weights = np.concatenate([system.w, system.aw])
        return _matrix(rows, cols, vals, m + kk, t), rhs, weights
    qa = (system.P - c[ia]) / s[ia, None]
    qb = (system.Q - c[ib]) / s[ib, None]
    qx = (system.ax - c[at]) / s[at, None]
    if model == "affine":
        one_m, one_k = np.ones(m), np.ones(kk)
        r = np.arange(m)
        rows = np.concatenate([np.repeat(r, 3), np.repeat(r, 3), np.repeat(m + np.arange(kk), 3)])
        cols = np.concatenate([(3 * ia[:, None] + np.arange(3)).ravel(),
                               (3 * ib[:, None] + np.arange(3)).ravel(),
                               (3 * at[:, None] + np.arange(3)).ravel()])
        vals = np.concatenate([np.column_stack([qa, one_m]).ravel(),
                               -np.column_stack([qb, one_m]).ravel(),
                               np.column_stack([qx, one_k]).ravel()])
        rhs = np.concatenate([np.zeros((m, 2)), system.ay])
        weights = np.concatenate([system.w, system.aw])
        return _matrix(rows, cols, vals, m + kk, 3 * t), rhs, weights
    # coupled models: rows (x, y) per match and anchor; 4 or 3 unknowns per tile
    tiles = np.concatenate([ia, ib, at])
    sign = np.concatenate([np.ones(m), -np.ones(m), np.ones(kk)])
    row_of = np.concatenate([np.arange(m), np.arange(m), m + np.arange(kk)])
    if model == "similarity":
        q = np.concatenate([qa, qb, qx])
        # x-row: qx a - qy b + ux ; y-row: qy a + qx b + uy
        xvals = np.column_stack([q[:, 0], -q[:, 1], np.ones(len(q)), np.zeros(len(q))])
        yvals = np.column_stack([q[:, 1], q[:, 0], np.zeros(len(q)), np.ones(len(q))])
        rhs = np.concatenate([np.zeros((m, 2)), system.ay])
    else:
        lin = current[:, :, :2]
        v = np.concatenate([np.einsum("nij,nj->ni", lin[ia], qa),
                            np.einsum("nij,nj->ni", lin[ib], qb),
                            np.einsum("nij,nj->ni", lin[at], qx)])
        # d/d(angle * s) of R (p - c) is R J (p - c) / s with J = [[0, -1], [1, 0]]
        xvals = np.column_stack([-v[:, 1], np.ones(len(v)), np.zeros(len(v))])
        yvals = np.column_stack([v[:, 0], np.zeros(len(v)), np.ones(len(v))])
        rhs = np.concatenate([-residuals(current, system),
                              system.ay - apply(current, at, system.ax)])
    xvals = xvals * sign[:, None]
    yvals = yvals * sign[:, None]
    nrow = m + kk
    rows = np.concatenate([np.repeat(2 * row_of, k), np.repeat(2 * row_of + 1, k)])
    cols = np.tile((k * tiles[:, None] + np.arange(k)).ravel(), 2)
    vals = np.concatenate([xvals.ravel(), yvals.ravel()])
    weights = np.repeat(np.concatenate([system.w, system.aw]), 2)
    return _matrix(rows, cols, vals, 2 * nrow, k * t), rhs.reshape(-1, 1), weights


def _matrix(rows, cols, vals, nrow, ncol) -> sp.csc_matrix:
    return sp.csc_matrix((vals, (rows, cols)), shape=(nrow, ncol))


def _solve(a: sp.csc_matrix, rhs: np.ndarray, weights: np.ndarray, k: int,
           pinned: np.ndarray, pinned_params: np.ndarray | None,
           mean: tuple[np.ndarray, np.ndarray, int] | None = None) -> np.ndarray:
    """Weighted least squares ``min sum w (A x - B)^2`` with some tiles known.

    With ``mean = (C, D, hub)`` no tile is known: the linear constraints
    ``C x = D`` (a few rows: the mean of the tiles' parameters) fix the
    gauge instead.  The normal equations bordered by ``C`` are solved
    through the factorization with tile ``hub`` taken out: the hub's
    parameters and the multipliers of ``C`` are the unknowns of a small
    dense system.

    Returns the parameters (T, k, m) of every tile.
    """
    ncol = a.shape[1]
    t = ncol // k
    if mean is not None:
        pinned = np.array([mean[2]])
    known = np.zeros(t, bool)
    known[pinned] = True
    free_cols = np.flatnonzero(~np.repeat(known, k))
    known_cols = (k * pinned[:, None] + np.arange(k)).ravel()
    theta = np.zeros((t, k, rhs.shape[1]))
    if mean is None:
        theta[pinned] = pinned_params
        b = rhs - a[:, known_cols] @ pinned_params.reshape(len(known_cols), rhs.shape[1])
    else:
        b = rhs
    af = a[:, free_cols]
    wa = af.T.multiply(weights[None, :]).tocsr()
    normal = (wa @ af).tocsc()
    try:
        lu = sla.splu(normal, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                      options={"SymmetricMode": True})
    except RuntimeError as exc:  # "Factor is exactly singular"
        raise np.linalg.LinAlgError(str(exc)) from exc
    if mean is None:
        x = lu.solve(np.ascontiguousarray(wa @ b))
    else:
        x, theta[pinned[0]] = _bordered(a, b, weights, lu, wa, known_cols, free_cols,
                                        mean[0], mean[1])
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(theta[pinned])):
        raise np.linalg.LinAlgError("the normal equations are singular")
    free_tiles = np.flatnonzero(~known)
    theta[free_tiles] = x.reshape(len(free_tiles), k, -1)
    return theta


def _bordered(a, b, weights, lu, wa_f, known_cols, free_cols, cmat, d):
    """Solve ``[N C'; C 0] [x; l] = [A' W b; d]`` given the LU of ``N_FF``.

    ``N = A' W A`` is split into the free columns F and the hub's columns
    H; eliminating ``x_F = K^-1 (r_F - N_FH x_H - C_F' l)`` leaves a small
    dense system in ``x_H`` and ``l``.  Returns ``x_F`` and ``x_H``.
    """
    ah = a[:, known_cols]
    wa_h = ah.T.multiply(weights[None, :]).tocsr()
    n_fh = np.asarray((wa_f @ ah).todense())
    n_hh = np.asarray((wa_h @ ah).todense())
    r_f, r_h = wa_f @ b, wa_h @ b
    c_f, c_h = cmat[:, free_cols], cmat[:, known_cols]
    m, kh = b.shape[1], len(known_cols)
    sol = lu.solve(np.ascontiguousarray(np.column_stack([r_f, n_fh, c_f.T])))
    h, h1, h2 = sol[:, :m], sol[:, m:m + kh], sol[:, m + kh:]
    n_hf = n_fh.T
    small = np.block([[n_hh - n_hf @ h1, c_h.T - n_hf @ h2],
                      [c_h - c_f @ h1, -c_f @ h2]])
    y = np.linalg.solve(small, np.vstack([r_h - n_hf @ h, d - c_f @ h]))
    x_h, lam = y[:kh], y[kh:]
    return h - h1 @ x_h - h2 @ lam, x_h


def _with_linear_prior(model: str, a, rhs, w, s, target: np.ndarray, weight: np.ndarray):
    """Append rows asking each tile's linear part to equal ``target``
    (T, 2, 2), with per-tile ``weight``: the affine model's four entries,
    or the similarity model's ``a`` and ``b`` (``L = [[a, -b], [b, a]]``)."""
    t = len(s)
    rows = np.arange(2 * t)
    if model == "affine":  # theta_j (coordinate i) = L[i, j] s
        cols = (3 * np.arange(t)[:, None] + np.arange(2)).ravel()
        goal = (target * s[:, None, None]).transpose(0, 2, 1).reshape(2 * t, 2)
    else:  # similarity: theta = (a s, b s, T(c)_x, T(c)_y)
        cols = (4 * np.arange(t)[:, None] + np.arange(2)).ravel()
        goal = (np.stack([target[:, 0, 0], target[:, 1, 0]], 1) * s[:, None]).reshape(2 * t, 1)
    extra = sp.csc_matrix((np.ones(2 * t), (rows, cols)), shape=(2 * t, a.shape[1]))
    return (sp.vstack([a, extra], format="csc"), np.vstack([rhs, goal]),
            np.concatenate([w, np.repeat(weight, 2)]))


def _mean_constraints(model: str, c: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``C`` and targets ``D`` asking for the mean linear part I and
    the mean translation 0 (of ``T(p) = L p + t``) in a model's parameters."""
    t = len(s)
    if model == "affine":  # per coordinate i: theta = (L[i, 0] s, L[i, 1] s, T(c)_i)
        cm = np.zeros((3, 3 * t))
        cm[0, 0::3] = 1 / s
        cm[1, 1::3] = 1 / s
        # t_i = T(c)_i - L[i, :] c
        cm[2, 2::3] = 1.0
        cm[2, 0::3] = -c[:, 0] / s
        cm[2, 1::3] = -c[:, 1] / s
        d = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        return cm / t, d
    # similarity: theta = (a s, b s, T(c)_x, T(c)_y) with L = [[a, -b], [b, a]]
    cm = np.zeros((4, 4 * t))
    cm[0, 0::4] = 1 / s
    cm[1, 1::4] = 1 / s
    cm[2, 2::4] = 1.0  # tx = T(c)_x - (a cx - b cy)
    cm[2, 0::4] = -c[:, 0] / s
    cm[2, 1::4] = c[:, 1] / s
    cm[3, 3::4] = 1.0  # ty = T(c)_y - (b cx + a cy)
    cm[3, 0::4] = -c[:, 1] / s
    cm[3, 1::4] = -c[:, 0] / s
    d = np.array([[1.0], [0.0], [0.0], [0.0]])
    return cm / t, d


def _scale_constraints(model: str, s: np.ndarray, groups: list[np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``C`` and targets ``D`` asking for the mean linear part I over
    each group of tiles (the translations are left to the priors)."""
    k = _NPARAM[model]
    t = len(s)
    cm = np.zeros((2 * len(groups), k * t))
    for g, tiles in enumerate(groups):
        cm[2 * g, k * tiles] = 1 / (s[tiles] * len(tiles))
        cm[2 * g + 1, k * tiles + 1] = 1 / (s[tiles] * len(tiles))
    if model == "affine":  # per coordinate i: theta = (L[i, 0] s, L[i, 1] s, T(c)_i)
        d = np.tile(np.eye(2), (len(groups), 1))
    else:  # similarity: theta = (a s, b s, ...): mean a = 1, mean b = 0
        d = np.tile([[1.0], [0.0]], (len(groups), 1))
    return cm, d


def scale_groups(system: System, weights: np.ndarray) -> list[np.ndarray]:
    """The tiles of each piece of the match graph with at least two tiles."""
    live = weights > 0
    ia, ib = system.ia[live], system.ib[live]
    _, labels = components(system.ntiles, ia, ib)
    matched = np.zeros(system.ntiles, bool)
    matched[ia] = matched[ib] = True
    groups = [np.flatnonzero(matched & (labels == g)) for g in np.unique(labels[matched])]
    return [g for g in groups if len(g) >= 2]


def _solve_linear(model: str, system: System, c: np.ndarray, s: np.ndarray, pinned: np.ndarray,
                  pinned_mats: np.ndarray, hub: int | None = None,
                  prior: tuple[np.ndarray, np.ndarray] | None = None,
                  groups: list[np.ndarray] | None = None) -> np.ndarray:
    a, rhs, w = _design(model, system, c, s, None)
    if prior is not None:  # pull each linear part towards prior[0]
        a, rhs, w = _with_linear_prior(model, a, rhs, w, s, *prior)
    if groups and model in ("similarity", "affine"):
        cm, d = _scale_constraints(model, s, groups)
        theta = _solve(a, rhs, w, _NPARAM[model], pinned, None, mean=(cm, d, int(groups[0][0])))
    elif hub is not None:
        cm, d = _mean_constraints(model, c, s)
        theta = _solve(a, rhs, w, _NPARAM[model], pinned, None, mean=(cm, d, hub))
    else:
        pp = matrices_to_params(model, pinned_mats, c[pinned], s[pinned])
        theta = _solve(a, rhs, w, _NPARAM[model], pinned, pp)
    return params_to_matrices(model, theta, c, s)


def solve(model: str, system: System, weights: np.ndarray, pinned: np.ndarray,
          pinned_mats: np.ndarray, hub: int | None = None,
          regularize: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Least-squares matrices (T, 2, 3) for the given match weights.

    ``pinned`` tiles keep ``pinned_mats``.  With ``hub`` (and nothing
    pinned) the gauge is fixed instead by the mean of all tiles: for the
    similarity and affine models through constraints on the mean linear
    part and translation, because pinning one tile of a large grid leaves
    it under tension (least squares in model space rewards tiles that
    shrink, and every tile but the pinned one can); for the translation
    and euclidean models, which cannot shrink, by pinning ``hub`` at the
    identity.  With priors (anchors) and nothing pinned, the priors place
    the tiles, but for the similarity and affine models they cannot be
    allowed to set the scale: faint priors lose to the matches' reward for
    shrinking, and the montage collapses (to 1 % of its size, measured).  So
    each piece of the match graph also keeps the mean linear part I, as a
    hard constraint, and the priors only move and turn it.  With
    ``regularize = (a, s)`` each affine tile's linear part is also pulled
    towards that of the similarity solution with weight ``a``, and each
    similarity tile's (the affine model's target included) towards the
    euclidean solution's (scale 1) with weight ``s``, times half the tile's
    number of points (the data's own
    stiffness in the tile's normalized frame).  Raises ``LinAlgError`` if
    the system is singular.
    """
    if hub is not None and (model in ("translation", "euclidean") or len(system.at)):
        pinned, pinned_mats, hub = np.array([hub]), np.eye(2, 3)[None], None
    used = System(system.ntiles, system.ia, system.ib, system.P, system.Q, weights,
                  system.at, system.ax, system.ay, system.aw)
    if model == "translation":  # no frames needed
        c, s = np.zeros((system.ntiles, 2)), np.ones(system.ntiles)
    else:
        c, s = frames(system, weights)
    k = _NPARAM[model]
    groups = (scale_groups(system, weights)
              if len(system.at) and not len(pinned) and hub is None else None)
    pull = {"affine": regularize[0], "similarity": regularize[1]}.get(model, 0.0)
    if pull > 0:
        if model == "affine":  # the similarity solution, itself pulled by regularize[1]
            target = solve("similarity", system, weights, pinned, pinned_mats, hub,
                           (0.0, regularize[1]))
        else:
            target = solve("euclidean", system, weights, pinned, pinned_mats, hub)
        count = _point_moments(system, weights)[0]
        prior = (target[:, :, :2], pull * count / 2)
        return _solve_linear(model, used, c, s, pinned, pinned_mats, hub, prior, groups)
    if model != "euclidean":
        return _solve_linear(model, used, c, s, pinned, pinned_mats, hub, groups=groups)
    # euclidean: start from the similarity solution's angles, then Gauss-Newton
    mats = _solve_linear("similarity", used, c, s, pinned, pinned_mats, groups=groups)
    theta = matrices_to_params("euclidean", mats, c, s)
    mats = params_to_matrices("euclidean", theta, c, s)
    last = np.inf
    for _ in range(_EUCLIDEAN_STEPS):
        a, rhs, w = _design("euclidean", used, c, s, mats)
        step = _solve(a, rhs, w, k, pinned, np.zeros((len(pinned), k, 1)))
        theta[:, 0] += step[:, 0] / s[:, None]  # the angle step was scaled by s
        theta[:, 1:] += step[:, 1:]
        mats = params_to_matrices("euclidean", theta, c, s)
        # angle steps are scaled by s, so both parts of the step are in px;
        # stop when they are negligible or no longer shrink (the solver's
        # rounding floor: Gauss-Newton converges quadratically before it)
        size = float(np.max(np.abs(step)))
        if size < _EUCLIDEAN_TOL or size > 0.5 * last:
            break
        last = size
    if groups:
        mats = _unturn(mats, groups)
    return mats


def _unturn(mats: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Turn each piece of the match graph about its mean position so that
    its mean rotation is zero, as the similarity and affine models keep
    their mean linear part I: faint priors alone would turn a whole piece to
    fit the stage's random errors (0.1 deg, 1.2 px at the far tiles of a
    2 x 5 grid, measured).  The matches' residuals do not change."""
    out = mats.copy()
    for tiles in groups:
        lin = mats[tiles, :, :2]
        angle = np.arctan2(lin[:, 1, 0] - lin[:, 0, 1], lin[:, 0, 0] + lin[:, 1, 1])
        mean = float(np.angle(np.mean(np.exp(1j * angle))))
        r = np.array([[np.cos(mean), np.sin(mean)], [-np.sin(mean), np.cos(mean)]])
        centre = mats[tiles, :, 2].mean(0)
        out[tiles, :, :2] = np.einsum("ij,tjk->tik", r, lin)
        out[tiles, :, 2] = (mats[tiles, :, 2] - centre) @ r.T + centre
    return out


# -- gauge -------------------------------------------------------------------


def gauge(model: str, mats: np.ndarray) -> np.ndarray:
    """Move all tiles by one global transform of the model's kind so that
    the mean translation is zero and the mean linear part is the identity
    (for the euclidean model: the mean rotation angle is zero)."""
    lin = mats[:, :, :2]
    if model == "translation":
        g = np.eye(2)
    elif model == "euclidean":
        angle = np.arctan2(lin[:, 1, 0] - lin[:, 0, 1], lin[:, 0, 0] + lin[:, 1, 1])
        circ = np.angle(np.mean(np.exp(1j * angle)))
        mean = circ + np.mean(np.angle(np.exp(1j * (angle - circ))))
        g = np.array([[np.cos(mean), np.sin(mean)], [-np.sin(mean), np.cos(mean)]])
    else:
        g = np.linalg.inv(lin.mean(0))
    out = np.einsum("ij,tjk->tik", g, mats)
    out[:, :, 2] -= out[:, :, 2].mean(0)
    return out


def refix(mats: np.ndarray, tile: int) -> np.ndarray:
    """Compose every tile with the inverse of ``tile``'s transform, so that
    ``tile`` becomes the identity (the model's kind is kept)."""
    g = np.vstack([mats[tile], [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(g)[:2]
    out = np.einsum("ij,tjk->tik", inv[:, :2], mats)
    out[:, :, 2] += inv[:, 2]
    return out


# -- robustness ---------------------------------------------------------------


@dataclass(frozen=True)
class RobustFit:
    """Outcome of :func:`robust_solve`."""

    mats: np.ndarray
    residuals: np.ndarray
    dropped: np.ndarray
    threshold: float
    sigma: float
    rounds: int


def robust_scale(norms: np.ndarray) -> float:
    """Per-axis standard deviation of 2-D residuals from their median norm."""
    if len(norms) == 0:
        return 0.0
    return float(np.median(norms) / _RAYLEIGH_MEDIAN)


def robust_solve(model: str, system: System, pinned: np.ndarray, pinned_mats: np.ndarray, *,
                 robust: bool, abs_threshold: float, rel_threshold: float,
                 max_rounds: int = 60, hub: int | None = None,
                 regularize: tuple[float, float] = (0.0, 0.0)) -> RobustFit:
    """Least squares, then (if ``robust`` and some residual is too large)
    iterative rejection of bad matches.

    Each round drops the matches whose residual exceeds both the threshold
    ``max(abs_threshold, rel_threshold * sigma)`` (``sigma`` estimated from
    the median residual of the matches kept) and half the largest residual,
    so that the grossest errors go first and cannot drag good matches with
    them; matches whose residual falls below the threshold come back.  A
    match is never dropped where that would cut the tile graph or leave a
    tile without enough points for the model.

    The similarity and affine models can shrink tiles to hide gross errors
    (least squares in model space rewards a tile scaled by ``f < 1`` with
    residuals scaled by ``f``), so for them the bad matches are first sought
    with the euclidean model, which cannot, and the rounds then go on with
    the model asked for.
    """
    state = _Rounds(model, system, pinned, pinned_mats, abs_threshold, rel_threshold, hub,
                    regularize)
    state.solve(np.zeros(system.nmatches, bool))
    live = system.w > 0
    if not robust or not (state.norms[live] > state.threshold).any():
        return state.result()
    if model in ("similarity", "affine"):
        detect = _Rounds("euclidean", system, pinned, pinned_mats, abs_threshold, rel_threshold,
                         hub)
        detect.rounds = state.rounds
        detect.solve(state.dropped)
        detect.run(max_rounds)
        state.rounds = detect.rounds
        state.solve(detect.dropped)
    state.run(max_rounds)
    return state.result()


class _Rounds:
    """The state of iterative rejection for one model."""

    def __init__(self, model, system, pinned, pinned_mats, abs_threshold, rel_threshold, hub,
                 regularize=(0.0, 0.0)):
        self.model, self.system = model, system
        self.pinned, self.pinned_mats, self.hub = pinned, pinned_mats, hub
        self.regularize = regularize
        self.abs_threshold, self.rel_threshold = abs_threshold, rel_threshold
        self.rounds = 0
        live = system.w > 0
        self.ncomp0 = components(system.ntiles, system.ia[live], system.ib[live])[0]

    def solve(self, dropped: np.ndarray) -> None:
        base = self.system.w
        self.dropped = dropped
        self.mats = solve(self.model, self.system, np.where(dropped, 0.0, base), self.pinned,
                          self.pinned_mats, self.hub, self.regularize)
        self.res = residuals(self.mats, self.system)
        self.norms = np.hypot(self.res[:, 0], self.res[:, 1])
        self.sigma = robust_scale(self.norms[(base > 0) & ~dropped])
        self.threshold = max(self.abs_threshold, self.rel_threshold * self.sigma)
        self.rounds += 1

    def run(self, max_rounds: int) -> None:
        base = self.system.w
        while self.rounds < max_rounds:
            live = (base > 0) & ~self.dropped
            cut = max(self.threshold, 0.5 * self.norms[live].max(initial=0.0))
            proposal = (base > 0) & (self.norms > self.threshold) & (
                self.dropped | (self.norms > cut))
            proposal = _keep_structure(self.model, self.system, proposal, self.norms,
                                       self.ncomp0)
            if np.array_equal(proposal, self.dropped):
                break
            self.solve(proposal)

    def result(self) -> RobustFit:
        return RobustFit(self.mats, self.res, self.dropped, self.threshold, self.sigma,
                         self.rounds)


def _keep_structure(model: str, system: System, dropped: np.ndarray, norms: np.ndarray,
                    ncomp0: int) -> np.ndarray:
    """Give back dropped matches where dropping them cuts the graph or
    starves a tile: per cut tile pair its best match, per starved tile all."""
    dropped = dropped.copy()
    for _ in range(system.nmatches + 1):
        keep = (system.w > 0) & ~dropped
        ncomp, labels = components(system.ntiles, system.ia[keep], system.ib[keep])
        if ncomp <= ncomp0:
            break
        cand = np.flatnonzero(dropped & (labels[system.ia] != labels[system.ib]))
        # best candidate per pair of components
        la, lb = labels[system.ia[cand]], labels[system.ib[cand]]
        key = np.minimum(la, lb) * system.ntiles + np.maximum(la, lb)
        order = np.lexsort((norms[cand], key))
        first = np.ones(len(order), bool)
        first[1:] = key[order][1:] != key[order][:-1]
        dropped[cand[order[first]]] = False
    starving = underdetermined(model, system, np.where(dropped, 0.0, system.w))
    if len(starving):
        dropped &= ~(np.isin(system.ia, starving) | np.isin(system.ib, starving))
    return dropped
