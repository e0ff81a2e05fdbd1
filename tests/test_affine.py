"""Affine: algebra, constructors, properties, validation and image warping."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import spectralign
from spectralign import Affine, errors

finite = st.floats(-1e3, 1e3, allow_nan=False)
angles = st.floats(-3.14, 3.14)  # inside (-pi, pi)
scales = st.floats(0.2, 5.0)
points = st.lists(st.tuples(finite, finite), min_size=1, max_size=5).map(np.array)


@st.composite
def affines(draw):
    """Well-conditioned random affines: rotation, scales in [0.2, 5], shear,
    translation."""
    rot = Affine.rotator(draw(angles))
    sx, sy = draw(scales), draw(scales)
    shear = draw(st.floats(-1, 1))
    linear = Affine([[sx, shear * sx, 0], [0, sy, 0]])
    return Affine.translator((draw(finite), draw(finite))) @ rot @ linear


_RNG = np.random.default_rng(5)
SQUARE = _RNG.random((30, 30)).astype(np.float32)
TILE = _RNG.random((20, 26)).astype(np.float32)


# -- algebra -------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(affines())
def test_times_inverse_is_identity(a):
    assert (a @ a.inverse()).isclose(Affine(), atol=1e-8)
    assert (a.inverse() @ a).isclose(Affine(), atol=1e-8)
    assert a.inverse().inverse().isclose(a, atol=1e-7)


@settings(max_examples=80, deadline=None)
@given(affines(), affines(), points)
def test_composition_applies_right_to_left(a, b, p):
    np.testing.assert_allclose((a @ b)(p), a(b(p)), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(a * p, a(p), rtol=0, atol=0)
    np.testing.assert_allclose(a(p[0]), a(p)[0])  # one point or N points
    assert a(p[0]).shape == (2,) and a(p).shape == p.shape


@settings(max_examples=60, deadline=None)
@given(affines(), points)
def test_inverse_undoes_the_map(a, p):
    np.testing.assert_allclose(a.inverse()(a(p)), p, atol=1e-6)


def test_composition_known_answer():
    a = Affine.translator((10, 5)) @ Affine.rotator(np.pi / 2)
    np.testing.assert_allclose(a((1, 0)), (10, 6), atol=1e-12)
    b = Affine.rotator(np.pi / 2) @ Affine.translator((10, 5))
    np.testing.assert_allclose(b((1, 0)), (-5, 11), atol=1e-12)
    assert Affine() @ a == a and a @ Affine() == a


# -- constructors and properties ---------------------------------------------

@settings(max_examples=80, deadline=None)
@given(angles, st.tuples(finite, finite), scales)
def test_rotator_angle_round_trip(phi, xy0, s):
    rot = Affine.rotator(phi, xy0)
    assert rot.angle() == pytest.approx(phi, abs=1e-12)
    assert rot.magnification() == pytest.approx(1, abs=1e-12)
    np.testing.assert_allclose(rot(xy0), xy0, atol=1e-9)  # the pivot stays put
    # scaling does not change the angle, nor rotation the magnification
    both = Affine.scaler(s, xy0) @ rot
    assert both.angle() == pytest.approx(phi, abs=1e-12)
    assert both.magnification() == pytest.approx(s, rel=1e-12)


def test_rotator_turns_x_towards_y():
    np.testing.assert_allclose(Affine.rotator(np.pi / 2)((1, 0)), (0, 1), atol=1e-15)
    np.testing.assert_allclose(Affine.rotator(np.pi / 2, (5, 5))((6, 5)), (5, 6), atol=1e-12)
    assert Affine.rotator(0.3).angle() > 0


@settings(max_examples=60, deadline=None)
@given(scales, st.tuples(finite, finite), points)
def test_scaler_magnification(s, xy0, p):
    sc = Affine.scaler(s, xy0)
    assert sc.magnification() == pytest.approx(s, rel=1e-12)
    assert sc.angle() == 0
    np.testing.assert_allclose(sc(p), np.asarray(xy0) + s * (p - np.asarray(xy0)), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.tuples(finite, finite), affines(), points)
def test_translator_and_shifted(d, a, p):
    t = Affine.translator(d)
    np.testing.assert_array_equal(t.translation(), d)
    np.testing.assert_array_equal(t(p), p + np.asarray(d))
    np.testing.assert_array_equal(a.translation(), a((0, 0)))
    np.testing.assert_allclose(a.shifted(d)(p), a(p) + np.asarray(d), atol=1e-9)
    np.testing.assert_array_equal(a.shifted(d).linear, a.linear)


def test_matrix_forms():
    a = Affine([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(a.matrix, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(a.linear, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(a.homogeneous(), [[1, 2, 3], [4, 5, 6], [0, 0, 1]])
    assert Affine(a.homogeneous()) == a
    assert Affine([[1, 2], [4, 5]]) == Affine([[1, 2, 0], [4, 5, 0]])
    assert Affine() == Affine(np.eye(3))
    np.testing.assert_array_equal(np.asarray(a), a.matrix)
    assert np.asarray(a, dtype=np.float32).dtype == np.float32
    assert a[1, 2] == 6
    assert repr(a) == "Affine([[1, 2, 3], [4, 5, 6]])"


def test_affines_are_immutable_values():
    source = np.array([[1.0, 0, 2], [0, 1, 3]])
    a = Affine(source)
    source[0, 2] = 99  # the Affine keeps its own copy
    assert a.translation().tolist() == [2, 3]
    with pytest.raises(ValueError, match="read-only"):
        a.matrix[0, 0] = 5
    t = a.translation()
    t[0] = 7  # a copy, too
    assert a.translation().tolist() == [2, 3]


@pytest.mark.parametrize("shape", [(2,), (3, 2), (2, 4), (4, 4), (1, 3), (2, 3, 1)])
def test_bad_shapes_are_refused(shape):
    with pytest.raises(ValueError, match=r"shape \(2, 3\), \(3, 3\) or \(2, 2\)"):
        Affine(np.ones(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_matrices_are_refused(bad):
    m = np.eye(2, 3)
    m[1, 2] = bad
    with pytest.raises(ValueError, match="finite affine matrix"):
        Affine(m)
    with pytest.raises(ValueError, match="finite"):
        Affine.translator((0, bad))


def test_projective_matrices_are_refused():
    with pytest.raises(ValueError, match=r"last row \(0, 0, 1\).*\[0.001, 0.0, 1.0\]"):
        Affine([[1, 0, 0], [0, 1, 0], [1e-3, 0, 1]])
    with pytest.raises(ValueError, match="last row"):
        Affine([[1, 0, 0], [0, 1, 0], [0, 0, 2]])


def test_bad_points_and_singular_inverse():
    with pytest.raises(ValueError, match=r"points of shape \(2,\) or \(N, 2\)"):
        Affine()((1, 2, 3))
    with pytest.raises(np.linalg.LinAlgError):
        Affine([[1, 2, 0], [2, 4, 0]]).inverse()


def test_equality_and_hash():
    a = Affine.rotator(0.5, (3, 4))
    b = Affine(a.matrix.copy())
    assert a == b and hash(a) == hash(b)
    assert len({a, b, Affine()}) == 2
    assert a != Affine.rotator(0.5 + 1e-12, (3, 4))
    assert a != a.matrix  # an Affine equals only Affines
    assert Affine() != "identity"
    negzero = Affine([[1, -0.0, 0], [0, 1, -0.0]])
    assert negzero == Affine() and hash(negzero) == hash(Affine())
    assert {Affine(): "ok"}[negzero] == "ok"
    assert a.isclose(a.shifted((1e-10, 0)))
    assert not a.isclose(a.shifted((1e-6, 0)))
    assert a.isclose(a.shifted((1e-6, 0)), atol=1e-5)


# -- apply -------------------------------------------------------------------

def test_apply_integer_translation_moves_content_exactly():
    out = Affine.translator((3, 2)).apply(TILE, fill=0.25)
    assert isinstance(out, spectralign.Image) and out.shape == TILE.shape
    np.testing.assert_allclose(out[2:, 3:], TILE[:-2, :-3], atol=1e-6)  # out[y+2, x+3] == img[y, x]
    np.testing.assert_array_equal(out[:2, :], 0.25)
    np.testing.assert_array_equal(out[:, :3], 0.25)


def test_apply_rect_picks_the_model_space_rectangle():
    np.testing.assert_array_equal(Affine().apply(TILE, (5, 7, 10, 4)), TILE[7:11, 5:15])
    moved = Affine.translator((100, 50)).apply(TILE, (103, 52, 8, 6))
    np.testing.assert_allclose(moved, TILE[2:8, 3:11], atol=1e-6)
    # a rectangle sticking out of the tile gets fill there
    edge = Affine().apply(TILE, (20, -2, 10, 5), fill=-1)
    np.testing.assert_array_equal(edge[2:, :6], TILE[0:3, 20:26])
    np.testing.assert_array_equal(edge[:2], -1)
    np.testing.assert_array_equal(edge[:, 6:], -1)
    with pytest.raises(errors.InvalidSizeError, match="positive size"):
        Affine().apply(TILE, (0, 0, 0, 5))


@pytest.mark.parametrize("quarter_turns", [1, -1, 2])
def test_apply_quarter_turn_about_the_centre_is_rot90(quarter_turns):
    """Positive angles turn +x towards +y: clockwise on screen, rot90 with k=-1."""
    centre = ((SQUARE.shape[1] - 1) / 2, (SQUARE.shape[0] - 1) / 2)  # pixel centres
    rot = Affine.rotator(quarter_turns * np.pi / 2, centre)
    np.testing.assert_allclose(rot.apply(SQUARE), np.rot90(SQUARE, k=-quarter_turns), atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(dx=st.floats(-4, 4), dy=st.floats(-4, 4))
def test_apply_subpixel_translation_of_a_ramp(dx, dy):
    yy, xx = np.mgrid[0:20, 0:26]
    ramp = (0.01 * xx + 0.02 * yy).astype(np.float32)
    out = Affine.translator((dx, dy)).apply(ramp)
    want = 0.01 * (xx - dx) + 0.02 * (yy - dy)
    inside = slice(5, -5)
    np.testing.assert_allclose(out[inside, inside], want[inside, inside], atol=2e-6)


def test_apply_scaling_known_answer():
    yy, xx = np.mgrid[0:20, 0:26]
    ramp = (0.01 * xx + 0.02 * yy).astype(np.float32)
    out = Affine.scaler(2).apply(ramp, (0, 0, 40, 30))
    y2, x2 = np.mgrid[0:30, 0:40]
    np.testing.assert_allclose(out, 0.01 * x2 / 2 + 0.02 * y2 / 2, atol=2e-6)
