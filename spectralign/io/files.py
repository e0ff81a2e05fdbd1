"""Tile files: which files in a folder or pattern are images, in natural
order, and their sizes without reading their pixels."""

from __future__ import annotations

import glob as _glob
import os
import re
from typing import Any, Iterable

import numpy as np

from ..errors import NoTilesError


def natural_sorted(names: Iterable[str]) -> list[str]:
    """Sort file names with their numbers in numeric order (``t2`` < ``t10``)."""
    def key(s: str):
        return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", s)]
    return sorted(names, key=key)


#: File name endings read with tifffile (pages, series, tiles, memory mapping).
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2", ".svs", ".ndpi", ".scn")

#: File name endings taken as images from a folder or glob pattern.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp",
                  ".jp2", ".j2k", ".jxl", ".avif", ".pgm", ".ppm")


def collect_tiles(tiles: Any) -> tuple[list[Any], list[str]]:
    """Tiles as a list of sources and their names.  From a folder or glob
    pattern, image files only (by their ending, ``IMAGE_SUFFIXES``): notes,
    JSON reports and TileConfiguration files beside the tiles are skipped."""
    if isinstance(tiles, (str, os.PathLike)):
        pattern = str(tiles)
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "*")
        # an existing file is itself, whatever glob characters its name holds
        found = ([pattern] if os.path.isfile(pattern)
                 else [f for f in natural_sorted(_glob.glob(pattern)) if os.path.isfile(f)])
        files = [f for f in found if f.lower().endswith(IMAGE_SUFFIXES)]
        if not files:
            other = (f" (only {', '.join(os.path.basename(f) for f in found[:5])}"
                     f"{', ...' if len(found) > 5 else ''}, not images)" if found else "")
            raise NoTilesError(f"Expected tile images matching {str(tiles)!r}. Got none{other}; "
                               f"check the folder and the pattern (e.g. 'tiles/*.tif').")
        return files, [os.path.basename(f) for f in files]
    items = list(tiles)
    if not items:
        raise NoTilesError("Expected at least one tile. Got an empty sequence.")
    names = [os.path.basename(str(t)) if isinstance(t, (str, os.PathLike)) else f"tile_{i:04d}"
             for i, t in enumerate(items)]
    return items, names


def tile_shape(tile: Any) -> tuple[int, int]:
    """(height, width) of a tile without reading its pixels where possible."""
    if isinstance(tile, (str, os.PathLike)):
        from .sources import FileSource

        return FileSource(tile).shape
    shape = getattr(tile, "shape", None)
    if shape is None:
        shape = np.asarray(tile).shape
    return tuple(int(s) for s in shape[:2])
