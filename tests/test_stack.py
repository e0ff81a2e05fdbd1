"""Serial sections: align_stack on the real serial-section TEM stack."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.ndimage
import zarr

import spectralign
from spectralign import cli
from spectralign.datasets import perturb_sections
from spectralign.errors import LayoutError, NoMatchesError, SpectralignWarning

from conftest import shared


def perturb(images, rng):
    """Each image moved by a known rotation (+-1 degree about its centre)
    and translation (+-30 px): (moved images, their transforms)."""
    return perturb_sections(images, shift=30, angle=1, seed=rng)


@pytest.fixture(scope="module")
def sections():
    return [spectralign.Image(shared("sstem_stack", f"{z}.png")) for z in range(30)]


@pytest.fixture(scope="module")
def perturbed_stack(sections):
    return perturb(sections, np.random.default_rng(4))


def corner_errors(transforms, truth, size=512):
    """Per section, RMS distance of the image corners from where the other
    sections put them, after the common transform is removed."""
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], float)
    mapped = np.array([transforms[z](truth[z](corners)) for z in range(len(truth))])
    mapped -= mapped.mean(axis=0)  # the common (gauge) transform, to first order
    return np.sqrt((mapped ** 2).sum(-1).mean(-1))


def test_known_rotations_and_translations_are_recovered(sections):
    # 30 copies of one real section, each moved by a known rigid transform:
    # the only stack whose true alignment is known exactly
    moved, truth = perturb([sections[0]] * 30, np.random.default_rng(5))
    stack = spectralign.align_stack(moved)
    err = corner_errors(stack.transforms, truth)
    assert err.max() <= 0.25
    assert stack.placement.ndropped == 0


def neighbour_ncc(volume):
    """Mean correlation of neighbouring sections (centre, lightly smoothed)."""
    vals = []
    for z in range(len(volume) - 1):
        a, b = (scipy.ndimage.gaussian_filter(np.asarray(volume[k], float)[128:-128, 128:-128], 2)
                for k in (z, z + 1))
        a, b = a - a.mean(), b - b.mean()
        vals.append((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
    return float(np.mean(vals))


def test_real_stack_is_realigned(sections, perturbed_stack):
    # Neighbouring real sections differ (the tissue changes over 50 nm), and
    # they are not rigidly aligned to each other to begin with: the best
    # rigid offsets between them reach 27 px.  So the test asks that the
    # perturbed stack ends at least as coherent as the stack as published.
    moved, _ = perturbed_stack
    stack = spectralign.align_stack(moved)
    volume = stack.renderer(chunk=512).volume.compute()
    published = neighbour_ncc(sections)
    assert neighbour_ncc(moved) < published - 0.1
    assert neighbour_ncc(volume) >= published
    assert (stack.kept >= 16).all()  # of 64 windows per pair


def test_aligned_volume_is_written_as_zyx(tmp_path, perturbed_stack):
    images, _ = perturbed_stack
    stack = spectralign.align_stack(images[:4], model="translation")
    out = stack.to_zarr(tmp_path / "v.ome.zarr", chunk=256)
    vol = zarr.open_group(out, mode="r")["0"]
    assert vol.ndim == 3 and vol.shape[0] == 4
    # aligned: neighbouring sections correlate far better than as perturbed
    assert neighbour_ncc(vol[:]) > neighbour_ncc(images[:4]) + 0.1


def test_cli_align_stack(tmp_path, perturbed_stack):
    import tifffile

    images, truth = perturbed_stack
    for z in range(5):
        tifffile.imwrite(tmp_path / f"s{z:02d}.tif", images[z])
    out = tmp_path / "v.ome.zarr"
    assert cli.main(["align-stack", str(tmp_path / "s*.tif"), "-o", str(out), "-q"]) == 0
    assert zarr.open_group(out, mode="r")["0"].shape[0] == 5
    assert (tmp_path / "v.json").exists()


def test_one_section_is_not_a_stack():
    with pytest.raises(LayoutError, match="at least two"):
        spectralign.align_stack([np.zeros((64, 64), np.float32)])


@pytest.mark.parametrize("blank", [[0], [4], [3, 4], [7]])
def test_blank_sections_are_skipped_not_chained_through(sections, blank):
    # a missing section imaged as noise, or as a flat frame, must not carry
    # the sections after it off with it
    moved, truth = perturb([sections[0]] * 8, np.random.default_rng(6))
    rng = np.random.default_rng(0)
    for z in blank:
        moved[z] = (rng.normal(0.5, 0.1, moved[z].shape) if z % 2 == 0
                    else np.full_like(moved[z], 0.5)).astype(np.float32)
    with pytest.warns(SpectralignWarning, match="match neither neighbour"):
        stack = spectralign.align_stack(moved)
    assert stack.unmatched == blank
    good = [z for z in range(8) if z not in blank]
    err = corner_errors({k: stack.transforms[z] for k, z in enumerate(good)},
                        [truth[z] for z in good])
    assert err.max() <= 0.25


def test_stack_with_nothing_in_common_is_an_error():
    rng = np.random.default_rng(1)
    noise = [rng.normal(size=(256, 256)).astype(np.float32) for _ in range(3)]
    with pytest.raises(NoMatchesError, match="no match between any two"):
        spectralign.align_stack(noise)


def test_cli_align_stack_strict_fails_on_a_blank_section(tmp_path, perturbed_stack, capsys):
    import tifffile

    images, _ = perturbed_stack
    for z in range(4):
        tifffile.imwrite(tmp_path / f"s{z}.tif", images[z] if z != 2 else
                         np.full_like(images[z], 0.5))
    out = tmp_path / "v.ome.zarr"
    args = ["align-stack", str(tmp_path / "s*.tif"), "-o", str(out), "-q"]
    assert cli.main(args + ["--strict", "--overwrite"]) == 1
    assert "[2]" in capsys.readouterr().err
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [s["matched"] for s in doc["sections"]] == [True, True, False, True]



@pytest.mark.parametrize("model", ["translation", "euclidean", "similarity", "affine"])
def test_every_model_aligns_the_real_stack_at_its_scale(perturbed_stack, model):
    """The faint priors that keep unmatched sections in place once let the
    models that scale shrink the stack to a 2 x 2 px volume reporting RMS
    0.000 px; the pixels now say how well neighbours agree."""
    images, _ = perturbed_stack
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectralignWarning)  # no scale warning
        stack = spectralign.align_stack(images[:10], model=model)
    res = stack.placement
    # similarity and affine: each pair's scale is free, and plain it drifts
    # along the stack by 3-4 % over these 10 sections; the default pull
    # towards scale 1 keeps it within 2 %
    assert res.scales.min() > 0.98 and res.scales.max() < 1.02
    assert res.rms > 0.5  # real sections differ: residuals of whole pixels
    aligned = np.array([s.ncc for s in stack.seams])
    before = np.array([s.ncc for s in stack.seams_before])
    assert len(aligned) == 9 and np.all(np.isfinite(aligned))
    if model != "translation":  # the stack was turned by up to 2 degrees
        assert np.median(aligned) > np.median(before) + 0.1
    assert np.all(aligned > before - 0.02)
    assert "neighbour seams" in stack.report()


def test_cli_align_stack_takes_a_multipage_tiff(tmp_path, perturbed_stack):
    import tifffile

    images, _ = perturbed_stack
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([np.asarray(im) for im in images[:5]]))
    out = tmp_path / "v.ome.zarr"
    assert cli.main(["align-stack", str(tmp_path / "stack.tif"), "-o", str(out), "-q"]) == 0
    assert zarr.open_group(out, mode="r")["0"].shape[0] == 5
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [s["name"] for s in doc["sections"]][:2] == ["stack.tif[0]", "stack.tif[1]"]
    assert all(s["matched"] for s in doc["sections"])


def test_windows_per_side_is_the_old_grid(perturbed_stack):
    images, _ = perturbed_stack
    new = spectralign.align_stack(images[:3], windows_per_side=4)
    old = spectralign.align_stack(images[:3], grid=4)
    for z in range(3):
        np.testing.assert_array_equal(new.transforms[z].matrix, old.transforms[z].matrix)
    assert new.tilesize == new.size == (512, 512)
    assert new.kept.max() <= 16
