"""Checks a placement makes before it solves: a tile graph that holds
together, tiles with enough points for the model, weights and
regularization that make sense; each raises a named error saying what to do.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable

import numpy as np

from ..errors import DisconnectedTileGraphError, InvalidMatchError, UnderdeterminedTileError
from . import system as _system

_LISTED = 8  # tiles or components named in an error message


def check_connected(system: _system.System, tiles: list, fixed: int | None) -> None:
    """Raise DisconnectedTileGraphError if some piece of the tile graph has
    neither a prior nor the fixed tile."""
    live = system.w > 0
    ncomp, labels = _system.components(system.ntiles, system.ia[live], system.ib[live])
    if ncomp == 1:
        return
    placed = np.zeros(ncomp, bool)
    placed[labels[system.at]] = True
    if fixed is not None:
        placed[labels[fixed]] = True
    if placed.all() and len(system.at):
        return
    sizes = np.bincount(labels, minlength=ncomp)
    order = np.argsort(-sizes, kind="stable")
    comps = [[tiles[i] for i in np.flatnonzero(labels == c)] for c in order]
    unplaced = [comps[i] for i, c in enumerate(order) if not placed[c]]
    shown = "; ".join(_short(c) for c in unplaced[:_LISTED])
    more = f" and {len(unplaced) - _LISTED} more" if len(unplaced) > _LISTED else ""
    raise DisconnectedTileGraphError(
        f"Expected one connected tile graph, or priors for every piece. Got {ncomp} "
        f"pieces (sizes {sizes[order][:_LISTED].tolist()}), of which {len(unplaced)} "
        f"have no prior: {shown}{more}. Add matches that join them, or place each "
        f"piece with addprior().", components=comps)


def check_determined(model: str, system: _system.System, tiles: list) -> None:
    """Raise UnderdeterminedTileError for tiles with too few points for the model."""
    bad = _system.underdetermined(model, system, system.w)
    if len(bad) == 0:
        return
    live = system.w > 0
    counts = np.bincount(np.concatenate([system.ia[live], system.ib[live]]),
                         minlength=system.ntiles)
    need = _system.MODEL[model].needs
    bad_tiles = [tiles[i] for i in bad]
    shown = ", ".join(f"{tiles[i]!r} ({counts[i]} matches)" for i in bad[:_LISTED])
    more = f" and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
    raise UnderdeterminedTileError(
        f"Expected every tile to have at least {need} for the {model} model. Got "
        f"{shown}{more}. Add matches (e.g. a grid of windows per overlap), a prior, "
        f"or use a simpler model.", tiles=bad_tiles)




def regularization_pulls(model: str, regularize: Any) -> tuple[float, float]:
    """``regularize`` as (affine towards similarity, similarity towards euclidean)."""
    pair = tuple(np.broadcast_to(np.asarray(regularize, float), (2,))
                 if np.ndim(regularize) else (float(regularize),) * 2)
    if len(pair) != 2 or not all(v >= 0 for v in pair):
        raise ValueError(f"Expected regularize >= 0 (one number, or a pair for the affine "
                         f"model). Got {regularize!r} instead.")
    if any(pair) and not _system.MODEL[model].scales:
        raise ValueError(f"Expected regularize only with the similarity or affine model. "
                         f"Got regularize={regularize!r} with {model!r}.")
    if np.ndim(regularize):
        if model != "affine":
            raise ValueError(f"Expected a pair for regularize only with the affine model. Got "
                             f"{regularize!r} with {model!r}.")
        return float(pair[0]), float(pair[1])
    r = float(regularize)
    return (r, 0.0) if model == "affine" else (0.0, r)


def check_weight(weight: Any, t: Hashable, t_: Hashable | None) -> float:
    w = float(weight)
    if not np.isfinite(w) or w < 0:
        where = f"tile {t!r}" if t_ is None else f"the match of tile {t!r} with tile {t_!r}"
        raise InvalidMatchError(f"Expected a finite weight >= 0. Got {weight!r} for {where}.")
    return w


def _short(tiles: Iterable) -> str:
    tiles = list(tiles)
    head = ", ".join(repr(t) for t in tiles[:4])
    return f"[{head}{', ...' if len(tiles) > 4 else ''}] ({len(tiles)} tiles)"
