"""What matching returns: one refined pair of points (Match), many
(Matches), and the trace of each iteration (Iteration): values that
unpack as the README promises (p, p_ = matcher.refine(...)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class Iteration:
    """What one refinement step measured.

    Attributes
    ----------
    shift : (2,) float array
        ``(dx, dy)`` in pixels: how far the match of the first point lay
        from the second point at this step.
    peakwidth : (2,) float array
        ``(sx, sy)`` width of the correlation peak in pixels.
    snr : float
        Peak signal-to-noise ratio.
    """

    shift: np.ndarray
    peakwidth: np.ndarray
    snr: float


@dataclass(frozen=True)
class Match:
    """Refined matching points and how much to trust them.

    Unpacks as ``p, p_ = match``.  ``p`` and ``p_`` are numpy arrays, so
    ``p + (dx, dy)`` works.

    Attributes
    ----------
    p, p_ : (2,) float arrays
        The refined points ``(x, y)`` in the first and second image.
    shift : (2,) float array
        ``(dx, dy)`` found in the last iteration; a large last shift (next
        to the window size) means the refinement did not converge.
    peakwidth : (2,) float array
        ``(sx, sy)`` width of the correlation peak in the last iteration;
        uncommonly wide peaks are a bad sign.
    snr : float
        Signal-to-noise ratio of the correlation peak in the last
        iteration.  Below about 5 to 6 the match is no better than chance
        (windows that do not overlap give about 3 to 5); 0 means a window
        had no texture at all or, with the SNR weighting, that no frequency
        carried signal above the noise (pure noise).
    niters : int
        Number of iterations performed.
    history : tuple of Iteration
        Per-iteration shift, peak width and SNR.
    """

    p: np.ndarray
    p_: np.ndarray
    shift: np.ndarray
    peakwidth: np.ndarray
    snr: float
    niters: int
    history: tuple[Iteration, ...] = field(repr=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.p
        yield self.p_

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> np.ndarray:
        return (self.p, self.p_)[i]

    @property
    def shifts(self) -> list[np.ndarray]:
        """Shift of each iteration."""
        return [it.shift for it in self.history]

    @property
    def snrs(self) -> list[float]:
        """SNR of each iteration."""
        return [it.snr for it in self.history]

    @property
    def peakwidths(self) -> list[np.ndarray]:
        """Peak width of each iteration."""
        return [it.peakwidth for it in self.history]

    @property
    def dists(self) -> list[float]:
        """Euclidean length of the shift of each iteration."""
        return [float(np.hypot(*s)) for s in self.shifts]

    @property
    def dist(self) -> float:
        """Euclidean length of the last shift."""
        return float(np.hypot(*self.shift))

    @property
    def totaldist(self) -> float:
        """Euclidean length of the sum of all shifts."""
        return float(np.hypot(*np.sum(self.shifts, axis=0)))


@dataclass(frozen=True)
class Matches:
    """Results of :meth:`Matcher.refine_many` for N point pairs.

    Unpacks as ``P, P_ = matches``; ``matches[i]`` is the :class:`Match`
    of pair ``i``.

    Attributes
    ----------
    p, p_ : (N, 2) float arrays
        Refined points ``(x, y)``.
    shift, peakwidth : (N, 2) float arrays
        As in :class:`Match`, for the last iteration of each pair.
    snr : (N,) float array
    niters : (N,) int array
    shifts : (K, N, 2) float array
        Shift of every iteration (NaN after a pair stopped early).
    snrs : (K, N) float array
    peakwidths : (K, N, 2) float array
    """

    p: np.ndarray
    p_: np.ndarray
    shift: np.ndarray
    peakwidth: np.ndarray
    snr: np.ndarray
    niters: np.ndarray
    shifts: np.ndarray = field(repr=False)
    snrs: np.ndarray = field(repr=False)
    peakwidths: np.ndarray = field(repr=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.p
        yield self.p_

    def __len__(self) -> int:
        return len(self.p)

    def __getitem__(self, i: int) -> Match:
        n = int(self.niters[i])
        history = tuple(Iteration(self.shifts[k, i], self.peakwidths[k, i], float(self.snrs[k, i]))
                        for k in range(n))
        return Match(self.p[i], self.p_[i], self.shift[i], self.peakwidth[i],
                     float(self.snr[i]), n, history)
