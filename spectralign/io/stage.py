"""Stage positions of tiles: from OME-TIFF metadata, or from a table or a
TileConfiguration keyed by index or file name."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..errors import LayoutError
from .tileconfig import read_tileconfig


_UNITS = {"m": 1e6, "mm": 1e3, "µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3,
          "pm": 1e-6, "Å": 1e-4}


def ome_stage_positions(sources: Sequence[Any]) -> np.ndarray:
    """Stage positions ``(x, y)`` in pixels from each OME-TIFF's metadata.

    The first plane's ``PositionX`` / ``PositionY`` divided by the pixel's
    ``PhysicalSizeX`` / ``PhysicalSizeY`` (units converted where they
    differ).  Stage axes are taken to run with the image axes.

    Raises
    ------
    LayoutError
        If a tile is not an OME-TIFF with both positions and pixel sizes.
    """
    import xml.etree.ElementTree as ET

    import tifffile

    out = np.empty((len(sources), 2))
    for k, src in enumerate(sources):
        name = str(src)
        try:
            with tifffile.TiffFile(name) as tif:
                xml = tif.ome_metadata
        except (OSError, ValueError, TypeError) as exc:
            raise LayoutError(f"Expected OME-TIFF tiles for positions='ome'. Could not read "
                              f"{name!r}: {exc}") from None
        if not xml:
            raise LayoutError(f"Expected OME-TIFF tiles for positions='ome'. {name!r} has no "
                              f"OME metadata; give positions= as a dict or TileConfiguration.")
        root = ET.fromstring(xml)
        pixels = next((e for e in root.iter() if e.tag.endswith("Pixels")), None)
        plane = next((e for e in root.iter() if e.tag.endswith("Plane")), None)
        try:
            px = []
            for axis in ("X", "Y"):
                size = float(pixels.get(f"PhysicalSize{axis}"))
                pos = float(plane.get(f"Position{axis}"))
                su = _UNITS[pixels.get(f"PhysicalSize{axis}Unit", "µm")]
                pu = _UNITS[plane.get(f"Position{axis}Unit", "µm")]
                px.append(pos * pu / (size * su))
        except (AttributeError, TypeError, ValueError, KeyError):
            raise LayoutError(f"Expected PositionX/PositionY and PhysicalSizeX/PhysicalSizeY in "
                              f"the OME metadata of {name!r}. Got them incomplete or in unknown "
                              f"units.") from None
        out[k] = px
    return out


def stage_positions(positions: Any, names: list[str], sources=None, keys=None) -> np.ndarray:
    if isinstance(positions, str) and positions == "ome":
        return ome_stage_positions(sources)
    if isinstance(positions, (str, os.PathLike)):
        entries = read_tileconfig(positions)
        table = {os.path.basename(e.file): e.position[:2] for e in entries}
    else:
        table = dict(positions)
    out = np.empty((len(names), 2))
    for k, name in enumerate(names):
        for key in ((keys[k],) if keys is not None else ()) + (k, name):
            if key in table:
                out[k] = np.asarray(table[key], dtype=float)[:2]
                break
        else:
            raise LayoutError(f"Expected a stage position for every tile. Got none for "
                              f"{name!r} (tile {k}); positions are keyed by index or file name.")
    return out
