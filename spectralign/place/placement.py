"""Placement: one transform per tile from matches between tiles."""

from __future__ import annotations

from typing import Any, Hashable

import numpy as np

from . import lsq as _lsq, robust as _robust, system as _system
from .checks import _LISTED, check_connected, check_determined, check_weight, regularization_pulls
from ..affine import Affine
from ..errors import (
    InvalidMatchError,
    InvalidPointError,
    NoMatchesError,
    SingularPlacementError,
    UnknownTileError,
)
from .result import PlacementResult

__all__ = ["Placement", "PlacementResult", "MODELS"]

MODELS = _system.MODELS
_PRIOR_SPAN = 512.0  # px between the three anchor points of a prior


class Placement:
    """A graph of tiles joined by matching points, and its least-squares placement.

    A match says that point ``p`` of tile ``t`` and point ``p_`` of tile
    ``t_`` show the same spot: ``T_t(p) == T_t_(p_)`` where ``T`` maps tile
    pixels ``(x, y)`` to model space.  :meth:`solve` finds the transforms
    that fit all matches best in the least-squares sense, for one of four
    models: ``"translation"``, ``"euclidean"`` (rotation + translation, the
    rigid-body model), ``"similarity"`` (plus uniform scale) and
    ``"affine"``.  :meth:`rigid` and :meth:`affine` are the original
    package's shortcuts.

    The system is sparse (one block of unknowns per tile, one row per match)
    and is solved by a sparse factorization of its normal equations, so a
    million tiles place in seconds.  By default bad matches are found and
    dropped (see :meth:`solve`), and the result reports them.

    Tile ids are any hashable: ints, strings, ``(row, col)`` or
    ``(z, row, col)`` tuples.

    Examples
    --------
    >>> import spectralign
    >>> placement = spectralign.Placement()
    >>> placement.addmatch("a", "b", (900.0, 40.0), (100.0, 42.0))
    >>> placement.addmatch("a", "b", (900.0, 440.0), (100.0, 442.0))
    >>> pos = placement.rigid(fix="a")
    >>> pos["b"].round(6).tolist()
    [800.0, -2.0]
    """

    def __init__(self) -> None:
        self._ids: dict[Hashable, int] = {}
        self._tiles: list[Hashable] = []
        # single matches, as Python lists until first needed
        self._single: list[tuple[int, int, float, float, float, float, float]] = []
        self._chunks: list[tuple[np.ndarray, ...]] = []
        self._priors: list[tuple[int, np.ndarray, float]] = []
        self._cache: tuple[np.ndarray, ...] | None = None

    # -- adding matches --------------------------------------------------

    def addmatch(self, t: Hashable, t_: Hashable, p: Any, p_: Any, weight: float = 1.0) -> None:
        """Add one match: point ``p = (x, y)`` of tile ``t`` is ``p_`` of tile ``t_``.

        Parameters
        ----------
        t, t_ : hashable
            Two different tile ids.
        p, p_ : (2,) float
            The matching points, in the pixel coordinates of each tile.
        weight : float
            Relative weight (>= 0) of this match in the least-squares fit.

        Raises
        ------
        InvalidMatchError
            If ``t == t_`` or the weight is negative or not finite.
        InvalidPointError
            If a point is not a finite ``(x, y)``.
        """
        self._check_pair(t, t_)
        try:
            x, y = (float(v) for v in np.asarray(p, dtype=np.float64).reshape(2))
            x_, y_ = (float(v) for v in np.asarray(p_, dtype=np.float64).reshape(2))
        except (TypeError, ValueError) as exc:
            raise InvalidPointError(
                f"Expected points p and p_ as (x, y). Got {p!r} and {p_!r} instead "
                f"(match of tile {t!r} with tile {t_!r}).") from exc
        if not np.all(np.isfinite((x, y, x_, y_))):
            raise InvalidPointError(
                f"Expected finite points. Got p={p!r}, p_={p_!r} for the match of tile "
                f"{t!r} with tile {t_!r} instead; drop matches whose refinement failed.")
        w = check_weight(weight, t, t_)
        self._single.append((self._index(t), self._index(t_), x, y, x_, y_, w))
        self._cache = None

    def addmatches(self, t: Any, t_: Any, P: Any, P_: Any, weights: Any = None) -> None:
        """Add many matches at once.

        Parameters
        ----------
        t, t_ : hashable, or numpy arrays of tile ids
            One tile id each (all matches join the same two tiles), or, to add
            matches of many tile pairs in one call, numpy arrays with one id
            per match: shape ``(N,)``, or ``(N, k)`` for tuple ids such as
            ``(row, col)``.
        P, P_ : (N, 2) float arrays
            Matching points ``(x, y)``: ``P[i]`` in tile ``t`` is ``P_[i]``
            in tile ``t_``.
        weights : (N,) float array, optional
            Relative weights (>= 0); all 1 if omitted.

        Raises
        ------
        InvalidPointError
            If the point arrays are not (N, 2), differ in length, or hold
            NaN or infinite values.
        InvalidMatchError
            If a tile is matched with itself or a weight is negative.
        """
        P = np.asarray(P, dtype=np.float64)
        P_ = np.asarray(P_, dtype=np.float64)
        if P.ndim != 2 or P.shape[1:] != (2,) or P.shape != P_.shape:
            raise InvalidPointError(
                f"Expected two (N, 2) arrays of points (x, y). Got shapes {P.shape} and "
                f"{P_.shape} instead.")
        n = len(P)
        ia = self._indices(t, n, "t")
        ib = self._indices(t_, n, "t_")
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(w) != n:
            raise InvalidMatchError(f"Expected {n} weights, one per match. Got {len(w)} instead.")
        bad = ~np.all(np.isfinite(P), 1) | ~np.all(np.isfinite(P_), 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidPointError(
                f"Expected finite points. Got {int(bad.sum())} matches with NaN or infinite "
                f"values, the first (#{i}) between tile {self._tiles[ia[i]]!r} and tile "
                f"{self._tiles[ib[i]]!r}: {P[i].tolist()} -> {P_[i].tolist()}. Drop them.")
        selfmatch = ia == ib
        if selfmatch.any():
            i = int(np.flatnonzero(selfmatch)[0])
            raise InvalidMatchError(
                f"Expected matches between two different tiles. Got tile "
                f"{self._tiles[ia[i]]!r} matched with itself (match #{i}).")
        if not np.all(np.isfinite(w)) or (w < 0).any():
            i = int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0])
            raise InvalidMatchError(
                f"Expected finite weights >= 0. Got {w[i]!r} for match #{i} between tile "
                f"{self._tiles[ia[i]]!r} and tile {self._tiles[ib[i]]!r}.")
        self._chunks.append((ia, ib, P.copy(), P_.copy(), w.copy()))
        self._cache = None

    def addprior(self, t: Hashable, prior: Any, weight: float = 1.0) -> None:
        """Pull tile ``t`` towards a known placement, such as its stage position.

        Priors keep weakly connected tiles in place and let separate islands
        of a disconnected tile graph be placed, each by its own priors.

        Parameters
        ----------
        t : hashable
            The tile.
        prior : (x, y) or Affine
            Where the tile's origin lies in model space (its linear part is
            then the identity), or a whole tile-to-model transform.
        weight : float
            Strength of the pull, in units of matches: the prior acts like
            three matches of ``weight / 3`` each, at tile points ``(0, 0)``,
            ``(512, 0)`` and ``(0, 512)``, to fixed model points.
        """
        if isinstance(prior, Affine):
            afm = prior
        else:
            try:
                afm = Affine.translator(prior)
            except (TypeError, ValueError) as exc:
                raise InvalidPointError(
                    f"Expected a prior as (x, y) or Affine for tile {t!r}. Got {prior!r} "
                    f"instead.") from exc
            if not np.all(np.isfinite(afm.matrix)):
                raise InvalidPointError(
                    f"Expected a finite prior position for tile {t!r}. Got {prior!r} instead.")
        w = check_weight(weight, t, None)
        self._priors.append((self._index(t), afm.matrix, w))
        self._cache = None

    # -- the graph ------------------------------------------------------

    @property
    def tiles(self) -> list:
        """Every tile id seen so far, in order of first appearance."""
        return list(self._tiles)

    @property
    def nmatches(self) -> int:
        """Number of matches added."""
        return len(self._single) + sum(len(c[0]) for c in self._chunks)

    def graph(self) -> Any:
        """The tile graph as a ``networkx.Graph``.

        Nodes are tile ids; each edge carries ``nmatches`` and ``weight``
        (the sum of its match weights).
        """
        import networkx as nx

        ia, ib, _, _, w = self._arrays()
        lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
        key, inv = np.unique(lo * len(self._tiles) + hi, return_inverse=True)
        count = np.bincount(inv)
        wsum = np.bincount(inv, w)
        g = nx.Graph()
        g.add_nodes_from(self._tiles)
        for k, n, ws in zip(key.tolist(), count.tolist(), wsum.tolist()):
            a, b = divmod(k, len(self._tiles))
            g.add_edge(self._tiles[a], self._tiles[b], nmatches=n, weight=ws)
        return g

    # -- solving ----------------------------------------------------------

    def solve(self, model: str = "translation", *, fix: Hashable | None = None,
              robust: bool = True, abs_threshold: float = 2.0,
              rel_threshold: float = 5.0,
              regularize: float | tuple[float, float] = 0.0) -> PlacementResult:
        """Place every tile.

        Parameters
        ----------
        model : {"translation", "euclidean", "similarity", "affine"}
            The kind of transform per tile.  ``"euclidean"`` is rotation
            plus translation (what most tools call rigid).
        fix : hashable, optional
            A tile whose transform is the identity.  Without ``fix`` and
            without priors, the mean translation is zero and the mean
            linear part the identity (the euclidean model: mean rotation 0).
        robust : bool
            Find and drop bad matches (default).  Rounds of least squares
            drop matches whose residual exceeds
            ``max(abs_threshold, rel_threshold * sigma)``, where ``sigma`` is
            the per-axis residual scale estimated from the median residual;
            the grossest go first, and matches that fit again come back.  A
            match is never dropped where that would cut the tile graph apart
            or leave a tile with too few points.  On clean data this costs
            nothing: one solve, nothing dropped.
        abs_threshold : float
            Residuals (px) below this are never treated as errors.
        rel_threshold : float
            Residuals below this many ``sigma`` are never treated as errors.
        regularize : float or (float, float)
            Similarity and affine models: pull each tile's linear part
            towards that of the next simpler model's solution (affine: the
            similarity solution, rotation and uniform scale; similarity: the
            euclidean one, scale 1), with this weight relative to the
            tile's own matches (0.1 to 1 is typical; 0, the default, is the
            plain model).  A pair ``(a, s)`` with the affine model pulls
            towards the similarity solution with ``a``, that solution being
            itself pulled towards scale 1 with ``s``.  On large grids whose tiles meet in narrow
            overlaps, the shear and anisotropic scale of each tile are
            fitted mostly to match noise, and along a stack of sections each
            pair's scale is, and they add up; this damps them.  It biases
            tiles that truly shear or scale towards the simpler model, so
            leave it at 0 for those.

        Returns
        -------
        PlacementResult
            Transforms, residuals, dropped matches and the quality report.

        Raises
        ------
        NoMatchesError
            If there are no matches.
        UnknownTileError
            If ``fix`` is not a tile of this placement.
        DisconnectedTileGraphError
            If the tile graph falls apart into pieces and some piece has no
            prior (and does not hold ``fix``) to place it.
        UnderdeterminedTileError
            If a tile has too few matches for the model (the affine model
            needs three points that are not collinear, the euclidean and
            similarity models two distinct points).
        SingularPlacementError
            If the system has no unique solution for another reason.
        """
        if model not in MODELS:
            hint = " ('rigid' here is rotation + translation: 'euclidean')" if model == "rigid" else ""
            raise ValueError(f"Expected a model in {MODELS}. Got {model!r} instead{hint}.")
        pulls = regularization_pulls(model, regularize)
        if not abs_threshold >= 0 or not rel_threshold >= 0:
            raise ValueError(
                f"Expected thresholds >= 0. Got abs_threshold={abs_threshold!r}, "
                f"rel_threshold={rel_threshold!r} instead.")
        system = self._system()
        if system.nmatches == 0 or not (system.w > 0).any():
            raise NoMatchesError(
                "Expected at least one match with a weight above zero. Got none; add matches "
                "with addmatch() or addmatches() first.")
        if fix is not None and self._ids.get(fix) is None:
            raise UnknownTileError(
                f"Expected fix to be a tile of this placement. Got {fix!r}, which has no "
                f"matches or priors; known tiles include {self._tiles[:_LISTED]!r}.")
        fixed = self._ids[fix] if fix is not None else None
        check_connected(system, self._tiles, fixed)
        check_determined(model, system, self._tiles)
        # the gauge: priors fix it; else the mean of the tiles (see _lsq.solve),
        # about the best-connected tile; ``fix`` is applied afterwards for the
        # models that can shrink, and by pinning for those that cannot
        hub = None
        pinned = np.zeros(0, np.int64)
        refix = fixed is not None and _system.MODEL[model].scales and len(system.at) == 0
        if fixed is not None and not refix:
            pinned = np.array([fixed])
        elif len(system.at) == 0:
            hub = int(np.argmax(np.bincount(np.concatenate([system.ia, system.ib]))))
        pinned_mats = np.broadcast_to(np.eye(2, 3), (len(pinned), 2, 3))
        try:
            fit = _robust.robust_solve(model, system, pinned, pinned_mats, robust=robust,
                                    abs_threshold=abs_threshold, rel_threshold=rel_threshold,
                                    hub=hub, regularize=pulls)
        except np.linalg.LinAlgError as exc:
            raise SingularPlacementError(
                f"The {model} placement has no unique solution ({exc}). Check for tiles "
                f"whose matches all lie on one line, or add priors.") from exc
        mats = fit.mats
        if refix:
            mats = _lsq.refix(mats, fixed)
        elif fixed is None and len(system.at) == 0:
            mats = _lsq.gauge(model, mats)
        if mats is not fit.mats:
            res = _system.residuals(mats, system)
            fit = _robust.RobustFit(mats, res, fit.dropped, fit.threshold, fit.sigma, fit.rounds)
        return PlacementResult(model=model, tiles=tuple(self._tiles), _graph=system, _fit=fit)

    def rigid(self, fix: Hashable | None = None, **options: Any) -> dict[Hashable, np.ndarray]:
        """Translation-only placement, as in the original package.

        Returns ``{tile: (x, y)}``: where each tile's pixel ``(0, 0)`` lies in
        model space, so that ``pos[t] + p == pos[t_] + p_`` for matches.  For
        rotation + translation use :meth:`euclidean`.  Options as
        :meth:`solve`.
        """
        return self.solve("translation", fix=fix, **options).positions

    def euclidean(self, fix: Hashable | None = None, **options: Any) -> dict[Hashable, Affine]:
        """Rotation + translation placement: ``{tile: Affine}``."""
        return self.solve("euclidean", fix=fix, **options).transforms

    def similarity(self, fix: Hashable | None = None, **options: Any) -> dict[Hashable, Affine]:
        """Rotation, uniform scale + translation placement: ``{tile: Affine}``."""
        return self.solve("similarity", fix=fix, **options).transforms

    def affine(self, fix: Hashable | None = None, **options: Any) -> dict[Hashable, Affine]:
        """Affine placement, as in the original package: ``{tile: Affine}``
        mapping each tile's pixel ``(x, y)`` to model space."""
        return self.solve("affine", fix=fix, **options).transforms

    def __repr__(self) -> str:
        return f"Placement({len(self._tiles)} tiles, {self.nmatches} matches, {len(self._priors)} priors)"

    # -- internals ---------------------------------------------------------

    def _index(self, t: Hashable) -> int:
        try:
            i = self._ids.get(t)
        except TypeError as exc:
            raise TypeError(
                f"Expected a hashable tile id (int, str, tuple). Got {t!r} of type "
                f"{type(t).__name__} instead.") from exc
        if i is None:
            i = self._ids[t] = len(self._tiles)
            self._tiles.append(t)
        return i

    def _indices(self, t: Any, n: int, name: str) -> np.ndarray:
        if not isinstance(t, np.ndarray):
            return np.full(n, self._index(t), np.int64)
        if len(t) != n or t.ndim not in (1, 2):
            raise InvalidMatchError(
                f"Expected {name} as one tile id or an array of {n} ids, one per match. "
                f"Got an array of shape {t.shape} instead.")
        if n == 0:
            return np.zeros(0, np.int64)
        try:
            uniq, inv = np.unique(t, return_inverse=True, axis=0 if t.ndim == 2 else None)
        except TypeError:  # object arrays of mixed types
            return np.array([self._index(v) for v in t.tolist()], np.int64)
        keys = [tuple(r) for r in uniq.tolist()] if t.ndim == 2 else uniq.tolist()
        return np.array([self._index(k) for k in keys], np.int64)[inv.reshape(-1)]

    def _check_pair(self, t: Hashable, t_: Hashable) -> None:
        if t == t_:
            raise InvalidMatchError(
                f"Expected a match between two different tiles. Got tile {t!r} matched "
                f"with itself.")

    def _arrays(self) -> tuple[np.ndarray, ...]:
        if self._cache is None:
            parts = list(self._chunks)
            if self._single:
                s = np.array(self._single, dtype=np.float64)
                parts.append((s[:, 0].astype(np.int64), s[:, 1].astype(np.int64),
                              s[:, 2:4], s[:, 4:6], s[:, 6]))
            if parts:
                self._cache = tuple(np.concatenate([p[k] for p in parts]) for k in range(5))
            else:
                self._cache = (np.zeros(0, np.int64), np.zeros(0, np.int64),
                               np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))
        return self._cache

    def _system(self) -> _system.System:
        ia, ib, P, Q, w = self._arrays()
        anchors = np.array([[0.0, 0.0], [_PRIOR_SPAN, 0.0], [0.0, _PRIOR_SPAN]])
        k = len(self._priors)
        at = np.repeat(np.array([p[0] for p in self._priors], np.int64), 3)
        ax = np.tile(anchors, (k, 1))
        mats = np.array([p[1] for p in self._priors]).reshape(k, 2, 3)
        ay = (np.einsum("kij,aj->kai", mats[:, :, :2], anchors) + mats[:, None, :, 2]).reshape(-1, 2)
        aw = np.repeat(np.array([p[2] for p in self._priors], np.float64), 3) / 3
        return _system.System(len(self._tiles), ia, ib, P, Q, w, at, ax, ay, aw)
