"""Tile sources that read only the part of a tile that is asked for.

A source is small and picklable, so that a render can run on any dask
scheduler: arrays travel as they are (numpy, memory-mapped, zarr or dask
arrays); files travel as their path and are opened where they are read.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageDimensionError
from .files import TIFF_SUFFIXES

_DECODED = 8  # whole-file decodes (JPEG, PNG) kept per process for the next chunks
_decoded: OrderedDict = OrderedDict()
_decoded_lock = threading.Lock()


class ArraySource:
    """A 2-D array-like (numpy, memmap, zarr, dask, Image)."""

    def __init__(self, array: Any, name: str = "array"):
        shape = tuple(int(s) for s in array.shape)
        if len(shape) != 2:
            raise ImageDimensionError(
                f"Expected a 2-D gray tile. Got {name} of shape {shape} instead; convert colour "
                f"tiles with spectralign.Image first.")
        self.array = array
        self.shape = shape
        self.dtype = np.dtype(array.dtype)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(self.array[y0:y1, x0:x1])


class FileSource:
    """An image file, opened when read: TIFF memory-mapped where it can be,
    anything else read whole through :class:`spectralign.Image`."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        arr = self._open()
        if arr.ndim != 2:
            raise ImageDimensionError(
                f"Expected a 2-D gray tile. Got {self.path} with shape {arr.shape} instead.")
        self.shape = tuple(int(s) for s in arr.shape)
        self.dtype = np.dtype(arr.dtype)

    def _open(self) -> Any:
        if Path(self.path).suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            try:
                return tifffile.memmap(self.path, mode="r")
            except (ValueError, OSError):
                pass
            # compressed or tiled TIFF: read lazily through its zarr view
            import zarr

            store = tifffile.imread(self.path, aszarr=True)
            arr = zarr.open_array(store, mode="r")
            if arr.ndim == 2:
                return arr
        return _decode(self.path)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(self._open()[y0:y1, x0:x1])


def _decode(path: str) -> Any:
    """A whole-file decode (JPEG, PNG), kept for the next few chunk reads:
    neighbouring chunks read the same tile one after another.  The pixels
    keep their type (uint8 in, uint8 out, as from a TIFF); colour becomes
    gray, the mean of the channels (alpha dropped)."""

    key = (path, os.stat(path).st_mtime_ns)
    with _decoded_lock:
        img = _decoded.get(key)
        if img is not None:
            _decoded.move_to_end(key)
            return img
    img = _gray_keeping_dtype(path)
    with _decoded_lock:
        _decoded[key] = img
        while len(_decoded) > _DECODED:
            _decoded.popitem(last=False)
    return img


def as_source(img: Any) -> ArraySource | FileSource:
    """A tile source for an array, an Image, a lazy array or a file path."""
    if isinstance(img, (str, os.PathLike)):
        return FileSource(img)
    if hasattr(img, "shape") and hasattr(img, "__getitem__") and hasattr(img, "dtype"):
        return ArraySource(img)
    return ArraySource(np.asarray(img), name=type(img).__name__)


def _gray_keeping_dtype(path: str) -> np.ndarray:
    from .image import _read, _to_gray_float

    data = np.asarray(_read(path, None, None))
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        gray = data[..., :3].mean(axis=-1, dtype=np.float64)
        if data.dtype.kind in "ui":
            return np.round(gray).astype(data.dtype)
        return gray.astype(np.float32)
    if data.ndim == 2 and data.dtype.kind in "uib":
        return data
    return _to_gray_float(data, path)  # floats: checked (finite, 2-D) as Image does
