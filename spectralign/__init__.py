"""spectralign: spectral stitching of microscopy tiles and serial sections.

Three steps, three classes: :class:`Matcher` finds matching points between
overlapping images, ``Placement`` places every tile in model space, and
``Renderer`` blends the tiles into one canvas.
"""

from .affine import Affine
from .errors import (
    ImageDimensionError,
    ImageNotFoundError,
    ImageReadError,
    InvalidPointError,
    InvalidSizeError,
    NonFiniteImageError,
    SpectralignError,
    SpectralignWarning,
    WindowOutsideImageError,
)
from .image import Image
from .matcher import Iteration, Match, Matcher, Matches

__version__ = "0.1.0"

__all__ = [
    "Affine",
    "Image",
    "Iteration",
    "Match",
    "Matcher",
    "Matches",
    "ImageDimensionError",
    "ImageNotFoundError",
    "ImageReadError",
    "InvalidPointError",
    "InvalidSizeError",
    "NonFiniteImageError",
    "SpectralignError",
    "SpectralignWarning",
    "WindowOutsideImageError",
    "__version__",
]
