"""Image: a gray float32 picture with the window tools matching needs."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.ndimage

from ..errors import (
    ImageDimensionError,
    ImageNotFoundError,
    ImageReadError,
    InvalidPointError,
    InvalidSizeError,
    NonFiniteImageError,
    WindowOutsideImageError,
)
from .files import TIFF_SUFFIXES

__all__ = ["Image", "parse_size", "parse_point"]



def parse_size(size: Any, name: str = "size") -> tuple[int, int]:
    """Parse a window size given as one number or ``(width, height)``.

    Returns
    -------
    (int, int)
        ``(width, height)``, each rounded to the nearest integer and >= 1.

    Raises
    ------
    InvalidSizeError
        If the size is not one or two finite positive numbers.
    """
    try:
        arr = np.asarray(size, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidSizeError(
            f"Expected {name} as one positive number or (width, height). "
            f"Got {size!r} instead.") from None
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.all(np.isfinite(arr)) or np.any(np.round(arr) < 1):
        raise InvalidSizeError(
            f"Expected {name} as one positive number or (width, height) of "
            f"positive numbers. Got {size!r} instead.")
    return int(round(arr[0])), int(round(arr[1]))


def parse_point(xy: Any, name: str = "point") -> np.ndarray:
    """Parse one ``(x, y)`` point into a float64 array of shape (2,).

    Raises
    ------
    InvalidPointError
        If ``xy`` is not two finite numbers.
    """
    try:
        arr = np.asarray(xy, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        arr = np.array([])
    if arr.size != 2 or not np.all(np.isfinite(arr)):
        raise InvalidPointError(
            f"Expected {name} as a finite (x, y) pair. Got {xy!r} instead.")
    return arr


def _read(path: str, page: int | None, series: int | None) -> np.ndarray:
    if not os.path.exists(path):
        raise ImageNotFoundError(
            f"Expected an image file. Got {path!r}, which does not exist.")
    if os.path.isdir(path):
        raise ImageReadError(f"Expected an image file. Got {path!r}, a directory.")
    try:
        if path.lower().endswith(TIFF_SUFFIXES) or page is not None or series is not None:
            import tifffile

            kwargs = {}
            if page is not None:
                kwargs["key"] = page
            if series is not None:
                kwargs["series"] = series
            with tifffile.TiffFile(path) as tif:
                data = tif.asarray(**kwargs)
                pages = tif.pages if series is None else tif.series[series].pages
                first = getattr(pages[page or 0], "keyframe", None)
                samples = first.samplesperpixel if first is not None else 1
                planar = first is not None and first.planarconfig == 2  # SEPARATE
            if planar and samples in (3, 4) and data.ndim == 3 and data.shape[0] == samples:
                data = np.moveaxis(data, 0, -1)  # planar RGB(A) -> (H, W, 3|4)
            return data
        import imagecodecs

        return imagecodecs.imread(path)
    except (ImageNotFoundError, ImageReadError):
        raise
    except Exception as exc:  # any codec failure becomes one clear error
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        why = lines[0] if len(lines) == 1 else "no image codec recognises its contents"
        raise ImageReadError(f"Could not read {path!r} as an image ({why}); check that "
                             f"the file is a complete TIFF, PNG or JPEG image.") from exc


def _to_gray_float(data: np.ndarray, source: str) -> np.ndarray:
    """Gray float32; integers scaled to [0, 1] by their type's maximum."""
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        scale = np.iinfo(data.dtype).max if data.dtype.kind in "ui" else 1
        data = data[..., :3].mean(axis=-1, dtype=np.float32) / np.float32(scale)
    elif data.ndim == 2:
        if data.dtype.kind in "ui":
            data = data.astype(np.float32) / np.float32(np.iinfo(data.dtype).max)
        else:
            data = data.astype(np.float32, copy=False)
    else:
        raise ImageDimensionError(
            f"Expected a 2-D gray image (H, W) or a colour image (H, W, 3|4) "
            f"from {source}. Got an array of shape {data.shape} instead. "
            f"Pick one plane, e.g. Image(stack[0]), or a TIFF page with page=N.")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = np.argwhere(~np.isfinite(data))
        y, x = bad[0]
        raise NonFiniteImageError(
            f"Expected finite pixels in {source}. Got {len(bad)} NaN or infinite "
            f"pixel(s), the first at (x, y) = ({x}, {y}). Replace them, e.g. "
            f"np.nan_to_num(data, nan=np.nanmean(data)), before matching.")
    return data


def check_overlap(shape: tuple[int, int], x0: int, y0: int, w: int, h: int) -> None:
    """Raise WindowOutsideImageError unless ``[x0, x0+w) x [y0, y0+h)`` meets the image."""
    ih, iw = shape
    if x0 + w <= 0 or x0 >= iw or y0 + h <= 0 or y0 >= ih:
        raise WindowOutsideImageError(
            f"Expected a window that overlaps the {iw} x {ih} image. Got a "
            f"{w} x {h} window at top-left (x, y) = ({x0}, {y0}), wholly "
            f"outside it. Check that the point is in this image's pixel "
            f"coordinates (x, y), not (row, column).")


def cut(img: np.ndarray, x0: int, y0: int, w: int, h: int, fill: float,
        out: np.ndarray | None = None) -> np.ndarray:
    """Integer window ``img[y0:y0+h, x0:x0+w]``; outside pixels get ``fill``
    (NaN: the mean of the window's pixels on the image).

    Raises WindowOutsideImageError if the window misses the image entirely.
    """
    ih, iw = img.shape
    if out is None:
        out = np.empty((h, w), dtype=np.float32)
    if 0 <= x0 and x0 + w <= iw and 0 <= y0 and y0 + h <= ih:
        out[...] = img[y0:y0 + h, x0:x0 + w]
        return out
    check_overlap(img.shape, x0, y0, w, h)
    xa, xb = max(x0, 0), min(x0 + w, iw)
    ya, yb = max(y0, 0), min(y0 + h, ih)
    inside = img[ya:yb, xa:xb]
    out.fill(np.mean(inside, dtype=np.float64) if np.isnan(fill) else fill)
    out[ya - y0:yb - y0, xa - x0:xb - x0] = inside
    return out


class Image(np.ndarray):
    """A gray image: a 2-D float32 numpy array with matching tools.

    Parameters
    ----------
    data : str, path-like, or array_like
        A file (TIFF, including multi-page and OME-TIFF, JPEG or PNG) or
        an array ``(H, W)`` or ``(H, W, 3|4)``.  Colour is averaged to gray
        with equal weights (alpha is dropped); integer data is scaled to
        [0, 1] by the maximum of its type (255 for uint8, 65535 for
        uint16); float data is kept as it is.
    page : int, optional
        TIFF page to read from a multi-page file.
    series : int, optional
        TIFF series to read (e.g. an OME-TIFF image or a pyramid level).

    Raises
    ------
    ImageNotFoundError
        The file does not exist (also a ``FileNotFoundError``).
    ImageReadError
        The file cannot be decoded.
    ImageDimensionError
        The data is not one gray or colour plane.
    NonFiniteImageError
        Float data holds NaN or infinite pixels.  Matching has no sensible
        answer for them, so they are refused at the door rather than
        silently spread by the FFT.

    Examples
    --------
    >>> import numpy as np, spectralign
    >>> img = spectralign.Image(np.full((4, 6), 128, dtype=np.uint8))
    >>> img.shape, img.dtype, round(float(img[0, 0]), 6)
    ((4, 6), dtype('float32'), 0.501961)
    """

    def __new__(cls, data: Any, *, page: int | None = None,
                series: int | None = None) -> "Image":
        if isinstance(data, (str, os.PathLike)):
            source = repr(os.fspath(data))
            data = _read(os.fspath(data), page, series)
        else:
            source = "the given array"
        obj = _to_gray_float(data, source).view(cls)
        obj.source = source
        return obj

    def __init__(self, data: Any, *, page: int | None = None,
                 series: int | None = None) -> None:
        # the work is done in __new__ (the array must exist first); this
        # states the signature for documentation tools, which read __init__
        super().__init__()

    def __array_finalize__(self, obj: Any) -> None:
        self.source = getattr(obj, "source", "the given array")

    def __array_wrap__(self, arr: np.ndarray, context: Any = None,
                       return_scalar: bool = False) -> Any:
        """Whole-array reductions (``img.mean()``) give numbers, not 0-d Images."""
        if return_scalar:
            return arr[()]
        return super().__array_wrap__(arr, context)

    @staticmethod
    def load(path: str | os.PathLike, **kwargs: Any) -> "Image":
        """Read an image file; the same as ``Image(path)``."""
        return Image(path, **kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the image: TIFF as float32, other formats as 8-bit.

        Values are clipped to [0, 1] before conversion to 8 bits.
        """
        path = os.fspath(path)
        data = np.asarray(self)
        if path.lower().endswith(TIFF_SUFFIXES):
            import tifffile

            tifffile.imwrite(path, data)
        else:
            import imagecodecs

            imagecodecs.imwrite(path, np.round(np.clip(data, 0, 1) * 255).astype(np.uint8))

    # -- windows -----------------------------------------------------------

    def _fill(self, border: float | None) -> float:
        return float(np.mean(self, dtype=np.float64)) if border is None else float(border)

    def straightwindow(self, xy: Any = None, size: Any = 512,
                       border: float | None = None, *, order: int = 1) -> "Image":
        """Window of ``size`` centred on the (subpixel) point ``xy``.

        Parameters
        ----------
        xy : (x, y), optional
            Centre in pixel coordinates; the image centre if omitted.  The
            centre falls on window pixel ``(W // 2, H // 2)`` when ``xy`` is
            integer; otherwise the image is interpolated.
        size : int or (width, height)
        border : float, optional
            Value for window pixels off the image (default: image mean).
        order : int
            Spline order of subpixel interpolation (1 is bilinear).

        Raises
        ------
        WindowOutsideImageError
            If the window does not overlap the image at all.
        """
        w, h = parse_size(size)
        img = np.asarray(self)
        center = (np.array([img.shape[1], img.shape[0]]) / 2 if xy is None
                  else parse_point(xy, "xy"))
        origin = center - np.array([w // 2, h // 2])
        base = np.floor(origin).astype(int)
        frac = origin - base
        fill = self._fill(border)
        if not frac.any():
            return Image(cut(img, base[0], base[1], w, h, fill))
        # the window's pixels lie between integer columns base .. base + w
        check_overlap(img.shape, base[0], base[1], w + 1, h + 1)
        m = order + 2  # margin for the interpolation kernel
        region = cut(img, base[0] - m, base[1] - m, w + 2 * m, h + 2 * m, fill)
        out = scipy.ndimage.shift(region, (-frac[1], -frac[0]), order=order,
                                  mode="nearest", prefilter=order > 1)
        return Image(out[m:m + h, m:m + w])

    def transformedwindow(self, xy: Any = None, tfm: Any = None, size: Any = 512,
                          border: float | None = None, *, order: int = 1) -> "Image":
        """Window of ``size`` around ``xy``, seen through a linear transform.

        The window shows the image transformed by the linear part ``A`` of
        ``tfm`` about ``xy``: the window pixel at offset ``d`` (x, y) from the
        window centre shows the image at ``xy + inv(A) d``.  The
        translation part of ``tfm``, if any, is ignored.

        Parameters
        ----------
        xy : (x, y), optional
            Centre (default: the image centre).
        tfm : Affine or (2, 2) or (2, 3) array, optional
            Default: identity.
        size : int or (width, height)
        border : float, optional
            Value for pixels off the image (default: image mean).
        order : int
            Spline interpolation order.
        """
        w, h = parse_size(size)
        img = np.asarray(self)
        center = (np.array([img.shape[1], img.shape[0]]) / 2 if xy is None
                  else parse_point(xy, "xy"))
        lin = np.eye(2) if tfm is None else np.asarray(tfm, dtype=np.float64)[:2, :2]
        inv = np.linalg.inv(lin)
        u, v = np.meshgrid(np.arange(w) - w // 2, np.arange(h) - h // 2)
        x = center[0] + inv[0, 0] * u + inv[0, 1] * v
        y = center[1] + inv[1, 0] * u + inv[1, 1] * v
        # "grid-constant" blends with the border value just beyond the edge
        # (as straightwindow does), so round-off in inv(A) cannot turn an
        # edge pixel into border
        out = scipy.ndimage.map_coordinates(img, [y, x], order=order,
                                            mode="grid-constant",
                                            cval=self._fill(border))
        return Image(out.astype(np.float32))

    def roi(self, rect: Any) -> "Image":
        """The rectangle ``(x0, y0, w, h)`` of the image (integers, inside it)."""
        try:
            x0, y0, w, h = (int(v) for v in rect)
        except (TypeError, ValueError):
            raise InvalidSizeError(
                f"Expected rect as four integers (x0, y0, w, h). Got {rect!r} instead.") from None
        ih, iw = self.shape
        if w < 1 or h < 1 or x0 < 0 or y0 < 0 or x0 + w > iw or y0 + h > ih:
            raise WindowOutsideImageError(
                f"Expected a rectangle inside the {iw} x {ih} image. Got "
                f"(x0, y0, w, h) = {(x0, y0, w, h)} instead; use straightwindow "
                f"for windows that may leave the image.")
        return Image(np.asarray(self)[y0:y0 + h, x0:x0 + w])

    # -- whole-image tools -------------------------------------------------

    def apodized(self, gray: float | None = None) -> "Image":
        """The image faded smoothly to ``gray`` (default: its mean) at the edges.

        Uses the same apodization window as matching.
        """
        from ..match.spectral import apodization_window  # the window matching uses

        g = self._fill(gray)
        win = apodization_window(self.shape)
        return Image(g + (np.asarray(self) - g) * win)

    def stretched(self, percent: float = 0.1) -> "Image":
        """Contrast stretched so the ``percent`` and ``100 - percent``
        percentiles map to 0 and 1 (values beyond are clipped)."""
        lo, hi = np.percentile(self, [percent, 100 - percent])
        data = np.asarray(self) - lo
        if hi > lo:
            data = np.clip(data / (hi - lo), 0, 1)
        return Image(data)

    def scaled(self, fac: int = 2) -> "Image":
        """Binned by ``fac`` x ``fac`` (block means; ragged edges dropped)."""
        fac = int(fac)
        if fac < 1:
            raise InvalidSizeError(f"Expected a binning factor >= 1. Got {fac} instead.")
        h, w = (s // fac * fac for s in self.shape)
        if h == 0 or w == 0:
            raise InvalidSizeError(
                f"Expected a binning factor no larger than the image "
                f"{self.shape[1]} x {self.shape[0]}. Got {fac} instead.")
        blocks = np.asarray(self)[:h, :w].reshape(h // fac, fac, w // fac, fac)
        return Image(blocks.mean(axis=(1, 3)))

    def delta(self, other: Any, margin: float = 0.05) -> "Image":
        """Difference ``self - other``, leaving out ``margin`` of each edge.

        ``other`` must have the same shape.  Use it to judge an alignment by
        eye: two windows cut at matching points give a flat, textureless
        difference.
        """
        other = np.asarray(other, dtype=np.float32)
        if other.shape != self.shape:
            raise ImageDimensionError(
                f"Expected an image of shape {self.shape} to compare with. "
                f"Got shape {other.shape} instead.")
        h, w = self.shape
        dy, dx = int(margin * h), int(margin * w)
        return Image(np.asarray(self)[dy:h - dy, dx:w - dx] - other[dy:h - dy, dx:w - dx])

    def rmsdelta(self, other: Any, margin: float = 0.05) -> float:
        """RMS of :meth:`delta`: one number for how well two windows agree."""
        d = np.asarray(self.delta(other, margin), dtype=np.float64)
        return float(np.sqrt(np.mean(d**2)))
