"""Serial sections and z-stacks: align each section to its neighbour.

:func:`align_stack` matches every section to the next with a grid of
windows (after one large window has found the bulk offset), places all
sections at once in one :class:`Placement` (rigid by default: rotation and
translation), and returns a :class:`Stack` that renders an aligned
``(z, y, x)`` volume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .affine import Affine
from .errors import LayoutError
from .image import Image
from .matcher import Matcher
from .montage import _collect, _pow2_at_most, _shape
from .placement import Placement
from .placement_result import PlacementResult

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
        Median SNR of the windows between section ``z`` and ``z + 1``.
    kept : (n - 1,) int array
        Windows kept between each neighbouring pair.
    """

    placement: PlacementResult
    sections: list
    names: list
    snr: np.ndarray
    kept: np.ndarray
    size: tuple[int, int]

    @property
    def transforms(self) -> dict[int, Affine]:
        """``{z: Affine}``: section-to-volume transforms."""
        return self.placement.transforms

    def renderer(self, **options: Any):
        """A :class:`Renderer` with one z-level per section."""
        from .renderer import Renderer

        options.setdefault("blend", 0)
        ren = Renderer(affine=self.transforms, tilesize=self.size, **options)
        for z, src in enumerate(self.sections):
            if z:
                ren.clear()
            ren.render(z, src)
        return ren

    def to_zarr(self, path: str | os.PathLike, **options: Any) -> Path:
        """Render the aligned volume to OME-Zarr ``(z, y, x)``."""
        keys = ("resume", "overwrite", "pixel_size", "unit", "pyramid", "name")
        store = {k: options.pop(k) for k in keys if k in options}
        return self.renderer(**options).to_zarr(path, **store)


def align_stack(sections: Any, *, model: str = "euclidean", grid: int = 8,
                window: int | None = None, snr_threshold: float = 6.0,
                progress: Callable[[Iterable], Iterable] | bool | None = None) -> Stack:
    """Align a stack of sections, each to its neighbour.

    Parameters
    ----------
    sections : str, path or sequence
        A glob pattern or folder (natural order) or a sequence of files or
        arrays, first section first.  Sections must share one size.
    model : str
        ``"euclidean"`` (rotation + translation, default), ``"translation"``,
        ``"similarity"`` or ``"affine"``.
    grid : int
        Windows per side of the grid matched between neighbours (they
        overlap: many windows average out local differences between
        sections).
    window : int, optional
        Window size (default: the power of two near ``min(W, H) / 4``, at
        most 512).
    snr_threshold : float
        Windows whose SNR is below this are not used.
    progress : bool or callable, optional
        As in :func:`stitch_grid`.

    Returns
    -------
    Stack
    """
    sources, names = _collect(sections)
    if len(sources) < 2:
        raise LayoutError(f"Expected at least two sections. Got {len(sources)}.")
    shapes = {_shape(s) for s in sources}
    if len(shapes) != 1:
        raise LayoutError(f"Expected sections of one size. Got sizes (height, width) "
                          f"{sorted(shapes)}.")
    h, w = shapes.pop()
    win = int(window) if window else min(512, _pow2_at_most(min(w, h) / 4 * 1.2, 32))
    coarse = _pow2_at_most(0.75 * min(w, h), 32)
    margin = win / 2 + 2
    gx = np.linspace(margin, w - margin, grid)
    gy = np.linspace(margin, h - margin, grid)
    points = np.array([(x, y) for y in gy for x in gx])
    if progress is True:
        from tqdm.auto import tqdm

        progress = lambda it: tqdm(it, desc="aligning sections", unit="pair")  # noqa: E731
    wrap = progress or (lambda it: it)
    pl = Placement()
    snr = np.full(len(sources) - 1, np.nan)
    kept = np.zeros(len(sources) - 1, int)
    prev = Image(sources[0])
    centre = np.array([w / 2, h / 2])
    for z in wrap(range(len(sources) - 1)):
        nxt = Image(sources[z + 1])
        m = Matcher(prev, nxt)
        bulk = m.refine(centre, centre, coarse, iters=5, tolerance=0.05)
        offset = bulk.p_ - bulk.p  # where section z's content sits in z + 1
        fine = m.refine_many(points, points + offset, win, iters=4, tolerance=0.02, workers=1)
        good = np.isfinite(fine.snr) & (fine.snr >= snr_threshold)
        if good.sum() < 3:  # fall back to the bulk match alone
            pl.addmatch(z, z + 1, bulk.p, bulk.p_)
            pl.addmatch(z, z + 1, bulk.p + (win, 0), bulk.p_ + (win, 0), weight=1e-6)
            pl.addmatch(z, z + 1, bulk.p + (0, win), bulk.p_ + (0, win), weight=1e-6)
        else:
            pl.addmatches(z, z + 1, fine.p[good], fine.p_[good])
        snr[z] = float(np.median(fine.snr))
        kept[z] = int(good.sum())
        prev = nxt
    result = pl.solve(model)
    return Stack(placement=result, sections=list(sources), names=names, snr=snr, kept=kept,
                 size=(w, h))
