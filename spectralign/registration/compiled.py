"""The compiled loops of registration (numba).

One Gauss-Newton step of
:func:`~spectralign.registration.direct.refine_direct` fused into a single
pass over the valid pixels: sample the cubic B-spline of moving's
coefficients (mirrored at the edges as :func:`scipy.ndimage.spline_filter`
with ``mode="mirror"`` makes them), differentiate, and add each pixel's row
to the normal equations, where numpy would make a dozen full-size arrays;
cubic convolution (Keys 1981) through an affine map, for the placements,
the windows and the final correlation; the fill of masked pixels read back
from a grid of blocks; the masked correlation's products of spectra and its
coefficient from the sums (:func:`~spectralign.registration.masked.masked_ncc`);
the rival check's peak search; and the windows' centres.
``tests/test_register.py`` checks each against SciPy and numpy."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["cubic_sample", "gauss_newton_rows", "bilinear_points",
           "fill_from_blocks", "frame_mask", "ncc_products", "ncc_coefficient", "rival_peak",
           "window_centres"]

# reassociation lets the sums vectorize; no "nnan"/"ninf"
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")

#: Codes of the models' displacement fields (``direct._basis``).
MODEL_CODES = {"translation": 0, "rigid": 1, "similarity": 2, "affine": 3}


@_jit
def _mirror(i, n):  # pragma: no cover
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = abs(i) % period
    return period - i if i > n - 1 else i


@_jit
def _index(i, n):  # pragma: no cover
    return i if 0 <= i < n else _mirror(i, n)


@_jit
def _row(r, i0, i1, i2, i3, w0, w1, w2, w3, d0, d1, d2, d3):  # pragma: no cover
    # one row of taps: the value and the derivative along it
    a0, a1, a2, a3 = r[i0], r[i1], r[i2], r[i3]
    return w0 * a0 + w1 * a1 + w2 * a2 + w3 * a3, d0 * a0 + d1 * a1 + d2 * a2 + d3 * a3


@_jit
def _sample(coef, u, v):  # pragma: no cover
    # value and derivatives (d/du, d/dv) of the cubic B-spline at (u, v):
    # four taps a side, floor - 1 .. floor + 2, mirrored past the edges
    h, w = coef.shape
    fu = np.floor(u)
    fv = np.floor(v)
    t = u - fu
    s = 1.0 - t
    t2 = t * t
    wx0, wx1 = s * s * s / 6.0, (3.0 * t2 * t - 6.0 * t2 + 4.0) / 6.0
    wx2, wx3 = (-3.0 * t2 * t + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, t2 * t / 6.0
    dx0, dx1, dx2, dx3 = -0.5 * s * s, 1.5 * t2 - 2.0 * t, -1.5 * t2 + t + 0.5, 0.5 * t2
    t = v - fv
    s = 1.0 - t
    t2 = t * t
    wy0, wy1 = s * s * s / 6.0, (3.0 * t2 * t - 6.0 * t2 + 4.0) / 6.0
    wy2, wy3 = (-3.0 * t2 * t + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, t2 * t / 6.0
    dy0, dy1, dy2, dy3 = -0.5 * s * s, 1.5 * t2 - 2.0 * t, -1.5 * t2 + t + 0.5, 0.5 * t2
    x0 = int(fu) - 1
    y0 = int(fv) - 1
    if x0 >= 0 and x0 + 3 < w:
        i0, i1, i2, i3 = x0, x0 + 1, x0 + 2, x0 + 3
    else:
        i0, i1, i2, i3 = _index(x0, w), _index(x0 + 1, w), _index(x0 + 2, w), _index(x0 + 3, w)
    if y0 >= 0 and y0 + 3 < h:
        j0, j1, j2, j3 = y0, y0 + 1, y0 + 2, y0 + 3
    else:
        j0, j1, j2, j3 = _index(y0, h), _index(y0 + 1, h), _index(y0 + 2, h), _index(y0 + 3, h)
    v0, d0 = _row(coef[j0], i0, i1, i2, i3, wx0, wx1, wx2, wx3, dx0, dx1, dx2, dx3)
    v1, d1 = _row(coef[j1], i0, i1, i2, i3, wx0, wx1, wx2, wx3, dx0, dx1, dx2, dx3)
    v2, d2 = _row(coef[j2], i0, i1, i2, i3, wx0, wx1, wx2, wx3, dx0, dx1, dx2, dx3)
    v3, d3 = _row(coef[j3], i0, i1, i2, i3, wx0, wx1, wx2, wx3, dx0, dx1, dx2, dx3)
    val = wy0 * v0 + wy1 * v1 + wy2 * v2 + wy3 * v3
    du = wy0 * d0 + wy1 * d1 + wy2 * d2 + wy3 * d3
    dv = dy0 * v0 + dy1 * v1 + dy2 * v2 + dy3 * v3
    return val, du, dv


@numba.njit(cache=True, nogil=True, error_model="numpy")
def frame_mask(inv, mh, mw, margin, out):  # pragma: no cover
    """``out[y, x]`` = whether ``inv @ (x, y, 1)`` lies in a frame of ``mh
    x mw`` px, ``margin`` px in from its edges (the same sums as numpy's
    in ``register._warp_mask``, in the same order, without fast-math)."""
    h, w = out.shape
    lo = margin - 1e-3
    hu = mw - 1 - margin + 1e-3
    hv = mh - 1 - margin + 1e-3
    for y in range(h):
        bu = inv[0, 1] * y + inv[0, 2]
        bv = inv[1, 1] * y + inv[1, 2]
        for x in range(w):
            u = inv[0, 0] * x + bu
            v = inv[1, 0] * x + bv
            out[y, x] = (u >= lo) and (u <= hu) and (v >= lo) and (v <= hv)


@_jit
def _taps(img, u, v, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3):  # pragma: no cover
    # the 4 x 4 taps from (floor(u) - 1, floor(v) - 1), weighed; mirrored
    # past the edges
    h, w = img.shape
    x0 = int(np.floor(u)) - 1
    y0 = int(np.floor(v)) - 1
    if x0 >= 0 and x0 + 3 < w and y0 >= 0 and y0 + 3 < h:
        i0, i1, i2, i3 = x0, x0 + 1, x0 + 2, x0 + 3
        j0, j1, j2, j3 = y0, y0 + 1, y0 + 2, y0 + 3
    else:
        i0, i1, i2, i3 = _index(x0, w), _index(x0 + 1, w), _index(x0 + 2, w), _index(x0 + 3, w)
        j0, j1, j2, j3 = _index(y0, h), _index(y0 + 1, h), _index(y0 + 2, h), _index(y0 + 3, h)
    acc = 0.0
    r = img[j0]
    acc += wy0 * (wx0 * r[i0] + wx1 * r[i1] + wx2 * r[i2] + wx3 * r[i3])
    r = img[j1]
    acc += wy1 * (wx0 * r[i0] + wx1 * r[i1] + wx2 * r[i2] + wx3 * r[i3])
    r = img[j2]
    acc += wy2 * (wx0 * r[i0] + wx1 * r[i1] + wx2 * r[i2] + wx3 * r[i3])
    r = img[j3]
    acc += wy3 * (wx0 * r[i0] + wx1 * r[i1] + wx2 * r[i2] + wx3 * r[i3])
    return acc


@_jit
def _keys(t):  # pragma: no cover
    # the cubic convolution kernel's four weights (Keys 1981, a = -1/2) at
    # fraction t: taps floor - 1 .. floor + 2
    t2 = t * t
    t3 = t2 * t
    return (-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1.0,
            -1.5 * t3 + 2.0 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2)


@_jit
def cubic_sample(img, inv, out):  # pragma: no cover
    """``out[y, x]`` = ``img`` at ``inv @ (x, y, 1)`` by cubic convolution
    (Keys 1981): a cubic interpolation read off the pixels themselves,
    with no spline prefilter over the whole image; taps past the edges
    are mirrored."""
    h, w = out.shape
    for y in range(h):
        bu = inv[0, 1] * y + inv[0, 2]
        bv = inv[1, 1] * y + inv[1, 2]
        for x in range(w):
            u = inv[0, 0] * x + bu
            v = inv[1, 0] * x + bv
            wx0, wx1, wx2, wx3 = _keys(u - np.floor(u))
            wy0, wy1, wy2, wy3 = _keys(v - np.floor(v))
            out[y, x] = _taps(img, u, v, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3)


@_jit
def gauss_newton_rows(coef, inv, xs, ys, fgx, fgy, centre_x, centre_y, scale, model, gain_c,
                      g0, fv, design, sums):  # pragma: no cover
    """One step's design matrix over the pixels ``(xs, ys)`` of fixed
    (values ``fv``, gradients ``fgx``, ``fgy``) against moving's spline
    ``coef`` through ``inv`` (fixed -> moving); a row per pixel.

    Columns: the model's displacement fields (see ``direct._basis``) times
    the averaged gradients (both images', fixed's divided by the gain
    ``gain_c`` . surface), times the gain's shape (gain / ``g0``); then
    moving's value times the six terms of a quadratic surface; then one.
    Pixels whose sample falls outside moving get a row of zeros.  ``sums``
    gets count, sum f, sum m, sum f f, sum m m, sum f m over the others."""
    mh, mw = coef.shape
    eps = 1e-3
    k = (2, 3, 4, 6)[model]
    sums[:] = 0.0
    for i in range(xs.shape[0]):
        x = xs[i]
        y = ys[i]
        u = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
        v = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
        row = design[i]
        if u < -eps or u > mw - 1 + eps or v < -eps or v > mh - 1 + eps:
            row[:] = 0.0
            continue
        m, du, dv = _sample(coef, u, v)
        # moving's gradient in fixed's frame
        gxm = du * inv[0, 0] + dv * inv[1, 0]
        gym = du * inv[0, 1] + dv * inv[1, 1]
        xn = (x - centre_x) / scale
        yn = (y - centre_y) / scale
        gain = (gain_c[0] + gain_c[1] * xn + gain_c[2] * yn + gain_c[3] * xn * xn
                + gain_c[4] * xn * yn + gain_c[5] * yn * yn)
        shape = gain / g0
        gx = 0.5 * (gxm + fgx[i] / gain) * shape
        gy = 0.5 * (gym + fgy[i] / gain) * shape
        row[0] = gx
        row[1] = gy
        if model == 1:
            row[2] = -gx * yn + gy * xn
        elif model == 2:
            row[2] = -gx * yn + gy * xn
            row[3] = gx * xn + gy * yn
        elif model == 3:
            row[2] = gx * xn
            row[3] = gx * yn
            row[4] = gy * xn
            row[5] = gy * yn
        row[k] = m
        row[k + 1] = m * xn
        row[k + 2] = m * yn
        row[k + 3] = m * xn * xn
        row[k + 4] = m * xn * yn
        row[k + 5] = m * yn * yn
        row[k + 6] = 1.0
        f = fv[i]
        sums[0] += 1.0
        sums[1] += f
        sums[2] += m
        sums[3] += f * f
        sums[4] += m * m
        sums[5] += f * m


@_jit
def bilinear_points(img, rows, cols, out):  # pragma: no cover
    """``out[i, j]`` = ``img`` bilinearly interpolated at ``(rows[i, j],
    cols[i, j])``; 0 where a point's four neighbours are not all inside."""
    h, w = img.shape
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            r = rows[i, j]
            c = cols[i, j]
            r0 = int(np.floor(r))
            c0 = int(np.floor(c))
            if r0 < 0 or c0 < 0 or r0 + 1 >= h or c0 + 1 >= w:
                out[i, j] = 0.0
                continue
            fr = r - r0
            fc = c - c0
            top = img[r0, c0] + fc * (img[r0, c0 + 1] - img[r0, c0])
            bottom = img[r0 + 1, c0] + fc * (img[r0 + 1, c0 + 1] - img[r0 + 1, c0])
            out[i, j] = top + fr * (bottom - top)


@_jit
def fill_from_blocks(img, mask, num, den, f, mean):  # pragma: no cover
    """Where ``mask`` is False, ``img`` = ``num / den`` read bilinearly
    from the grid of ``f x f`` blocks (block (i, j) centred on pixel
    ``f i + (f - 1) / 2``; clamped at the grid's edges), or ``mean``
    where ``den`` there is below 1e-3 (no valid pixel near)."""
    h, w = img.shape
    gh, gw = num.shape
    half = (f - 1) / 2.0
    for y in range(h):
        v = (y - half) / f
        if v < 0.0:
            v = 0.0
        if v > gh - 1:
            v = gh - 1.0
        r0 = min(int(v), gh - 2) if gh > 1 else 0
        r1 = min(r0 + 1, gh - 1)
        fr = v - r0
        for x in range(w):
            if mask[y, x]:
                continue
            u = (x - half) / f
            if u < 0.0:
                u = 0.0
            if u > gw - 1:
                u = gw - 1.0
            c0 = min(int(u), gw - 2) if gw > 1 else 0
            c1 = min(c0 + 1, gw - 1)
            fc = u - c0
            d = ((1 - fr) * ((1 - fc) * den[r0, c0] + fc * den[r0, c1])
                 + fr * ((1 - fc) * den[r1, c0] + fc * den[r1, c1]))
            if d <= 1e-3:
                img[y, x] = mean
                continue
            n = ((1 - fr) * ((1 - fc) * num[r0, c0] + fc * num[r0, c1])
                 + fr * ((1 - fc) * num[r1, c0] + fc * num[r1, c1]))
            img[y, x] = n / d


@_jit
def ncc_products(fixed_spectra, moving_spectra, py, px, out):  # pragma: no cover
    """The products of spectra whose inverse transforms are the masked
    correlation's sums.  ``fixed_spectra``: the transforms of fixed's mask
    ``M``, values ``F`` and squares ``F2``; ``moving_spectra``: of moving's
    mask ``N``, values ``G`` and squares ``G2``.  ``out[0:6]`` = ``M N*,
    F N*, M G*, F2 N*, M G2*, F G*`` (count, sum of f, of g, of f^2, of
    g^2, of f g).  Where ``out`` holds more, the same for moving turned by
    half a turn, whose conjugate transform is the transform times the
    phase ``py[i] px[j]``: ``out[6]`` its sum of f g, with 9 slots or more
    ``out[7:9]`` its sums of f and f^2, and with 12 ``out[9:12]`` its
    count, sum of g and of g^2."""
    k, h, w = out.shape
    for i in range(h):
        for j in range(w):
            m, f, f2 = fixed_spectra[0, i, j], fixed_spectra[1, i, j], fixed_spectra[2, i, j]
            n, g, g2 = moving_spectra[0, i, j], moving_spectra[1, i, j], moving_spectra[2, i, j]
            nc, gc, g2c = np.conj(n), np.conj(g), np.conj(g2)
            out[0, i, j] = m * nc
            out[1, i, j] = f * nc
            out[2, i, j] = m * gc
            out[3, i, j] = f2 * nc
            out[4, i, j] = m * g2c
            out[5, i, j] = f * gc
            if k > 6:
                phase = py[i] * px[j]
                tn, tg = phase * n, phase * g
                out[6, i, j] = f * tg
                if k > 7:
                    out[7, i, j] = f * tn
                    out[8, i, j] = f2 * tn
                if k > 9:
                    out[9, i, j] = m * tn
                    out[10, i, j] = m * tg
                    out[11, i, j] = m * (phase * g2)


@_jit
def ncc_coefficient(count, sf, sg, sff, sgg, sfg, mirror, shift_y, shift_x, h2, w2,
                    min_overlap, ncc, counts):  # pragma: no cover
    """The masked correlation coefficient from its sums (full transforms'
    frames, shift 0 at index 0): ``ncc[v, u]`` and ``counts[v, u]`` at
    shift ``(u - w2 + 1, v - h2 + 1)`` (numpy's ``roll`` by ``(h2 - 1, w2
    - 1)``), clipped to [-1, 1], 0 where fewer than ``min_overlap`` pixels
    (or 2) are valid in both or either side is flat (variance below 1e-6
    of the largest over the shifts).  With ``mirror``, ``count``, ``sg``
    and ``sgg`` are read as ``roll(a[::-1, ::-1], (shift_y, shift_x))``."""
    h, w = sf.shape
    oh, ow = ncc.shape
    need = max(min_overlap, 2.0)
    # where each row and column of the output reads, and its mirror
    rows, cols = np.empty(oh, np.int64), np.empty(ow, np.int64)
    mrows, mcols = np.empty(oh, np.int64), np.empty(ow, np.int64)
    for v in range(oh):
        rows[v] = (v - (h2 - 1)) % h
        mrows[v] = h - 1 - (rows[v] - shift_y) % h if mirror else rows[v]
    for u in range(ow):
        cols[u] = (u - (w2 - 1)) % w
        mcols[u] = w - 1 - (cols[u] - shift_x) % w if mirror else cols[u]
    var_f = np.empty((oh, ow), np.float32)
    var_g = np.empty((oh, ow), np.float32)
    top = 0.0
    for v in range(oh):
        i, ci = rows[v], mrows[v]
        for u in range(ow):
            j, cj = cols[u], mcols[u]
            c = np.round(count[ci, cj])
            counts[v, u] = c
            if c < need:
                c = 1.0
            a, b = sf[i, j], sg[ci, cj]
            vf = sff[i, j] - a * a / c
            vg = sgg[ci, cj] - b * b / c
            var_f[v, u], var_g[v, u] = vf, vg
            top = max(top, vf, vg)
            ncc[v, u] = sfg[i, j] - a * b / c
    floor = 1e-6 * max(top, 1e-30)
    for v in range(oh):
        for u in range(ow):
            vf, vg = var_f[v, u], var_g[v, u]
            if counts[v, u] >= need and vf > floor and vg > floor:
                r = ncc[v, u] / (np.sqrt(vf) * np.sqrt(vg))
                ncc[v, u] = min(max(r, -1.0), 1.0)
            else:
                ncc[v, u] = 0.0


@_jit
def rival_peak(corr, near, half):  # pragma: no cover
    """In a cyclic correlation ``corr`` (shift 0 at index 0): the largest
    value within 1 px of shift 0, and the highest positive maximum of its
    ``2 half + 1`` square neighbourhood (wrapped) more than ``near`` px
    from shift 0, as ``(at, value, dx, dy)``; ``value`` 0 where there is
    none."""
    h, w = corr.shape
    at = -np.inf
    for dy in range(-1, 2):
        for dx in range(-1, 2):
            at = max(at, corr[dy % h, dx % w])
    best, bx, by = 0.0, 0, 0
    for i in range(h):
        sy = (i + h // 2) % h - h // 2
        for j in range(w):
            v = corr[i, j]
            if v <= best:
                continue
            sx = (j + w // 2) % w - w // 2
            if sx * sx + sy * sy <= near * near:
                continue
            peak = True
            for a in range(-half, half + 1):
                row = (i + a) % h
                for b in range(-half, half + 1):
                    if corr[row, (j + b) % w] > v:
                        peak = False
                        break
                if not peak:
                    break
            if peak:
                best, bx, by = v, sx, sy
    return at, best, bx, by


@_jit
def window_centres(valid, size, sx, sy, share):  # pragma: no cover
    """Centres ``(x, y)`` of the ``size`` px windows at steps of ``sx``
    and ``sy`` px (the leftover margin spread evenly each way) whose
    pixels are valid for at least ``share`` of them."""
    h, w = valid.shape
    integral = np.zeros((h + 1, w + 1), np.int32)
    for i in range(h):
        run = 0
        for j in range(w):
            run += valid[i, j]
            integral[i + 1, j + 1] = integral[i, j + 1] + run
    nx, ny = (w - size) // sx + 1, (h - size) // sy + 1
    ox, oy = (w - size - (nx - 1) * sx) // 2, (h - size - (ny - 1) * sy) // 2
    out = np.empty((nx * ny, 2), np.float64)
    k = 0
    for a in range(ny):
        y0 = oy + a * sy
        for b in range(nx):
            x0 = ox + b * sx
            count = (integral[y0 + size, x0 + size] - integral[y0, x0 + size]
                     - integral[y0 + size, x0] + integral[y0, x0])
            if count >= share * size * size:
                out[k, 0] = x0 + size / 2
                out[k, 1] = y0 + size / 2
                k += 1
    return out[:k].copy()
