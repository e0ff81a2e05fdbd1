"""Grid montages end to end: stitch_grid, TileConfiguration, the command line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.ndimage
import tifffile
import zarr

import spectralign
from spectralign import cli
from spectralign.datasets import stitch2d_grid, synthetic_grid
from spectralign.errors import LayoutError, NoTilesError, SpectralignWarning, TileConfigError
from spectralign.pipelines.inputs import grid_positions

from conftest import shared


def ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def overlap_ncc(grid, pos, t, t_):
    """Normalized cross-correlation of two tiles over their overlap at ``pos``
    (whole-pixel offsets)."""
    a, b = np.asarray(grid.tiles[t]), np.asarray(grid.tiles[t_])
    dx, dy = np.round(pos[t_] - pos[t]).astype(int)
    h, w = a.shape
    ya, yb = max(0, dy), min(h, h + dy)
    xa, xb = max(0, dx), min(w, w + dx)
    return ncc(a[ya:yb, xa:xb], b[ya - dy:yb - dy, xa - dx:xb - dx])


def test_real_sem_grid_with_only_layout_and_overlap_guess():
    grid = stitch2d_grid()
    tiles = [grid.tiles[r, c] for r in range(grid.rows) for c in range(grid.cols)]
    # a plain guess (the true overlaps are about 26 % in x and 10 % in y)
    montage = spectralign.stitch_grid(tiles, grid=(grid.rows, grid.cols), overlap=0.15)
    pos = montage.positions
    offset = np.mean([pos[t] - grid.reference[t] for t in pos], axis=0)
    err = [np.hypot(*(pos[t] - offset - grid.reference[t])) for t in pos]
    assert max(err) < 2.0
    assert montage.unmatched == []
    # no seam: every neighbouring overlap correlates as well as at the reference
    for t, t_ in (((0, 0), (0, 1)), ((0, 0), (1, 0)), ((1, 1), (2, 1))):
        ours = overlap_ncc(grid, pos, t, t_)
        assert ours > 0.7
        assert ours >= overlap_ncc(grid, grid.reference, t, t_) - 0.02
    report = montage.report()
    assert "6 tiles" in report and "residuals" in report


@pytest.fixture(scope="module")
def sem_big():
    """The SEM texture enlarged 4.5 x, so that a 10 x 10 grid of 512 px fits."""
    img = tifffile.imread(shared("sem_texture", "retic.tif"))[:1024].astype(np.float64)
    return scipy.ndimage.zoom(img, 4.5, order=3)


@pytest.fixture(scope="module")
def sem_grid(sem_big):
    """10 x 10 grid of 512 px tiles at known subpixel positions, stage error
    +-20 px, noise and vignetting, from the SEM texture."""
    return synthetic_grid(sem_big, (10, 10), 512, 0.16, stage_error=20, noise=0.1,
                          vignetting=0.2, seed=1)


def position_errors(montage, synth):
    rows, cols = synth.grid
    pos = np.array([montage.positions[r, c] for r in range(rows) for c in range(cols)])
    err = pos - synth.truth
    err -= err.mean(axis=0)  # the global offset is free
    return np.hypot(err[:, 0], err[:, 1])


def test_synthetic_10x10_grid_is_placed_to_a_tenth_of_a_pixel(sem_grid):
    montage = spectralign.stitch_grid(sem_grid.tiles, grid=(10, 10), overlap=0.16)
    err = position_errors(montage, sem_grid)
    assert np.sqrt(np.mean(err ** 2)) <= 0.1
    assert err.max() <= 0.5
    assert montage.placement.ndropped == 0


def test_synthetic_he_grid(he_slide):
    tissue = scipy.ndimage.zoom(he_slide[512:, 768:1792].astype(np.float64), 2, order=3)
    synth = synthetic_grid(tissue, (10, 4), 512, 0.16, stage_error=20, noise=0.1,
                           vignetting=0.2, seed=2)
    montage = spectralign.stitch_grid(synth.tiles, grid=(10, 4), overlap=0.16)
    err = position_errors(montage, synth)
    assert np.sqrt(np.mean(err ** 2)) <= 0.1
    assert err.max() <= 0.5


def test_sparse_fluorescence_strip_of_fourteen_tiles():
    # 2 x 7 tiles at 17 % overlap from the real YFP montage image: mostly dark
    # background with bright cells, so many small windows hold only noise
    img = spectralign.Image(str(shared("yfp_montage_pair",
                                       "C2-20250523_montage_YFP_ideal_02.jpg")))
    cells = scipy.ndimage.zoom(np.asarray(img, np.float64), 2, order=3)
    synth = synthetic_grid(cells, (2, 7), 256, 0.17, stage_error=0.2 * 0.17 * 256,
                           noise=0.05, vignetting=0.2, seed=3)
    montage = spectralign.stitch_grid(synth.tiles, grid=(2, 7), overlap=0.17)
    err = position_errors(montage, synth)
    assert montage.unmatched == []
    # noise-limited (43 px overlaps, faint background): looser than on tissue
    assert np.sqrt(np.mean(err ** 2)) <= 0.3
    assert err.max() <= 0.75


def test_stage_positions_as_dict_and_tileconfiguration(tmp_path, sem_grid):
    # a 3 x 3 corner of the grid, with the stage positions given instead of a layout
    keep = [r * 10 + c for r in range(3) for c in range(3)]
    tiles = [sem_grid.tiles[k] for k in keep]
    stage = {i: sem_grid.nominal[k] for i, k in enumerate(keep)}
    by_dict = spectralign.stitch_grid(tiles, positions=stage)
    files = []
    for i, tile in enumerate(tiles):
        files.append(tmp_path / f"t{i}.tif")
        tifffile.imwrite(files[-1], tile)
    tc = spectralign.write_tileconfig(tmp_path / "TileConfiguration.txt",
                                      {f"t{i}.tif": stage[i] for i in range(9)})
    by_file = spectralign.stitch_grid(str(tmp_path / "t*.tif"), positions=tc)
    named = {f"cell{i}": tile for i, tile in enumerate(tiles)}  # any ids, kept
    by_id = spectralign.stitch_grid(named, positions={f"cell{i}": stage[i] for i in range(9)})
    np.testing.assert_allclose(by_id.positions["cell4"], by_dict.positions[4], atol=1e-6)
    for i, k in enumerate(keep):
        truth = sem_grid.truth[k] - sem_grid.truth[keep[0]]
        np.testing.assert_allclose(by_dict.positions[i] - by_dict.positions[0], truth, atol=0.3)
        np.testing.assert_allclose(by_file.positions[i], by_dict.positions[i], atol=1e-6)


def test_montage_writes_ome_zarr_json_and_registered_tileconfig(tmp_path):
    grid = stitch2d_grid()
    tiles = [grid.tiles[r, c] for r in range(grid.rows) for c in range(grid.cols)]
    montage = spectralign.stitch_grid(tiles, grid=(3, 2), overlap=(0.23, 0.12))
    out = montage.to_zarr(tmp_path / "m.ome.zarr", chunk=256)
    canvas = zarr.open_group(out, mode="r")["0"][:]
    np.testing.assert_array_equal(canvas, montage.renderer(chunk=256).image)
    doc = json.loads(montage.to_json(tmp_path / "m.json"))
    assert len(doc["tiles"]) == 6 and doc["tiles"][0]["cell"] == [0, 0]
    import csv

    rows = list(csv.DictReader(montage.to_csv(tmp_path / "m.csv").open()))
    assert len(rows) == 6 and rows[3]["name"] == montage.names[1, 1]
    np.testing.assert_allclose([float(rows[3]["x"]), float(rows[3]["a02"])],
                               [montage.positions[1, 1][0]] * 2)
    seams = list(csv.DictReader(montage.to_overlaps_csv(tmp_path / "o.csv").open()))
    assert len(seams) == len(montage.overlaps)
    for row, o in zip(seams, montage.overlaps):
        assert row["a"] == montage.label(o.t) and row["source"] == o.source
        assert float(row["seam_ncc"]) == o.seam_ncc and float(row["stage_ncc"]) == o.stage_ncc
    assert doc["overlaps"][0]["seam_ncc"] == montage.overlaps[0].seam_ncc
    entries = spectralign.read_tileconfig(montage.write_tileconfig(tmp_path / "TC.txt"))
    for e, t in zip(entries, montage.tiles):
        assert e.file == montage.names[t]
        np.testing.assert_allclose(e.position, montage.positions[t])


def test_quality_pictures(tmp_path):
    pytest.importorskip("matplotlib")
    grid = stitch2d_grid()
    tiles = [grid.tiles[r, c] for r in range(grid.rows) for c in range(grid.cols)]
    montage = spectralign.stitch_grid(tiles, grid=(3, 2), overlap=(0.23, 0.12))
    files = montage.plot(tmp_path / "plots", n=2)
    assert [f.name for f in files] == ["overlaps.png", "worst_seam_1.png", "worst_seam_2.png",
                                       "worst_residual_1.png", "worst_residual_2.png"]
    assert all(f.stat().st_size > 1000 for f in files)


def test_a_long_overlap_strip_is_drawn_in_readable_pieces(tmp_path):
    """A 2048 x 170 px strip drawn whole is a sliver; cut into rows of about
    3:1 each piece is as tall as it is wide / 3."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spectralign.pipelines.plots import _strip_figure

    rng = np.random.default_rng(0)
    a = rng.random((170, 2048))
    out = tmp_path / "strip.png"
    _strip_figure(plt, (a, a + 0.01), ("a", "b"), "strip", out)
    img = plt.imread(out)
    assert img.shape[0] > 0.5 * img.shape[1]  # rows of pieces, not one sliver
    _strip_figure(plt, (a.T, a.T), ("a", "b"), "tall strip", tmp_path / "tall.png")
    tall = plt.imread(tmp_path / "tall.png")
    assert tall.shape[0] > 0.5 * tall.shape[1]


def test_overlap_images_follow_the_transforms(sem_texture):
    from spectralign.pipelines.quality import overlap_images

    scene = sem_texture[:300, :500].astype(np.float64)
    tiles = {"a": scene[:, :300], "b": scene[:, 200:]}
    a, b = overlap_images(tiles, {"a": (0, 0), "b": (200, 0)}, "a", "b")
    assert a.shape == b.shape and a.shape[1] >= 90
    ok = np.isfinite(a) & np.isfinite(b)
    np.testing.assert_allclose(a[ok], b[ok], atol=1e-6)
    assert overlap_images(tiles, {"a": (0, 0), "b": (400, 0)}, "a", "b") is None


# -- layouts ---------------------------------------------------------------

def test_grid_layouts():
    def cells(**kw):
        return grid_positions(6, (2, 3), (100, 100), 0.1, **kw)[0]
    assert cells() == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert cells(layout="snake") == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]
    assert cells(major="col") == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert cells(major="col", layout="snake") == [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2)]
    assert cells(flip=(True, False))[0] == (0, 2)
    assert cells(flip=(False, True))[0] == (1, 0)
    _, pos = grid_positions(6, (2, 3), (100, 50), (0.1, 0.2))
    np.testing.assert_allclose(pos[4], (90, 40))


def test_snake_layout_is_stitched_like_raster(sem_grid):
    order = [0, 1, 2, 12, 11, 10]  # a 2 x 3 corner acquired as a snake
    tiles = [sem_grid.tiles[k] for k in order]
    montage = spectralign.stitch_grid(tiles, grid=(2, 3), overlap=0.16, layout="snake")
    for k in order:
        r, c = divmod(k, 10)
        truth = sem_grid.truth[k] - sem_grid.truth[0]
        np.testing.assert_allclose(montage.positions[r, c] - montage.positions[0, 0], truth,
                                   atol=0.3)


# -- bad input -----------------------------------------------------------------

def test_glob_that_matches_nothing(tmp_path):
    with pytest.raises(NoTilesError, match="no_such"):
        spectralign.stitch_grid(str(tmp_path / "no_such_*.tif"), grid=(2, 2))


def test_layout_that_does_not_match_the_tiles():
    tiles = [np.zeros((64, 64), np.float32)] * 5
    with pytest.raises(LayoutError, match="2 x 3 = 6 tiles.*Got 5"):
        spectralign.stitch_grid(tiles, grid=(2, 3))
    mixed = [np.zeros((64, 64), np.float32)] * 3 + [np.zeros((64, 80), np.float32)]
    with pytest.raises(LayoutError, match="one size"):
        spectralign.stitch_grid(mixed, grid=(2, 2))
    with pytest.raises(LayoutError, match="grid="):
        spectralign.stitch_grid(tiles)


def test_tileconfiguration_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "TileConfiguration.txt"
    path.write_text("# Define the number of dimensions we are working on\ndim = 2\n\n"
                    "a.tif; ; (0.0, 0.0)\nb.tif; ; (1.0 2.0)\n")
    with pytest.raises(TileConfigError, match="line 5"):
        spectralign.read_tileconfig(path)
    path.write_text("dim = 2\na.tif (0, 0)\n")
    with pytest.raises(TileConfigError, match="line 2.*semicolons"):
        spectralign.read_tileconfig(path)
    path.write_text("dim = 3\na.tif; 2; (0, 1, 2)\n")
    (entry,) = spectralign.read_tileconfig(path)
    assert entry.series == 2 and entry.position.tolist() == [0.0, 1.0, 2.0]


def test_tile_without_an_overlapping_match_is_reported(sem_grid):
    tiles = [sem_grid.tiles[k] for k in (0, 1, 2, 10, 11, 12)]
    tiles[5] = np.full_like(tiles[5], float(np.mean(tiles[5])))  # a blank tile
    with pytest.warns(SpectralignWarning, match="offsets to their neighbours"):
        montage = spectralign.stitch_grid(tiles, grid=(2, 3), overlap=0.16)
    assert montage.unmatched == [(1, 2)]
    assert "WARNING" in montage.report()
    np.testing.assert_allclose(montage.positions[1, 2] - montage.positions[0, 0],
                               sem_grid.nominal[12] - sem_grid.nominal[0], atol=25)


# -- command line --------------------------------------------------------------

def test_cli_stitch_writes_montage_json_and_tileconfig(tmp_path, capsys):
    grid = stitch2d_grid()
    for (r, c), img in grid.tiles.items():
        tifffile.imwrite(tmp_path / f"tile_r{r}_c{c}.tif", (np.asarray(img) * 255).astype(np.uint8))
    out = tmp_path / "out" / "m.ome.zarr"
    out.parent.mkdir()
    rc = cli.main(["stitch", str(tmp_path / "tile_*.tif"), "--grid", "3x2", "--overlap",
                   "0.23,0.12", "-o", str(out), "-q"])
    assert rc == 0
    assert capsys.readouterr().out == ""
    entries = spectralign.read_tileconfig(out.parent / "m.TileConfiguration.registered.txt")
    pos = {e.file: e.position for e in entries}
    found = pos["tile_r0_c1.tif"] - pos["tile_r0_c0.tif"]
    np.testing.assert_allclose(found, grid.reference[0, 1] - grid.reference[0, 0], atol=2)
    doc = json.loads((out.parent / "m.json").read_text())
    assert doc["residual_rms"] < 1.5
    assert zarr.open_group(out, mode="r")["0"].shape[0] > 442


def test_cli_stitch_bad_input_says_what_to_fix(tmp_path, capsys):
    rc = cli.main(["stitch", str(tmp_path / "*.tif"), "--grid", "2x2", "-o",
                   str(tmp_path / "m.ome.zarr")])
    assert rc == 2
    assert "Expected tile images matching" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["stitch", "x.tif", "--grid", "2by2", "-o", "m.ome.zarr"])
    assert exc.value.code == 2
    assert "ROWSxCOLS" in capsys.readouterr().err


def test_stage_positions_from_ome_tiff_metadata(tmp_path, sem_grid):
    keep = [0, 1, 10, 11]
    for i, k in enumerate(keep):  # stage in micrometres, 0.25 um pixels
        x, y = sem_grid.nominal[k] * 0.25
        tifffile.imwrite(tmp_path / f"t{i}.ome.tif", sem_grid.tiles[k], ome=True,
                         metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25,
                                   "Plane": {"PositionX": [x], "PositionY": [y]}})
    montage = spectralign.stitch_grid(str(tmp_path / "t*.ome.tif"), positions="ome")
    np.testing.assert_allclose(montage.nominal[3], sem_grid.nominal[11], atol=1e-9)
    for i, k in enumerate(keep):
        np.testing.assert_allclose(montage.positions[i] - montage.positions[0],
                                   sem_grid.truth[k] - sem_grid.truth[0], atol=0.3)
    tifffile.imwrite(tmp_path / "plain.tif", sem_grid.tiles[0])
    with pytest.raises(LayoutError, match="no OME metadata"):
        spectralign.stitch_grid([tmp_path / "plain.tif", tmp_path / "t1.ome.tif"],
                                positions="ome")


def test_stack_of_montaged_sections_in_one_placement(tmp_path, sem_grid, sem_big):
    # three sections, each a 2 x 2 grid cut from the same scene, every section
    # moved by a known offset on top of the tiles' stage errors
    base = [0, 1, 10, 11]
    offsets = [np.array([0.0, 0.0]), np.array([3.4, -2.2]), np.array([-1.7, 4.9])]
    big = sem_big
    sections, truth = [], {}
    for z, off in enumerate(offsets):
        tiles = []
        for k in base:
            x, y = sem_grid.truth[k] + off + 40
            crop = big[int(y) - 8:int(y) + 520, int(x) - 8:int(x) + 520]
            fy, fx = y - int(y), x - int(x)
            tiles.append(scipy.ndimage.shift(crop, (-fy, -fx), order=5)[8:520, 8:520]
                         .astype(np.float32))
            truth[(z,) + divmod(base.index(k), 2)] = np.array([x, y])
        sections.append(tiles)
    volume = spectralign.stitch_sections(sections, grid=(2, 2), overlap=0.16)
    found = np.array([volume.positions[t] for t in truth])
    err = found - np.array(list(truth.values()))
    err -= err.mean(axis=0)
    assert np.hypot(err[:, 0], err[:, 1]).max() < 0.2
    out = volume.to_zarr(tmp_path / "v.ome.zarr", chunk=256)
    assert zarr.open_group(out, mode="r")["0"].shape[0] == 3


@pytest.mark.parametrize("model, regularize", [("translation", None), ("euclidean", None),
                                               ("similarity", None), ("affine", None),
                                               ("affine", 0.0)])
def test_every_model_places_the_real_grid_at_its_scale(model, regularize):
    """Faint stage priors once let similarity and affine montages shrink to
    1 % of their size with a perfect-looking residual; windows on one line
    per overlap once left the affine shear free (tile centres 7-9 px off)."""
    grid = stitch2d_grid()
    tiles = [grid.tiles[r, c] for r in range(grid.rows) for c in range(grid.cols)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectralignWarning)  # no size warning either
        montage = spectralign.stitch_grid(tiles, grid=(3, 2), overlap=(0.23, 0.12),
                                          model=model, regularize=regularize)
    res = montage.placement
    assert res.scales.min() > 0.98 and res.scales.max() < 1.02
    assert all(abs(r - 1) < 0.03 for r in montage.extent_ratio)
    h, w = np.asarray(grid.tiles[0, 0]).shape
    centre = np.array([w / 2, h / 2])
    found = {t: a(centre) for t, a in res.transforms.items()}
    offset = np.mean([found[t] - grid.reference[t] for t in found], axis=0)
    err = [np.hypot(*(found[t] - offset - grid.reference[t])) for t in found]
    assert max(err) < 2.0
    ncc = [o.seam_ncc for o in montage.overlaps if o.source]
    assert np.median(ncc) > 0.95 and min(ncc) > 0.9
    assert abs(res.pixel_rms - res.rms) < 0.01  # scale 1: model px are tile px
    assert "tile px" in montage.report()


def test_a_placement_that_changes_sizes_warns():
    """Matches that say one tile is 10 % smaller than the other: the
    placement can follow them (similarity), and says so."""
    from spectralign.pipelines.placing import _check_size

    pl = spectralign.Placement()
    p = np.array([[x, y] for x in (150.0, 190.0) for y in (20.0, 180.0)])
    pl.addmatches("a", "b", p, (p - (140, 0)) / 0.9)
    res = pl.solve("similarity")
    with pytest.warns(SpectralignWarning, match="tile scales run from 0.9"):
        _check_size(res, {"a": (0, 0), "b": (140, 0)}, (200, 200))


def test_regularize_goes_with_the_models_that_scale_only():
    grid = stitch2d_grid()
    with pytest.raises(ValueError, match="only with model='similarity' or 'affine'"):
        spectralign.stitch_grid([grid.tiles[0, 0]] * 2, grid=(1, 2), model="euclidean",
                                regularize=0.5)
    for extra in (["--regularize", "0.5"], ["--model", "affine", "--regularize", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["stitch", "x*.tif", "--grid", "1x2", "-o", "o.ome.zarr", *extra])
        assert exit_.value.code == 2


_STITCH_AND_PRINT = """
import sys, numpy as np, tifffile, spectralign
from spectralign.datasets import synthetic_grid
sem = tifffile.imread(sys.argv[1])[:1024].astype(np.float32) / 255
g = synthetic_grid(sem, (3, 3), 256, 0.2, noise=0.3, psf=0.7, seed=2)
m = spectralign.stitch_grid(g.tiles, grid=(3, 3), overlap=0.2, model="affine",
                            workers=int(sys.argv[2]))
print(np.array([m.transforms[t].matrix for t in m.tiles]).tobytes().hex())
"""


def test_the_same_tiles_give_the_same_bits_whatever_the_threads():
    """Each run in a fresh process (a long-lived one measures FFT plans and
    loads the compiled loops as it goes, which moves the last bits)."""
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", _STITCH_AND_PRINT,
                            str(shared("sem_texture", "retic.tif")), str(n)],
                           capture_output=True, text=True, timeout=300, check=True).stdout
            for n in (1, 2, 3)]
    assert len(runs[0]) > 100 and runs[1] == runs[0] and runs[2] == runs[0]


def test_bad_files_among_the_tiles(tmp_path, capsys):
    """A note beside the tiles is skipped; a truncated tile is one named
    error line (exit 2), before anything is written."""
    grid = stitch2d_grid()
    for k, (r, c) in enumerate((r, c) for r in range(3) for c in range(2)):
        tifffile.imwrite(tmp_path / f"t{k}.tif",
                         (np.asarray(grid.tiles[r, c]) * 255).astype(np.uint8))
    (tmp_path / "README.md").write_text("# acquisition notes\n")
    (tmp_path / "TileConfiguration.txt").write_text("dim = 2\n")
    out = tmp_path / "out" / "m.ome.zarr"
    args = ["stitch", str(tmp_path), "--grid", "3x2", "--overlap", "0.23,0.12", "-o", str(out), "-q"]
    assert cli.main(args) == 0
    capsys.readouterr()
    data = (tmp_path / "t3.tif").read_bytes()
    (tmp_path / "t3.tif").write_bytes(data[: len(data) // 2])
    assert cli.main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "t3.tif" in err and "Traceback" not in err
    with pytest.raises(spectralign.errors.ImageReadError, match="t3.tif"):
        spectralign.Image(tmp_path / "t3.tif")


def test_cli_refuses_earlier_outputs_before_any_work(tmp_path, capsys):
    grid = stitch2d_grid()
    for k, (r, c) in enumerate((r, c) for r in range(3) for c in range(2)):
        tifffile.imwrite(tmp_path / f"t{k}.tif",
                         (np.asarray(grid.tiles[r, c]) * 255).astype(np.uint8))
    out = tmp_path / "a.ome.zarr"
    args = ["stitch", str(tmp_path / "t*.tif"), "--grid", "3x2", "--overlap", "0.23,0.12", "-q"]
    import time

    t0 = time.perf_counter()
    assert cli.main(args + ["-o", str(out)]) == 0
    run = time.perf_counter() - t0
    assert (tmp_path / "a.TileConfiguration.registered.txt").exists()
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    t0 = time.perf_counter()
    assert cli.main(args + ["-o", str(out)]) == 2
    assert time.perf_counter() - t0 < 0.4 * run
    err = capsys.readouterr().err
    assert "--overwrite" in err and "resume=" not in err and len(err.strip().splitlines()) == 1
    # a second montage beside the first keeps the first one's files
    assert cli.main(args + ["-o", str(tmp_path / "b.ome.zarr")]) == 0
    assert (tmp_path / "b.TileConfiguration.registered.txt").exists()
    for name, mtime in before.items():
        assert (tmp_path / name).stat().st_mtime_ns == mtime
    # only the JSON beside a new OUT: still refused, naming it
    (tmp_path / "c.json").write_text("{}")
    assert cli.main(args + ["-o", str(tmp_path / "c.ome.zarr")]) == 2
    assert "c.json" in capsys.readouterr().err


def test_a_montage_in_separate_pieces_warns_and_names_them(sem_texture, he_slide):
    """Two rows of unrelated content: each row matches, the rows do not."""
    top = synthetic_grid(sem_texture, (1, 3), 256, 0.2, seed=1)
    bottom = synthetic_grid(he_slide, (1, 3), 256, 0.2, seed=2)
    tiles = list(top.tiles) + list(bottom.tiles)
    pieces = r"2 separate pieces .*\[\(0, 0\), \(0, 1\), \(0, 2\)\]; \[\(1, 0\)"
    with pytest.warns(SpectralignWarning, match=pieces):
        spectralign.stitch_grid(tiles, grid=(2, 3), overlap=0.2)


def test_seam_scores_from_the_pixels_of_the_real_grid():
    grid = stitch2d_grid()
    tiles = [grid.tiles[r, c] for r in range(grid.rows) for c in range(grid.cols)]
    montage = spectralign.stitch_grid(tiles, grid=(3, 2), overlap=(0.23, 0.12))
    pairs = [(o.t, o.t_) for o in montage.overlaps]
    reference = spectralign.seam_scores(grid.tiles, grid.reference, pairs)
    for o, ref in zip(montage.overlaps, reference):
        assert np.isfinite(o.seam_ncc) and o.seam_ncc >= ref.ncc - 0.03, (o, ref)
        assert o.stage_ncc < o.seam_ncc - 0.3  # the guessed layout is far off
    # one tile moved by 3 px: its seams drop, the others do not
    moved = dict(montage.positions)
    moved[1, 1] = moved[1, 1] + (3, 0)
    worse = spectralign.seam_scores(grid.tiles, moved, pairs)
    for o, w in zip(montage.overlaps, worse):
        if (1, 1) in (o.t, o.t_):
            assert w.ncc < o.seam_ncc - 0.1
        else:
            assert w.ncc == pytest.approx(o.seam_ncc, abs=1e-6)
    report = montage.report()
    assert "seams (pixel NCC" in report and "worst seams" in report
    doc = json.loads(montage.to_json())
    assert all("seam_ncc" in ov for ov in doc["overlaps"])


def test_report_names_tiles_by_file_when_placed_from_positions(tmp_path):
    grid = stitch2d_grid()
    files = []
    for k, (r, c) in enumerate((r, c) for r in range(3) for c in range(2)):
        files.append(tmp_path / f"shot_{k}.tif")
        tifffile.imwrite(files[-1], (np.asarray(grid.tiles[r, c]) * 255).astype(np.uint8))
    positions = {k: grid.reference[rc] + (3, -2)
                 for k, rc in enumerate((r, c) for r in range(3) for c in range(2))}
    montage = spectralign.stitch_grid([str(f) for f in files], positions=positions)
    report = montage.report()
    assert "shot_" in report.split("worst overlaps")[1]
    assert montage.label(0) == "shot_0.tif"


@pytest.mark.parametrize("marks, model", [(80, "translation"), (80, "euclidean"),
                                          (80, "similarity"), (80, "affine"),
                                          (200, "translation")])
def test_graph_paper_is_placed_by_what_the_pixels_show(marks, model):
    """Periodic content: windows also match one period off, so the learned
    threshold rejects most of them; the pixels still show the true offsets.
    (The euclidean montage was once turned by 0.1 deg to fit the stage's
    random errors: 1.2 px at its far tiles.)"""
    from spectralign.datasets import graph_paper

    g = synthetic_grid(graph_paper(marks=marks, seed=1), (2, 5), 400, 0.2, stage_error=8,
                       noise=0.05, psf=1.0, vignetting=0.3, gain=0.1, seed=3)
    m = spectralign.stitch_grid(g.tiles, grid=(2, 5), overlap=0.2, model=model)
    assert not m.unmatched
    centre = np.array([200.0, 200.0])
    d = np.array([m.transforms[t](centre) for t in m.tiles]) - (g.truth + centre)
    d -= d.mean(0)
    assert np.hypot(*d.T).max() < 0.3
    assert abs(m.placement.scales - 1).max() < 0.002
    placed = np.array([o.seam_ncc for o in m.overlaps])
    stage = np.array([o.stage_ncc for o in m.overlaps])
    assert np.all(placed >= stage - 0.02)
    assert np.median(placed) > np.median(stage) + 0.3
    assert {o.source for o in m.overlaps} >= {"windows"}


def test_a_tile_without_matches_moves_with_its_neighbours(sem_texture):
    """A blank tile keeps its stage offsets to the tiles around it, not its
    stage position, so its seams stay as good as the stage layout's."""
    g = synthetic_grid(sem_texture, (2, 3), 256, 0.2, stage_error=0, seed=4)
    tiles = [t.copy() for t in g.tiles]
    tiles[2][:] = tiles[2].mean()  # tile (0, 2): blank resin
    shift = np.array([37.0, -21.0])  # the whole stage is off by this much
    positions = {k: tuple(g.nominal[k] + shift * (k != 0)) for k in range(6)}
    with pytest.warns(SpectralignWarning, match="no kept match"):
        m = spectralign.stitch_grid(tiles, positions=positions)
    assert m.unmatched == [2]
    placed = np.array([m.positions[k] for k in range(6)])
    err = (placed - placed[0]) - (g.truth - g.truth[0])
    assert np.hypot(*err.T).max() < 0.5  # tile 2 too: it followed tiles 1 and 5


def test_conflicting_ties_are_settled_by_the_pixels(sem_texture):
    """Tile (1, 1)'s top strip shows its content 15 px aside: two ties put it
    one way, one the other, and least squares split the difference (seams
    0.49-0.78, residuals 3-7 px, no warning).  Letting go the tie whose loss
    makes the seams agree best leaves a placement every kept tie agrees
    with, and the seam it gave up is reported."""
    g = synthetic_grid(sem_texture, (2, 2), 300, 0.2, stage_error=3, noise=0.05, seed=1)
    tiles = [t.copy() for t in g.tiles]
    tiles[3][:70, 15:] = tiles[3][:70, :-15].copy()
    with pytest.warns(SpectralignWarning, match="agree worse"):
        m = spectralign.stitch_grid(tiles, grid=(2, 2), overlap=0.2)
    tied = [o for o in m.overlaps if o.source]
    assert len(tied) >= 4 and all(o.rms < 0.2 for o in tied)
    assert min(o.seam_ncc for o in tied) > 0.7
    assert m.placement.rms < 0.2
