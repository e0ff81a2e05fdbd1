"""The notebooks run: their code cells are executed in order, as a script,
from the notebooks folder (so that they cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs(name):
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert code.strip()
    subprocess.run([sys.executable, "-c", code], cwd=NOTEBOOKS, check=True, timeout=600,
                   capture_output=True, text=True)
