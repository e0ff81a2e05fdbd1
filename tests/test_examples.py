"""The example scripts run and print what they promise (so they cannot rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name, *args):
    out = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)],
                         capture_output=True, text=True, check=True, timeout=600)
    return out.stdout


def test_stitch_shipped_grid(tmp_path):
    text = run("stitch_shipped_grid.py", tmp_path)
    assert "6 tiles" in text
    assert (tmp_path / "montage.ome.zarr" / "zarr.json").exists()
    assert (tmp_path / "TileConfiguration.registered.txt").exists()


def test_align_known_stack():
    text = run("align_known_stack.py")
    worst = float(re.search(r"max ([0-9.]+)", text).group(1))
    assert worst <= 0.25
