"""Robust placement: rounds of least squares that drop the grossest
matches (those above max(abs_threshold, rel_threshold * sigma), sigma from
the median residual) and take back those that fit again, never cutting the
tile graph apart or leaving a tile with too few points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .system import MODEL, System, components, residuals, underdetermined
from .lsq import solve


_RAYLEIGH_MEDIAN = float(np.sqrt(2 * np.log(2)))  # median of |N(0, I_2)|


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
    if MODEL[model].scales:
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
