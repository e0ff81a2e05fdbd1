"""The command line and the shipped example data."""

import re
import subprocess
import sys

import numpy as np
import pytest

import spectralign
from spectralign.cli import main
from spectralign.datasets import stitch2d_grid

ROW = re.compile(
    r"^\((\d+), (\d+)\)->\((\d+), (\d+)\)\s+"
    r"(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)$")


def test_example_matches_every_pair_within_two_pixels(capsys):
    status = main(["example"])
    out = capsys.readouterr().out
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"spectralign {spectralign.__version__}: matching the shipped 3 x 2")
    assert lines[1].split() == ["pair", "found", "offset", "(x,", "y)", "reference", "diff", "SNR"]
    rows = [ROW.match(line) for line in lines[2:9]]
    assert all(rows), lines[2:9]
    assert len(rows) == 7
    pairs = set()
    for row in rows:
        r, c, r_, c_ = (int(v) for v in row.groups()[:4])
        fx, fy, rx, ry, diff, snr = (float(v) for v in row.groups()[4:])
        assert (r_ - r, c_ - c) in ((0, 1), (1, 0))  # neighbours only
        assert 0 <= r_ < 3 and 0 <= c_ < 2
        pairs.add((r, c, r_, c_))
        assert diff < 2.0
        assert diff == pytest.approx(np.hypot(fx - rx, fy - ry), abs=0.02)
        assert snr > 10
        # a right neighbour is about 380 px to the right, a lower one 396 px down
        step = (380, 3) if c_ > c else (-5, 396)
        np.testing.assert_allclose((fx, fy), step, atol=10)
    assert len(pairs) == 7
    summary = re.match(r"^matched (\d+) pairs in [\d.]+ s; largest difference from the "
                       r"reference aligner ([\d.]+) px$", lines[9])
    assert summary and int(summary[1]) == 7
    assert float(summary[2]) == pytest.approx(max(float(row[9]) for row in rows), abs=0.01)
    # no command at all runs the example too, with the same numbers
    assert main([]) == 0
    assert capsys.readouterr().out.splitlines()[:9] == lines[:9]
    placed = re.search(r"largest distance from the reference positions ([\d.]+) px", out)
    assert placed and float(placed.group(1)) < 2.0
    assert re.search(r"rendered a (\d+) x (\d+) px montage", out)


def test_example_writes_ome_zarr(tmp_path, capsys):
    import zarr

    assert main(["example", "-o", str(tmp_path / "m.ome.zarr")]) == 0
    root = zarr.open_group(tmp_path / "m.ome.zarr", mode="r")
    assert root["0"].ndim == 2 and "ome" in root.attrs


def test_version_exits_zero_and_prints_it(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"spectralign {spectralign.__version__}"


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_module_help_runs_in_a_fresh_interpreter():
    done = subprocess.run([sys.executable, "-m", "spectralign", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: spectralign")
    assert "example" in done.stdout and "--version" in done.stdout


def test_stitch2d_grid_is_keyed_by_row_and_column():
    grid = stitch2d_grid()
    assert (grid.rows, grid.cols) == (3, 2)
    assert sorted(grid.tiles) == sorted(grid.reference) == [(r, c) for r in range(3)
                                                           for c in range(2)]
    for tile in grid.tiles.values():
        assert isinstance(tile, spectralign.Image) and tile.shape == (442, 512)
        assert 0 <= tile.min() and tile.max() <= 1
        assert "stitch2d_ex[Grid@" in tile.source
    # the file "Grid@0 1" is column 0, row 1; its stored position (395.9, 4.9) is (y, x)
    assert "Grid@0 1" in grid.tiles[1, 0].source
    np.testing.assert_allclose(grid.reference[1, 0], (4.91668701171875, 395.91877841949463))
    np.testing.assert_allclose(grid.reference[0, 1], (389.53586196899414, 2.2812623977661133))
    assert grid.overlap == (0.23, 0.12)
