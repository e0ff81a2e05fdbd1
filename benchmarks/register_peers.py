"""Whole-image registration by peer methods (peer environment side).

Run with the peer environment's interpreter (``benchmarks/.peer-env``,
made by ``setup_peer_env.sh``); ``bench_register.py`` calls it.  OpenCV and
scikit-image are only imported and called here.

Usage: ``python register_peers.py IN.npz OUT.npz``.  ``IN.npz`` holds
``method`` (a name below), ``n`` pairs as ``f{i}``, ``m{i}`` (float32
images) and ``fm{i}``, ``mm{i}`` (bool masks).  ``OUT.npz`` receives
``matrix`` (n, 2, 3): each pair's transform from moving (x, y) to fixed
(x, y), NaN where the method failed, and ``seconds`` (n,) per pair.

Methods
-------
sift_similarity, sift_affine
    SIFT keypoints on both 8-bit images, Lowe's ratio test (0.75),
    ``cv2.estimateAffinePartial2D`` / ``cv2.estimateAffine2D`` with RANSAC
    (3 px).
ecc_euclidean, ecc_affine
    ``cv2.findTransformECC`` from the identity (200 iterations, eps 1e-6,
    Gaussian 5).
ecc_translation_masked
    ``cv2.findTransformECCWithMask`` with both masks, translation model.
skimage_fm
    scikit-image's gallery recipe for rotation and scale ("Using Polar and
    Log-Polar Transformations for Registration"): difference of Gaussians
    (5, 20), Hann window, ``warp_polar`` of the magnitude spectrum with
    log scaling, ``phase_cross_correlation(upsample_factor=10)``; the
    angle's sign calibrated once on a synthetic pair.
skimage_masked
    ``phase_cross_correlation(reference_mask=, moving_mask=)`` (Padfield's
    masked normalized cross-correlation; whole pixels).
"""

import sys
import time

import cv2
import numpy as np
from skimage.filters import difference_of_gaussians, window
from skimage.registration import phase_cross_correlation
from skimage.transform import rotate, warp_polar

NAN = np.full((2, 3), np.nan)


def to8(a):
    lo, hi = np.percentile(a, (0.5, 99.5))
    return np.clip((a - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)


_sift = None


def sift(f, m, partial):
    global _sift
    if _sift is None:
        _sift = cv2.SIFT_create()
    kf, df = _sift.detectAndCompute(to8(f), None)
    km, dm = _sift.detectAndCompute(to8(m), None)
    if df is None or dm is None or len(kf) < 3 or len(km) < 3:
        return NAN
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(dm, df, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < 3:
        return NAN
    src = np.float32([km[g.queryIdx].pt for g in good])
    dst = np.float32([kf[g.trainIdx].pt for g in good])
    est = cv2.estimateAffinePartial2D if partial else cv2.estimateAffine2D
    mat, _ = est(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    return NAN if mat is None else mat


CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)


def ecc(f, m, motion, fm=None, mm=None):
    w = np.eye(2, 3, dtype=np.float32)
    try:
        if fm is None:
            _, w = cv2.findTransformECC(f, m, w, motion, CRITERIA, None, 5)
        else:
            _, w = cv2.findTransformECCWithMask(f, m, fm.astype(np.uint8), mm.astype(np.uint8),
                                                w, motion, CRITERIA, 5)
    except cv2.error:
        return NAN
    # ECC's warp takes fixed (template) coordinates to moving's
    return cv2.invertAffineTransform(w.astype(np.float64))


_fm_sign = None


def _fm_angle(f, m):
    out = []
    for img in (f, m):
        img = difference_of_gaussians(img, 5, 20)
        img = img * window("hann", img.shape)
        out.append(np.abs(np.fft.fftshift(np.fft.fft2(img))))
    shape = out[0].shape
    radius = shape[0] // 8
    wf, wm = (warp_polar(s, radius=radius, output_shape=shape, scaling="log", order=0)[: shape[0] // 2]
              for s in out)
    shifts, _, _ = phase_cross_correlation(wf, wm, upsample_factor=10, normalization=None)
    return (360.0 / shape[0]) * shifts[0]


def skimage_fm(f, m):
    global _fm_sign
    if _fm_sign is None:  # which sign is ours: one synthetic pair at +10 degrees
        rng = np.random.default_rng(0)
        from scipy.ndimage import gaussian_filter
        base = gaussian_filter(rng.random((256, 256)), 2)
        turned = rotate(base, 10.0)  # counter-clockwise on screen
        _fm_sign = None
        a = _fm_angle(base, turned)
        # our convention: positive turns +x towards +y (clockwise on screen);
        # moving = base turned counter-clockwise, so moving -> fixed turns clockwise (+10)
        _fm_sign = 1.0 if a > 0 else -1.0
    ang = np.radians(_fm_sign * _fm_angle(f, m))
    c, s = np.cos(ang), np.sin(ang)
    h, w = f.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    lin = np.array([[c, -s], [s, c]])
    return np.hstack([lin, (np.array([cx, cy]) - lin @ [cx, cy])[:, None]])


def skimage_masked(f, m, fm, mm):
    shift = phase_cross_correlation(f, m, reference_mask=fm, moving_mask=mm)
    shift = shift[0] if isinstance(shift, tuple) else shift
    dy, dx = np.asarray(shift, dtype=np.float64)[:2]
    # shift registers moving onto fixed: fixed(x) = moving(x - shift)
    return np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float64)


METHODS = {
    "sift_similarity": lambda f, m, fm, mm: sift(f, m, True),
    "sift_affine": lambda f, m, fm, mm: sift(f, m, False),
    "ecc_euclidean": lambda f, m, fm, mm: ecc(f, m, cv2.MOTION_EUCLIDEAN),
    "ecc_affine": lambda f, m, fm, mm: ecc(f, m, cv2.MOTION_AFFINE),
    "ecc_translation_masked": lambda f, m, fm, mm: ecc(f, m, cv2.MOTION_TRANSLATION, fm, mm),
    "skimage_fm": lambda f, m, fm, mm: skimage_fm(f, m),
    "skimage_masked": skimage_masked,
}


def main(src, dst):
    data = np.load(src)
    method = str(data["method"])
    n = int(data["n"])
    fn = METHODS[method]
    mats = np.full((n, 2, 3), np.nan)
    secs = np.zeros(n)
    for i in range(n):
        f, m = data[f"f{i}"].astype(np.float32), data[f"m{i}"].astype(np.float32)
        fm, mm = data[f"fm{i}"], data[f"mm{i}"]
        if i == 0:
            fn(f, m, fm, mm)  # warm-up (first calls load libraries)
        t0 = time.perf_counter()
        try:
            mats[i] = fn(f, m, fm, mm)
        except Exception:  # a peer failing on one pair counts as a miss
            mats[i] = np.nan
        secs[i] = time.perf_counter() - t0
    np.savez(dst, matrix=mats, seconds=secs)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
