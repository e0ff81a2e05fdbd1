"""Every exception and warning raised by spectralign.

Each error also subclasses the builtin it refines, so that
``except ValueError`` or ``except FileNotFoundError`` keeps working.
Messages say what was expected, what came in instead, and how to fix it.
"""

__all__ = [
    "SpectralignError",
    "ImageReadError",
    "ImageNotFoundError",
    "ImageDimensionError",
    "NonFiniteImageError",
    "InvalidSizeError",
    "InvalidPointError",
    "WindowOutsideImageError",
    "UnknownTileError",
    "InvalidMatchError",
    "NoMatchesError",
    "UnderdeterminedTileError",
    "DisconnectedTileGraphError",
    "SingularPlacementError",
    "TileShapeError",
    "EmptyCanvasError",
    "StoreExistsError",
    "TileConfigError",
    "LayoutError",
    "NoTilesError",
    "MaskError",
    "OutputFormatError",
    "NoOverlapError",
    "SpectralignWarning",
]


class SpectralignError(Exception):
    """Base class of every error raised by spectralign."""


class ImageNotFoundError(SpectralignError, FileNotFoundError):
    """An image file does not exist."""


class ImageReadError(SpectralignError, OSError):
    """An image file exists but cannot be read as an image."""


class ImageDimensionError(SpectralignError, ValueError):
    """Image data does not have the expected number of dimensions."""


class NonFiniteImageError(SpectralignError, ValueError):
    """Image data contains NaN or infinite pixels."""


class InvalidSizeError(SpectralignError, ValueError):
    """A window or tile size is not a positive (width, height)."""


class InvalidPointError(SpectralignError, ValueError):
    """A point is not a finite (x, y) pair, or point arrays do not match."""


class WindowOutsideImageError(SpectralignError, ValueError):
    """A requested window does not overlap the image at all."""


class UnknownTileError(SpectralignError, KeyError):
    """A tile id that the placement or renderer has never seen."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class InvalidMatchError(SpectralignError, ValueError):
    """A match that cannot be used: a tile matched with itself, a negative
    or non-finite weight, points of the wrong shape."""


class NoMatchesError(SpectralignError, ValueError):
    """A placement was asked for with no matches at all."""


class UnderdeterminedTileError(SpectralignError, ValueError):
    """A tile has fewer (or more degenerate) matches than the model needs.

    Attributes
    ----------
    tiles : list
        The tiles concerned.
    """

    def __init__(self, message: str, tiles: list | None = None):
        super().__init__(message)
        self.tiles = list(tiles or [])


class DisconnectedTileGraphError(SpectralignError, ValueError):
    """The tile graph falls apart into pieces that nothing ties together.

    Attributes
    ----------
    components : list of list
        The tiles of each connected component, largest first.
    """

    def __init__(self, message: str, components: list | None = None):
        super().__init__(message)
        self.components = list(components or [])


class SingularPlacementError(SpectralignError, ValueError):
    """The placement's least-squares system has no unique solution."""


class TileShapeError(SpectralignError, ValueError):
    """A tile image does not have the size declared for it."""


class EmptyCanvasError(SpectralignError, ValueError):
    """Nothing to render: no tiles placed, or a clip rectangle that misses them all."""


class StoreExistsError(SpectralignError, FileExistsError):
    """The output path exists and may not be written over."""


class TileConfigError(SpectralignError, ValueError):
    """A TileConfiguration file has a line that cannot be read (the
    message names the file and line)."""


class LayoutError(SpectralignError, ValueError):
    """A grid layout does not fit the tiles given (count, sizes, names)."""


class NoTilesError(SpectralignError, FileNotFoundError):
    """A glob pattern or folder holds no tiles."""


class SpectralignWarning(UserWarning):
    """Base class of every warning issued by spectralign."""


class MaskError(SpectralignError, ValueError):
    """A validity mask of the wrong shape or type, or with too few valid
    pixels to register anything."""


class NoOverlapError(SpectralignError, ValueError):
    """Two images in which no common content was found: the registration
    would be a guess.  ``best_snr`` holds the best signal-to-noise ratio
    reached."""

    def __init__(self, message: str, best_snr: float = 0.0):
        super().__init__(message)
        self.best_snr = float(best_snr)


class OutputFormatError(SpectralignError, ValueError):
    """An output path whose ending names a format that cannot be written
    there (the message lists those that can)."""
