"""The compiled loops of matching (numba).

With :mod:`spectralign.render.compiled`, the only modules that import numba.
Each loop fuses passes that numpy would make one by one (cut and apodize;
weigh the cross-power; locate the peak) and reads each array once.
:mod:`spectralign.match.kernels` chooses between these loops and the
numpy maths of :mod:`spectralign.match.spectral`, which give the same numbers
to float32 rounding (``tests/test_kernels.py``).  The loops release the
GIL, so they run on several threads at once.
"""

from __future__ import annotations

import numba
import numpy as np

# reassociation lets sums vectorize; no "nnan"/"ninf": inputs may be zero
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_EDGE_EPS = 1e-6
_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")

@_jit
def _store_weighted(a1, a2, c, g):  # pragma: no cover
    # coefficient c of two float32 rows of complex spectra <- g * a1 conj(a2)
    re1, im1 = a1[2 * c], a1[2 * c + 1]
    re2, im2 = a2[2 * c], a2[2 * c + 1]
    xr = (re1 * re2 + im1 * im2) * g
    xi = (im1 * re2 - re1 * im2) * g
    a1[2 * c] = xr
    a1[2 * c + 1] = xi
    a2[2 * c] = xr
    a2[2 * c + 1] = xi

@_jit
def _apodize_numba(img, origins, fill, apod, out, w_sum):  # pragma: no cover
    n = origins.shape[0]
    h, w = apod.shape
    ih, iw = img.shape
    mean = np.empty(n)
    energy = np.empty(n)
    for k in range(n):
        ox, oy = origins[k, 0], origins[k, 1]
        if ox + w <= 0 or ox >= iw or oy + h <= 0 or oy >= ih:
            return mean, energy, k  # off the image: the caller raises
        dst = out[k]
        s = np.float32(0.0)
        if ox >= 0 and oy >= 0 and ox + w <= iw and oy + h <= ih:
            for r in range(h):  # copy, summing the apodization-weighted mean
                src = img[oy + r, ox:ox + w]
                s_row = np.float32(0.0)
                for c in range(w):
                    v = np.float32(src[c])
                    dst[r, c] = v
                    s_row += v * apod[r, c]
                s += s_row
        else:  # partly off the image: rows of fill, copy, fill
            c0 = min(max(-ox, 0), w)
            c1 = max(min(iw - ox, w), c0)
            if fill != fill:  # NaN: the mean of the window's part on the image
                t = 0.0
                for y in range(max(oy, 0), min(oy + h, ih)):
                    t_row = np.float32(0.0)
                    for c in range(c0, c1):
                        t_row += np.float32(img[y, ox + c])
                    t += t_row
                rows = min(oy + h, ih) - max(oy, 0)
                f = np.float32(t / max(rows * (c1 - c0), 1))
            else:
                f = np.float32(fill)
            for r in range(h):
                s_row = np.float32(0.0)
                y = oy + r
                if 0 <= y < ih:
                    for c in range(c0):
                        dst[r, c] = f
                        s_row += f * apod[r, c]
                    src = img[y, ox + c0:ox + c1]
                    for c in range(c1 - c0):
                        v = np.float32(src[c])
                        dst[r, c0 + c] = v
                        s_row += v * apod[r, c0 + c]
                    for c in range(c1, w):
                        dst[r, c] = f
                        s_row += f * apod[r, c]
                else:
                    for c in range(w):
                        dst[r, c] = f
                        s_row += f * apod[r, c]
                s += s_row
        m = np.float32(s / w_sum)
        e = 0.0
        for r in range(h):  # subtract it, apodize, sum the energy
            e_row = np.float32(0.0)
            for c in range(w):
                a = (dst[r, c] - m) * apod[r, c]
                dst[r, c] = a
                e_row += a * a
            e += e_row
        mean[k] = s / w_sum
        energy[k] = e
    return mean, energy, -1

@_jit
def _weigh_numba(f1, f2, exponent, noise_floor, dead):  # pragma: no cover
    # f1, f2: (B, H, 2 M) float32 views of the complex spectra
    b, h, m2 = f1.shape
    m = m2 // 2
    mag = np.empty(m, dtype=np.float32)
    bits = mag.view(np.int32)
    coherence = np.ones(m, dtype=np.float32)
    # Schraudolph's power: bits(x ** e) ~ e * bits(x) + (1 - e) * bits(1.0)
    offset = np.float32((1.0 - exponent) * (127 << 23))
    e32 = np.float32(exponent)
    q = max(h // 8, 1)
    lo = max(h // 2 - q, 0)
    hi = min(h // 2 + q + 1, h)
    for k in range(b):
        if dead[k]:
            f1[k] = 0
            f2[k] = 0
            continue
        floor = np.float32(1e-30)  # only keeps 0 / 0 away
        if noise_floor > 0:
            acc = 0.0
            for r in range(lo, hi):
                a1 = f1[k, r]
                a2 = f2[k, r]
                row = np.float32(0.0)
                for c in range(m):
                    p1 = a1[2 * c] * a1[2 * c] + a1[2 * c + 1] * a1[2 * c + 1]
                    p2 = a2[2 * c] * a2[2 * c] + a2[2 * c + 1] * a2[2 * c + 1]
                    row += np.sqrt(p1 * p2)
                acc += row
            nu = noise_floor * acc / ((hi - lo) * m)
            floor = np.float32(nu * nu + 1e-30)
        for r in range(h):
            a1 = f1[k, r]
            a2 = f2[k, r]
            for c in range(m):
                p1 = a1[2 * c] * a1[2 * c] + a1[2 * c + 1] * a1[2 * c + 1]
                p2 = a2[2 * c] * a2[2 * c] + a2[2 * c + 1] * a2[2 * c + 1]
                mag[c] = np.sqrt(p1) * np.sqrt(p2)  # |X|, no overflow of |X|^2
                coherence[c] = (p1 * p2) / (p1 * p2 + floor)  # Wiener-style
            for c in range(m):
                bits[c] = np.int32(np.float32(bits[c]) * e32 + offset)
            for c in range(m):
                _store_weighted(a1, a2, c, mag[c] * coherence[c])


@_jit
def _weigh_snr_numba(f1, f2, index, counts, first_noise, mismatch, dynamic_range,
                     significance, dead):  # pragma: no cover
    # f1, f2: (B, H, 2 M) float32 views of the complex spectra
    b, h, m2 = f1.shape
    m = m2 // 2
    bins = counts.shape[0]
    sum1 = np.empty(bins)
    sum2 = np.empty(bins)
    sumx = np.empty(bins)
    wt = np.empty(bins, dtype=np.float32)
    tail = 0.0
    for i in range(first_noise, bins):
        tail += counts[i]
    tail = max(tail, 1.0)
    for k in range(b):
        if dead[k]:
            f1[k] = 0
            f2[k] = 0
            continue
        sum1[:] = 0.0
        sum2[:] = 0.0
        sumx[:] = 0.0
        for r in range(h):
            a1 = f1[k, r]
            a2 = f2[k, r]
            row = index[r]
            for c in range(m):
                i = row[c]
                re1, im1 = a1[2 * c], a1[2 * c + 1]
                re2, im2 = a2[2 * c], a2[2 * c + 1]
                sum1[i] += re1 * re1 + im1 * im1
                sum2[i] += re2 * re2 + im2 * im2
                sumx[i] += re1 * re2 + im1 * im2
        band1 = 0.0
        band2 = 0.0
        shared = 0.0
        for i in range(first_noise, bins):
            band1 += sum1[i]
            band2 += sum2[i]
            shared += sumx[i]
        if shared > 0.0:
            shared *= shared * shared / (band1 * band2)
        else:
            shared = 0.0
        n1 = max(band1 - shared, 0.0) / tail
        n2 = max(band2 - shared, 0.0) / tail
        power0_1 = sum1[0]
        power0_2 = sum2[0]
        cross0 = sumx[0]
        total = 0.0
        mean1 = 0.0
        mean2 = 0.0
        for i in range(bins):  # the same maths as _spectral.snr_weights
            cnt = max(counts[i], 1.0)
            margin = 1.0 + significance / np.sqrt(cnt)
            s1 = max(sum1[i] / cnt - n1 * margin, 0.0)
            s2 = max(sum2[i] / cnt - n2 * margin, 0.0)
            mean1 += s1 * cnt
            mean2 += s2 * cnt
            total += cnt
            sum1[i] = s1
            sum2[i] = s2
        n1 = max(n1, dynamic_range * mean1 / total)
        n2 = max(n2, dynamic_range * mean2 / total)
        p0 = power0_1 * power0_2
        x0 = max(cross0, 0.0)
        g2 = x0 * x0 / p0 if p0 > 0.0 else 0.0
        for i in range(bins):
            ps = np.sqrt(sum1[i] * sum2[i])
            mm = mismatch
            if i == 0:  # the lowest bin: mismatch from its own coherence
                mm = max(mismatch, (1.0 - g2) / g2) if g2 > 0.0 else np.inf
            denom = ps * (n1 + n2) + n1 * n2 + mm * ps * ps
            wt[i] = ps / denom if ps > 0 and denom > 0 else 0.0
        for r in range(h):
            a1 = f1[k, r]
            a2 = f2[k, r]
            row = index[r]
            for c in range(m):
                _store_weighted(a1, a2, c, wt[row[c]])

@_jit
def _peaks_numba(corr, spectra, argmax, total, energy, kx, ky, hermitian,
                 radius, exclude):  # pragma: no cover
    b, h, w = corr.shape
    m = spectra.shape[2] // 2  # spectra: float32 view, (B, H, 2 M)
    at = np.empty((b, 2))
    value = np.empty(b)
    width = np.empty((b, 2))
    snr = np.empty(b)
    kx32 = kx.astype(np.float32)
    kx2 = (kx * kx).astype(np.float32)
    k0 = radius
    size = 2 * radius + 1
    near = np.empty((size, size))
    for k in range(b):
        iy, ix = argmax[k] // w, argmax[k] % w
        iy = (iy + h // 2) % h - h // 2
        ix = (ix + w // 2) % w - w // 2
        for i in range(size):
            for j in range(size):
                near[i, j] = corr[k, (iy + i - k0) % h, (ix + j - k0) % w]
        # start: three-point parabola through the peak along each axis
        c0 = near[k0, k0]
        sy = float(iy)
        sx = float(ix)
        for axis in range(2):
            cm = near[k0 - 1, k0] if axis == 0 else near[k0, k0 - 1]
            cp = near[k0 + 1, k0] if axis == 0 else near[k0, k0 + 1]
            denom = cm - 2 * c0 + cp
            off = 0.5 * (cm - cp) / denom if denom < 0 else 0.0
            off = min(max(off, -0.5), 0.5)
            if axis == 0:
                sy += off
            else:
                sx += off
        # one Newton step on the band-limited surface c(s) = sum X e^{i k.s}
        ex = np.exp(1j * kx * sx) * hermitian
        exr = ex.real.astype(np.float32)
        exi = ex.imag.astype(np.float32)
        ey = np.exp(1j * ky * sy)
        g00 = g10 = g01 = g20 = g02 = g11 = 0j
        for r in range(h):
            row = spectra[k, r]
            a0r = a0i = a1r = a1i = a2r = a2i = np.float32(0)
            for c in range(m):
                xr, xi = row[2 * c], row[2 * c + 1]
                tr = xr * exr[c] - xi * exi[c]
                ti = xr * exi[c] + xi * exr[c]
                a0r += tr
                a0i += ti
                a1r += tr * kx32[c]
                a1i += ti * kx32[c]
                a2r += tr * kx2[c]
                a2i += ti * kx2[c]
            r0 = complex(a0r, a0i)
            r1 = complex(a1r, a1i)
            r2 = complex(a2r, a2i)
            e = ey[r]
            q = ky[r]
            g00 += e * r0
            g01 += e * r1
            g02 += e * r2
            g10 += e * q * r0
            g11 += e * q * r1
            g20 += e * q * q * r0
        cval = g00.real
        gy, gx = -g10.imag, -g01.imag
        cyy, cxx, cxy = -g20.real, -g02.real, -g11.real
        det = cyy * cxx - cxy * cxy
        if cxx < 0 and det > 0:
            dy = -(cxx * gy - cxy * gx) / det
            dx = -(cyy * gx - cxy * gy) / det
            norm = np.hypot(dy, dx)
            if norm > 0.5:
                dy *= 0.5 / norm
                dx *= 0.5 / norm
            sy += dy
            sx += dx
        at[k, 0] = sy
        at[k, 1] = sx
        value[k] = cval
        wy = -cval / cyy
        wx = -cval / cxx
        width[k, 0] = np.sqrt(wy) if wy >= 0 and np.isfinite(wy) else np.nan
        width[k, 1] = np.sqrt(wx) if wx >= 0 and np.isfinite(wx) else np.nan
        # SNR: the surface's mean and spread away from the peak
        s_near = 0.0
        e_near = 0.0
        for i in range(k0 - exclude, k0 + exclude + 1):
            for j in range(k0 - exclude, k0 + exclude + 1):
                s_near += near[i, j]
                e_near += near[i, j] * near[i, j]
        n = h * w - (2 * exclude + 1) ** 2
        mean = (total[k] - s_near) / n
        var = (energy[k] - e_near) / n - mean * mean
        std = np.sqrt(max(var, 0.0))
        snr[k] = (cval - mean) / std if std > 0 else 0.0
    return at, value, width, snr
