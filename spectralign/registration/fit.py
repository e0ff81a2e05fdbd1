"""Least-squares fits of one transform to point pairs, and a robust loop.

Similarity and rigid fits are Umeyama's closed form (IEEE TPAMI 13, 1991,
doi:10.1109/34.88573) with weights; the affine fit is linear least squares.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..affine import Affine

__all__ = ["MODELS", "MIN_POINTS", "fit_transform", "robust_fit"]

MODELS = ("translation", "rigid", "similarity", "affine")
#: Point pairs each model needs (affine: not all on one line).
MIN_POINTS = {"translation": 1, "rigid": 2, "similarity": 2, "affine": 3}


def fit_transform(src: np.ndarray, dst: np.ndarray, model: str,
                  weights: np.ndarray | None = None) -> Affine:
    """The transform of ``model`` that best takes ``src`` to ``dst``
    (``(N, 2)`` points), in the weighted least-squares sense."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    cs, cd = w @ src, w @ dst
    if model == "translation":
        return Affine.translator(cd - cs)
    a, b = src - cs, dst - cd
    if model == "affine":
        sw = np.sqrt(w)[:, None]
        lin, *_ = np.linalg.lstsq(a * sw, b * sw, rcond=None)
        lin = lin.T
    else:
        # Umeyama's rotation in the plane: the turn that maximizes
        # trace(R^T C) for the weighted cross-covariance C, and for a
        # similarity the scale that goes with it (the sum of C's singular
        # values, signed as Umeyama's correction does, is the projection
        # of C on that turn)
        cov = (b * w[:, None]).T @ a
        along, across = cov[0, 0] + cov[1, 1], cov[1, 0] - cov[0, 1]
        norm = np.hypot(along, across)
        cos, sin = (along / norm, across / norm) if norm > 0 else (1.0, 0.0)
        scale = 1.0
        if model == "similarity":
            var = float(np.sum(w * np.sum(a * a, axis=1)))
            scale = float(norm) / var
        lin = scale * np.array([[cos, -sin], [sin, cos]])
    return Affine(np.hstack([lin, (cd - lin @ cs)[:, None]]))


def determined(src: np.ndarray, model: str) -> bool:
    """Whether the points pin down every parameter of ``model``."""
    if len(src) < MIN_POINTS[model]:
        return False
    if model == "translation":
        return True
    # the centred points' singular values: the roots of their 2 x 2
    # scatter's eigenvalues
    a = src - src.mean(axis=0)
    xx, xy, yy = float(a[:, 0] @ a[:, 0]), float(a[:, 0] @ a[:, 1]), float(a[:, 1] @ a[:, 1])
    mid, half = (xx + yy) / 2, float(np.hypot((xx - yy) / 2, xy))
    spread = np.sqrt([max(mid + half, 0.0), max(mid - half, 0.0)])
    if model == "affine":
        return spread[1] > 1e-6 * max(spread[0], 1.0) and spread[1] > 1.0
    return spread[0] > 1.0


def _consensus(src: np.ndarray, dst: np.ndarray, model: str, weights: np.ndarray,
               tol: float, top: int = 12) -> np.ndarray:
    """The pairs that agree with the best-supported exact fit through a
    minimal set of the ``top`` heaviest pairs (RANSAC over every such set,
    Fischler and Bolles 1981): chance matches may be the majority.

    The choice is that of trying the sets in order: the first that nearly
    all agree with, else the first of the best score.  The sets are fitted
    in two batches: the first few (:data:`FIRST_SETS`), which settle it
    where the windows mostly agree, then the rest."""
    heavy = np.argsort(-weights, kind="stable")[:top]
    combos = np.array(list(itertools.combinations(heavy, MIN_POINTS[model])),
                      dtype=np.intp).reshape(-1, MIN_POINTS[model])
    fits = _triples if model == "affine" else _pairs
    total = float(weights.sum())
    best, best_score = None, -1.0
    first = FIRST_SETS[model]
    for part in (combos[:first], combos[first:]):
        scores, inliers = fits(src, dst, model, weights, tol, part)
        if not len(scores):
            continue
        near = np.flatnonzero(scores >= 0.9 * total)
        if len(near):
            return inliers[near[0]]  # nearly all agree: no set can do much better
        at = int(np.argmax(scores))
        if scores[at] > best_score:
            best, best_score = inliers[at], float(scores[at])
    return best if best is not None else np.ones(len(src), dtype=bool)


#: Sets :func:`_consensus` fits in its first batch.
FIRST_SETS = {"translation": 12, "rigid": 1, "similarity": 1, "affine": 8}


def _pairs(src: np.ndarray, dst: np.ndarray, model: str, weights: np.ndarray, tol: float,
           combos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_triples` for translations (sets of one pair) and rigid and
    similarity transforms (sets of two): two points fix the turn that
    takes one's offset to the other onto theirs (and, for a similarity,
    the ratio of their lengths); the fit goes through their midpoints, as
    :func:`fit_transform` of the two."""
    a, b = src[combos], dst[combos]  # (C, k, 2)
    if model == "translation":
        cos, sin = np.ones(len(a)), np.zeros(len(a))
    else:
        da, db = a[:, 1] - a[:, 0], b[:, 1] - b[:, 0]
        la, lb = np.hypot(*da.T), np.hypot(*db.T)
        # :func:`determined`: the two points' spread (the centred pair's
        # singular value) beyond 1 px
        ok = la / np.sqrt(2.0) > 1.0
        a, b, da, db, la, lb = (v[ok] for v in (a, b, da, db, la, lb))
        turn = np.arctan2(db[:, 1], db[:, 0]) - np.arctan2(da[:, 1], da[:, 0])
        scale = lb / la if model == "similarity" else np.ones(len(la))
        cos, sin = scale * np.cos(turn), scale * np.sin(turn)
    ca, cb = a.mean(axis=1), b.mean(axis=1)  # (C, 2)
    rel = src[None, :, :] - ca[:, None, :]  # (C, N, 2)
    mx = cos[:, None] * rel[..., 0] - sin[:, None] * rel[..., 1] + cb[:, None, 0]
    my = sin[:, None] * rel[..., 0] + cos[:, None] * rel[..., 1] + cb[:, None, 1]
    inliers = np.hypot(mx - dst[None, :, 0], my - dst[None, :, 1]) <= tol
    # einsum, not BLAS (see :func:`_triples`)
    return np.einsum("cn,n->c", inliers, weights), inliers


def _triples(src: np.ndarray, dst: np.ndarray, model: str, weights: np.ndarray, tol: float,
             combos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each well-spread triple's exact affine (``model``, for the
    signature it shares with :func:`_pairs`): the weight of the pairs
    within ``tol`` of it, and which they are."""
    tri = src[combos]  # (C, 3, 2)
    if not len(tri):
        return np.zeros(0), np.zeros((0, len(src)), dtype=bool)
    spread = np.linalg.svd(tri - tri.mean(axis=1, keepdims=True), compute_uv=False)
    ok = (spread[:, 1] > 1e-6 * np.maximum(spread[:, 0], 1.0)) & (spread[:, 1] > 1.0)
    combos, tri = combos[ok], tri[ok]
    ones = np.ones(tri.shape[:2] + (1,))
    # [x y 1] @ coefficients = dst, three points: exact
    coef = np.linalg.solve(np.concatenate([tri, ones], axis=2), dst[combos])  # (C, 3, 2)
    moved = np.concatenate([src, np.ones((len(src), 1))], axis=1) @ coef  # (C, N, 2)
    inliers = np.linalg.norm(moved - dst, axis=2) <= tol
    # einsum, not BLAS: a threaded BLAS product leaves a thread spinning
    # on the other core (see ``direct.GRAM_ROWS``)
    return np.einsum("cn,n->c", inliers, weights), inliers


def robust_fit(src: np.ndarray, dst: np.ndarray, model: str, weights: np.ndarray,
               floor: float = 0.3, tol: float = 1.5) -> tuple[Affine, np.ndarray]:
    """Fit to the pairs of the best consensus (within ``tol`` px), then let
    go of pairs further than ``max(floor, 4 sigma)`` from the fit (sigma
    from the median absolute residual) and fit again, until nothing changes;
    never below what the model needs.

    Returns the transform and the mask of pairs kept.
    """
    keep = _consensus(src, dst, model, weights, tol)
    if keep.sum() < MIN_POINTS[model] or not determined(src[keep], model):
        keep = np.ones(len(src), dtype=bool)
    for _ in range(10):
        t = fit_transform(src[keep], dst[keep], model, weights[keep])
        res = np.linalg.norm(t(src) - dst, axis=1)
        sigma = 1.4826 * np.median(res[keep])
        new = res <= min(max(floor, 4.0 * sigma), tol)
        if new.sum() < MIN_POINTS[model] or not determined(src[new], model):
            break
        if np.array_equal(new, keep):
            break
        keep = new
    return t, keep
