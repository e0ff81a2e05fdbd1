"""The render kernel: one tile into a chunk's running blend, with the
compiled loop of :mod:`spectralign.render.compiled` where numba is there."""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from types import ModuleType

import numpy as np

__all__ = ["accumulate", "backend", "compiled_loop"]


@lru_cache(maxsize=1)
def backend() -> str:
    """``"numba"`` when the render loop can be compiled, else ``"numpy"``."""
    return "numba" if importlib.util.find_spec("numba") is not None else "numpy"


@lru_cache(maxsize=1)
def compiled_loop() -> ModuleType | None:
    """The compiled render loop's module, importing numba on the first call;
    None where numba is not installed."""
    if backend() != "numba":
        return None
    return importlib.import_module("spectralign.render.compiled")


_METHOD_CODES = {"mean": 0, "max": 1, "first": 2, "last": 3}


def accumulate(acc: np.ndarray, cover: np.ndarray, x0: float, y0: float, inverse: np.ndarray,
               sub: np.ndarray, u0: int, v0: int, width: int, height: int, blend: float,
               order: int, method: str) -> bool:
    """Add one tile to a chunk's running blend, in one pass; False if the
    compiled loop is not available for this case (numba missing, or a
    spline order above 1), and the caller must blend with numpy.

    Canvas pixel ``[r, c]`` is model point ``(x0 + c, y0 + r)``; ``inverse``
    maps it to tile point ``(u, v)``; ``sub`` holds tile pixels
    ``[v0:, u0:]``.  Weights and values are those of
    :func:`spectralign.render.blend.feather` and bilinear (order 1) or nearest
    (order 0) sampling with edge pixels repeated.
    """
    loops = compiled_loop() if order <= 1 else None
    if loops is None:
        return False
    inverse = np.ascontiguousarray(inverse, np.float64)
    loops._accumulate_numba(acc, cover, float(x0), float(y0), inverse, sub, int(u0), int(v0),
                            int(width), int(height), float(blend), int(order),
                            _METHOD_CODES[method])
    return True
