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


import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from .system import (MODEL, System, _NPARAM, _point_moments, apply, frames, matrices_to_params,
                     params_to_matrices, residuals, scale_groups)


# unknowns per tile in one linear system, and whether x and y decouple

_EUCLIDEAN_STEPS = 20
_EUCLIDEAN_TOL = 1e-7  # px


# -- tile frames and checks ------------------------------------------------


# -- parameters <-> matrices -------------------------------------------------


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


def _solve_linear(model: str, system: System, c: np.ndarray, s: np.ndarray, pinned: np.ndarray,
                  pinned_mats: np.ndarray, hub: int | None = None,
                  prior: tuple[np.ndarray, np.ndarray] | None = None,
                  groups: list[np.ndarray] | None = None) -> np.ndarray:
    a, rhs, w = _design(model, system, c, s, None)
    if prior is not None:  # pull each linear part towards prior[0]
        a, rhs, w = _with_linear_prior(model, a, rhs, w, s, *prior)
    if groups and MODEL[model].scales:
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
    if hub is not None and (not MODEL[model].scales or len(system.at)):
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


