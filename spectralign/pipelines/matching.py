"""Matching one overlap: a coarse window, then small windows, kept by a
threshold learned from the data, and where the SNR cannot tell (periodic
or sparse content) by what the pixels show."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..affine import Affine
from ..match.matcher import Matcher
from .geometry import _coarse_geometry, _fine_points, _fine_window, _overlap, _pow2_at_most


_NO_POINTS = np.zeros((0, 2))
_NO_POINTS.flags.writeable = False


@dataclass(frozen=True, eq=False)
class PairMatch:
    """How one overlap matched: what it gives the placement, and why.

    Attributes
    ----------
    nominal : (2,) float array
        Offset ``(x, y)`` of the second tile from the first by the stage.
    found : (2,) float array
        Offset found by the coarse window (NaN if none was taken).
    snr : float
        Median SNR of the small windows (the coarse window's if none ran).
    windows, kept : int
        Small windows matched, and kept.
    p, p_ : (K, 2) float arrays
        Matching points in the first and second tile (``K = 0``: the pair
        does not tie its tiles).
    weights : (K,) float array
        Weight of each point in the placement.
    source : str
        What ties the tiles: ``"windows"``, ``"coarse"`` or ``""``.
    weak : bool
        The tie is shown by the pixels rather than by the SNR.
    let_go : bool
        The pair was tied, and the placement let it go.
    """

    nominal: np.ndarray
    found: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))
    snr: float = float("nan")
    windows: int = 0
    kept: int = 0
    p: np.ndarray = field(default_factory=lambda: _NO_POINTS)
    p_: np.ndarray = field(default_factory=lambda: _NO_POINTS)
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    source: str = ""
    weak: bool = False
    let_go: bool = False

    @property
    def tied(self) -> bool:
        """Whether the pair gives the placement any points."""
        return len(self.p) > 0

    def released(self) -> PairMatch:
        """The same pair, let go by the placement (no points)."""
        return replace(self, p=_NO_POINTS, p_=_NO_POINTS, weights=np.zeros(0), kept=0,
                       source="", let_go=True)


#: The lowest SNR a window may have to count at all, whatever was learned.
_SNR_FLOOR = 5.0
#: How much better (pixel NCC over the overlap) a coarse offset must make the
#: seam than the stage offset does, to be taken when the SNR alone does not
#: show it (periodic or sparse content, whose windows also match elsewhere).
_VERIFY_MARGIN = 0.1
#: ... and the seam there must agree at least this well (unrelated content
#: reaches 0.2-0.3 over a small corner).
_VERIFY_NCC = 0.5


def _pair_ncc(a, b, offsets) -> np.ndarray:
    """Seam NCC of tiles ``a`` and ``b`` with ``b`` at each of ``offsets``
    from ``a``, all over the same points of ``a`` (the part of ``a`` that
    ``b`` covers at every offset), so that the scores compare fairly; -1
    where that part is too small to score."""
    from ..io.sources import as_source
    from .quality import _ncc, _sample

    offsets = np.asarray(offsets, float).reshape(-1, 2)
    (h1, w1), (h2, w2) = a.shape, b.shape
    lo = np.maximum(offsets.max(0), 0) + 1
    hi = np.minimum(offsets.min(0) + (w2, h2), (w1, h1)) - 2
    size = hi - lo
    if np.any(size < 8):
        return np.full(len(offsets), -1.0)
    step = max(1.0, float(np.sqrt(size[0] * size[1] / 20_000)))
    xs, ys = np.arange(lo[0], hi[0], step), np.arange(lo[1], hi[1], step)
    pts = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    sa, sb = as_source(a), as_source(b)
    v1 = _sample(sa, Affine(), pts, h1, w1, 1.0)
    out = [_ncc(v1, _sample(sb, Affine.translator(-off), pts, h2, w2, 1.0)) for off in offsets]
    return np.nan_to_num(np.array(out), nan=-1.0)


def _shown(a, b, found, nominal_off) -> bool:
    """Do the pixels show ``found`` (clearly better seam than the stage offset)?"""
    s = _pair_ncc(a, b, [found, nominal_off])
    return bool(s[0] >= max(s[1] + _VERIFY_MARGIN, _VERIFY_NCC))


def _match_pair(cache, i, j, nominal, size, nwin, window, thresholds) -> PairMatch:
    """Coarse window, then a row of small windows, for tiles i and j.

    A coarse offset that the learned SNR threshold does not accept is still
    taken when the pixels show it: the seam agrees clearly better there than
    at the stage offset (periodic content such as graph paper, whose windows
    also match at a period's shift, or sparse content).  The small windows of
    such a pair need only the SNR floor and agreement with the coarse offset.
    When no small window is kept but the coarse offset is shown by the
    pixels, the pair is tied by the coarse offset alone (``source`` is
    ``"coarse"``).
    """
    pa, pb = nominal[i], nominal[j]
    rect = _overlap(pa, pb, size)
    a, b = cache[i], cache[j]
    m = Matcher(a, b)
    c1, c2, cwin = _coarse_geometry(rect, pa, pb, size)
    first = m.refine(c1, c2, cwin, iters=1)
    coarse = m.refine(first.p, first.p_, cwin, iters=4, tolerance=0.05)
    found = coarse.p - coarse.p_  # offset of b from a
    nominal_off = pb - pa
    none = PairMatch(nominal_off, snr=float(coarse.snr))
    if not np.isfinite(coarse.snr):
        return none
    significant = coarse.snr >= thresholds[0]
    shown = None  # do the pixels show the coarse offset? (computed when needed)
    # a diagonal neighbour's corner is too small for the pixels to decide: its
    # coarse offset must be significant, and it needs windows of its own
    corner = rect[2] - rect[0] < 0.5 * size[0] and rect[3] - rect[1] < 0.5 * size[1]
    if corner and not significant:
        return none
    step = found - (first.p - first.p_)
    if np.hypot(*step) > max(3.0, 0.1 * min(cwin)):
        # the peak moved on by a whole step after the first iteration: periodic
        # content, whose peaks repeat (each new window finds the next one).  The
        # pixels choose among the repeats along that step and the stage offset:
        # the best seam, and of seams as good, the one nearest the stage offset
        f1 = first.p - first.p_
        cands = [nominal_off] + [f1 + k * step for k in range(-3, 4)]
        cands = [c for c in cands if _overlap(pa, pa + c, size) is not None]
        score = _pair_ncc(a, b, cands)
        near = np.array([np.hypot(*(c - nominal_off)) for c in cands])
        good = np.flatnonzero(score >= score.max() - 0.02)
        best = int(good[np.argmin(near[good])])
        found = cands[best]
        significant = False
        shown = best > 0 and score[best] >= max(score[0] + _VERIFY_MARGIN, _VERIFY_NCC)
        if not shown:
            return none
    rect_f = _overlap(pa, pa + found, size)
    if rect_f is None:
        return none
    if not significant and shown is None:
        shown = _shown(a, b, found, nominal_off)
        if not shown:
            return none
    ow, oh = rect_f[2] - rect_f[0], rect_f[3] - rect_f[1]
    if min(ow / size[0], oh / size[1]) > 0.5:  # tiles of neighbouring sections: a grid
        side = min(256, _pow2_at_most(min(ow, oh) / 4))
        win = (int(window or side),) * 2
        gx = np.linspace(rect_f[0] + win[0], rect_f[2] - win[0], 3)
        gy = np.linspace(rect_f[1] + win[1], rect_f[3] - win[1], 3)
        centres = np.array([(x, y) for y in gy for x in gx])
    else:
        win = _fine_window(rect_f, window)
        centres = _fine_points(rect_f, nwin, win)
    P = centres - pa
    P_ = centres - (pa + found)
    fine = m.refine_many(P, P_, win, iters=2, tolerance=0.05, workers=1)
    # windows at the exact subpixel points: free of the whole-pixel pull
    fine = m.refine_many(fine.p, fine.p_, win, iters=2, tolerance=0.01, workers=1,
                         interpolate=True)
    # keep windows that are significant and agree with the coarse offset
    agree = np.hypot(*((fine.p - fine.p_) - found).T) < max(3.0, 0.1 * min(win))
    level = thresholds[1] if significant else _SNR_FLOOR
    keep = (fine.snr >= level) & agree & np.isfinite(fine.snr)
    if keep.sum() < max(2, (len(keep) + 1) // 2):
        # a real overlap shows in most of its windows; one or two lucky windows
        # agreeing with a coarse peak that was itself luck are not a match
        keep[:] = False
    base = PairMatch(nominal_off, found=found, snr=float(np.median(fine.snr)), windows=len(P),
                     weak=not significant)
    if keep.any():
        # the spread of a correlation peak's position goes as 1 / SNR^2: windows
        # weigh by SNR^2 (relative to the threshold, to keep the weights near 1)
        return replace(base, kept=int(keep.sum()), p=fine.p[keep], p_=fine.p_[keep],
                       weights=(fine.snr[keep] / thresholds[1]) ** 2, source="windows")
    if shown is None:
        shown = not corner and _shown(a, b, found, nominal_off)
    if not shown:
        return replace(base, weak=False)
    # the coarse offset alone: a translation between the tiles, at the windows'
    # centres (two points or more, so that every model stays determined),
    # weighing as much in all as one window at the threshold
    return replace(base, p=P, p_=P - found, weights=np.full(len(P), 1.0 / len(P)),
                   source="coarse", weak=True)


def _learn_threshold(cache, nominal, pairs, size, nwin, window) -> tuple[float, float]:
    """What a match that means nothing scores on these tiles.

    The coarse and small windows of real overlaps are cut again from a tile
    that does not overlap the first one; the thresholds are the best SNR
    they reach, times 1.25 (at least 5).  Returns (coarse, small).
    """
    n = len(nominal)
    paired = set(pairs)
    rng = np.random.default_rng(0)
    coarse, small = [5.0 / 1.25], [5.0 / 1.25]
    for i, j in pairs[: min(len(pairs), 8)]:
        others = [k for k in range(n) if k not in (i, j) and (min(i, k), max(i, k)) not in paired
                  and _overlap(nominal[i], nominal[k], size) is None]
        if not others:
            continue
        k = int(rng.choice(others))
        rect = _overlap(nominal[i], nominal[j], size)
        c1, c2, cwin = _coarse_geometry(rect, nominal[i], nominal[j], size)
        m = Matcher(cache[i], cache[k])
        coarse.append(m.refine(c1, c2, cwin, iters=1).snr)
        win = _fine_window(rect, window)
        centres = _fine_points(rect, nwin, win)
        fine = m.refine_many(centres - nominal[i], centres - nominal[j], win, iters=1, workers=1)
        small.extend(fine.snr.tolist())
    def level(v):
        v = np.asarray(v, float)
        return float(max(5.0, 1.25 * np.max(v[np.isfinite(v)])))
    return level(coarse), level(small)
