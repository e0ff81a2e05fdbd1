"""The compiled loop of rendering (numba): sample, feather and accumulate
one tile into a chunk's running blend, in one pass that reads each array
once.  :mod:`spectralign.render.kernels` chooses between it and the numpy
blend of :mod:`spectralign.render.blend`.  The loop releases the GIL.
"""

from __future__ import annotations

import numba
import numpy as np

# reassociation lets sums vectorize; no "nnan"/"ninf": inputs may be zero
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_EDGE_EPS = 1e-6
_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")


@_jit
def _accumulate_numba(acc, cover, x0, y0, inv, sub, u0, v0, width, height, blend,
                      order, method):  # pragma: no cover
    h, w = acc.shape
    sh, sw = sub.shape
    a00, a01, a02 = inv[0, 0], inv[0, 1], inv[0, 2]
    a10, a11, a12 = inv[1, 0], inv[1, 1], inv[1, 2]
    umax = width - 1 + _EDGE_EPS
    vmax = height - 1 + _EDGE_EPS
    floor_w = 0.5 / blend if blend > 0 else 1.0
    for r in range(h):
        y = y0 + r
        for c in range(w):
            x = x0 + c
            # the same expression for a pixel whatever chunk holds it
            u = a00 * x + a01 * y + a02
            v = a10 * x + a11 * y + a12
            if u < -_EDGE_EPS or u > umax or v < -_EDGE_EPS or v > vmax:
                continue
            if blend > 0:
                du = min(u, width - 1 - u) + 0.5
                dv = min(v, height - 1 - v) + 0.5
                wt = min(max(du / blend, 0.0), 1.0) * min(max(dv / blend, 0.0), 1.0)
                wt = max(wt, floor_w)
            else:
                wt = 1.0
            # sample the sub-window (tile pixels [v0:, u0:]), edges repeated
            su = u - u0
            sv = v - v0
            if order == 0:
                iu = min(max(int(np.floor(su + 0.5)), 0), sw - 1)
                iv = min(max(int(np.floor(sv + 0.5)), 0), sh - 1)
                val = float(sub[iv, iu])
            else:
                fu0 = np.floor(su)
                fv0 = np.floor(sv)
                fu = su - fu0
                fv = sv - fv0
                c0 = min(max(int(fu0), 0), sw - 1)
                c1 = min(max(int(fu0) + 1, 0), sw - 1)
                r0 = min(max(int(fv0), 0), sh - 1)
                r1 = min(max(int(fv0) + 1, 0), sh - 1)
                top = float(sub[r0, c0])
                if fu > 0:
                    top += fu * (float(sub[r0, c1]) - top)
                val = top
                if fv > 0:
                    bottom = float(sub[r1, c0])
                    if fu > 0:
                        bottom += fu * (float(sub[r1, c1]) - bottom)
                    val = top + fv * (bottom - top)
            if method == 0:
                acc[r, c] += wt * val
                cover[r, c] += wt
            elif method == 1:
                if cover[r, c] == 0 or val > acc[r, c]:
                    acc[r, c] = val
                cover[r, c] += 1
            elif method == 2:
                if cover[r, c] == 0:
                    acc[r, c] = val
                cover[r, c] += 1
            else:
                acc[r, c] = val
                cover[r, c] += 1
