"""Renderer: exact reproduction, chunk independence, blending, OME-Zarr, resume, bad input."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import tifffile
import zarr

import spectralign
from spectralign import Affine, Renderer


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((600, 760)) * 60000).astype(np.uint16)


def cut_grid(img, rows=3, cols=3, size=(300, 240), step=(220, 170)):
    """Tiles cut from ``img`` at integer positions: ({tile: (x, y)}, {tile: array})."""
    w, h = size
    pos, tiles = {}, {}
    for r in range(rows):
        for c in range(cols):
            x, y = c * step[0], r * step[1]
            pos[(r, c)] = (x, y)
            tiles[(r, c)] = img[y:y + h, x:x + w]
    return pos, tiles


def render(pos=None, tiles=None, affine=None, size=(300, 240), **kw):
    r = Renderer(rigid=pos, affine=affine, tilesize=size, **kw)
    for t, im in tiles.items():
        r.render(t, im)
    return r


def test_exact_crops_are_reproduced_everywhere(scene):
    pos, tiles = cut_grid(scene)
    for blend in (0, 10, 40):
        img = render(pos, tiles, blend=blend, chunk=64).image
        assert img.dtype == np.uint16
        assert img.shape == (2 * 170 + 240, 2 * 220 + 300)
        np.testing.assert_array_equal(img, scene[:img.shape[0], :img.shape[1]])


def test_chunked_render_equals_one_chunk(scene):
    pos, tiles = cut_grid(scene)
    pos = {t: (x + 0.37, y - 0.61) for t, (x, y) in pos.items()}
    one = render(pos, tiles, chunk=1024).image
    for chunk in (16, 50, 128):
        np.testing.assert_array_equal(render(pos, tiles, chunk=chunk).image, one)


def test_subpixel_positions_reproduce_the_image_to_interpolation_error(scene):
    smooth = np.asarray(Affine().apply(scene.astype(np.float32)), np.float64)
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(smooth, 3)
    dx, dy = 0.25, 0.5
    shifted = Affine.translator((-dx, -dy)).apply(smooth, order=3)  # content at +d lands at 0
    pos, tiles = cut_grid(np.asarray(shifted, np.float32))
    # tile content at tile pixel (0, 0) shows scene point (x + dx, y + dy)
    pos = {t: (x + dx, y + dy) for t, (x, y) in pos.items()}
    r = render(pos, tiles, order=3)
    img = r.image
    x0, y0 = r.origin
    truth = smooth[y0:y0 + img.shape[0], x0:x0 + img.shape[1]]
    inner = (slice(24, -24), slice(24, -24))  # the reference shift rings at the scene edge
    assert np.abs(img[inner] - truth[inner]).max() < 1e-2 * smooth.std()


def test_feather_weights_sum_to_one_where_covered():
    pos = {"a": (0, 0), "b": (70.5, 10.25), "c": (30, 60)}
    ones = {t: np.ones((80, 100), np.float32) for t in pos}
    img = render(pos, ones, size=(100, 80), blend=15).image
    covered = img > 0
    np.testing.assert_allclose(img[covered], 1.0, atol=1e-6)
    assert covered.mean() > 0.7


def test_affine_render_matches_affine_apply(scene):
    tile = scene[100:340, 200:500].astype(np.float32)
    afm = Affine.translator((40.3, 25.7)) @ Affine.rotator(0.2, (150, 120)) @ Affine.scaler(1.1)
    r = render(affine={"t": afm}, tiles={"t": tile}, blend=0, chunk=64)
    img = r.image
    x0, y0 = r.origin
    ref = np.asarray(afm.apply(tile, (x0, y0, img.shape[1], img.shape[0]), order=1))
    # away from the tile's edge, where the two handle the boundary differently
    inside = _inside_mask(afm, tile.shape, x0, y0, img.shape, margin=2)
    np.testing.assert_allclose(img[inside], ref[inside], atol=1e-3)
    assert inside.mean() > 0.5


def _inside_mask(afm, tshape, x0, y0, shape, margin):
    inv = afm.inverse()
    gy, gx = np.mgrid[0:shape[0], 0:shape[1]]
    uv = inv(np.stack([gx.ravel() + x0, gy.ravel() + y0], 1))
    h, w = tshape
    ok = ((uv[:, 0] >= margin) & (uv[:, 0] <= w - 1 - margin)
          & (uv[:, 1] >= margin) & (uv[:, 1] <= h - 1 - margin))
    return ok.reshape(shape)


def test_max_first_last_methods():
    a = np.full((50, 60), 10, np.uint8)
    b = np.full((50, 60), 200, np.uint8)
    pos = {"a": (0, 0), "b": (30, 0)}
    for method, want in (("max", 200), ("first", 10), ("last", 200)):
        img = render(pos, {"a": a, "b": b}, size=(60, 50), method=method).image
        assert img[20, 45] == want, method
        assert img[20, 5] == 10 and img[20, 85] == 200


def test_lazy_sources_read_from_disk(tmp_path, scene):
    pos, tiles = cut_grid(scene)
    files = {}
    for t, im in tiles.items():
        files[t] = tmp_path / f"tile_{t[0]}_{t[1]}.tif"
        tifffile.imwrite(files[t], im)
    from_files = render(pos, files).image
    z = zarr.create_array(tmp_path / "t.zarr", shape=(240, 300), chunks=(64, 64), dtype="u2")
    z[:] = tiles[(1, 1)]
    in_memory = render(pos, tiles).image
    np.testing.assert_array_equal(from_files, in_memory)
    mixed = render(pos, {**tiles, (1, 1): z})  # a zarr-backed tile renders like the array
    np.testing.assert_array_equal(mixed.image, in_memory)


def test_to_zarr_is_valid_ome_zarr(tmp_path, scene):
    pos, tiles = cut_grid(scene)
    r = render(pos, tiles, chunk=128)
    out = r.to_zarr(tmp_path / "m.ome.zarr", pixel_size=0.5)
    root = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(root["0"][:], r.image)
    ms = root.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 1.0]
    ome_models = pytest.importorskip("ome_zarr_models.v05")
    image = ome_models.Image.from_zarr(root)
    assert len(image.attributes.ome.multiscales[0].datasets) == len(ms["datasets"])


def test_z_levels_make_a_volume_and_empty_chunks_are_not_stored(tmp_path):
    pos = {"a": (0, 0), "b": (500, 0)}  # a wide gap: chunks in between stay empty
    r = Renderer(rigid=pos, tilesize=(100, 100), chunk=100)
    for z in range(3):
        r.clear()
        for t in pos:
            r.render(t, np.full((100, 100), z + 1, np.uint8))
    out = r.to_zarr(tmp_path / "v.ome.zarr", pyramid=False)
    arr = zarr.open_group(out, mode="r")["0"]
    assert arr.shape == (3, 100, 600)
    assert [int(arr[z, 50, 50]) for z in range(3)] == [1, 2, 3]
    assert arr.nchunks_initialized == 3 * 2


class _Interrupt(Exception):
    pass


def test_interrupted_render_resumes_byte_identical(tmp_path, scene):
    pos, tiles = cut_grid(scene)
    pos = {t: (x + 0.5, y + 0.25) for t, (x, y) in pos.items()}
    whole = render(pos, tiles, chunk=64).to_zarr(tmp_path / "whole.ome.zarr")

    from dask.callbacks import Callback

    class StopAfter(Callback):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def _posttask(self, key, result, dsk, state, worker_id):
            self.n -= 1
            if self.n == 0:
                raise _Interrupt

    target = tmp_path / "resumed.ome.zarr"
    with dask.config.set(scheduler="synchronous"), StopAfter(7), pytest.raises(_Interrupt):
        render(pos, tiles, chunk=64).to_zarr(target)
    meta = json.loads((target / "zarr.json").read_text())
    assert meta["attributes"]["spectralign"]["complete"] is False
    with pytest.raises(spectralign.StoreExistsError, match="resume=True"):
        render(pos, tiles, chunk=64).to_zarr(target)
    render(pos, tiles, chunk=64).to_zarr(target, resume=True)
    for level in ("0", "1"):
        a = zarr.open_array(whole / level, mode="r")[:]
        b = zarr.open_array(target / level, mode="r")[:]
        np.testing.assert_array_equal(a, b)
    files = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    for f in files:
        if f.name != "zarr.json":
            assert (whole / f).read_bytes() == (target / f).read_bytes(), f


def test_existing_store_is_never_overwritten_unless_asked(tmp_path, scene):
    pos, tiles = cut_grid(scene, rows=1, cols=2)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(spectralign.StoreExistsError, match="not one"):
        render(pos, tiles).to_zarr(foreign, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "precious"
    out = render(pos, tiles).to_zarr(tmp_path / "a.ome.zarr")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        render(pos, tiles).to_zarr(out)
    render(pos, tiles, blend=0).to_zarr(out, overwrite=True)


def test_bad_input(scene):
    pos, tiles = cut_grid(scene, rows=1, cols=2)
    r = Renderer(rigid=pos, tilesize=(300, 240))
    with pytest.raises(spectralign.UnknownTileError, match="'nope'"):
        r.render("nope", tiles[(0, 0)])
    with pytest.raises(spectralign.TileShapeError, match="300 x 240"):
        r.render((0, 0), tiles[(0, 0)][:100])
    with pytest.raises(spectralign.EmptyCanvasError, match="empty placement"):
        Renderer(rigid={}, tilesize=(10, 10))
    with pytest.raises(spectralign.EmptyCanvasError, match="overlaps the tiles"):
        Renderer(rigid=pos, tilesize=(300, 240), clip=(5000, 5000, 100, 100))
    with pytest.raises(spectralign.EmptyCanvasError, match="render"):
        r.image
    with pytest.raises(ValueError, match="exactly one"):
        Renderer(tilesize=(10, 10))


def test_clip_rectangle_and_true(scene):
    pos, tiles = cut_grid(scene, rows=1, cols=2)
    img = render(pos, tiles, clip=(10, 20, 200, 100)).image
    np.testing.assert_array_equal(img, scene[20:120, 10:210])
    frac = {t: (x + 0.5, y + 0.5) for t, (x, y) in pos.items()}
    assert render(frac, tiles, clip=True).image.shape == (239, 519)
    assert render(frac, tiles).image.shape == (241, 521)


def test_distributed_cluster_writes_the_same_store_and_library_prints_nothing(
        tmp_path, scene, capsys):
    distributed = pytest.importorskip("distributed")
    pos, tiles = cut_grid(scene)
    pos = {t: (x + 0.25, y - 0.5) for t, (x, y) in pos.items()}
    files = {}
    for t, im in tiles.items():  # tiles on disk, as a cluster job has them
        files[t] = tmp_path / f"tile_{t[0]}_{t[1]}.tif"
        tifffile.imwrite(files[t], im)
    expected = render(pos, files, chunk=128).image
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        out = render(pos, files, chunk=128).to_zarr(tmp_path / "c.ome.zarr")
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["0"][:], expected)
    capsys.readouterr()
    render(pos, files, chunk=128).to_zarr(tmp_path / "quiet.ome.zarr")
    assert capsys.readouterr() == ("", "")  # progress is the caller's choice ...
    import io

    from dask.diagnostics import ProgressBar

    shown = io.StringIO()
    with ProgressBar(minimum=0, out=shown):  # ... through dask's own callbacks
        render(pos, files, chunk=128).to_zarr(tmp_path / "shown.ome.zarr")
    assert "100%" in shown.getvalue()


def test_jpeg_tiles_render_like_their_decoded_arrays():
    from importlib import resources

    from spectralign.io import sources as _source

    folder = resources.files("spectralign") / "data" / "stitch2d_grid"
    files = sorted(str(p) for p in folder.iterdir() if p.name.endswith(".jpg"))[:2]
    pos = {0: (0.0, 0.0), 1: (380.3, 2.9)}
    by_path = render(pos, dict(enumerate(files)), size=(512, 442), chunk=128).image
    import imagecodecs

    arrays = {k: imagecodecs.imread(f) for k, f in enumerate(files)}  # gray uint8
    assert all(a.ndim == 2 and a.dtype == np.uint8 for a in arrays.values())
    np.testing.assert_array_equal(by_path, render(pos, arrays, size=(512, 442), chunk=128).image)
    assert by_path.dtype == np.uint8  # the files' own type, as TIFF tiles give
    assert len(_source._decoded) <= _source._DECODED  # decodes kept, but bounded


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_tile_files_keep_their_dtype_whatever_the_format(tmp_path, suffix):
    import imagecodecs

    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    path = tmp_path / f"t{suffix}"
    if suffix == ".png":
        imagecodecs.imwrite(path, tile)
    else:
        import tifffile

        tifffile.imwrite(path, tile)
    r = spectralign.Renderer(rigid={0: (0, 0)}, tilesize=(80, 64), blend=0)
    r.render(0, str(path))
    out = r.image
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, tile)


def test_names_that_say_what_they_do_keep_the_original_ones():
    """``add`` registers a tile (nothing is drawn until the canvas is
    computed) and ``next_level`` starts a z-level; the original package's
    ``render`` and ``clear`` are the same methods."""
    assert Renderer.render is Renderer.add and Renderer.clear is Renderer.next_level
    pos = {"a": (0.0, 0.0), "b": (0.0, 0.0)}
    r = Renderer(rigid=pos, tilesize=(8, 8), blend=0)
    r.add("a", np.ones((8, 8)))
    r.next_level()
    r.render("b", np.full((8, 8), 2.0))
    vol = np.asarray(r.volume)
    assert vol.shape == (2, 8, 8) and vol[0].max() == 1 and vol[1].min() == 2
