"""Placing matched tiles and judging the placement by its pixels: faint
stage priors as the gauge, the default pull of each model towards the
next simpler one, ties let go where the placement cannot fit them, untied
tiles moved with their neighbours, size checks and seam warnings."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from ..errors import SpectralignWarning
from ..place.placement import Placement
from ..place.result import PlacementResult
from .quality import seam_scores
from .geometry import _extent_ratio
from .montage import OverlapFit


_PRIOR_WEIGHT = 1e-6  # per anchor point; a match weighs 1
#: The default pull of each model towards the next simpler one's solution
#: (see ``regularize`` in :func:`stitch_grid` and :func:`align_stack`): in a
#: grid every tile is held by neighbours on all sides, and only the affine
#: shear across narrow overlaps needs damping; along a stack each pair's scale
#: is free and its matching noise adds up (over the 30 ssTEM sections:
#: similarity 0.970-1.027 plain, 0.986-1.013 at 1, 0.992-1.007 at 3; affine
#: 0.933-1.102 plain, 0.988-1.014 at (3, 3): towards a similarity itself
#: pulled to scale 1; median seam NCC between neighbours 0.403 / 0.404 and
#: 0.416 / 0.413; over the first 10 sections, 1 still left 0.987-1.022).
_REGULARIZE = {"grid": {"affine": 0.1}, "stack": {"similarity": 3.0, "affine": (3.0, 3.0)}}
#: A pair tied by weak evidence (shown by its pixels, not by its SNR) is let go
#: when the placement leaves it this far (px RMS) from its matches.
_WEAK_RESIDUAL = 2.0


def _regularization(model: str, regularize, kind: str = "grid"):
    """The pull towards the next simpler model: by default (``None``) that
    of ``_REGULARIZE`` for a ``"grid"`` or a ``"stack"``; checked."""
    from ..place.checks import regularization_pulls

    if regularize is None:
        return _REGULARIZE[kind].get(model, 0.0)
    try:
        regularization_pulls(model, regularize)
    except ValueError:
        raise ValueError(f"Expected regularize >= 0, and only with model='similarity' or "
                         f"'affine'. Got regularize={regularize!r} with model={model!r}."
                         ) from None
    return regularize


def _place(model, ids, nominal, pairs, fits, regularize=0.0):
    """Place the tiles by the matched pairs.

    Pairs tied by weak evidence (periodic or sparse content, shown by the
    pixels rather than the SNR) are let go, the worst first, while the
    placement leaves them more than ``_WEAK_RESIDUAL`` px from their
    matches: a period's shift fits its own pair and nothing else.  Tiles
    that nothing ties then move with their tied neighbours (keeping the
    stage layout's offsets to them), so that they do not tear the seams
    that the stage layout had right.  Returns the result and the fits.
    """
    fits = list(fits)
    for _ in range(10):
        pl = Placement()
        for (i, j), pm in zip(pairs, fits):
            if pm.tied:
                pl.addmatches(ids[i], ids[j], pm.p, pm.p_, weights=pm.weights)
        for k, t in enumerate(ids):  # faint stage priors: the gauge of each piece
            pl.addprior(t, tuple(nominal[k]), weight=_PRIOR_WEIGHT)
        result = pl.solve(model, regularize=regularize)
        rms = {}
        for pf in result.pairs:
            rms[(pf.t, pf.t_)] = rms[(pf.t_, pf.t)] = pf.rms
        bad = {k: rms.get((ids[i], ids[j]), 0.0)
               for k, ((i, j), pm) in enumerate(zip(pairs, fits)) if pm.tied and pm.weak}
        bad = {k: r for k, r in bad.items() if r > _WEAK_RESIDUAL}
        if not bad:
            break
        worst = max(bad.values())
        trial = [pm.released() if bad.get(k, 0.0) >= 0.5 * worst else pm
                 for k, pm in enumerate(fits)]
        if not any(pm.tied for pm in trial):
            break  # weak ties that all disagree alike: keep the compromise
        fits = trial
    tied = {k for (i, j), pm in zip(pairs, fits) if pm.tied for k in (i, j)}
    if tied and len(tied) < len(ids):
        index = {t: n for n, t in enumerate(result.tiles)}
        mats = result.matrices.copy()
        near: dict[int, list[int]] = {}
        for i, j in pairs:
            near.setdefault(i, []).append(j)
            near.setdefault(j, []).append(i)
        placed = set(tied)
        while True:  # in rings around the tied tiles
            ring = {k: [n for n in near.get(k, ()) if n in placed]
                    for k in range(len(ids)) if k not in placed}
            ring = {k: v for k, v in ring.items() if v}
            if not ring:
                break
            for k, nbrs in ring.items():
                m = [mats[index[ids[n]]].copy() for n in nbrs]
                for mm, n in zip(m, nbrs):
                    mm[:, 2] += mm[:, :2] @ (nominal[k] - nominal[n])
                mats[index[ids[k]]] = np.mean(m, axis=0)
            placed.update(ring)
        result = result.with_matrices(mats)
    return result, fits


def _pieces(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """Connected pieces (of two tiles or more) of the graph of matched pairs,
    largest first."""
    from ..place import system as _system

    ia, ib = np.array(edges).T
    _, labels = _system.components(n, ia, ib)
    members = np.unique(np.concatenate([ia, ib]))
    out = [sorted(int(k) for k in members[labels[members] == g])
           for g in np.unique(labels[members])]
    return sorted(out, key=len, reverse=True)


#: A montage whose extent departs from the stage layout's by more than this
#: fraction, or a tile whose scale departs from 1 by more, is reported.
_SIZE_TOLERANCE = 0.02


def _check_size(result: PlacementResult, nominal: dict, tilesize, stage_error=0.0) -> None:
    """Warn where the placement changed a tile's scale, or the montage's
    extent by more than a few percent plus what the stage's errors
    (``stage_error``: the largest offset, px, by which a matched overlap
    departed from the layout) can explain."""
    ratio = _extent_ratio(result.transforms, nominal, tilesize)
    corners = np.vstack([np.asarray(nominal[t], float) for t in nominal])
    extent = corners.max(0) - corners.min(0) + tilesize
    slack = 3 * _SIZE_TOLERANCE / 2 + 2 * stage_error / extent
    lo, hi = float(result.scales.min()), float(result.scales.max())
    problems = []
    if any(abs(r - 1) > d for r, d in zip(ratio, slack)):
        problems.append(f"the montage is {ratio[0]:.3f} x {ratio[1]:.3f} the stage layout's "
                        f"width x height")
    if max(1 - lo, hi - 1) > _SIZE_TOLERANCE:
        problems.append(f"tile scales run from {lo:.3f} to {hi:.3f}")
    if problems:
        warnings.warn(f"The {result.model} placement changed sizes: {'; '.join(problems)}. "
                      f"Check the tiles' matches, or use a model with fewer degrees of freedom "
                      f"(translation or euclidean), or regularize the similarity or affine model.",
                      SpectralignWarning, stacklevel=5)


#: Ties the placement leaves this far (px RMS) from their matches are suspects,
#: let go when the seams then agree better; at most this many are tried.
_PIXEL_RESIDUAL = 2.0
_PIXEL_TRIALS = 8


#: A seam this much worse (NCC) than at the stage layout is reported.
_SEAM_WORSE = 0.05


def _with_seams(fits: list[OverlapFit], tiles: dict, transforms: dict, stage: list
                ) -> list[OverlapFit]:
    """The overlaps with their seam scores under the placement, and
    ``stage``'s (the seams at the stage layout)."""
    placed = seam_scores(tiles, transforms, [(o.t, o.t_) for o in fits])
    return [replace(o, seam_ncc=a.ncc, seam_rms=a.rms, stage_ncc=b.ncc)
            for o, a, b in zip(fits, placed, stage)]


def _warn_worse(fits: list[OverlapFit], let_go: list[bool]) -> None:
    """Warn where the placement made a seam worse than the stage layout's
    (tied there, or let go because the seams around it agreed better)."""
    worse = [o for o, gone in zip(fits, let_go)
             if (o.source or gone) and o.seam_ncc < o.stage_ncc - _SEAM_WORSE]
    if worse:
        listed = ", ".join(f"{o.t!r}-{o.t_!r} ({o.seam_ncc:.2f} < {o.stage_ncc:.2f})"
                           for o in worse[:5])
        warnings.warn(f"{len(worse)} seam(s) agree worse under the placement than at the stage "
                      f"layout (pixel NCC over the overlap): {listed}; check those tiles' "
                      f"matches and the layout.", SpectralignWarning, stacklevel=5)


def _overlap_fits(result: PlacementResult, ids, pairs, fits) -> list[OverlapFit]:
    by_pair = {(p.t, p.t_): p for p in result.pairs}
    out = []
    for (i, j), pm in zip(pairs, fits):
        t, t_ = ids[i], ids[j]
        pf = by_pair.get((t, t_), by_pair.get((t_, t)))
        out.append(OverlapFit(t, t_, np.asarray(pm.nominal, float), np.asarray(pm.found, float),
                              pm.windows, pm.kept, pm.snr,
                              float(pf.rms) if pf is not None else float("nan"),
                              source=pm.source))
    return out


def _place_by_pixels(model, regularize, ids, nominal, pairs, fits, tiles):
    """Place (see :func:`_place`), score every seam, and let go, one at a
    time, ties the placement leaves far from their matches or whose seam it
    left worse than the stage's, where the seams then agree better (two
    wrong pairs among six can outvote the residuals' robust scale, and
    nothing else would show them).  Returns the result, the pairs' matches
    and the scored overlaps."""
    stage = seam_scores(tiles, {t: nominal[k] for k, t in enumerate(ids)},
                        [(ids[i], ids[j]) for i, j in pairs])

    def placed(fits, last=None):
        """Place and score the seams (given the ``last`` placement and its
        scores, only the seams of the tiles that moved)."""
        result, fits = _place(model, ids, nominal, pairs, fits, regularize)
        fitted = _overlap_fits(result, ids, pairs, fits)
        if last is None:
            return result, fits, _with_seams(fitted, tiles, result.transforms, stage)
        before = last[0].transforms
        moved = {t for t, a in result.transforms.items()
                 if np.abs(np.asarray(a.matrix) - np.asarray(before[t].matrix)).max() > 1e-3}
        redo = [k for k, o in enumerate(fitted) if o.t in moved or o.t_ in moved]
        new = _with_seams([fitted[k] for k in redo], tiles, result.transforms,
                          [stage[k] for k in redo])
        scored = [replace(o, seam_ncc=p.seam_ncc, seam_rms=p.seam_rms, stage_ncc=p.stage_ncc)
                  for o, p in zip(fitted, last[2])]
        for k, o in zip(redo, new):
            scored[k] = o
        return result, fits, scored

    now = placed(fits)
    tried: set = set()
    for _ in range(_PIXEL_TRIALS):
        scored = now[2]
        suspects = [k for k, o in enumerate(scored) if o.source and k not in tried and
                    (o.rms > _PIXEL_RESIDUAL or o.seam_ncc < o.stage_ncc - _SEAM_WORSE)]
        if not suspects:
            break
        k = max(suspects, key=lambda k: scored[k].rms if np.isfinite(scored[k].rms) else 0.0)
        tried.add(k)
        trial = list(now[1])
        trial[k] = trial[k].released()
        if not any(pm.tied for pm in trial):
            break
        again = placed(trial, now)
        total = np.nansum([o.seam_ncc for o in scored])
        if np.nansum([o.seam_ncc for o in again[2]]) > total + 0.01:
            now = again
    return now


def _warn_about(result, ids, nominal, pairs, fits, scored, size) -> list:
    """Warn about untied tiles, separate pieces, changed sizes and seams made
    worse; returns the untied tiles."""
    tied = {k for (i, j), pm in zip(pairs, fits) if pm.tied for k in (i, j)}
    unmatched = [ids[k] for k in range(len(ids)) if k not in tied]
    if unmatched:
        warnings.warn(f"{len(unmatched)} tile(s) have no kept match with a neighbour and keep "
                      f"the stage layout's offsets to their neighbours: {unmatched[:10]!r}",
                      SpectralignWarning, stacklevel=4)
    matched_pairs = [(i, j) for (i, j), pm in zip(pairs, fits) if pm.tied]
    if matched_pairs:
        pieces = _pieces(len(ids), matched_pairs)
        if len(pieces) > 1:
            shown = "; ".join(repr([ids[k] for k in piece[:4]])[:-1]
                              + (", ...]" if len(piece) > 4 else "]") for piece in pieces[:4])
            warnings.warn(
                f"The matched tiles form {len(pieces)} separate pieces (of "
                f"{', '.join(str(len(p)) for p in pieces)} tiles) that no kept match joins: "
                f"their places relative to each other come from the stage layout alone. "
                f"Check the layout (flip, major, snake/raster) and the overlap. Pieces: "
                f"{shown}", SpectralignWarning, stacklevel=4)
    departed = [np.hypot(*(pm.found - pm.nominal)) for pm in fits if pm.tied]
    _check_size(result, {t: nominal[k] for k, t in enumerate(ids)}, size,
                max(departed, default=0.0))
    _warn_worse(scored, [pm.let_go for pm in fits])
    return unmatched
