"""The result of stitching: :class:`Montage` (placement, quality of every
overlap, reports and exports, rendering) and :class:`OverlapFit`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable

import numpy as np

from ..affine import Affine
from ..io.tileconfig import write_tileconfig
from ..place.result import PlacementResult
from .geometry import _extent_ratio


@dataclass(frozen=True)
class OverlapFit:
    """How one overlap matched and fits the placement.

    Attributes
    ----------
    t, t_ : hashable
        The two tiles.
    nominal : (2,) float array
        Offset ``(x, y)`` of ``t_`` from ``t`` that the layout or stage gave.
    found : (2,) float array
        Offset measured by the coarse window (NaN if it failed).
    windows, kept : int
        Small windows matched, and kept (SNR above the threshold and
        agreeing with the coarse offset).
    snr : float
        Median SNR of the small windows (coarse SNR if none was matched).
    rms : float
        RMS residual (px) of the kept windows under the final placement.
    seam_ncc, seam_rms : float
        How well the two tiles' pixels agree over the overlap under the
        final placement (:func:`spectralign.pipelines.quality.seam_scores`: NCC, and
        RMS difference in the tiles' units); NaN where not scored.
    stage_ncc : float
        The same NCC with the tiles where the stage layout put them.
    source : str
        What ties the two tiles in the placement: ``"windows"`` (kept small
        windows), ``"coarse"`` (no small window was kept, but the coarse
        offset makes the seam clearly better than the stage offset does, so
        the pair is tied by it), or ``""`` (nothing: the pair does not
        constrain the placement).
    """

    t: Hashable
    t_: Hashable
    nominal: np.ndarray
    found: np.ndarray
    windows: int
    kept: int
    snr: float
    rms: float
    seam_ncc: float = float("nan")
    seam_rms: float = float("nan")
    stage_ncc: float = float("nan")
    source: str = ""


@dataclass(eq=False)
class Montage:
    """A placed grid of tiles, its quality, and a way to render it.

    Attributes
    ----------
    placement : PlacementResult
        The fit, with per-match residuals, dropped matches and components.
    tiles : dict
        ``{tile: source}`` as given (paths stay paths: rendering reads them
        lazily).
    names : dict
        ``{tile: name}``: the file name, or ``tile_NNNN`` for arrays.
    nominal : dict
        ``{tile: (x, y)}`` stage or layout positions.
    overlaps : list of OverlapFit
    snr_threshold : float
        SNR a small window had to beat to be kept.
    unmatched : list
        Tiles that nothing ties to a neighbour: placed with the stage
        layout's offsets to their placed neighbours (or at their stage
        position, where no neighbour is placed).
    tilesize : (width, height)
    sections : list of lists, optional
        For a stack of montaged sections: the tiles of each section, in
        order; rendering then gives one z-level per section.
    """

    placement: PlacementResult
    tiles: dict
    names: dict
    nominal: dict
    overlaps: list
    snr_threshold: float
    unmatched: list
    tilesize: tuple[int, int]
    cells: dict = field(default_factory=dict)
    sections: list | None = None

    @property
    def positions(self) -> dict[Hashable, np.ndarray]:
        """``{tile: (x, y)}``: top-left corner of each tile in the montage."""
        return self.placement.positions

    @property
    def transforms(self) -> dict[Hashable, Affine]:
        """``{tile: Affine}``: tile-to-montage transforms."""
        return self.placement.transforms

    def renderer(self, **options: Any):
        """A :class:`Renderer` with every tile rendered (lazily for files).

        ``options`` go to :class:`Renderer` (``blend``, ``chunk``,
        ``method``, ...); the default feather is a quarter of the smallest
        overlap, at least 10 px.
        """
        from ..render.renderer import Renderer

        if options.get("blend") is None:
            options["blend"] = self._default_blend()
        if self.placement.model == "translation":
            ren = Renderer(rigid=self.positions, tilesize=self.tilesize, **options)
        else:
            ren = Renderer(affine=self.transforms, tilesize=self.tilesize, **options)
        for z, level in enumerate(self.sections or [list(self.tiles)]):
            if z:
                ren.next_level()  # one z-level per section
            for t in level:
                ren.add(t, self.tiles[t])
        return ren

    def to_zarr(self, path: str | os.PathLike, **options: Any) -> Path:
        """Render the montage to OME-Zarr (see :meth:`Renderer.to_zarr`).

        Options ``resume``, ``overwrite``, ``pixel_size``, ``unit``,
        ``pyramid`` and ``name`` go to ``to_zarr``; the rest to
        :meth:`renderer`.
        """
        from ..render.renderer import split_store_options

        options, store = split_store_options(options)
        return self.renderer(**options).to_zarr(path, **store)

    def _default_blend(self) -> float:
        gaps = [self.tilesize[0] - abs(o.nominal[0]) for o in self.overlaps
                if abs(o.nominal[1]) < 1e-9] + [self.tilesize[1] - abs(o.nominal[1])
                                                 for o in self.overlaps
                                                 if abs(o.nominal[0]) < 1e-9]
        return max(10.0, 0.25 * min(gaps)) if gaps else 10.0

    # -- reports and exports ----------------------------------------------

    @property
    def extent_ratio(self) -> tuple[float, float]:
        """Width and height of the placed montage over those of the stage
        layout (bounding boxes of the tiles): 1 where the placement kept
        the layout's size."""
        return _extent_ratio(self.transforms, self.nominal, self.tilesize)

    def worst(self, n: int = 5) -> list[OverlapFit]:
        """The ``n`` matched overlaps with the largest residual RMS."""
        matched = [o for o in self.overlaps if o.kept and np.isfinite(o.rms)]
        return sorted(matched, key=lambda o: -o.rms)[:n]

    def label(self, t: Hashable) -> str:
        """How the report names tile ``t``: its grid cell, or (tiles placed
        from positions) its file name."""
        name = self.names.get(t)
        if isinstance(t, (int, np.integer)) and name and not name.startswith("tile_"):
            return name
        return repr(t)

    def report(self, n: int = 5) -> str:
        """A plain-text quality report."""
        lab = self.label
        res = self.placement
        kept = sum(o.kept for o in self.overlaps)
        total = sum(o.windows for o in self.overlaps)
        lines = [f"{len(self.tiles)} tiles, {len(self.overlaps)} overlaps, {kept} of {total} "
                 f"windows kept (SNR threshold {self.snr_threshold:.1f}), "
                 f"{res.ndropped} dropped by the placement",
                 f"residuals: RMS {res.rms:.3f} px, max {res.max:.3f} px (RMS "
                 f"{res.pixel_rms:.3f} tile px); tile scales {res.scales.min():.4f} to "
                 f"{res.scales.max():.4f}; extent / stage layout's: "
                 f"{' x '.join(f'{v:.4f}' for v in self.extent_ratio)}"]
        coarse = [o for o in self.overlaps if o.source == "coarse"]
        if coarse:
            lines.append(f"{len(coarse)} overlap(s) tied by their coarse offset alone (no small "
                         f"window kept; the pixels agree clearly better there than at the "
                         f"stage): {', '.join(f'{lab(o.t)} - {lab(o.t_)}' for o in coarse[:5])}")
        empty = [o for o in self.overlaps if not o.source]
        if empty:
            lines.append(f"{len(empty)} overlap(s) that do not tie their tiles (small, "
                         f"textureless or periodic overlaps, diagonal corners): "
                         f"{', '.join(f'{lab(o.t)} - {lab(o.t_)}' for o in empty[:5])}")
        if self.unmatched:
            lines.append(f"WARNING: {len(self.unmatched)} tile(s) without a kept match, placed "
                         f"with the stage layout's offsets to their neighbours: "
                         f"{', '.join(lab(t) for t in self.unmatched[:10])}")
        lines.append("worst overlaps (RMS px, SNR, kept/windows):")
        for o in self.worst(n):
            lines.append(f"  {lab(o.t)} - {lab(o.t_)}: {o.rms:.3f}, {o.snr:.1f}, "
                         f"{o.kept}/{o.windows}")
        scored = [o for o in self.overlaps if np.isfinite(o.seam_ncc)]
        if scored:
            ncc = np.array([o.seam_ncc for o in scored])
            stage = np.array([o.stage_ncc for o in scored])
            lines.append(f"seams (pixel NCC over each overlap): median {np.median(ncc):.3f}, "
                         f"min {ncc.min():.3f}; at the stage layout: median "
                         f"{np.nanmedian(stage):.3f}")
            lines.append("worst seams (NCC placed / at the stage):")
            for o in sorted(scored, key=lambda o: o.seam_ncc)[:n]:
                lines.append(f"  {lab(o.t)} - {lab(o.t_)}: {o.seam_ncc:.3f} / {o.stage_ncc:.3f}")
        return "\n".join(lines)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Positions, transforms and quality as JSON (written to ``path`` if given)."""
        def key(t):
            return self.names.get(t, repr(t))
        doc = {
            "tilesize": list(self.tilesize),
            "model": self.placement.model,
            "tiles": [{"name": key(t), "id": repr(t), "cell": list(self.cells.get(t, ())),
                       "nominal": [float(v) for v in self.nominal[t]],
                       "position": [float(v) for v in self.positions[t]],
                       "transform": np.asarray(self.transforms[t].matrix).tolist()}
                      for t in self.tiles],
            "overlaps": [{"a": key(o.t), "b": key(o.t_), "source": o.source,
                          "windows": o.windows, "kept": o.kept,
                          "snr": _num(o.snr), "rms": _num(o.rms),
                          "seam_ncc": _num(o.seam_ncc), "seam_rms": _num(o.seam_rms),
                          "stage_ncc": _num(o.stage_ncc),
                          "found": [_num(v) for v in o.found]} for o in self.overlaps],
            "snr_threshold": self.snr_threshold,
            "residual_rms": _num(self.placement.rms),
            "residual_rms_tile_px": _num(self.placement.pixel_rms),
            "tile_scales": [float(self.placement.scales.min()),
                            float(self.placement.scales.max())],
            "extent_ratio": list(self.extent_ratio),
            "residual_max": _num(self.placement.max),
            "unmatched": [key(t) for t in self.unmatched],
        }
        text = json.dumps(doc, indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Positions and affine transforms as CSV, one row per tile:
        ``name, row, col, x, y, a00, a01, a02, a10, a11, a12`` (the
        tile-to-montage matrix ``[[a00, a01, a02], [a10, a11, a12]]``)."""
        import csv

        path = Path(path)
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["name", "row", "col", "x", "y",
                          "a00", "a01", "a02", "a10", "a11", "a12"])
            for t in self.tiles:
                cell = self.cells.get(t, ("", ""))
                m = np.asarray(self.transforms[t].matrix).ravel()
                out.writerow([self.names[t], *cell, *(repr(float(v)) for v in self.positions[t]),
                              *(repr(float(v)) for v in m)])
        return path

    def to_overlaps_csv(self, path: str | os.PathLike) -> Path:
        """The quality of every overlap as CSV, one row per overlap: ``a, b,
        source, windows, kept, snr, rms, seam_ncc, seam_rms, stage_ncc,
        found_x, found_y`` (see :class:`OverlapFit`; empty where not
        measured)."""
        import csv

        def num(v):
            return "" if not np.isfinite(v) else repr(float(v))

        path = Path(path)
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["a", "b", "source", "windows", "kept", "snr", "rms", "seam_ncc",
                          "seam_rms", "stage_ncc", "found_x", "found_y"])
            for o in self.overlaps:
                out.writerow([self.label(o.t), self.label(o.t_), o.source, o.windows, o.kept,
                              num(o.snr), num(o.rms), num(o.seam_ncc), num(o.seam_rms),
                              num(o.stage_ncc), num(o.found[0]), num(o.found[1])])
        return path

    def write_tileconfig(self, path: str | os.PathLike) -> Path:
        """Write the placed positions as a Fiji ``TileConfiguration.registered.txt``."""
        return write_tileconfig(path, {self.names[t]: self.positions[t] for t in self.tiles})

    def plot(self, folder: str | os.PathLike, n: int = 3) -> list[Path]:
        """Save pictures of the fit as PNG (needs matplotlib): the residual,
        SNR and seam NCC of each overlap drawn over the tile layout
        (``overlaps.png``), and both tiles over the overlap with their
        difference for the ``n`` worst seams (``worst_seam_K.png``) and
        the ``n`` worst residuals (``worst_residual_K.png``); long strips
        are cut into rows of pieces.  Returns the files written."""
        from .plots import plot_montage

        return plot_montage(self, Path(folder), n)


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)
