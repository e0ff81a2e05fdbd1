"""Serial sections and z-stacks: align each section to its neighbour.

:func:`align_stack` matches every section to the next with a grid of
windows (after one large window has found the bulk offset), places all
sections at once in one :class:`Placement` (rigid by default: rotation and
translation), and returns a :class:`Stack` that renders an aligned
``(z, y, x)`` volume.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..affine import Affine
from ..errors import LayoutError, NoMatchesError, SpectralignWarning
from ..io.image import Image
from ..match.matcher import Matcher
from ..io.files import TIFF_SUFFIXES, collect_tiles, tile_shape
from .geometry import _pow2_at_most
from .inputs import progress_wrapper
from .placing import _PRIOR_WEIGHT, _SIZE_TOLERANCE, _regularization
from ..place.placement import Placement
from ..place.result import PlacementResult

__all__ = ["align_stack", "Stack"]


@dataclass(eq=False)
class Stack:
    """Aligned sections.

    Attributes
    ----------
    placement : PlacementResult
        One transform per section (ids ``0 .. n - 1``), with residuals.
    sections : list
        The sections as given (paths stay paths).
    names : list of str
    snr : (n - 1,) float array
        Median SNR of the windows between section ``z + 1`` and the section
        before it that was matched (``z``, or an earlier one when sections
        in between were skipped).
    kept : (n - 1,) int array
        Windows kept for each of those pairs.
    unmatched : list of int
        Sections with no kept match (blank, or nothing like their
        neighbours): left where they were, and skipped over, so that the
        sections after them are matched to the last section before them.
    tilesize : (width, height)
        The sections' size (``size`` is its former name).
    seams : list of Seam
        How well each section's pixels agree with the next one's under the
        alignment (:func:`spectralign.seam_scores`: NCC and RMS difference
        over their common area), for ``z, z + 1`` in order.
    seams_before : list of Seam
        The same with the sections as given, before the alignment.
    """

    placement: PlacementResult
    sections: list
    names: list
    snr: np.ndarray
    kept: np.ndarray
    tilesize: tuple[int, int]
    unmatched: list = field(default_factory=list)
    seams: list = field(default_factory=list)
    seams_before: list = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the sections: the former name of
        :attr:`tilesize` (as in :class:`Montage`)."""
        return self.tilesize

    @property
    def transforms(self) -> dict[int, Affine]:
        """``{z: Affine}``: section-to-volume transforms."""
        return self.placement.transforms

    def report(self) -> str:
        """A plain-text quality report: residuals, scales, neighbour seams."""
        res = self.placement
        lines = [f"{len(self.sections)} sections ({res.model}): residuals RMS {res.rms:.3f} px, "
                 f"max {res.max:.3f} px (RMS {res.pixel_rms:.3f} section px), "
                 f"{res.ndropped} window(s) dropped; section scales {res.scales.min():.4f} to "
                 f"{res.scales.max():.4f}"]
        if np.isfinite(self.snr).any():
            lines.append(f"weakest neighbour SNR {np.nanmin(self.snr):.1f}")
        if self.unmatched:
            lines.append(f"WARNING: {len(self.unmatched)} section(s) match neither neighbour: "
                         f"{', '.join(self.names[z] for z in self.unmatched[:10])}")
        ncc = np.array([s.ncc for s in self.seams], float)
        before = np.array([s.ncc for s in self.seams_before], float)
        if np.isfinite(ncc).any():
            worst = int(np.nanargmin(ncc))
            lines.append(f"neighbour seams (pixel NCC): median {np.nanmedian(ncc):.3f}, min "
                         f"{np.nanmin(ncc):.3f} ({self.names[worst]} - {self.names[worst + 1]}); "
                         f"as given: median {np.nanmedian(before):.3f}")
        return "\n".join(lines)

    def renderer(self, **options: Any):
        """A :class:`Renderer` with one z-level per section."""
        from ..render.renderer import Renderer

        options.setdefault("blend", 0)
        ren = Renderer(affine=self.transforms, tilesize=self.tilesize, **options)
        for z, src in enumerate(self.sections):
            if z:
                ren.next_level()
            ren.add(z, src)
        return ren

    def to_zarr(self, path: str | os.PathLike, **options: Any) -> Path:
        """Render the aligned volume to OME-Zarr ``(z, y, x)``."""
        from ..render.renderer import split_store_options

        options, store = split_store_options(options)
        return self.renderer(**options).to_zarr(path, **store)


def _pages(source: Any, name: str) -> tuple[list[Any], list[str]]:
    """The sections of one multi-page TIFF (or one (z, y, x) array): one
    per page, memory-mapped where the file allows; else the source alone."""
    if isinstance(source, (str, os.PathLike)):
        if not str(source).lower().endswith(TIFF_SUFFIXES):
            return [source], [name]
        import tifffile

        try:
            with tifffile.TiffFile(source) as tif:
                npages = len(tif.pages)
        except Exception:  # noqa: BLE001 - unreadable: Image() names the file below
            return [source], [name]
        if npages < 2:
            return [source], [name]
        try:
            stack = tifffile.memmap(source, mode="r")
        except (ValueError, OSError):
            stack = tifffile.imread(source)
        if stack.ndim != 3:
            return [source], [name]
        return [stack[z] for z in range(len(stack))], [f"{name}[{z}]" for z in range(len(stack))]
    arr = np.asarray(source) if not hasattr(source, "ndim") else source
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        return [arr[z] for z in range(len(arr))], [f"section_{z:04d}" for z in range(len(arr))]
    return [source], [name]


def align_stack(sections: Any, *, model: str = "euclidean", regularize: float | None = None,
                windows_per_side: int = 8, window: int | None = None,
                snr_threshold: float = 6.0,
                progress: Callable[[Iterable], Iterable] | bool | None = None,
                grid: int | None = None) -> Stack:
    """Align a stack of sections, each to its neighbour.

    Parameters
    ----------
    sections : str, path or sequence
        A glob pattern or folder (natural order), a sequence of files or
        arrays, or one multi-page TIFF (a page per section), first section
        first.  Sections must share one size.
    model : str
        ``"euclidean"`` (rotation + translation, default), ``"translation"``,
        ``"similarity"`` or ``"affine"``.  The stack keeps a mean scale
        of 1 (it cannot shrink).
    regularize : float, optional
        Similarity and affine models: pull each section's linear part
        towards the next simpler model's solution, itself so pulled (see
        :meth:`Placement.solve`).  Along a stack each pair's scale is free
        and its matching noise adds up: the defaults, 3 for similarity and
        ``(3, 3)`` for affine (towards a similarity solution itself pulled
        to scale 1 with 3), keep the 30 ssTEM sections' scales within 1.5 %
        of 1 (plain: 3 % and 10 %) with median neighbour seams within 0.01
        of the plain models'.  One number with the affine model pulls both
        steps with it.  0 is the plain model: use it for sections whose
        scale truly changes.
    windows_per_side : int
        Windows per side of the square grid of windows matched between
        neighbours (they overlap: many windows average out local differences
        between sections).
    window : int, optional
        Window size (default: the power of two near ``min(W, H) / 4``, at
        most 512).
    snr_threshold : float
        Windows whose SNR is below this are not used.  Sections are matched
        with ``Matcher(..., weighting="swiftir")``, whose SNR this is.
    progress : bool or callable, optional
        As in :func:`stitch_grid`.
    grid : int, optional
        The former name of ``windows_per_side`` (``grid`` is the layout
        ``(rows, cols)`` in :func:`stitch_grid`); still accepted.

    Returns
    -------
    Stack

    Raises
    ------
    LayoutError
        If there are fewer than two sections, or they differ in size.
    NoMatchesError
        If no two sections match.

    Warns
    -----
    SpectralignWarning
        If some sections match neither neighbour (blank, or unlike the
        rest): they stay where they are, named in ``Stack.unmatched``, and
        the sections after them are matched to the last one before them.
    """
    if model == "affine" and regularize is not None and not np.ndim(regularize):
        regularize = (regularize, regularize)  # both steps, as the default
    regularize = _regularization(model, regularize, "stack")  # checked before any work
    sources, names = collect_tiles(sections)
    if len(sources) == 1:
        sources, names = _pages(sources[0], names[0])
    if len(sources) < 2:
        raise LayoutError(f"Expected at least two sections. Got {len(sources)}; give a folder, "
                          f"a glob pattern, several files, or one multi-page TIFF stack.")
    shapes = {tile_shape(s) for s in sources}
    if len(shapes) != 1:
        raise LayoutError(f"Expected sections of one size. Got sizes (height, width) "
                          f"{sorted(shapes)}.")
    h, w = shapes.pop()
    win = int(window) if window else min(512, _pow2_at_most(min(w, h) / 4 * 1.2, 32))
    coarse = _pow2_at_most(0.75 * min(w, h), 32)
    margin = win / 2 + 2
    side = int(grid if grid is not None else windows_per_side)
    gx = np.linspace(margin, w - margin, side)
    gy = np.linspace(margin, h - margin, side)
    points = np.array([(x, y) for y in gy for x in gx])
    wrap = progress_wrapper(progress, "aligning sections")
    centre = np.array([w / 2, h / 2])

    def match(a: Image, b: Image):
        """Matches (p in a, p_ in b), or None; and (median SNR, windows kept)."""
        # SWiFT-IR's fixed weighting: between sections the content itself
        # changes, so what two sections share is not "the spectrum above the
        # camera's noise"; measured on the real ssTEM stack, it keeps more
        # windows across a blank section (20 of 64 against 14) and aligns
        # known rotations closer (0.12 px against 0.14 at the worst corner)
        m = Matcher(a, b, weighting="swiftir")
        bulk = m.refine(centre, centre, coarse, iters=5, tolerance=0.05)
        offset = bulk.p_ - bulk.p  # where a's content sits in b
        if not np.all(np.isfinite(offset)):
            offset = np.zeros(2)
        # windows whose centre the offset moves off b (sections that do not
        # match can give any offset) are not matched
        to = points + offset
        on = (to[:, 0] >= 0) & (to[:, 0] < w) & (to[:, 1] >= 0) & (to[:, 1] < h)
        if on.sum() < max(3, len(points) // 4):
            return None, (0.0, 0)
        fine = m.refine_many(points[on], to[on], win, iters=4, tolerance=0.02, workers=1)
        good = np.isfinite(fine.snr) & (fine.snr >= snr_threshold)
        stats = (float(np.nanmedian(fine.snr)) if np.isfinite(fine.snr).any() else 0.0,
                 int(good.sum()))
        # sections that match show it in many windows; noise against a real
        # section passes the threshold in a few (2-4 of 64 measured)
        if good.sum() >= max(3, len(points) // 4):
            return (fine.p[good], fine.p_[good]), stats
        return None, stats

    pl = Placement()
    snr = np.full(len(sources) - 1, np.nan)
    kept = np.zeros(len(sources) - 1, int)
    prev, zp = Image(sources[0]), 0  # the last section that was matched
    unmatched, linked = [], set()
    for z in wrap(range(1, len(sources))):
        nxt = Image(sources[z])
        found, (snr[z - 1], kept[z - 1]) = match(prev, nxt)
        if found is None and zp not in linked and z + 1 < len(sources):
            # no chain yet: is zp the odd one out, or z?  z matches z + 1 if zp is
            ahead, _ = match(nxt, Image(sources[z + 1]))
            if ahead is not None:
                unmatched.append(zp)
                prev, zp = nxt, z
                continue
        if found is None:  # skip z: the next section is matched to zp
            unmatched.append(z)
            continue
        pl.addmatches(zp, z, *found)
        linked.update((zp, z))
        prev, zp = nxt, z
    if not pl.nmatches:
        raise NoMatchesError(
            f"Expected sections that match their neighbours. Got no match between any two of "
            f"the {len(sources)} sections (SNR threshold {snr_threshold:g}); check that they "
            f"show the same tissue, or lower snr_threshold.")
    for z in range(len(sources)):  # faint priors: unmatched sections stay put
        pl.addprior(z, (0.0, 0.0), weight=_PRIOR_WEIGHT)
    if unmatched:
        warnings.warn(f"{len(unmatched)} section(s) match neither neighbour and are left "
                      f"where they are (sections after them are matched across them): "
                      f"{unmatched[:10]!r}", SpectralignWarning, stacklevel=2)
    result = pl.solve(model, regularize=regularize)
    lo, hi = float(result.scales.min()), float(result.scales.max())
    if max(1 - lo, hi - 1) > _SIZE_TOLERANCE:
        warnings.warn(f"The {model} alignment changed the sections' scales: {lo:.3f} to "
                      f"{hi:.3f}. Check the matches, or use the euclidean model.",
                      SpectralignWarning, stacklevel=2)
    from .quality import seam_scores

    tiles = dict(enumerate(sources))
    pairs = [(z, z + 1) for z in range(len(sources) - 1)]
    seams = seam_scores(tiles, result.transforms, pairs)
    before = seam_scores(tiles, {z: (0.0, 0.0) for z in tiles}, pairs)
    return Stack(placement=result, sections=list(sources), names=names, snr=snr, kept=kept,
                 tilesize=(w, h), unmatched=sorted(unmatched), seams=seams, seams_before=before)
