"""PlacementResult: the transforms of a placement and how well they fit."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Hashable

import numpy as np

from . import robust as _robust, system as _system
from ..affine import Affine

__all__ = ["PlacementResult", "PairFit", "DroppedMatch"]


@dataclass(frozen=True)
class PairFit:
    """How well the matches of one tile pair fit the placement.

    Attributes
    ----------
    t, t_ : hashable
        The two tiles.
    n : int
        Matches kept.
    ndropped : int
        Matches dropped as bad.
    rms, max : float
        RMS and largest residual (px) of the kept matches (NaN if none).
    """

    t: Hashable
    t_: Hashable
    n: int
    ndropped: int
    rms: float
    max: float


@dataclass(frozen=True)
class DroppedMatch:
    """A match the robust fit dropped, with its residual under the final placement."""

    index: int
    t: Hashable
    t_: Hashable
    p: np.ndarray
    p_: np.ndarray
    residual: float


@dataclass(frozen=True, eq=False)
class PlacementResult:
    """Transforms of every tile, and the quality of the fit.

    Attributes
    ----------
    model : str
        ``"translation"``, ``"euclidean"``, ``"similarity"`` or ``"affine"``.
    tiles : tuple
        Tile ids, in the order of :attr:`matrices`.
    matrices : (T, 2, 3) float array
        Tile-to-model transform ``[A | b]`` of each tile.
    residuals : (M, 2) float array
        ``T_t(p) - T_t_(p_)`` in px for every match, in the order added.
    dropped : (M,) bool array
        Matches the robust fit left out.
    threshold : float
        Residual (px) above which a match counted as bad.
    sigma : float
        Robust per-axis residual scale (px) of the matches kept.
    rounds : int
        Least-squares solves used.
    """

    model: str
    tiles: tuple
    _graph: _system.System = field(repr=False)
    _fit: _robust.RobustFit = field(repr=False)

    @property
    def matrices(self) -> np.ndarray:
        return self._fit.mats

    @property
    def residuals(self) -> np.ndarray:
        return self._fit.residuals

    @property
    def dropped(self) -> np.ndarray:
        return self._fit.dropped

    @property
    def threshold(self) -> float:
        return self._fit.threshold

    @property
    def sigma(self) -> float:
        return self._fit.sigma

    @property
    def rounds(self) -> int:
        return self._fit.rounds

    def with_matrices(self, matrices: np.ndarray) -> "PlacementResult":
        """The same fit with other transforms (``(T, 2, 3)``, in the order of
        :attr:`tiles`), its residuals recomputed: e.g. tiles that no match
        holds, placed by other means."""
        mats = np.asarray(matrices, dtype=np.float64)
        if mats.shape != self._fit.mats.shape:
            raise ValueError(f"Expected matrices of shape {self._fit.mats.shape}. Got "
                             f"{mats.shape} instead.")
        fit = replace(self._fit, mats=mats, residuals=_system.residuals(mats, self._graph))
        return replace(self, _fit=fit)

    # -- transforms ------------------------------------------------------

    @cached_property
    def transforms(self) -> dict[Hashable, Affine]:
        """``{tile: Affine}`` from tile pixels to model space."""
        return {t: Affine(m) for t, m in zip(self.tiles, self._fit.mats)}

    @cached_property
    def positions(self) -> dict[Hashable, np.ndarray]:
        """``{tile: (x, y)}``: where each tile's pixel ``(0, 0)`` lands."""
        b = self._fit.mats[:, :, 2]
        return dict(zip(self.tiles, b))

    # -- quality -----------------------------------------------------------

    @cached_property
    def residual_norms(self) -> np.ndarray:
        """(M,) length of each match's residual, px."""
        r = self._fit.residuals
        return np.hypot(r[:, 0], r[:, 1])

    @property
    def _kept(self) -> np.ndarray:
        return (self._graph.w > 0) & ~self._fit.dropped

    @property
    def rms(self) -> float:
        """RMS residual (px) of the matches kept."""
        r = self.residual_norms[self._kept]
        return float(np.sqrt(np.mean(r**2))) if len(r) else float("nan")

    @property
    def max(self) -> float:
        """Largest residual (px) of the matches kept."""
        r = self.residual_norms[self._kept]
        return float(r.max()) if len(r) else float("nan")

    @cached_property
    def scales(self) -> np.ndarray:
        """(T, 2) singular values of each tile's linear part (smallest
        first): 1 where the tile keeps its pixel size."""
        return np.linalg.svd(self._fit.mats[:, :, :2], compute_uv=False)[:, ::-1]

    @property
    def pixel_rms(self) -> float:
        """RMS residual of the matches kept, in tile pixels: each residual
        divided by the mean scale of its two tiles (``sqrt |det A|``), so
        that a montage shrunk by the fit does not report better figures."""
        det = np.sqrt(np.abs(np.linalg.det(self._fit.mats[:, :, :2])))
        s = self._graph
        r = self.residual_norms / np.maximum((det[s.ia] + det[s.ib]) / 2, 1e-12)
        r = r[self._kept]
        return float(np.sqrt(np.mean(r**2))) if len(r) else float("nan")

    @property
    def ndropped(self) -> int:
        return int(self._fit.dropped.sum())

    @cached_property
    def _pair_table(self) -> tuple[np.ndarray, ...]:
        s = self._graph
        lo, hi = np.minimum(s.ia, s.ib), np.maximum(s.ia, s.ib)
        key, inv = np.unique(lo * s.ntiles + hi, return_inverse=True)
        inv = inv.reshape(-1)
        kept = self._kept
        r = self.residual_norms
        n = np.bincount(inv, kept, len(key)).astype(np.int64)
        nd = np.bincount(inv, self._fit.dropped, len(key)).astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            rms = np.sqrt(np.bincount(inv, np.where(kept, r**2, 0), len(key)) / n)
        mx = np.full(len(key), -np.inf)
        np.maximum.at(mx, inv[kept], r[kept])
        mx[n == 0] = np.nan
        return key // s.ntiles, key % s.ntiles, n, nd, rms, mx

    @property
    def pairs(self) -> list[PairFit]:
        """One :class:`PairFit` per tile pair that has matches."""
        a, b, n, nd, rms, mx = self._pair_table
        return [PairFit(self.tiles[i], self.tiles[j], int(k), int(d), float(r), float(m))
                for i, j, k, d, r, m in zip(a.tolist(), b.tolist(), n, nd, rms, mx)]

    def worst(self, n: int = 10) -> list[PairFit]:
        """The ``n`` tile pairs with the largest residual, worst first."""
        a, b, k, nd, rms, mx = self._pair_table
        order = np.argsort(-np.nan_to_num(mx, nan=-1.0), kind="stable")[:n]
        return [PairFit(self.tiles[a[i]], self.tiles[b[i]], int(k[i]), int(nd[i]),
                        float(rms[i]), float(mx[i])) for i in order]

    def dropped_matches(self) -> list[DroppedMatch]:
        """Every match the robust fit dropped, largest residual first."""
        s = self._graph
        idx = np.flatnonzero(self._fit.dropped)
        idx = idx[np.argsort(-self.residual_norms[idx], kind="stable")]
        return [DroppedMatch(int(i), self.tiles[s.ia[i]], self.tiles[s.ib[i]], s.P[i].copy(),
                             s.Q[i].copy(), float(self.residual_norms[i])) for i in idx]

    @cached_property
    def components(self) -> list[list[Hashable]]:
        """Tiles of each connected piece of the tile graph, largest first."""
        s = self._graph
        live = s.w > 0
        ncomp, labels = _system.components(s.ntiles, s.ia[live], s.ib[live])
        order = np.argsort(-np.bincount(labels, minlength=ncomp), kind="stable")
        return [[self.tiles[i] for i in np.flatnonzero(labels == c)] for c in order]

    def summary(self, n: int = 5) -> str:
        """A few lines on the fit: residuals, dropped matches, worst pairs."""
        s = self._graph
        lines = [
            f"{self.model} placement of {len(self.tiles)} tiles from {s.nmatches} matches "
            f"({len(self.components)} connected piece(s))",
            f"residual RMS {self.rms:.3g} px, max {self.max:.3g} px, sigma {self.sigma:.3g} px "
            f"(RMS {self.pixel_rms:.3g} tile px); tile scales {self.scales.min():.4f} to "
            f"{self.scales.max():.4f}",
            f"dropped {self.ndropped} matches above {self.threshold:.3g} px "
            f"in {self.rounds} solve(s)",
            "worst pairs:",
        ]
        for pf in self.worst(n):
            lines.append(f"  {pf.t!r} - {pf.t_!r}: max {pf.max:.3g} px, rms {pf.rms:.3g} px, "
                         f"{pf.n} kept, {pf.ndropped} dropped")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"PlacementResult(model={self.model!r}, tiles={len(self.tiles)}, "
                f"rms={self.rms:.3g}, max={self.max:.3g}, dropped={self.ndropped})")
