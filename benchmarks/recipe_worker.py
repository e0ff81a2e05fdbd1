"""Match tile pairs with the README recipe, in a fresh process (either side).

``bench_recipe.py`` runs this script once per job, so that every job pays
its own start-up as a user's script does: with our interpreter for
``ours`` and with the peer environment's (``benchmarks/.peer-env``, which
holds the original ``spectralign==0.2.0``) for ``original``.  The original
package is only imported and called here; none of its code is part of this
repository.

Usage
-----
``python recipe_worker.py ours|original IN.npz OUT.npz``

``IN.npz`` holds ``tiles`` (N, H, W) float32, ``pairs`` (K, 2) tile
indices, ``p0`` and ``p0_`` (K, 2) starting points ``(x, y)``, ``sizes``
(K, 2) window sizes ``(width, height)`` and ``iters``.  ``OUT.npz``
receives the refined ``p`` and ``p_`` (K, 2), ``snr`` (K,), ``seconds``
(wall time from the first ``Image`` to the last refinement, single
thread) and ``first_seconds`` (the first pair alone).

The recipe, for each pair: ``img = Image(tile)``, ``img_ = Image(tile_)``
(made once per tile), then

- ours: ``p, p_ = Matcher(img, img_).refine(p0, p0_, size, iters)``;
- original 0.2.0 (which has no ``Matcher``): ``iters`` times, cut
  ``img.straightwindow(p, size)`` and ``img_.straightwindow(p_, size)``,
  ``Swim().align(win, win_).shift`` and move both points half way, the
  same update as ours.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _recipe(tiles, pairs, p0, p0_, sizes, refine_pair):
    """The README loop, timed: an ``Image`` per tile (made once), then
    ``refine_pair(img, img_, p0, p0_, size) -> (p, p_, snr)`` per pair."""
    import spectralign

    t0 = time.perf_counter()
    images = {}
    out_p, out_p_, snr, first = [], [], [], None
    for (i, j), a, b, size in zip(pairs, p0, p0_, sizes):
        for k in (i, j):
            if k not in images:
                images[k] = spectralign.Image(tiles[k])
        p, p_, s = refine_pair(images[i], images[j], a, b, size)
        out_p.append(p)
        out_p_.append(p_)
        snr.append(s)
        if first is None:
            first = time.perf_counter() - t0
    return np.array(out_p), np.array(out_p_), np.array(snr), time.perf_counter() - t0, first


def _ours(iters):
    import spectralign

    def refine_pair(img, img_, a, b, size):
        m = spectralign.Matcher(img, img_).refine(a, b, tuple(size), iters=iters)
        return m.p, m.p_, m.snr

    return refine_pair


def _original(iters):
    import cv2
    import spectralign

    cv2.setNumThreads(1)

    def refine_pair(img, img_, a, b, size):
        p, p_ = np.array(a, float), np.array(b, float)
        siz = (int(size[0]), int(size[1]))
        for _ in range(iters):
            swm = spectralign.Swim().align(img.straightwindow(p, siz),
                                           img_.straightwindow(p_, siz))
            d = np.asarray(swm.shift, float)
            p, p_ = p - d / 2, p_ + d / 2
        return p, p_, float(swm.snr)

    return refine_pair


def main(argv):
    if len(argv) != 4 or argv[1] not in ("ours", "original"):
        print(__doc__, file=sys.stderr)
        return 2
    with np.load(argv[2]) as data:
        job = {k: data[k] for k in ("tiles", "pairs", "p0", "p0_", "sizes")}
        iters = int(data["iters"])
    refine_pair = (_ours if argv[1] == "ours" else _original)(iters)
    p, p_, snr, seconds, first = _recipe(job["tiles"], job["pairs"], job["p0"], job["p0_"],
                                         job["sizes"], refine_pair)
    np.savez(argv[3], p=p, p_=p_, snr=snr, seconds=np.float64(seconds),
             first_seconds=np.float64(first))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
