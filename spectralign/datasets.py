"""Small real data sets shipped with spectralign, for examples and tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
import scipy.ndimage

from .affine import Affine
from .io.image import Image

__all__ = ["GridDataset", "stitch2d_grid", "SyntheticGrid", "synthetic_grid",
           "perturb_sections", "graph_paper"]


@dataclass(frozen=True)
class GridDataset:
    """A grid of tiles with a reference placement.

    Attributes
    ----------
    tiles : dict of (row, col) -> Image
    reference : dict of (row, col) -> (2,) float array
        Top-left ``(x, y)`` of each tile from another aligner (a reference,
        not ground truth).
    rows, cols : int
    overlap : (float, float)
        Nominal overlap fraction ``(x, y)`` between neighbours.
    """

    tiles: dict
    reference: dict
    rows: int
    cols: int
    overlap: tuple[float, float]


def stitch2d_grid() -> GridDataset:
    """The real SEM grid of six 512 x 442 tiles (3 rows x 2 columns).

    Back-scatter SEM tiles of a meteorite whose brightness varies from tile
    to tile; MIT licence (the stitch2d project's test tiles).  The nominal
    overlap is about 23 % in x and 12 % in y; the true steps are about 380
    px in x and 396 px in y (26 % and 10 %).

    The files are named ``Grid@<col> <row>`` and ``reference_positions.json``
    lists each tile's top-left as ``(y, x)`` despite the key's name; both
    were checked against the pixels (normalized cross-correlation of 0.74
    and 0.77 in the overlaps at those offsets, below 0.1 at the transposed
    ones).  This function returns tiles keyed ``(row, col)`` and reference
    positions as true ``(x, y)``.

    Examples
    --------
    >>> from spectralign.datasets import stitch2d_grid
    >>> grid = stitch2d_grid()
    >>> grid.rows, grid.cols, grid.tiles[0, 0].shape
    (3, 2, (442, 512))
    """
    folder = resources.files("spectralign") / "data" / "stitch2d_grid"
    meta = json.loads((folder / "reference_positions.json").read_text())
    tiles, reference = {}, {}
    for name, xy in meta["positions_xy"].items():
        c, r = (int(v) for v in name.split("@")[1].split("]")[0].split())
        with resources.as_file(folder / name) as path:
            tiles[r, c] = Image(path)
        reference[r, c] = np.asarray(xy[::-1], dtype=np.float64)
    rows = 1 + max(r for r, _ in tiles)
    cols = 1 + max(c for _, c in tiles)
    return GridDataset(tiles, reference, rows, cols, (0.23, 0.12))


@dataclass(frozen=True)
class SyntheticGrid:
    """Tiles cut from one image at known subpixel positions.

    Attributes
    ----------
    tiles : list of (H, W) float32 arrays
        In raster order (row by row).
    truth : (n, 2) float array
        True top-left ``(x, y)`` of each tile in the source image.
    nominal : (n, 2) float array
        Stage positions: the regular grid, without the stage error.
    grid : (rows, cols)
    overlap : float
    """

    tiles: list
    truth: np.ndarray
    nominal: np.ndarray
    grid: tuple[int, int]
    overlap: float


def synthetic_grid(image: np.ndarray, grid: tuple[int, int] = (4, 4), tile: int = 256,
                   overlap: float = 0.15, *, stage_error: float = 20.0, noise: float = 0.0,
                   vignetting: float = 0.0, psf: float = 0.0, gain: float = 0.0,
                   offset: float = 0.0, jpeg: int | None = None,
                   seed: int = 0) -> SyntheticGrid:
    """Cut a grid of tiles from ``image`` at known subpixel positions.

    Each tile is the image sampled at its subpixel position (order-5
    spline interpolation of a crop with a margin: local, so no wrap-around
    rings at the tile edges where the overlaps are), blurred by the optics'
    point spread function, times a vignetting falloff, times a gain and
    plus an offset of its own, plus white Gaussian noise (as a camera adds
    it, up to Nyquist), and optionally JPEG-compressed.

    Parameters
    ----------
    image : (H, W) array
        Gray source image; must hold the whole grid plus ``stage_error``.
    grid : (rows, cols)
    tile : int
        Tile side (px).
    overlap : float
        Nominal overlap fraction between neighbours.
    stage_error : float
        Each tile's true position is its nominal one plus a uniform error in
        ``[-stage_error, stage_error]`` px per axis.
    noise : float
        Standard deviation of the added noise, as a fraction of the
        image's standard deviation.
    vignetting : float
        Brightness falls by this fraction from the tile centre to its
        corners (a radial quadratic falloff).
    psf : float
        Standard deviation (px) of a Gaussian point spread function that
        blurs each tile before the noise is added (0.7 leaves almost
        nothing above 0.45 cycles/px); ``noise`` is then relative to the
        blurred image's standard deviation.
    gain, offset : float
        Each tile is multiplied by ``1 + u`` and shifted by ``v`` times the
        image's mean, with ``u`` uniform in ``[-gain, gain]`` and ``v`` in
        ``[-offset, offset]``.
    jpeg : int, optional
        JPEG quality (1-100): tiles are scaled to 8 bits by the image's
        range, encoded and decoded again (``imagecodecs``).
    seed : int

    Returns
    -------
    SyntheticGrid
    """
    img = np.asarray(image, dtype=np.float64)
    rows, cols = grid
    rng = np.random.default_rng(seed)
    step = tile * (1 - overlap)
    nominal = np.array([(c * step, r * step) for r in range(rows) for c in range(cols)])
    m = 8 + int(np.ceil(4 * psf))  # margin for the interpolation kernel and the PSF
    truth = nominal + stage_error + m + rng.uniform(-stage_error, stage_error, nominal.shape)
    need = truth.max(0) + tile + m
    if need[0] > img.shape[1] or need[1] > img.shape[0]:
        raise ValueError(f"Expected an image of at least {int(need[0])} x {int(need[1])} px "
                         f"for this grid. Got {img.shape[1]} x {img.shape[0]}.")
    yy, xx = np.mgrid[0:tile, 0:tile]
    r2 = ((xx - (tile - 1) / 2) ** 2 + (yy - (tile - 1) / 2) ** 2) / (2 * ((tile - 1) / 2) ** 2)
    falloff = 1 - vignetting * r2
    if psf > 0:  # the blurred image's spread, from a central sample of it
        cy, cx = img.shape[0] // 2, img.shape[1] // 2
        probe = img[max(cy - 512, 0):cy + 512, max(cx - 512, 0):cx + 512]
        spread = scipy.ndimage.gaussian_filter(probe, psf)[m:-m, m:-m].std()
    else:
        spread = img.std()
    sigma = noise * spread
    level = float(img.mean())
    lo, hi = float(img.min()), float(img.max())
    tiles = []
    for x, y in truth:
        ix, iy = int(np.floor(x)), int(np.floor(y))
        crop = img[iy - m:iy + tile + m, ix - m:ix + tile + m]
        shifted = scipy.ndimage.shift(crop, (iy - y, ix - x), order=5, mode="nearest")
        if psf > 0:
            shifted = scipy.ndimage.gaussian_filter(shifted, psf, mode="nearest")
        shifted = shifted[m:m + tile, m:m + tile]
        out = shifted * falloff
        if gain:
            out = out * (1 + rng.uniform(-gain, gain))
        if offset:
            out = out + level * rng.uniform(-offset, offset)
        if sigma:
            out = out + rng.normal(0, sigma, out.shape)
        if jpeg is not None:
            out = _jpeg_roundtrip(out, lo, hi, int(jpeg))
        tiles.append(out.astype(np.float32))
    return SyntheticGrid(tiles, truth, nominal, (rows, cols), overlap)


def graph_paper(shape: tuple[int, int] = (1400, 1800), period: float = 24.0, *,
                marks: int = 80, seed: int = 0) -> np.ndarray:
    """A picture of graph paper: periodic content, the hard case for matching.

    Thin dark lines every ``period`` px and thicker ones every five periods,
    both ways, on white, with ``marks`` sparse pen marks (a few short strokes
    each) that alone tell one period from the next.  Cut grids from it with
    :func:`synthetic_grid` (with ``psf`` and ``noise``, as a camera would).

    Parameters
    ----------
    shape : (height, width)
    period : float
        Line spacing (px).
    marks : int
        Pen marks over the whole picture (few: most overlaps hold none).
    seed : int

    Returns
    -------
    (height, width) float64 array in [0, 1]
    """
    h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    img = np.ones((h, w))
    for v in (xx, yy):
        img -= 0.35 * ((v + 3) % period < 1.2)
        img -= 0.3 * ((v + 3) % (5 * period) < 2.0)
    ink = np.zeros((h, w), bool)
    t = np.linspace(0, 1, 60)
    for _ in range(marks):
        cx, cy = rng.uniform(50, w - 50), rng.uniform(50, h - 50)
        for _ in range(4):
            a, length = rng.uniform(0, 2 * np.pi), rng.uniform(10, 30)
            x0, y0 = cx + rng.uniform(-15, 15), cy + rng.uniform(-15, 15)
            xs = np.clip((x0 + length * t * np.cos(a)).astype(int), 0, w - 1)
            ys = np.clip((y0 + length * t * np.sin(a)).astype(int), 0, h - 1)
            ink[ys, xs] = True
    img -= 0.8 * scipy.ndimage.binary_dilation(ink, iterations=2)
    return np.clip(img, 0, 1)


def _jpeg_roundtrip(tile: np.ndarray, lo: float, hi: float, quality: int) -> np.ndarray:
    """``tile`` as 8 bits over ``[lo, hi]``, JPEG-encoded at ``quality`` and decoded."""
    import imagecodecs

    u8 = np.clip(np.round((tile - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
    back = imagecodecs.jpeg_decode(imagecodecs.jpeg_encode(u8, level=quality))
    return back.astype(np.float64) / 255 * (hi - lo) + lo


def perturb_sections(sections, *, shift: float = 30.0, angle: float = 1.0,
                     seed: int | np.random.Generator = 0) -> tuple[list, list]:
    """Move each section by a known rigid transform: ground truth for stacks.

    Each section is rotated about its centre by a uniform angle in
    ``[-angle, angle]`` degrees and translated by a uniform ``[-shift,
    shift]`` px per axis (order-5 spline; pixels from outside take the
    section's mean).

    Returns
    -------
    moved : list of (H, W) float32 arrays
    truth : list of Affine
        ``moved(q) = section(truth^-1 q)``: where each section's pixels went.
    """
    rng = np.random.default_rng(seed)
    moved, truth = [], []
    for img in sections:
        img = np.asarray(img, np.float64)
        h, w = img.shape
        t = (Affine.translator(rng.uniform(-shift, shift, 2))
             @ Affine.rotator(np.deg2rad(rng.uniform(-angle, angle)),
                              ((w - 1) / 2, (h - 1) / 2)))
        inv = np.linalg.inv(np.vstack([t.matrix, [0, 0, 1]]))
        # ndimage works in (row, col)
        out = scipy.ndimage.affine_transform(img, inv[:2, :2][::-1, ::-1], inv[:2, 2][::-1],
                                             order=5, mode="constant", cval=float(img.mean()))
        moved.append(out.astype(np.float32))
        truth.append(t)
    return moved, truth

