"""Affine: a 2 x 3 transform from tile (x, y) to model (x, y)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage

from .errors import InvalidSizeError

__all__ = ["Affine"]


class Affine:
    """An affine map ``(x, y) -> A (x, y) + b`` between pixel coordinates.

    Stored as the 2 x 3 matrix ``[A | b]``.  Affines are immutable values.

    Parameters
    ----------
    matrix : array_like, optional
        ``(2, 3)`` ``[A | b]``, ``(3, 3)`` homogeneous (last row ``0 0 1``),
        or ``(2, 2)`` linear part; the identity if omitted.

    Raises
    ------
    ValueError
        If the matrix has another shape, is not finite, or is ``(3, 3)``
        with a last row other than ``0 0 1``.

    Examples
    --------
    >>> from spectralign import Affine
    >>> a = Affine.translator((10, 5)) @ Affine.rotator(np.pi / 2)
    >>> a((1, 0)).round(6).tolist()
    [10.0, 6.0]
    >>> (a @ a.inverse()).isclose(Affine())
    True
    """

    __slots__ = ("_m",)

    def __init__(self, matrix: Any = None):
        if matrix is None:
            m = np.eye(2, 3)
        else:
            arr = np.asarray(matrix, dtype=np.float64)
            if arr.shape == (2, 3):
                m = arr.copy()
            elif arr.shape == (3, 3):
                if not np.allclose(arr[2], (0.0, 0.0, 1.0), rtol=0, atol=1e-9):
                    raise ValueError(
                        f"Expected a homogeneous affine matrix with last row (0, 0, 1). "
                        f"Got last row {arr[2].tolist()} instead; a projective "
                        f"transform cannot be an Affine.")
                m = arr[:2].copy()
            elif arr.shape == (2, 2):
                m = np.hstack([arr, np.zeros((2, 1))])
            else:
                raise ValueError(
                    f"Expected an affine matrix of shape (2, 3), (3, 3) or (2, 2). "
                    f"Got shape {arr.shape} instead.")
            if not np.all(np.isfinite(m)):
                raise ValueError(f"Expected a finite affine matrix. Got {m.tolist()} instead.")
        m.setflags(write=False)
        self._m = m

    @classmethod
    def _trusted(cls, m: np.ndarray) -> "Affine":
        """An Affine on a fresh, finite (2, 3) float64 matrix, unchecked: the
        algebra below builds thousands of them in a registration."""
        a = object.__new__(cls)
        m.setflags(write=False)
        a._m = m
        return a

    # -- value behaviour ---------------------------------------------------

    @property
    def matrix(self) -> np.ndarray:
        """The read-only ``(2, 3)`` matrix ``[A | b]``."""
        return self._m

    @property
    def linear(self) -> np.ndarray:
        """The ``(2, 2)`` linear part ``A``."""
        return self._m[:, :2]

    def homogeneous(self) -> np.ndarray:
        """The ``(3, 3)`` homogeneous matrix."""
        return np.vstack([self._m, [0.0, 0.0, 1.0]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._m.astype(dtype) if dtype is not None else self._m.copy()

    def __getitem__(self, key: Any) -> Any:
        return self._m[key]

    def __repr__(self) -> str:
        (a, b, c), (d, e, f) = self._m.tolist()
        return f"Affine([[{a:.6g}, {b:.6g}, {c:.6g}], [{d:.6g}, {e:.6g}, {f:.6g}]])"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Affine) and bool(np.array_equal(self._m, other._m))

    def __hash__(self) -> int:
        # adding 0.0 turns -0.0 into 0.0, which == treats as equal
        return hash((self._m + 0.0).tobytes())

    def isclose(self, other: "Affine", atol: float = 1e-9) -> bool:
        """Whether two affines agree to ``atol`` in every matrix entry."""
        return bool(np.allclose(self._m, np.asarray(other)[:2], atol=atol, rtol=0))

    # -- algebra -----------------------------------------------------------

    def __matmul__(self, other: "Affine") -> "Affine":
        """Composition: ``(a @ b)(p) == a(b(p))``."""
        if not isinstance(other, Affine):
            return NotImplemented
        a, b = self._m, other._m
        m = a[:, :2] @ b
        m[:, 2] += a[:, 2]
        if not np.isfinite(m).all():
            raise ValueError(f"Expected a finite affine matrix. Got {m.tolist()} instead.")
        return Affine._trusted(m)

    def __call__(self, points: Any) -> np.ndarray:
        """Apply to one point ``(x, y)`` or to points of shape ``(N, 2)``."""
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1:] != (2,):
            raise ValueError(f"Expected points of shape (2,) or (N, 2). Got {p.shape} instead.")
        return p @ self.linear.T + self._m[:, 2]

    def __mul__(self, points: Any) -> np.ndarray:
        """``afm * xy`` applies the transform to points, as ``afm(xy)``."""
        return self(points)

    def inverse(self) -> "Affine":
        """The inverse transform (raises ``LinAlgError`` if singular)."""
        (a, b, c), (d, e, f) = self._m.tolist()
        det = a * e - b * d
        if det == 0 or not np.isfinite(det):
            raise np.linalg.LinAlgError("Singular matrix")
        ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
        m = np.array([[ia, ib, -(ia * c + ib * f)], [id_, ie, -(id_ * c + ie * f)]])
        if not np.isfinite(m).all():
            raise np.linalg.LinAlgError("Singular matrix")
        return Affine._trusted(m)

    def shifted(self, dxy: Any) -> "Affine":
        """This transform followed by a translation by ``dxy``."""
        return Affine.translator(dxy) @ self

    # -- constructors ------------------------------------------------------

    @staticmethod
    def translator(dxy: Any) -> "Affine":
        """Translation by ``dxy = (dx, dy)``."""
        dx, dy = np.asarray(dxy, dtype=np.float64).reshape(2)
        return Affine([[1.0, 0.0, dx], [0.0, 1.0, dy]])

    @staticmethod
    def rotator(phi: float, xy0: Any = (0, 0)) -> "Affine":
        """Rotation by ``phi`` radians about ``xy0``.

        Positive ``phi`` turns +x towards +y (clockwise on screen, where y
        points down).
        """
        c, s = np.cos(phi), np.sin(phi)
        x0, y0 = np.asarray(xy0, dtype=np.float64).reshape(2)
        return Affine([[c, -s, x0 - c * x0 + s * y0], [s, c, y0 - s * x0 - c * y0]])

    @staticmethod
    def scaler(s: float, xy0: Any = (0, 0)) -> "Affine":
        """Uniform scaling by ``s`` about ``xy0``."""
        x0, y0 = np.asarray(xy0, dtype=np.float64).reshape(2)
        return Affine([[s, 0.0, x0 - s * x0], [0.0, s, y0 - s * y0]])

    # -- properties ------------------------------------------------------

    def translation(self) -> np.ndarray:
        """The translation ``b`` (where the origin goes)."""
        return self._m[:, 2].copy()

    def magnification(self) -> float:
        """Geometric-mean scale ``sqrt(|det A|)``."""
        return float(np.sqrt(abs(np.linalg.det(self.linear))))

    def angle(self) -> float:
        """Rotation angle in radians of the closest rotation to ``A``
        (same sign convention as :meth:`rotator`)."""
        a = self.linear
        return float(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))

    # -- images ------------------------------------------------------------

    def apply(self, img: Any, rect: Any = None, *, order: int = 1, fill: float = 0.0) -> Any:
        """Warp an image into model space.

        Parameters
        ----------
        img : (H, W) array or Image
            The tile, in tile space.
        rect : (x0, y0, w, h), optional
            The model-space rectangle to render (default: ``(0, 0, W, H)``).
        order : int
            Spline interpolation order (1: bilinear).
        fill : float
            Value where no tile pixel lands.

        Returns
        -------
        Image
            ``out[y, x]`` is the tile at ``inverse()((x0 + x, y0 + y))``.
        """
        from .io.image import Image

        data = np.asarray(img, dtype=np.float32)
        if rect is None:
            rect = (0, 0, data.shape[1], data.shape[0])
        x0, y0, w, h = (float(v) for v in rect)
        if w < 1 or h < 1:
            raise InvalidSizeError(f"Expected a rectangle of positive size. Got {rect!r} instead.")
        inv = self.inverse()
        lin = inv.linear
        off = inv((x0, y0))
        # scipy works in (row, col): swap x and y.  "grid-constant" blends
        # with ``fill`` just beyond the edge, so that round-off in the
        # inverse (e.g. cos(pi / 2) != 0) cannot turn an edge row into fill.
        matrix = lin[::-1, ::-1]
        out = scipy.ndimage.affine_transform(
            data, matrix, offset=off[::-1], output_shape=(int(round(h)), int(round(w))),
            order=order, mode="grid-constant", cval=fill, prefilter=order > 1)
        return Image(out)
