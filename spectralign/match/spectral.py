"""Pure maths of spectral matching: apodization, whitening, subpixel peaks.

Every function here takes arrays and returns arrays; none does IO or keeps
state (the apodization window cache returns read-only arrays).  Arrays are
in numpy order: a window stack is ``(B, H, W)`` and shifts are ``(dy, dx)``.

The method follows SWiFT-IR (Wetzel et al. 2016): apodize both windows,
form the cross-power spectrum, whiten it partially (multiply by its
magnitude to a negative power), transform back and locate the peak.  The
subpixel peak is the maximum of the band-limited correlation surface, found
by Newton's method on its exact Fourier series -- the continuous limit of
the upsampled-DFT refinement of Guizar-Sicairos et al. (2008).

References
----------
.. [1] Wetzel AW et al. (2016) Registering large volume serial-section
   electron microscopy image sets for neural circuit reconstruction using
   FFT signal whitening. Proc. IEEE AIPR. doi:10.1109/AIPR.2016.8010595
.. [2] Guizar-Sicairos M, Thurman ST, Fienup JR (2008) Efficient subpixel
   image registration algorithms. Opt. Lett. 33:156-158.
   doi:10.1364/OL.33.000156
.. [3] Knapp CH, Carter GC (1976) The generalized correlation method for
   estimation of time delay. IEEE Trans. ASSP 24:320-327.
   doi:10.1109/TASSP.1976.1162830
.. [4] Schraudolph NN (1999) A fast, compact approximation of the
   exponential function. Neural Comput. 11:853-862.
   doi:10.1162/089976699300016467
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "apodization_window",
    "apodize_stack",
    "textureless_windows",
    "whitened_cross_power",
    "radial_bins",
    "snr_weights",
    "snr_weighted_cross_power",
    "fast_power",
]

#: Fraction of each window edge over which the apodization falls to zero.
TAPER = 0.5
#: Radial frequency bins of the SNR weighting over [0, sqrt(2)/2] cycles/px.
RADIAL_BINS = 48
#: Frequencies above this (cycles/px) hold only noise in optics-blurred images.
NOISE_BAND = 0.4
#: Relative variance of the content mismatch between two windows (edges,
#: vignetting, interpolation): what limits a noiseless match.
MISMATCH = 0.01
#: Least noise of a window, relative to its mean signal power: what
#: interpolation, compression and small rotations leave uncorrelated even
#: where the camera adds no noise (keeps near-empty bins from being whitened).
DYNAMIC_RANGE = 1e-3
#: A bin holds signal only where its mean power beats the noise by this
#: many standard errors (``n / sqrt(count)``): pure noise gets no weight.
SIGNIFICANCE = 2.0


@lru_cache(maxsize=64)
def _taper_1d(n: int, taper: float) -> np.ndarray:
    """1-D Tukey (cosine-tapered) window of length ``n``, zero at both ends."""
    x = (np.arange(n) + 0.5) / n  # pixel centres in (0, 1)
    edge = max(taper / 2, 1e-9)
    ramp = np.clip(np.minimum(x, 1 - x) / edge, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)


@lru_cache(maxsize=64)
def apodization_window(shape: tuple[int, int], taper: float = TAPER) -> np.ndarray:
    """Separable apodization window for windows of ``shape = (H, W)``.

    Each axis is a Tukey window: flat in the middle, falling to zero with a
    raised cosine over ``taper / 2`` of the length at each end.

    Returns
    -------
    (H, W) float32 array, read-only
    """
    h, w = shape
    win = np.outer(_taper_1d(h, taper), _taper_1d(w, taper))
    win.setflags(write=False)
    return win


def apodize_stack(windows: np.ndarray, apod: np.ndarray, textureless: float = 1e-4) -> np.ndarray:
    """Apodize a stack of windows in place; report which are textureless.

    Each window becomes ``(x - m) * apod`` with ``m`` its apodization-weighted
    mean, so that its apodized form has zero mean and the window's shape
    does not correlate with itself.

    Parameters
    ----------
    windows : (B, H, W) float32 array
        Overwritten with the apodized windows.
    apod : (H, W) float32 array
        The apodization window.
    textureless : float
        A window whose weighted RMS contrast is at most ``textureless``
        times its mean level is reported as textureless (1e-4 is far below
        one grey level of 8- or 12-bit data, and far above float32
        rounding of the mean).

    Returns
    -------
    (B,) bool array
        True where a window has no texture to match.
    """
    b = windows.shape[0]
    flat = windows.reshape(b, -1)
    w = apod.reshape(-1)
    w_sum, w_sq = _window_sums(apod.shape)
    mean = (flat @ w) / w_sum
    flat -= mean[:, None].astype(np.float32)
    flat *= w
    energy = np.vecdot(flat, flat).astype(np.float64)
    return textureless_windows(mean, energy, w_sq, textureless)


def textureless_windows(mean: np.ndarray, energy: np.ndarray, w_sq: float,
                        textureless: float = 1e-4) -> np.ndarray:
    """Which apodized windows have no texture to match.

    A window is textureless when the RMS of its apodized, mean-subtracted
    form is at most ``textureless`` times its mean level (see
    :func:`apodize_stack`).

    Parameters
    ----------
    mean, energy : (B,) float arrays
        Apodization-weighted mean of each window, and the sum of squares of
        its apodized form.
    w_sq : float
        Sum of squares of the apodization window.
    """
    return np.asarray(energy) <= (textureless * np.asarray(mean)) ** 2 * w_sq


@lru_cache(maxsize=64)
def _window_sums(shape: tuple[int, int]) -> tuple[float, float]:
    w = apodization_window(shape).astype(np.float64)
    return float(w.sum()), float((w**2).sum())


def fast_power(x: np.ndarray, exponent: float, out: np.ndarray) -> np.ndarray:
    """``x ** exponent`` for non-negative float32 ``x``, to about 4 %.

    Uses the IEEE-754 exponent trick of Schraudolph (1999): the bit pattern
    of a float read as an integer is a scaled, offset ``log2``.  Spectral
    whitening only needs a positive weight that falls with magnitude, and
    any such real weight leaves the correlation peak where it is, so the
    approximation costs no accuracy and is several times faster than
    ``np.power``.  Zero maps to a large finite number.

    Parameters
    ----------
    x : float32 array
        Non-negative values.
    exponent : float
        The power, in [-1, 0].
    out : float32 array, same shape as ``x``
        Receives the result; may be ``x``.
    """
    if not -1.0 <= exponent <= 0.0:
        raise ValueError(f"Expected an exponent in [-1, 0]. Got {exponent} instead.")
    bits = x.view(np.int32).astype(np.float32)
    bits *= np.float32(exponent)
    bits += np.float32((1.0 - exponent) * (127 << 23))
    out.view(np.int32)[...] = bits
    return out


def whitened_cross_power(s1: np.ndarray, s2: np.ndarray, exponent: float,
                         scratch: np.ndarray, noise_floor: float = 0.0) -> np.ndarray:
    """Partially whitened cross-power spectrum, written over ``s2``.

    Computes ``X = s1 * conj(s2)`` and multiplies it by ``|X| ** exponent``
    (``exponent = -1`` is phase correlation, ``0`` plain correlation).
    With ``noise_floor > 0`` the weight is also multiplied by the
    Wiener-style coherence factor ``|X|^2 / (|X|^2 + nu^2)``, where ``nu``
    is ``noise_floor`` times the mean magnitude of the highest vertical
    frequencies (the rows within 1/8 of Nyquist on either side).  Where the
    cross-power is no stronger than that floor the factor fades it out, so
    whitening does not amplify noise (compare the maximum-likelihood weighting of generalized
    cross-correlation, Knapp and Carter 1976, doi:10.1109/TASSP.1976.1162830).

    Parameters
    ----------
    s1, s2 : (B, H, M) complex64 arrays
        Spectra of the apodized windows; ``s2`` is overwritten with ``X``.
    exponent : float
        Whitening exponent on the magnitude, in [-1, 0]; usually -0.65.
    scratch : (B, H, M) float32 array
        Work space.
    noise_floor : float
        Multiple of the high-frequency mean magnitude taken as the noise
        floor; 0 turns the coherence factor off.

    Returns
    -------
    (B, H, M) complex64 array
        ``s2``, now holding the weighted cross-power.
    """
    np.conjugate(s2, out=s2)
    s2 *= s1
    if exponent == 0 and noise_floor <= 0:
        return s2
    np.abs(s2, out=scratch)
    if noise_floor > 0:
        h = scratch.shape[1]
        q = max(h // 8, 1)
        nu = noise_floor * scratch[:, max(h // 2 - q, 0):h // 2 + q + 1].mean(axis=(1, 2))
        power = np.square(scratch)
        floor = (nu.astype(np.float32) ** 2 + np.float32(1e-30))[:, None, None]
        np.divide(power, power + floor, out=power)
    fast_power(scratch, exponent, scratch)
    if noise_floor > 0:
        scratch *= power
    s2 *= scratch
    return s2


@lru_cache(maxsize=64)
def radial_bins(shape: tuple[int, int], bins: int = RADIAL_BINS,
                noise_band: float = NOISE_BAND) -> tuple[np.ndarray, np.ndarray, int]:
    """Radial frequency bin of every half-spectrum coefficient.

    Parameters
    ----------
    shape : (H, W)
        Window shape; the half spectrum is ``(H, W // 2 + 1)``.

    Returns
    -------
    index : (H, W // 2 + 1) int32 array, read-only
        Bin of each coefficient: ``|f|`` in cycles/px (``f = (fy, fx)``)
        cut into ``bins`` equal bins over ``[0, sqrt(2) / 2]``.
    counts : (bins,) float64 array, read-only
        Coefficients per bin.
    first_noise : int
        First bin whose frequencies all exceed ``noise_band``.
    """
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = (np.arange(w // 2 + 1) / w)[None, :]
    top = np.sqrt(0.5) * (1 + 1e-9)
    index = np.minimum((np.hypot(fy, fx) / top * bins).astype(np.int32), bins - 1)
    counts = np.bincount(index.ravel(), minlength=bins).astype(np.float64)
    first_noise = min(int(np.ceil(noise_band / top * bins)), bins - 1)
    for a in (index, counts):
        a.setflags(write=False)
    return index, counts, first_noise


def snr_weights(power1: np.ndarray, power2: np.ndarray, cross: np.ndarray, counts: np.ndarray,
                first_noise: int, mismatch: float = MISMATCH,
                dynamic_range: float = DYNAMIC_RANGE,
                significance: float = SIGNIFICANCE) -> np.ndarray:
    """Weight of each radial frequency bin for one pair of windows.

    The noise of a camera is white, and above the optics' cut-off (bins
    ``first_noise`` and up) nearly all the power is noise: each window's
    noise level ``n`` is the mean power there less the part the two windows
    share: ``X = max(Re sum(A conj(B)), 0)`` over those bins, the shared
    power of windows already aligned, times the band's coherence ``X^2 /
    (sum|A|^2 sum|B|^2)``.  Noise, whose phases are random, shares nothing;
    windows still far apart share little, so their noise is overestimated,
    which is safe; sharp content, once aligned, is not taken for noise.
    ``n`` is at least ``dynamic_range`` times the mean signal power over
    all frequencies.  A bin's signal is its mean power above the noise and
    its standard error, ``S = max(P - n (1 + significance / sqrt(count)),
    0)``, so that pure noise gets no weight at all.  The shared signal ``Ps
    = sqrt(S1 S2)`` and the noise give the maximum-likelihood weight of
    generalized cross-correlation (Knapp and Carter 1976), with a floor on
    the variance for the content the two windows do not share:

        ``w = Ps / (Ps (n1 + n2) + n1 n2 + mismatch Ps^2)``.

    Bins that hold only noise get no weight; strong bins are whitened
    (``w ~ 1 / (mismatch Ps)``), weak ones weighted by their SNR.  The
    lowest bin (periods longer than about 70 px) also holds the tiles'
    shading (vignetting, uneven illumination, gain), which can differ
    between two tiles far more than ``mismatch`` allows and, where the
    detail is faint, would decide the match: its mismatch is read off its
    own coherence ``g2 = max(Re sum(A conj(B)), 0)^2 / (sum|A|^2
    sum|B|^2)``, as ``max(mismatch, (1 - g2) / g2)`` (so large content the
    windows share keeps its weight once they are aligned).

    Parameters
    ----------
    power1, power2 : (bins,) float arrays
        Summed power ``|A|^2``, ``|B|^2`` of each bin.
    cross : (bins,) float array
        Summed ``Re(A conj(B))`` of each bin.
    counts : (bins,) float array
        Coefficients per bin (:func:`radial_bins`).
    first_noise : int
    mismatch, dynamic_range, significance : float

    Returns
    -------
    (bins,) float64 array
        Zero where a bin has no shared signal above the noise.
    """
    def coherence(x, p1, p2):  # g2 = max(x, 0)^2 / (p1 p2)
        return max(x, 0.0) ** 2 / max(p1 * p2, 1e-300)

    cnt = np.maximum(counts, 1)
    tail = max(counts[first_noise:].sum(), 1)
    band1 = power1[first_noise:].sum()
    band2 = power2[first_noise:].sum()
    shared = max(cross[first_noise:].sum(), 0.0)  # less it times the band's coherence
    shared *= coherence(shared, band1, band2)
    n1 = max(band1 - shared, 0.0) / tail
    n2 = max(band2 - shared, 0.0) / tail
    margin = 1 + significance / np.sqrt(cnt)
    s1 = np.maximum(power1 / cnt - n1 * margin, 0)
    s2 = np.maximum(power2 / cnt - n2 * margin, 0)
    total = cnt.sum()
    n1 = max(n1, dynamic_range * (s1 * cnt).sum() / total)
    n2 = max(n2, dynamic_range * (s2 * cnt).sum() / total)
    ps = np.sqrt(s1 * s2)
    # the lowest bin: its own coherence sets its mismatch (the tiles' shading)
    g2 = coherence(cross[0], power1[0], power2[0])
    mm = np.full(len(ps), mismatch)
    mm[0] = max(mismatch, (1 - g2) / g2) if g2 > 0 else np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = ps * (n1 + n2) + n1 * n2 + mm * ps**2  # inf * 0 -> NaN where ps = 0
        return np.where(ps > 0, ps / np.where(denom > 0, denom, 1.0), 0.0)


def snr_weighted_cross_power(s1: np.ndarray, s2: np.ndarray, shape: tuple[int, int],
                             mismatch: float = MISMATCH) -> np.ndarray:
    """Cross-power spectrum weighted by each frequency's SNR, over ``s2``.

    Computes ``X = s1 * conj(s2)`` and multiplies it by
    :func:`snr_weights` of its radial bins, estimated for each window pair
    from the two spectra themselves: what is signal and what is noise is
    read off each pair, so blurred, noisy, JPEG or sharp content each get
    the weighting that suits them.

    Parameters
    ----------
    s1, s2 : (B, H, W // 2 + 1) complex64 arrays
        Half spectra of the apodized windows; ``s2`` is overwritten.
    shape : (H, W)
        The windows' shape.
    mismatch : float
        See :func:`snr_weights`.

    Returns
    -------
    (B, H, W // 2 + 1) complex64 array
        ``s2``, now holding the weighted cross-power.
    """
    index, counts, first_noise = radial_bins(tuple(shape))
    bins = len(counts)
    flat = index.ravel()
    p1 = np.abs(s1) ** 2
    p2 = np.abs(s2) ** 2
    np.conjugate(s2, out=s2)
    s2 *= s1
    for k in range(len(s1)):
        wt = snr_weights(np.bincount(flat, p1[k].ravel().astype(np.float64), bins),
                         np.bincount(flat, p2[k].ravel().astype(np.float64), bins),
                         np.bincount(flat, s2[k].real.ravel().astype(np.float64), bins),
                         counts, first_noise, mismatch)
        s2[k] *= wt.astype(np.float32)[index]
    return s2


