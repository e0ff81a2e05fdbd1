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


class SpectralignWarning(UserWarning):
    """Base class of every warning issued by spectralign."""
