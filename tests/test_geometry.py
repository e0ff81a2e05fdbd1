"""Overlap geometry and window policies (spectralign.pipelines.geometry), unit by unit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spectralign import Affine
from spectralign.pipelines.geometry import (_coarse_geometry, _extent_ratio, _fine_points,
                                            _fine_window, _overlap, _pairs, _pow2_at_most,
                                            _smooth_at_most)


def _smooth(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def test_overlap_of_two_tiles():
    assert _overlap((0, 0), (400, 10), (512, 442)) == (400, 10, 512, 442)
    assert _overlap((0, 0), (512, 0), (512, 442)) is None  # touching is not overlapping
    assert _overlap((100, 50), (0, 0), (200, 100)) == (100, 50, 200, 100)


def test_pairs_of_a_grid_include_diagonals_and_respect_min_overlap():
    size = (100, 100)
    nominal = np.array([[0, 0], [80, 0], [0, 80], [80, 80]], float)
    assert _pairs(nominal, size, 16) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    # sides and diagonal corners alike share 20 px across: asking for 21 leaves none
    assert _pairs(nominal, size, 21) == []
    far = np.array([[0, 0], [300, 0]], float)
    assert _pairs(far, size, 1) == []


@pytest.mark.parametrize("pb", [(410.0, 3.0), (-7.0, 380.0)])
def test_coarse_window_is_centred_on_the_same_model_point_in_both_tiles(pb):
    size = (512, 442)
    pa = np.zeros(2)
    pb = np.asarray(pb)
    rect = _overlap(pa, pb, size)
    c1, c2, win = _coarse_geometry(rect, pa, pb, size)
    np.testing.assert_allclose(c1 + pa, c2 + pb)
    ow, oh = rect[2] - rect[0], rect[3] - rect[1]
    across, along = (win[0], win[1]) if ow < oh else (win[1], win[0])
    thin, long_ = min(ow, oh), max(ow, oh)
    tile_across = size[0] if ow < oh else size[1]
    assert across <= min(2 * thin, 0.8 * tile_across) and across > 0.9 * min(2 * thin, 0.8 * tile_across)
    assert along <= 0.8 * long_
    assert _smooth(win[0]) and _smooth(win[1])


@settings(max_examples=60, deadline=None)
@given(st.floats(16, 5000))
def test_smooth_at_most_is_the_largest_fast_size(v):
    n = _smooth_at_most(v)
    assert n <= v and _smooth(n)
    assert not any(_smooth(m) for m in range(n + 1, int(np.floor(v)) + 1))


@settings(max_examples=60, deadline=None)
@given(st.floats(1, 5000), st.sampled_from([1, 2, 4, 8, 16, 32, 64]))
def test_pow2_at_most(v, lo):
    """The largest power of two within v, at least lo (itself a power of two)."""
    n = _pow2_at_most(v, lo)
    assert n >= lo and (n & (n - 1)) == 0
    assert n <= max(v, lo) and (n == lo or 2 * n > v)


def test_fine_windows_fit_the_strip_and_are_powers_of_two():
    rect = (435.0, 0.0, 512.0, 442.0)  # a vertical strip 77 px wide
    w, h = _fine_window(rect, None)
    assert w == 32 or w == 64
    assert w <= 0.8 * 77 and (w & (w - 1)) == 0
    assert h == 2 * w
    assert _fine_window(rect, 48) == (48, 48)
    wide = (0.0, 380.0, 512.0, 442.0)  # horizontal, 62 px tall
    ww, wh = _fine_window(wide, None)
    assert wh <= 0.8 * 62 and ww == 2 * wh
    assert max(_fine_window((0.0, 0.0, 2000.0, 1000.0), None)) <= 256  # at most 128 across


@pytest.mark.parametrize("rect", [(435.0, 0.0, 512.0, 442.0), (0.0, 380.0, 512.0, 442.0)])
def test_fine_points_spread_along_and_stagger_across_inside_the_overlap(rect):
    win = _fine_window(rect, None)
    pts = _fine_points(rect, 7, win)
    assert pts.shape == (7, 2)
    x0, y0, x1, y1 = rect
    # every window lies inside the overlap
    assert np.all(pts[:, 0] - win[0] / 2 >= x0 - 1e-9) and np.all(pts[:, 0] + win[0] / 2 <= x1 + 1e-9)
    assert np.all(pts[:, 1] - win[1] / 2 >= y0 - 1e-9) and np.all(pts[:, 1] + win[1] / 2 <= y1 + 1e-9)
    along, across = (1, 0) if x1 - x0 < y1 - y0 else (0, 1)
    assert np.all(np.diff(pts[:, along]) > 0)  # spread along the strip
    sides = np.sign(pts[:, across] - (rect[across] + rect[across + 2]) / 2)
    assert np.all(sides[::2] == sides[0]) and np.all(sides[1::2] == -sides[0])  # staggered
    # not on one line: an affine tile's shear across the overlap is determined
    centred = pts - pts.mean(0)
    assert np.linalg.matrix_rank(centred, tol=1e-6) == 2


def test_one_fine_point_sits_at_the_centre():
    np.testing.assert_allclose(_fine_points((0.0, 0.0, 100.0, 40.0), 1, (32, 16)), [[50.0, 20.0]])


def test_extent_ratio_against_the_stage_layout():
    nominal = {"a": (0.0, 0.0), "b": (90.0, 0.0)}
    same = {t: Affine.translator(p) for t, p in nominal.items()}
    assert _extent_ratio(same, nominal, (100, 50)) == (1.0, 1.0)
    half = {t: Affine([[0.5, 0, p[0] * 0.5], [0, 0.5, 0]]) for t, p in nominal.items()}
    np.testing.assert_allclose(_extent_ratio(half, nominal, (100, 50)), (0.5, 0.5))
