"""spectralign: spectral stitching of microscopy tiles and serial sections.

Three steps, three classes: :class:`Matcher` finds matching points between
overlapping images, the :class:`Placement` places every tile in model space, and
``Renderer`` blends the tiles into one canvas.  :func:`stitch_grid` and
:func:`align_stack` run the three steps on a grid of tiles or a stack of
sections.
"""

from .affine import Affine
from .errors import (
    DisconnectedTileGraphError,
    EmptyCanvasError,
    ImageDimensionError,
    ImageNotFoundError,
    ImageReadError,
    InvalidMatchError,
    InvalidPointError,
    InvalidSizeError,
    LayoutError,
    MaskError,
    OutputFormatError,
    NoOverlapError,
    NoMatchesError,
    NoTilesError,
    NonFiniteImageError,
    SingularPlacementError,
    SpectralignError,
    SpectralignWarning,
    StoreExistsError,
    TileConfigError,
    TileShapeError,
    UnderdeterminedTileError,
    UnknownTileError,
    WindowOutsideImageError,
)
from .io.image import Image
from .match.matcher import WEIGHTINGS, Matcher, fast_size
from .match.results import Iteration, Match, Matches
from .pipelines.quality import Seam, seam_scores
from .place.placement import MODELS, Placement
from .place.result import DroppedMatch, PairFit, PlacementResult
from .render.renderer import Renderer
from .pipelines.grid import stitch_grid, stitch_sections
from .pipelines.montage import Montage, OverlapFit
from .pipelines.stack import Stack, align_stack
from .registration import Registration, register
from .io.tileconfig import TileEntry, read_tileconfig, write_tileconfig
from . import datasets

__version__ = "0.1.0"

__all__ = [
    "Affine",
    "Image",
    "Iteration",
    "Match",
    "Matcher",
    "Matches",
    "WEIGHTINGS",
    "Seam",
    "seam_scores",
    "fast_size",
    "MODELS",
    "Placement",
    "PlacementResult",
    "PairFit",
    "DroppedMatch",
    "Renderer",
    "stitch_grid",
    "stitch_sections",
    "Montage",
    "OverlapFit",
    "align_stack",
    "Stack",
    "register",
    "Registration",
    "read_tileconfig",
    "write_tileconfig",
    "TileEntry",
    "datasets",
    "LayoutError",
    "MaskError",
    "OutputFormatError",
    "NoOverlapError",
    "NoTilesError",
    "TileConfigError",
    "EmptyCanvasError",
    "StoreExistsError",
    "TileShapeError",
    "DisconnectedTileGraphError",
    "ImageDimensionError",
    "ImageNotFoundError",
    "ImageReadError",
    "InvalidMatchError",
    "InvalidPointError",
    "InvalidSizeError",
    "NoMatchesError",
    "NonFiniteImageError",
    "SingularPlacementError",
    "SpectralignError",
    "SpectralignWarning",
    "UnderdeterminedTileError",
    "UnknownTileError",
    "WindowOutsideImageError",
    "__version__",
]
