"""Image: reading files, conversion to gray, windows and whole-image tools."""

import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import spectralign
from spectralign import errors
from spectralign.io.image import parse_point, parse_size

_RNG = np.random.default_rng(11)
#: A random 40 x 50 image (module level, so hypothesis tests can share it).
NOISE = spectralign.Image(_RNG.random((40, 50)).astype(np.float32))
_YY, _XX = np.mgrid[0:40, 0:50].astype(np.float64)


def ramp_value(x, y):
    """The linear ramp RAMP at the (subpixel) point (x, y)."""
    return 0.01 * np.asarray(x) + 0.02 * np.asarray(y) + 0.1


RAMP = spectralign.Image(ramp_value(_XX, _YY).astype(np.float32))


def smooth_rgb(h=48, w=64):
    """A smooth uint8 colour image (JPEG keeps it well)."""
    y, x = np.mgrid[0:h, 0:w]
    r = 40 + 3 * x
    g = 200 - 2 * y
    b = 60 + x + y
    return np.dstack([r, g, b]).astype(np.uint8)


# -- reading files ---------------------------------------------------------

@pytest.mark.parametrize("dtype, scale", [(np.uint8, 255), (np.uint16, 65535), (np.int16, 32767)])
def test_tiff_integers_are_scaled_by_their_type_maximum(tmp_path, dtype, scale):
    import tifffile

    info = np.iinfo(dtype)
    data = np.linspace(max(info.min, 0), info.max, 12 * 10).reshape(12, 10).astype(dtype)
    path = tmp_path / "int.tif"
    tifffile.imwrite(path, data)
    img = spectralign.Image(path)
    assert img.dtype == np.float32 and img.shape == (12, 10)
    np.testing.assert_allclose(img, data.astype(np.float64) / scale, rtol=1e-6)
    assert img.max() == 1.0 and img.min() == 0.0


def test_tiff_float32_is_kept_as_it_is(tmp_path):
    import tifffile

    data = (_RNG.standard_normal((9, 13)) * 100).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", data)
    img = spectralign.Image(tmp_path / "f.tif")
    np.testing.assert_array_equal(img, data)  # no scaling, no clipping
    assert img.dtype == np.float32


def test_multipage_tiff_reads_the_page_asked_for(tmp_path):
    import tifffile

    stack = _RNG.random((3, 10, 12)).astype(np.float32)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    for k in range(3):
        np.testing.assert_array_equal(spectralign.Image(path, page=k), stack[k])
    with pytest.raises(errors.ImageDimensionError, match=r"shape \(3, 10, 12\).*page=N"):
        spectralign.Image(path)
    with pytest.raises(errors.ImageReadError, match="Could not read"):
        spectralign.Image(path, page=3)


def test_ome_tiff_reads_the_series_asked_for(tmp_path):
    import tifffile

    first = _RNG.random((10, 12)).astype(np.float32)
    second = (_RNG.random((8, 9)) * 255).astype(np.uint8)
    path = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(first)
        tif.write(second)
    np.testing.assert_array_equal(spectralign.Image(path), first)
    np.testing.assert_array_equal(spectralign.Image(path, series=0), first)
    np.testing.assert_allclose(spectralign.Image(path, series=1), second / 255, rtol=1e-6)
    with pytest.raises(errors.ImageReadError, match="two.ome.tif"):
        spectralign.Image(path, series=2)


@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
def test_rgb_tiff_is_averaged_to_gray(tmp_path, planarconfig):
    import tifffile

    rgb = smooth_rgb()
    data = rgb if planarconfig == "contig" else np.moveaxis(rgb, -1, 0)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig=planarconfig)
    img = spectralign.Image(path)
    assert img.shape == rgb.shape[:2]
    np.testing.assert_allclose(img, rgb.mean(axis=-1) / 255, rtol=1e-6)


@pytest.mark.parametrize("dtype, scale", [(np.uint8, 255), (np.uint16, 65535)])
def test_png_gray(tmp_path, dtype, scale):
    import imagecodecs

    data = (_RNG.random((15, 17)) * scale).astype(dtype)
    imagecodecs.imwrite(str(tmp_path / "g.png"), data)
    img = spectralign.Image(str(tmp_path / "g.png"))
    np.testing.assert_allclose(img, data / scale, rtol=1e-6)


def test_png_rgb_and_rgba_use_equal_weights_and_drop_alpha(tmp_path):
    import imagecodecs

    rgb = (_RNG.random((15, 17, 3)) * 255).astype(np.uint8)
    alpha = (_RNG.random((15, 17)) * 255).astype(np.uint8)  # must not matter
    imagecodecs.imwrite(str(tmp_path / "rgb.png"), rgb)
    imagecodecs.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb, alpha]))
    want = rgb.astype(np.float64).sum(axis=-1) / 3 / 255
    np.testing.assert_allclose(spectralign.Image(tmp_path / "rgb.png"), want, rtol=1e-6)
    np.testing.assert_allclose(spectralign.Image(tmp_path / "rgba.png"), want, rtol=1e-6)


def test_jpeg_is_read_close_to_what_was_written(tmp_path):
    import imagecodecs

    rgb = smooth_rgb()
    imagecodecs.imwrite(str(tmp_path / "c.jpg"), rgb, level=95)
    imagecodecs.imwrite(str(tmp_path / "g.jpeg"), np.ascontiguousarray(rgb[..., 1]), level=95)
    color = spectralign.Image(tmp_path / "c.jpg")
    gray = spectralign.Image(tmp_path / "g.jpeg")
    assert color.shape == gray.shape == (48, 64)
    np.testing.assert_allclose(color, rgb.mean(axis=-1) / 255, atol=0.03)  # lossy
    np.testing.assert_allclose(gray, rgb[..., 1] / 255, atol=0.03)


def test_load_is_the_constructor_and_save_round_trips(tmp_path):
    data = (_RNG.random((10, 14)) * 1.4 - 0.2).astype(np.float32)
    img = spectralign.Image(data)
    img.save(tmp_path / "a.tif")
    img.save(tmp_path / "a.png")
    np.testing.assert_array_equal(spectralign.Image.load(tmp_path / "a.tif"), data)
    png = spectralign.Image.load(tmp_path / "a.png")  # 8 bits, clipped to [0, 1]
    np.testing.assert_allclose(png, np.clip(data, 0, 1), atol=0.5 / 255 + 1e-6)


def test_missing_file_is_an_image_not_found_error(tmp_path):
    path = tmp_path / "absent.png"
    with pytest.raises(errors.ImageNotFoundError, match=re.escape(str(path))) as info:
        spectralign.Image(path)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        spectralign.Image.load(str(path), page=0)


def test_directory_is_an_image_read_error(tmp_path):
    with pytest.raises(errors.ImageReadError, match="a directory") as info:
        spectralign.Image(tmp_path)
    assert isinstance(info.value, OSError)


@pytest.mark.parametrize("name", ["junk.tif", "junk.png", "junk.jpg", "junk"])
def test_garbage_file_is_an_image_read_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image\n" * 10)
    with pytest.raises(errors.ImageReadError, match=r"Could not read .*" + re.escape(name)):
        spectralign.Image(path)


# -- arrays ------------------------------------------------------------------

def test_rgb_array_gray_is_the_equal_weight_mean():
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    np.testing.assert_allclose(spectralign.Image(rgb), 1 / 3, rtol=1e-6)
    rgba = np.zeros((2, 3, 4), dtype=np.float32)
    rgba[..., :3] = (0.3, 0.6, 0.9)
    rgba[..., 3] = 100  # alpha is dropped
    np.testing.assert_allclose(spectralign.Image(rgba), 0.6, rtol=1e-6)


def test_bool_and_float64_arrays():
    img = spectralign.Image(np.eye(3, dtype=bool))
    np.testing.assert_array_equal(img, np.eye(3))
    assert img.dtype == np.float32
    big = spectralign.Image(np.full((2, 2), 1e3))
    assert big.dtype == np.float32 and float(big[0, 0]) == 1e3


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_uint8_round_trips_exactly(seed):
    data = np.random.default_rng(seed).integers(0, 256, (5, 7), dtype=np.uint8)
    img = spectralign.Image(data)
    np.testing.assert_array_equal(np.round(img * 255).astype(np.uint8), data)


@pytest.mark.parametrize("shape", [(7,), (), (2, 3, 4, 5), (5, 6, 2), (5, 6, 5), (1, 4, 4, 3)])
def test_arrays_that_are_not_one_plane_are_refused(shape):
    with pytest.raises(errors.ImageDimensionError, match=re.escape(f"shape {shape}")) as info:
        spectralign.Image(np.zeros(shape, dtype=np.float32))
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_arrays_are_refused_where_they_are(bad):
    data = np.ones((6, 9), dtype=np.float32)
    data[4, 7] = bad
    data[5, 1] = bad
    with pytest.raises(errors.NonFiniteImageError,
                       match=r"the given array.* 2 NaN or infinite.*\(x, y\) = \(7, 4\)"):
        spectralign.Image(data)


def test_nan_in_colour_is_refused_but_nan_alpha_is_dropped():
    rgba = np.ones((4, 5, 4), dtype=np.float32)
    rgba[..., 3] = np.nan
    np.testing.assert_array_equal(spectralign.Image(rgba), 1)
    rgba[1, 2, 0] = np.nan
    with pytest.raises(errors.NonFiniteImageError, match=r"\(x, y\) = \(2, 1\)"):
        spectralign.Image(rgba)


def test_non_finite_file_is_refused_with_its_path(tmp_path):
    import tifffile

    data = np.zeros((5, 6), dtype=np.float32)
    data[3, 2] = np.nan
    path = tmp_path / "holes.tif"
    tifffile.imwrite(path, data)
    with pytest.raises(errors.NonFiniteImageError,
                       match=re.escape(str(path)) + r".*\(x, y\) = \(2, 3\)"):
        spectralign.Image(path)


def test_parse_size_and_point():
    assert parse_size(7) == (7, 7)
    assert parse_size((100.4, 60.6)) == (100, 61)
    assert parse_size(np.array([3, 5])) == (3, 5)
    for bad in (0, -1, (5, 0), (np.inf, 4), "x", (1, 2, 3), None):
        with pytest.raises(errors.InvalidSizeError, match="Expected size"):
            parse_size(bad)
    np.testing.assert_array_equal(parse_point((1.5, -2)), (1.5, -2))
    for bad in ((1,), (1, 2, 3), (np.nan, 1), "xy", None):
        with pytest.raises(errors.InvalidPointError, match=r"finite \(x, y\)"):
            parse_point(bad)


# -- numpy behaviour ---------------------------------------------------------

def test_image_survives_numpy_operations(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "n.tif", NOISE)
    img = spectralign.Image(tmp_path / "n.tif")
    part = img[5:25, 10:40]
    assert isinstance(part, spectralign.Image) and part.source == img.source
    np.testing.assert_array_equal(part.straightwindow((15, 10), 10), NOISE[5:25, 10:40][5:15, 10:20])
    assert isinstance(img * 2 + 1, spectralign.Image)
    again = spectralign.Image(part)  # an Image is a valid input
    np.testing.assert_array_equal(again, part)
    assert type(np.asarray(img)) is np.ndarray
    # whole-array reductions give numbers, not 0-d images
    for value in (img.mean(), np.sum(img), img.max(), np.median(img)):
        assert not isinstance(value, spectralign.Image) and np.ndim(value) == 0
    assert img.mean() == pytest.approx(float(np.mean(np.asarray(NOISE, np.float64))), rel=1e-6)
    assert isinstance(img.copy(), spectralign.Image) and img.copy().source == img.source


# -- straightwindow ----------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(x=st.integers(0, 49), y=st.integers(0, 39), w=st.integers(1, 20), h=st.integers(1, 20))
def test_straightwindow_at_integer_centre_is_slicing(x, y, w, h):
    x0, y0 = x - w // 2, y - h // 2
    if x0 < 0 or y0 < 0 or x0 + w > 50 or y0 + h > 40:
        return  # the partly-outside case is tested separately
    win = NOISE.straightwindow((x, y), (w, h))
    assert isinstance(win, spectralign.Image) and win.shape == (h, w)
    np.testing.assert_array_equal(win, NOISE[y0:y0 + h, x0:x0 + w])
    assert win[h // 2, w // 2] == NOISE[y, x]  # the centre lands on pixel (W//2, H//2)


def test_straightwindow_size_as_int_or_width_height():
    assert NOISE.straightwindow((20, 20), 8).shape == (8, 8)
    assert NOISE.straightwindow((20, 20), (9, 4)).shape == (4, 9)
    assert NOISE.straightwindow((20, 20), (9.4, 3.6)).shape == (4, 9)
    np.testing.assert_array_equal(NOISE.straightwindow(size=(10, 6)), NOISE[17:23, 20:30])
    with pytest.raises(errors.InvalidSizeError, match="Expected size"):
        NOISE.straightwindow((20, 20), (0, 4))
    with pytest.raises(errors.InvalidPointError, match="Expected xy"):
        NOISE.straightwindow((20, np.nan), 4)


def test_straightwindow_partly_off_image_is_filled():
    win = NOISE.straightwindow((1, 39), (6, 4), border=-1.0)  # top-left (-2, 37)
    np.testing.assert_array_equal(win[:, :2], -1.0)  # columns -2, -1
    np.testing.assert_array_equal(win[3, :], -1.0)  # row 40
    np.testing.assert_array_equal(win[:3, 2:], NOISE[37:40, 0:4])
    mean = float(np.mean(np.asarray(NOISE, np.float64)))
    filled = NOISE.straightwindow((1, 39), (6, 4))  # default: the image mean
    np.testing.assert_allclose(filled[:, :2], mean, rtol=1e-6)


@pytest.mark.parametrize("xy", [(-10, 20), (60, 20), (25, -5), (25, 45), (28.5, 44.2), (-4.5, 1)])
def test_straightwindow_wholly_off_image_is_refused(xy):
    with pytest.raises(errors.WindowOutsideImageError, match=r"50 x 40 image.*wholly outside"):
        NOISE.straightwindow(xy, 8)


def test_straightwindow_just_touching_the_image_is_not_refused():
    # window pixels at x = -7.5 ... -0.5: the last one is half on column 0
    win = NOISE.straightwindow((-3.5, 20), 8, border=0.0)
    np.testing.assert_allclose(win[:, -1], 0.5 * NOISE[16:24, 0], rtol=1e-6)
    np.testing.assert_array_equal(win[:, :-1], 0.0)


@settings(max_examples=60, deadline=None)
@given(x=st.floats(8, 41), y=st.floats(8, 31), w=st.integers(1, 15), h=st.integers(1, 15))
def test_straightwindow_subpixel_is_exact_on_a_ramp(x, y, w, h):
    win = RAMP.straightwindow((x, y), (w, h))
    u, v = np.meshgrid(np.arange(w) - w // 2, np.arange(h) - h // 2)
    np.testing.assert_allclose(win, ramp_value(x + u, y + v), atol=2e-6)


def test_straightwindow_subpixel_partly_off_image_blends_with_border():
    win = RAMP.straightwindow((2.25, 20.5), (8, 2), border=0.0)  # x from -1.75 to 5.25
    xs = 2.25 + np.arange(8) - 4
    ys = 20.5 + np.arange(2) - 1
    want = ramp_value(xs[None, :], ys[:, None])
    np.testing.assert_allclose(win[:, 2:], want[:, 2:], atol=2e-6)  # inside: exact
    np.testing.assert_array_equal(win[:, 0], 0.0)  # x = -1.75: no image pixel near
    np.testing.assert_allclose(win[:, 1], 0.25 * ramp_value(0, ys), atol=2e-6)  # x = -0.75


# -- transformedwindow -------------------------------------------------------

@pytest.mark.parametrize("xy, size", [((20, 17), 9), ((25, 20), (12, 7)), ((2, 1), (9, 6)),
                                      ((48, 39), 10)])
def test_transformedwindow_identity_is_straightwindow(xy, size):
    want = NOISE.straightwindow(xy, size, border=0.3)
    for tfm in (None, spectralign.Affine(), np.eye(2), spectralign.Affine.translator((5, 9))):
        np.testing.assert_array_equal(NOISE.transformedwindow(xy, tfm, size, border=0.3), want)


@settings(max_examples=30, deadline=None)
@given(x=st.floats(-3.5, 52.5), y=st.floats(-2.5, 42.5))  # the 7 x 6 window meets the image
def test_transformedwindow_identity_at_subpixel_centre_is_straightwindow(x, y):
    want = NOISE.straightwindow((x, y), (7, 6), border=0.2)
    got = NOISE.transformedwindow((x, y), None, (7, 6), border=0.2)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("quarter_turns, seen", [(1, (22, 14)), (-1, (22, 20)), (2, (19, 17))])
def test_transformedwindow_rotation_turns_the_straight_window(quarter_turns, seen):
    """Positive angles turn +x towards +y, i.e. clockwise on screen, which is
    numpy's rot90 with k = -1."""
    rot = spectralign.Affine.rotator(quarter_turns * np.pi / 2)
    straight = NOISE.straightwindow((22, 17), 11)
    turned = NOISE.transformedwindow((22, 17), rot, 11)
    np.testing.assert_allclose(turned, np.rot90(straight, k=-quarter_turns), atol=1e-6)
    # a window pixel at offset d from the centre shows the image at xy + inv(A) d
    assert turned[5, 5 + 3] == pytest.approx(NOISE[seen[1], seen[0]])  # d = (3, 0)


def test_transformedwindow_rotation_of_the_whole_image_keeps_its_edges():
    square = spectralign.Image(_RNG.random((31, 31)).astype(np.float32))
    turned = square.transformedwindow((15, 15), spectralign.Affine.rotator(np.pi / 2), 31,
                                      border=-1.0)
    np.testing.assert_allclose(turned, np.rot90(square, k=-1), atol=1e-6)


def test_transformedwindow_scaling_magnifies_about_the_centre():
    twice = RAMP.transformedwindow((25.5, 20.25), spectralign.Affine.scaler(2), (9, 7))
    u, v = np.meshgrid(np.arange(9) - 4, np.arange(7) - 3)
    np.testing.assert_allclose(twice, ramp_value(25.5 + u / 2, 20.25 + v / 2), atol=2e-6)


# -- roi -----------------------------------------------------------------------

def test_roi_inside_is_slicing_and_outside_is_refused():
    np.testing.assert_array_equal(NOISE.roi((3, 5, 10, 7)), NOISE[5:12, 3:13])
    np.testing.assert_array_equal(NOISE.roi((0, 0, 50, 40)), NOISE)
    for rect in ((45, 0, 10, 5), (-1, 0, 5, 5), (0, 38, 5, 3), (0, 0, 0, 5)):
        with pytest.raises(errors.WindowOutsideImageError, match=r"inside the 50 x 40 image"):
            NOISE.roi(rect)
    for rect in ((1, 2, 3), "abcd", None):
        with pytest.raises(errors.InvalidSizeError, match="four integers"):
            NOISE.roi(rect)


# -- whole-image tools ---------------------------------------------------------

def test_apodized_keeps_the_centre_and_fades_to_gray_at_the_edges():
    img = spectralign.Image(np.full((64, 80), 0.9, dtype=np.float32))
    img[30:34, 38:42] = 0.1
    for gray, want_gray in ((None, float(np.mean(img))), (0.25, 0.25)):
        apo = img.apodized(gray)
        assert apo.shape == img.shape and isinstance(apo, spectralign.Image)
        np.testing.assert_allclose(apo[30:34, 38:42], 0.1, atol=1e-6)  # centre unchanged
        np.testing.assert_allclose(apo[32, 36], 0.9, atol=1e-6)
        for edge in (apo[0], apo[-1], apo[:, 0], apo[:, -1]):
            np.testing.assert_allclose(edge, want_gray, atol=0.02 * abs(0.9 - want_gray))
        # the fade is monotonic from the edge to the flat middle
        assert np.all(np.diff(np.abs(apo[32, :30] - want_gray)) >= -1e-7)


def test_stretched_maps_percentiles_to_zero_and_one():
    data = spectralign.Image(np.arange(1000, dtype=np.float32).reshape(20, 50))
    full = data.stretched(0)
    np.testing.assert_allclose(full, data / 999, rtol=1e-6)
    st10 = data.stretched(10)
    lo, hi = np.percentile(np.asarray(data), [10, 90])
    np.testing.assert_allclose(st10, np.clip((data - lo) / (hi - lo), 0, 1), rtol=1e-6)
    assert np.mean(st10 == 0) == pytest.approx(0.1, abs=0.002)
    assert np.mean(st10 == 1) == pytest.approx(0.1, abs=0.002)
    flat = spectralign.Image(np.full((4, 4), 0.7, dtype=np.float32)).stretched()
    np.testing.assert_array_equal(flat, 0)


def test_scaled_takes_exact_block_means_and_drops_ragged_edges():
    data = spectralign.Image(np.arange(63, dtype=np.float32).reshape(7, 9))
    half = data.scaled(2)
    assert half.shape == (3, 4)
    assert half[0, 0] == (0 + 1 + 9 + 10) / 4
    assert half[2, 3] == (42 + 43 + 51 + 52) / 4
    np.testing.assert_array_equal(data.scaled(3), [[10, 13, 16], [37, 40, 43]])
    np.testing.assert_array_equal(data.scaled(1), data)
    assert data.scaled(7).shape == (1, 1)
    with pytest.raises(errors.InvalidSizeError, match=r"no larger than the image 9 x 7"):
        data.scaled(8)
    with pytest.raises(errors.InvalidSizeError, match=">= 1"):
        data.scaled(0)


def test_delta_and_rmsdelta():
    other = NOISE + np.float32(0.1)
    assert NOISE.rmsdelta(NOISE) == 0.0
    assert NOISE.rmsdelta(other) == pytest.approx(0.1, abs=1e-6)
    assert NOISE.rmsdelta(np.asarray(other), margin=0) == pytest.approx(0.1, abs=1e-6)
    d = NOISE.delta(other, margin=0.1)  # 4 rows and 5 columns off each edge
    assert d.shape == (32, 40)
    np.testing.assert_allclose(d, -0.1, atol=1e-6)
    d0 = NOISE.delta(NOISE[::-1], margin=0)
    np.testing.assert_array_equal(d0, NOISE - NOISE[::-1])
    # the margin really leaves the edges out
    spoilt = NOISE.copy()
    spoilt[0, :] += 5
    assert NOISE.rmsdelta(spoilt) == 0.0
    assert NOISE.rmsdelta(spoilt, margin=0) > 0.5
    with pytest.raises(errors.ImageDimensionError, match=r"shape \(40, 50\).*Got shape \(40, 49\)"):
        NOISE.delta(NOISE[:, 1:])
    with pytest.raises(errors.ImageDimensionError, match=r"Got shape \(50, 40\)"):
        NOISE.rmsdelta(NOISE.T)
