"""The documentation site builds without a warning (API pages from the docstrings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra is not installed")
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(site), "--config-file", str(ROOT / "mkdocs.yml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    api = (site / "api" / "index.html").read_text()
    # the API page is generated from the docstrings, not written by hand
    for name in ("stitch_grid", "align_stack", "Matcher", "Placement", "Renderer"):
        assert name in api
    assert "Stitch a grid of tiles" in api


@pytest.mark.parametrize("module", ["spectralign.match.matcher", "spectralign.pipelines.quality",
                                    "spectralign.datasets"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
