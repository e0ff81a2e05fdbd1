"""Fiji ``TileConfiguration.txt`` files: read and write.

The Grid/Collection stitching plugin of Fiji (Preibisch et al. 2009) and
BigStitcher read and write tile positions as text::

    # Define the number of dimensions we are working on
    dim = 2

    # Define the image coordinates
    tile_000.tif; ; (0.0, 0.0)
    tile_001.tif; ; (460.8, 0.0)

Each entry is ``file; series; (x, y)`` (``(x, y, z)`` when ``dim = 3``),
the series empty for single-image files.  Positions are the top-left
corners of the tiles in pixels.  The plugin's output is written beside the
input as ``TileConfiguration.registered.txt``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..errors import TileConfigError

__all__ = ["TileEntry", "read_tileconfig", "write_tileconfig"]

_HEADER = "# Define the number of dimensions we are working on"
_COORDS = "# Define the image coordinates"
_POSITION = re.compile(r"^\(\s*([^()]*?)\s*\)$")


@dataclass(frozen=True)
class TileEntry:
    """One line of a TileConfiguration: a file, its series, its position.

    Attributes
    ----------
    file : str
        As written in the file (relative to the file's folder, usually).
    series : int or None
        Image series within a multi-series file; None if not given.
    position : (dim,) float array
        Top-left corner ``(x, y)`` or ``(x, y, z)`` in pixels.
    """

    file: str
    series: int | None
    position: np.ndarray


def read_tileconfig(path: str | os.PathLike) -> list[TileEntry]:
    """Read a Fiji ``TileConfiguration.txt`` (or ``.registered.txt``).

    Parameters
    ----------
    path : path-like

    Returns
    -------
    list of TileEntry
        In the order of the file.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    TileConfigError
        On a line that is not a comment, ``dim = N`` or ``file; series;
        (x, y[, z])``; the message names the file and line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "TileConfiguration.txt"
    >>> _ = p.write_text("dim = 2\\na.tif; ; (0.0, 0.0)\\nb.tif; ; (460.5, -2.0)\\n")
    >>> [(e.file, e.position.tolist()) for e in read_tileconfig(p)]
    [('a.tif', [0.0, 0.0]), ('b.tif', [460.5, -2.0])]
    """
    path = Path(path)
    text = path.read_text()
    dim = None
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        def fail(what: str) -> TileConfigError:
            return TileConfigError(f"{path}, line {number}: {what}. Got {raw!r}.")

        if line.replace(" ", "").lower().startswith("dim="):
            value = line.split("=", 1)[1].strip()
            if value not in ("2", "3"):
                raise fail("expected 'dim = 2' or 'dim = 3'")
            dim = int(value)
            continue
        parts = [p.strip() for p in line.split(";")]
        if len(parts) != 3:
            raise fail("expected 'file; series; (x, y)' with two semicolons")
        name, series, pos = parts
        if not name:
            raise fail("expected a file name before the first semicolon")
        try:
            series_value = int(series) if series else None
        except ValueError:
            raise fail("expected the series (between the semicolons) to be empty or an "
                       "integer") from None
        match = _POSITION.match(pos)
        if match is None:
            raise fail("expected the position in parentheses, as '(x, y)'")
        try:
            coords = [float(v) for v in match.group(1).split(",")]
        except ValueError:
            raise fail("expected numbers in the position") from None
        want = dim or len(coords)
        if len(coords) != want or want not in (2, 3) or not np.all(np.isfinite(coords)):
            raise fail(f"expected {want if dim else '2 or 3'} finite coordinates")
        dim = want
        entries.append(TileEntry(name, series_value, np.array(coords)))
    if not entries:
        raise TileConfigError(f"{path}: expected at least one tile line "
                              f"('file; series; (x, y)'). Got none.")
    return entries


def write_tileconfig(path: str | os.PathLike,
                     positions: Mapping[str, Iterable[float]] | Iterable[TileEntry]) -> Path:
    """Write tile positions as a Fiji ``TileConfiguration.txt``.

    Parameters
    ----------
    path : path-like
        Usually ``TileConfiguration.registered.txt`` beside the tiles.
    positions : {file: (x, y)} or iterable of TileEntry
        Top-left corners in pixels, 2-D or 3-D (all the same).

    Returns
    -------
    Path
    """
    if isinstance(positions, Mapping):
        entries = [TileEntry(str(k), None, np.asarray(v, dtype=float))
                   for k, v in positions.items()]
    else:
        entries = list(positions)
    dims = {len(e.position) for e in entries}
    if len(dims) != 1 or not dims <= {2, 3}:
        raise ValueError(f"Expected positions that all have 2 or all have 3 coordinates. "
                         f"Got {sorted(dims)} coordinates.")
    dim = dims.pop()
    lines = [_HEADER, f"dim = {dim}", "", _COORDS]
    for e in entries:
        series = "" if e.series is None else str(e.series)
        coords = ", ".join(repr(float(v)) for v in e.position)
        lines.append(f"{e.file}; {series}; ({coords})")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
