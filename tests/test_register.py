"""register(): two whole images with no prior, against known answers cut
from the real images by exact (order-5 spline) resampling."""

from __future__ import annotations

import dataclasses
import importlib
import json
import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

import spectralign
from spectralign import Affine, MaskError, NoOverlapError, register
from spectralign.cli import main
from spectralign.errors import ImageDimensionError
from spectralign.registration.denoise import DENOISERS, denoise_image

from conftest import shared


def sample(src: np.ndarray, a: Affine, n: int) -> np.ndarray:
    """out[y, x] = src at a((x, y)), order-5 spline."""
    return ndi.affine_transform(src.astype(np.float64), a.linear[::-1, ::-1],
                                offset=a.matrix[::-1, 2], output_shape=(n, n),
                                order=5).astype(np.float32)


def pair(src, truth: Affine, n: int, centre, rng=None, noise=0.0):
    """fixed: the n px square about ``centre``; moving: what ``truth``
    (moving -> fixed) says, so that moving(x) = fixed(truth(x))."""
    at = Affine.translator(np.asarray(centre) - n / 2)
    fixed, moving = sample(src, at, n), sample(src, at @ truth, n)
    if noise:
        rng = rng or np.random.default_rng(0)
        fixed = fixed + rng.normal(0, noise, fixed.shape).astype(np.float32)
        moving = moving + rng.normal(0, noise, moving.shape).astype(np.float32)
    return fixed, moving


def about_centre(lin: Affine, n: int, shift=(0.0, 0.0)) -> Affine:
    c = Affine.translator((n / 2, n / 2))
    return Affine.translator(shift) @ c @ lin @ c.inverse()


def corner_error(est: Affine, truth: Affine, n: int) -> float:
    c = np.array([[0, 0], [n, 0], [0, n], [n, n]], float)
    return float(np.linalg.norm(est(c) - truth(c), axis=1).max())


@pytest.fixture(scope="module")
def sem(sem_texture):
    return ndi.gaussian_filter(sem_texture.astype(np.float64), 0.8)


@pytest.fixture(scope="module")
def tem():
    import imagecodecs

    img = imagecodecs.imread(shared("sstem_stack", "0.png")).astype(np.float64) / 255
    return ndi.gaussian_filter(img, 0.8)


def test_rotation_and_shift_known_on_sem(sem):
    truth = about_centre(Affine.rotator(np.radians(13.7)), 200, (3.3, -2.6))
    fixed, moving = pair(sem, truth, 200, (700, 500))
    reg = register(fixed, moving, model="rigid")
    assert abs(np.degrees(reg.transform.angle()) - 13.7) < 0.02
    assert corner_error(reg.transform, truth, 200) < 0.1
    assert reg.snr > spectralign.registration.SNR_THRESHOLD
    assert reg.windows >= 5 and reg.ncc > 0.95


def test_half_turn_is_told_from_none(tem):
    truth = about_centre(Affine.rotator(np.radians(171.0)), 160)
    fixed, moving = pair(tem, truth, 160, (256, 256))
    reg = register(fixed, moving, model="rigid")
    assert abs(np.degrees(reg.transform.angle()) - 171.0) < 0.05
    assert corner_error(reg.transform, truth, 160) < 0.2


def test_similarity_finds_scale_and_a_partial_overlap(sem):
    lin = Affine.rotator(np.radians(-6.0)) @ Affine.scaler(1.07)
    truth = about_centre(lin, 256, (70.0, 25.0))  # about 65 % overlap
    fixed, moving = pair(sem, truth, 256, (760, 520), noise=0.01)
    reg = register(fixed, moving, model="similarity")
    assert abs(reg.transform.magnification() - 1.07) < 1e-3
    assert corner_error(reg.transform, truth, 256) < 0.3
    assert 0.5 < reg.overlap < 0.8


def test_half_overlap_is_found_by_the_parts_spectra(sem, monkeypatch):
    """Crops sharing half their area: the whole spectra miss the angle, the
    parts that hold the same content find it, and no slow search runs."""
    import importlib

    from spectralign.registration.fourier_mellin import rotation_scale_candidates

    reg_mod = importlib.import_module("spectralign.registration.register")
    truth = about_centre(Affine.rotator(np.radians(6.1)) @ Affine.scaler(1.062), 320, (160.0, 0.0))
    fixed, moving = pair(sem, truth, 320, (515, 441), noise=0.01)
    full = np.ones(fixed.shape, bool)
    whole = rotation_scale_candidates(*reg_mod._shrink(fixed, full, 2),
                                      *reg_mod._shrink(moving, full, 2), scale=True, k=2)
    assert all(abs(np.degrees(a) - 6.1) > 1.5 for a, _, _ in whole)
    _, first = next(reg_mod._parts(fixed, full, moving, full, "similarity"))
    assert abs(np.degrees(first.angle()) - 6.1) < 0.5
    assert abs(first.magnification() - 1.062) < 0.01

    def no_search(*args):
        raise AssertionError("the full angle search ran")

    monkeypatch.setattr(reg_mod, "_search", no_search)
    reg = register(fixed, moving, model="similarity")
    assert corner_error(reg.transform, truth, 320) < 0.3
    assert 0.4 < reg.overlap < 0.6


def test_rows_of_cells_placed_at_the_offset_their_parts_tell():
    """Two crops of a widefield tile of plant root cells (long bright
    walls along x) overlapping by 56 % along x: on the whole frames the
    walls correlate best with the frames on each other, and the windows
    agreed there weakly (SNR 5.9, detail 0.48); the parts that share the
    content place moving where it lies."""
    import imagecodecs

    img = imagecodecs.imread(shared("yfp_montage_pair", "C2-20250523_montage_YFP_ideal_02.jpg"))
    img = img.astype(np.float64)
    img = ndi.gaussian_filter((img.mean(axis=-1) if img.ndim == 3 else img) / img.max(), 0.8)
    truth = Affine(np.array([[0.9609, 0.0053, -136.03], [-0.0053, 0.9609, 7.08]]))
    fixed, moving = pair(img, truth, 320, (751.07, 639.84), np.random.default_rng(35), noise=0.02)
    reg = register(fixed, moving, model="similarity")
    inside = np.array([[x, y] for x in np.linspace(0, 319, 9) for y in np.linspace(0, 319, 9)])
    inside = inside[((truth(inside) >= 0) & (truth(inside) <= 319)).all(axis=1)]
    assert np.abs(reg.transform(inside) - truth(inside)).max() < 0.5
    assert reg.detail_ncc > 0.9


def test_a_lattice_a_period_off_is_told(sem):
    """A lattice of dots repeats every 20 px: any placement a period off
    fits its pixels as well (detail 0.999, windows at SNR 10), and no
    check of the result alone tells it; a rival peak a period from the
    result says so in a warning.  A real texture has no such rival."""
    import importlib

    reg_mod = importlib.import_module("spectralign.registration.register")
    dots = np.zeros((400, 400))
    dots[8::20, 8::20] = 1.0
    lattice = ndi.gaussian_filter(dots, 3.0)
    lattice = lattice / lattice.max() + 0.02 * np.random.default_rng(1).standard_normal((400, 400))
    fixed, moving = lattice[100:292, 100:292], lattice[103:295, 95:287]
    with pytest.warns(spectralign.SpectralignWarning, match="repeats"):
        reg = register(fixed, moving, model="translation")
    off = reg.transform.translation() - np.array([-5.0, 3.0])
    assert np.abs(off - 20 * np.round(off / 20)).max() < 0.1  # right, or whole periods off
    full = np.ones((192, 192), bool)
    ratio, step = reg_mod._rival(fixed.astype(np.float32), full, moving.astype(np.float32),
                                 full, reg.transform)
    assert ratio >= reg_mod.RIVAL_RATIO and 17 <= np.abs(step).max() <= 23
    f2, m2 = sem[200:392, 300:492], sem[203:395, 295:487]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg = register(f2, m2, model="translation")
    assert np.abs(reg.transform.translation() - np.array([-5.0, 3.0])).max() < 0.05
    assert reg_mod._rival(f2.astype(np.float32), full, m2.astype(np.float32), full,
                          reg.transform)[0] < 0.5


def test_half_turn_placed_from_its_twin_as_directly(sem):
    """A half-turn's canvas read backwards from its twin's places moving
    where a canvas of its own does, after canvases of other sizes."""
    import importlib

    reg_mod = importlib.import_module("spectralign.registration.register")
    truth = about_centre(Affine.rotator(np.radians(190.0)), 320, (60.0, -40.0))
    fixed, moving = pair(sem, truth, 320, (500, 500))
    full = np.ones(fixed.shape, bool)
    sf, sfm = reg_mod._shrink(fixed, full, 5)
    sm, smm = reg_mod._shrink(moving, full, 5)
    lins = [Affine.rotator(np.radians(a)) for a in (10.0, 45.0, 190.0)]
    together = reg_mod._placements(sf, sfm, sm, smm, lins, 5, 1.0)
    alone = reg_mod._placements(sf, sfm, sm, smm, lins[2:], 5, 1.0)
    best = max(together, key=lambda vt: vt[0])
    assert abs(np.degrees(best[1].angle()) % 360 - 190.0) < 1e-6
    assert np.abs(best[1].translation() - alone[0][1].translation()).max() < 2.0
    assert corner_error(best[1], truth, 320) < 10.0  # 5x shrunk: coarse


@pytest.mark.parametrize("angle", [-17.0, 4.0, 165.0])
def test_small_whole_frames_placed_over_the_frame(sem, angle):
    """Small whole frames are first placed by one windowed correlation
    over the frame: the right turn of the two, within the windows' reach,
    and register's answer from it."""
    import importlib

    reg_mod = importlib.import_module("spectralign.registration.register")
    truth = about_centre(Affine.rotator(np.radians(angle)), 128, (6.0, -9.0))
    fixed, moving = pair(sem, truth, 128, (600, 450), noise=0.02)
    full = np.ones(fixed.shape, bool)
    # Fourier-Mellin's angle, a little off and known modulo half a turn
    spectra_angle = np.radians((angle + 0.4 + 90.0) % 180.0 - 90.0)
    placed = reg_mod._framed(fixed, full, moving, full, spectra_angle, 1.0)
    assert len(placed) == 1
    assert corner_error(placed[0][1], truth, 128) < 4.0
    reg = register(fixed, moving, model="rigid")
    assert corner_error(reg.transform, truth, 128) < 0.1


def test_a_framed_placement_that_fails_falls_back_to_the_masked_ones(sem, monkeypatch):
    """Where the framed placement is wrong (its windows cannot agree), the
    masked correlation's placements follow and find the answer."""
    import importlib

    reg_mod = importlib.import_module("spectralign.registration.register")
    calls = []

    def off(*args, **kwargs):
        calls.append(args)
        return [(99.0, Affine.translator((37.0, -41.0)))]
    monkeypatch.setattr(reg_mod, "_framed", off)
    truth = about_centre(Affine.rotator(np.radians(11.0)), 128, (4.0, 3.0))
    fixed, moving = pair(sem, truth, 128, (640, 520), noise=0.02)
    reg = register(fixed, moving, model="rigid")
    assert calls and corner_error(reg.transform, truth, 128) < 0.1


def test_the_framed_placements_rival_check_stands_for_the_results(sem):
    """A small pair's framed placement holds the rival check: on a real
    texture it reads as the result's own check does; a result away from
    the placement gets its own."""
    import importlib

    reg_mod = importlib.import_module("spectralign.registration.register")
    full = np.ones((128, 128), bool)
    for angle, centre in ((7.0, (500, 600)), (-13.0, (700, 400))):
        truth = about_centre(Affine.rotator(np.radians(angle)), 128, (3.0, -2.0))
        fixed, moving = (a.astype(np.float32) for a in pair(sem, truth, 128, centre, noise=0.02))
        found, notes = reg_mod._solve(fixed, full, moving, full, "rigid")
        framed = reg_mod._rival_of(notes, found[0], fixed.shape)
        own = reg_mod._rival(fixed, full, moving, full, found[0])
        assert framed is not None and abs(framed[0] - own[0]) < 0.1 and framed[0] < 0.6
        # a result away from the framed placement gets its own check
        assert reg_mod._rival_of(notes, Affine.translator((5.0, 0.0)) @ found[0],
                                 fixed.shape) is None


def test_affine_known_on_he(he_slide):
    he = ndi.gaussian_filter(he_slide[200:1400, 200:1400].astype(np.float64), 0.8)
    lin = Affine(np.array([[1.015, 0.012, 0], [-0.02, 0.985, 0]]))
    truth = about_centre(Affine.rotator(np.radians(1.2)) @ lin, 256, (4.2, -3.1))
    # a textured spot (the slide is half blank)
    fixed, moving = pair(he, truth, 256, (430, 600))
    reg = register(fixed, moving, model="affine")
    assert corner_error(reg.transform, truth, 256) < 0.1


def test_mask_keeps_a_static_block_out_of_the_match(tem):
    """A bright static block in both images would pull a plain correlation
    to zero shift; masked out, the subpixel shift is found."""
    d = np.array([2.35, -1.6])
    fixed, moving = pair(tem, Affine.translator(-d), 200, (256, 256))
    block = np.zeros(fixed.shape, bool)
    block[60:140, 40:200] = True
    fixed[block] = moving[block] = 1.0
    reg = register(fixed, moving, model="translation", fixed_mask=~block, moving_mask=~block)
    assert np.abs(reg.transform.translation() + d).max() < 0.05
    assert not reg.valid()[block].any()


@settings(max_examples=6, deadline=None)
@given(dx=st.floats(-20, 20), dy=st.floats(-20, 20))
def test_translation_any_subpixel_shift(sem, dx, dy):
    fixed, moving = pair(sem, Affine.translator((dx, dy)), 160, (400, 300))
    reg = register(fixed, moving, model="translation")
    assert np.abs(reg.transform.translation() - (dx, dy)).max() < 0.05


def test_direct_fit_converges_from_a_near_start(sem):
    """The all-pixels fallback alone: from 1.5 px and 0.5 deg off it lands
    on the known affine."""
    from spectralign.registration.direct import refine_direct
    from spectralign.registration.register import _warp_mask

    truth = about_centre(Affine(np.array([[1.01, 0.01, 0], [0.0, 0.99, 0]])), 192, (2.0, 1.0))
    fixed, moving = pair(sem, truth, 192, (500, 500))
    start = Affine.translator((1.5, -1.0)) @ about_centre(Affine.rotator(0.009), 192) @ truth
    ok = np.ones(fixed.shape, bool)
    t, ncc, _, before = refine_direct(fixed, ok, moving, ok, start, "affine", _warp_mask)
    assert corner_error(t, truth, 192) < 0.02
    assert ncc > 0.99 and before < ncc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_direct_fit_steps_taken_over_land_where_the_plain_ones_do(sem_texture, seed):
    """Under noise each Gauss-Newton step falls short by a fixed fraction;
    the extrapolated steps reach the plain steps' end in far fewer."""
    from spectralign.registration.direct import refine_direct
    from spectralign.registration.register import _warp_mask

    smooth = ndi.gaussian_filter(sem_texture.astype(np.float64), 3.0)
    truth = about_centre(Affine.rotator(np.radians(3.0)), 128, (0.3, -0.2))
    fixed, moving = pair(smooth, truth, 128, (400 + 100 * seed, 500),
                         np.random.default_rng(seed), noise=0.5 * smooth.std())
    start = Affine.translator((0.6, 0.4)) @ truth
    ok = np.ones(fixed.shape, bool)
    runs = [refine_direct(fixed, ok, moving, ok, start, "rigid", _warp_mask, levels=(1.0,),
                          tol=0.01, accelerate=accelerate) for accelerate in (False, True)]
    (plain, _, plain_steps, _), (fast, _, fast_steps, _) = runs
    assert plain_steps >= 7 and fast_steps <= 0.7 * plain_steps
    assert corner_error(fast, plain, 128) < 0.03


def test_warp_and_difference_show_the_result(sem):
    truth = about_centre(Affine.rotator(np.radians(-4.0)), 160, (5.0, 2.0))
    fixed, moving = pair(sem, truth, 160, (600, 400))
    reg = register(fixed, moving, model="rigid")
    warped = reg.warp()
    diff = reg.difference()
    assert warped.shape == diff.shape == fixed.shape
    valid = reg.valid()
    assert np.isnan(diff[~valid]).all() and np.isfinite(diff[valid]).all()
    inner = ndi.binary_erosion(valid, iterations=3)
    assert np.sqrt(np.nanmean(diff[inner] ** 2)) < 0.02 * fixed.std()
    row = json.loads(json.dumps(reg.to_dict()))
    assert row["model"] == "rigid" and abs(row["angle_deg"] + 4.0) < 0.02


def test_gain_and_offset_do_not_matter(sem):
    truth = about_centre(Affine.rotator(np.radians(7.0)), 160, (-3.0, 4.0))
    fixed, moving = pair(sem, truth, 160, (500, 600))
    reg = register(fixed, 3.0 * moving + 10.0, model="rigid")
    assert corner_error(reg.transform, truth, 160) < 0.1
    assert reg.difference(normalize=True)[reg.valid()].std() < 0.05 * fixed.std()
    # against a flat warp there is no gain to fit: fixed less its mean,
    # with no warning from a degenerate fit
    flat = dataclasses.replace(reg, _moving=np.full(moving.shape, 7.0, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diff = flat.difference(normalize=True)
    valid = flat.valid()
    np.testing.assert_allclose(diff[valid], fixed[valid] - fixed[valid].mean(), atol=1e-3)
    assert np.isnan(diff[~valid]).all()


def test_unrelated_images_raise_with_the_best_snr():
    rng = np.random.default_rng(3)
    a = ndi.gaussian_filter(rng.random((160, 160)), 2)
    b = ndi.gaussian_filter(rng.random((160, 160)), 2)
    with pytest.raises(NoOverlapError) as info:
        register(a, b, model="rigid")
    assert 0 <= info.value.best_snr < 20
    assert "SNR" in str(info.value)


def test_bad_inputs_are_named():
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(ImageDimensionError, match="2-D"):
        register(np.zeros((3, 64, 64)), img)
    with pytest.raises(MaskError, match="shape"):
        register(img, img, fixed_mask=np.ones((32, 32), bool))
    with pytest.raises(MaskError, match="valid pixels"):
        register(img, img, moving_mask=np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="model"):
        register(img, img, model="homography")


@pytest.mark.parametrize("name", sorted(DENOISERS))
def test_each_denoiser_keeps_the_image_and_lowers_noise(sem, name):
    rng = np.random.default_rng(1)
    clean = sem[300:428, 300:428].astype(np.float32)
    noisy = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32)
    out = denoise_image(noisy, name)
    assert out.shape == clean.shape
    assert np.sqrt(np.mean((out - clean) ** 2)) < 0.8 * np.sqrt(np.mean((noisy - clean) ** 2))


def test_denoise_option_and_unknown_name(sem):
    truth = about_centre(Affine.rotator(np.radians(9.0)), 160)
    fixed, moving = pair(sem, truth, 160, (500, 500), noise=0.1)
    reg = register(fixed, moving, model="rigid", denoise="gaussian")
    assert abs(np.degrees(reg.transform.angle()) - 9.0) < 0.1
    with pytest.raises(ValueError, match="denoise"):
        register(fixed, moving, denoise="wiener")


# -- the command ------------------------------------------------------------

def _write_pair(tmp_path, sem, k=0, name=("fixed", "moving")):
    import tifffile

    truth = about_centre(Affine.rotator(np.radians(5.0 + k)), 160, (2.0, -1.0))
    fixed, moving = pair(sem, truth, 160, (500 + 60 * k, 500))
    f, m = tmp_path / f"{name[0]}{k}.tif", tmp_path / f"{name[1]}{k}.tif"
    tifffile.imwrite(f, fixed)
    tifffile.imwrite(m, moving)
    return f, m


def test_cli_one_pair_writes_and_refuses_to_overwrite(tmp_path, sem, capsys):
    f, m = _write_pair(tmp_path, sem)
    out, diff, js = tmp_path / "w.tif", tmp_path / "d.png", tmp_path / "r.json"
    argv = ["register", str(f), str(m), "-o", str(out), "--diff", str(diff), "--json", str(js),
            "--model", "rigid"]
    assert main(argv) == 0
    assert "angle 5.0" in capsys.readouterr().out
    import tifffile

    assert tifffile.imread(out).shape == (160, 160) and diff.stat().st_size > 0
    assert abs(json.loads(js.read_text())["angle_deg"] - 5.0) < 0.02
    before = out.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert out.read_bytes() == before
    assert main(argv + ["--overwrite"]) == 0


def test_cli_batch_pairs_two_folders(tmp_path, sem, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for k in range(3):
        _write_pair(tmp_path, sem, k, ("a/f", "b/m"))
    table = tmp_path / "t.csv"
    argv = ["register", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "w"),
            "--table", str(table), "--model", "rigid", "-q"]
    assert main(argv) == 0
    import csv

    rows = list(csv.DictReader(table.open()))
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert [round(float(r["angle_deg"]), 1) for r in rows] == [5.0, 6.0, 7.0]
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["m0.tif", "m1.tif", "m2.tif"]


def test_cli_batch_takes_one_mask_a_pair_from_a_folder(tmp_path, sem, capsys):
    """Masks in a folder pair with the images in natural order: each
    pair's own block (bright, on moving alone) is left out, where with no
    mask, or the other pair's, no overlap is found; a count that does not
    match is one line and exit 2 before any work."""
    import tifffile

    for d in ("a", "b", "ma", "mb"):
        (tmp_path / d).mkdir()
    truths = []
    for k in range(2):
        truth = Affine.translator((3.3 + k, -2.6))
        fixed, moving = pair(sem, truth, 192, (500 + 70 * k, 520))
        block = np.zeros(moving.shape, bool)
        block[20 + 60 * k:110 + 60 * k, 30:150] = True
        moving = np.where(block, moving.max() * 3, moving)
        tifffile.imwrite(tmp_path / "a" / f"f{k}.tif", fixed)
        tifffile.imwrite(tmp_path / "b" / f"m{k}.tif", moving.astype(np.float32))
        tifffile.imwrite(tmp_path / "ma" / f"f{k}.tif", np.full(fixed.shape, 255, np.uint8))
        tifffile.imwrite(tmp_path / "mb" / f"m{k}.tif", np.where(block, 0, 255).astype(np.uint8))
        truths.append(truth)
    table = tmp_path / "t.json"
    argv = ["register", str(tmp_path / "a"), str(tmp_path / "b"), "--model", "translation",
            "--fixed-mask", str(tmp_path / "ma"), "--moving-mask", str(tmp_path / "mb"),
            "--table", str(table), "-q"]
    assert main(argv) == 0
    rows = json.loads(table.read_text())
    for row, truth in zip(rows, truths):
        assert np.abs(np.array(row["matrix"])[:, 2] - truth.translation()).max() < 0.05
    (tmp_path / "mb" / "m1.tif").unlink()
    assert main(argv[:-3] + ["--table", str(tmp_path / "t2.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--moving-mask" in err
    assert not (tmp_path / "t2.json").exists()
    assert main(argv[:5] + ["--moving-mask", str(tmp_path / "none.tif")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_bad_input_is_one_line(tmp_path, sem, capsys):
    f, _ = _write_pair(tmp_path, sem)
    assert main(["register", str(f), str(tmp_path / "none.tif")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.tif" in err
    (tmp_path / "a").mkdir()
    assert main(["register", str(tmp_path / "a"), str(f)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_noise_sigma_reads_white_noise_on_blurred_content(sem):
    from spectralign.registration.denoise import noise_sigma

    rng = np.random.default_rng(2)
    clean = sem[:256, :256]
    for sigma in (0.03, 0.05, 0.1):
        assert noise_sigma(clean + rng.normal(0, sigma, clean.shape)) == pytest.approx(sigma, rel=0.15)


def test_readme_register_example_runs(capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Registering two whole images", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("-30.00 deg, scale 0.9091") and out[1] == "True"


@pytest.mark.parametrize("scale, angle", [(0.5, -35.0), (2.0, 150.0)])
def test_scale_half_to_double_at_any_angle(tem, scale, angle):
    """The ends of the documented range: moving shows the scene at half or
    twice fixed's magnification, turned by an arbitrary angle."""
    truth = about_centre(Affine.rotator(np.radians(angle)) @ Affine.scaler(scale), 256)
    fixed, moving = pair(tem, truth, 256, (256, 256))
    reg = register(fixed, moving, model="similarity")
    assert reg.transform.magnification() == pytest.approx(scale, rel=1e-3)
    assert corner_error(reg.transform, truth, 256) < 0.15


def test_cli_batch_goes_on_past_a_bad_pair(tmp_path, sem, capsys):
    import csv

    import tifffile

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_pair(tmp_path, sem, 0, ("a/f", "b/m"))
    tifffile.imwrite(tmp_path / "a" / "f1.tif", np.zeros((2, 3, 64, 64), np.float32),
                     photometric="minisblack")
    tifffile.imwrite(tmp_path / "b" / "m1.tif", np.zeros((64, 64), np.float32))
    table = tmp_path / "t.csv"
    argv = ["register", str(tmp_path / "a"), str(tmp_path / "b"), "--table", str(table),
            "--model", "rigid", "-q"]
    assert main(argv) == 1
    rows = list(csv.DictReader(table.open()))
    assert rows[0]["status"] == "ok" and rows[1]["status"].startswith("error")


def test_a_big_image_is_finished_on_block_means(sem):
    """Over a million pixels the finish runs on 2 x 2 block means; the
    transform must come back to the full frame exactly (a half-pixel slip
    in that conversion would show here)."""
    import importlib

    reg_module = importlib.import_module("spectralign.registration.register")

    big = ndi.zoom(sem[:700, :700], 1.6, order=3)
    truth = about_centre(Affine.rotator(np.radians(30.0)), 1040, (6.3, -4.1))
    fixed, moving = pair(big, truth, 1040, (560, 560))
    assert fixed.size > reg_module.POLISH_PIXELS
    reg = register(fixed, moving, model="rigid")
    assert corner_error(reg.transform, truth, 1040) < 0.02


@pytest.mark.parametrize("noise, seed", [(0.3, 0), (0.8, 1), (1.2, 0), (1.2, 2)])
def test_noise_degrades_honestly(sem, noise, seed):
    """As white noise rises past the texture's own contrast the result may
    grow less precise, but never silently: a result without a warning is
    within 0.15 px, and where the SNR or the pixels' correlation falls
    below its threshold a warning says so (or NoOverlapError is raised)."""
    from spectralign.errors import SpectralignWarning

    rng = np.random.default_rng(seed)
    truth = about_centre(Affine.rotator(np.radians(rng.uniform(-20, 20))), 128,
                         rng.uniform(-5, 5, 2))
    fixed, moving = pair(sem, truth, 128, (300 + 150 * seed, 500), rng=rng,
                         noise=noise * sem.std())
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            reg = register(fixed, moving, model="rigid")
        except NoOverlapError:
            return
    warned = any(issubclass(w.category, SpectralignWarning) for w in caught)
    import importlib

    r = importlib.import_module("spectralign.registration.register")
    assert warned == (reg.snr < r.SNR_THRESHOLD or reg.detail_ncc < r.NCC_THRESHOLD
                      or (reg.detail_ncc < r.DOUBT_NCC and reg.snr >= r.DOUBT_SNR))
    if not warned:
        assert corner_error(reg.transform, truth, 128) < 0.15
    else:
        assert corner_error(reg.transform, truth, 128) < 1.0


def test_cli_refuses_an_unwritable_format_before_any_work(tmp_path, sem, capsys):
    f, m = _write_pair(tmp_path, sem)
    assert main(["register", str(f), str(m), "-o", str(tmp_path / "w.xyz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".tif" in err and "w.xyz" in err
    assert main(["register", str(f), str(m), "--table", str(tmp_path / "t.txt")]) == 2
    assert not list(tmp_path.glob("w.*")) and not (tmp_path / "t.txt").exists()


def test_vignetting_and_gain_on_one_image(he_slide):
    """Moving lit unevenly (an off-centre vignette to half at a corner)
    and with another gain and offset: the pixels' fit takes a gain that
    varies across the image."""
    he = ndi.gaussian_filter(he_slide[200:1400, 200:1400].astype(np.float64), 0.8)
    lin = Affine(np.array([[1.01, -0.008, 0], [0.012, 0.992, 0]]))
    truth = about_centre(Affine.rotator(np.radians(-1.5)) @ lin, 256, (-3.2, 2.7))
    fixed, moving = pair(he, truth, 256, (430, 600))
    yy, xx = np.mgrid[:256, :256] / 256.0
    moving = moving * (1 - 0.5 * ((xx - 0.3) ** 2 + (yy - 0.3) ** 2)) * 1.3 + 0.05
    reg = register(fixed, moving, model="affine")
    assert corner_error(reg.transform, truth, 256) < 0.1


# -- the compiled loops ---------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.floats(-3.0, 3.0), st.floats(0.5, 2.0), st.floats(-0.3, 0.3),
       st.floats(-40.0, 40.0), st.floats(-40.0, 40.0), st.integers(4, 70), st.integers(4, 70),
       st.sampled_from([0.0, 2.0, 3.5]))
def test_whole_frame_mask_is_where_the_inverse_lands_inside(angle, scale, shear, tx, ty,
                                                            mh, mw, margin):
    """Where a whole moving frame lands in fixed: each pixel whose inverse
    map falls ``margin`` px inside moving's frame, as numpy reckons it."""
    reg_mod = importlib.import_module("spectralign.registration.register")
    t = Affine(Affine.rotator(angle).linear @ np.array([[scale, shear], [0.0, 1.0]]))
    t = Affine.translator((tx, ty)) @ t
    got = reg_mod._warp_mask(t, np.ones((mh, mw), bool), (50, 60), margin=margin)
    a = t.inverse().matrix
    x, y = np.arange(60.0), np.arange(50.0)[:, None]
    u, v = a[0, 0] * x + (a[0, 1] * y + a[0, 2]), a[1, 0] * x + (a[1, 1] * y + a[1, 2])
    want = ((u >= margin - 1e-3) & (u <= mw - 1 - margin + 1e-3)
            & (v >= margin - 1e-3) & (v <= mh - 1 - margin + 1e-3))
    assert got.dtype == bool and got.shape == (50, 60)
    np.testing.assert_array_equal(got, want)


def test_block_means_made_once_a_call_and_forgotten_with_the_image():
    """The stages' block means of one image come from one computation; an
    image freed takes its entry with it (no other array can be served its
    means), and the store is empty once ``register`` returns."""
    import gc

    reg_mod = importlib.import_module("spectralign.registration.register")
    rng = np.random.default_rng(8)
    img = rng.random((64, 48)).astype(np.float32)
    mask = np.ones(img.shape, bool)
    mask[:5, :7] = False
    first = reg_mod._shrink(img, mask, 2)
    again = reg_mod._shrink(img, mask, 2)
    assert again[0] is first[0] and again[1] is first[1]
    means = img.reshape(32, 2, 24, 2).mean(axis=(1, 3))
    ok = mask.reshape(32, 2, 24, 2).all(axis=(1, 3))
    np.testing.assert_allclose(first[0][ok], means[ok], rtol=1e-6)
    np.testing.assert_array_equal(first[1], ok)
    assert reg_mod._shrink(img, mask, 4)[0].shape == (16, 12)
    n = len(reg_mod._SHRUNK._made)
    del img
    gc.collect()
    assert len(reg_mod._SHRUNK._made) == n - 2
    fixed = ndi.gaussian_filter(rng.random((300, 300)), 2.0)
    register(fixed[:256, :256], fixed[20:276, 30:286], model="translation")
    assert not reg_mod._SHRUNK._made


def test_compiled_bilinear_points_match_scipy():
    """The compiled bilinear sampler gives SciPy's order-1 numbers inside,
    and 0 where a point's neighbours leave the image."""
    from spectralign.registration.compiled import bilinear_points

    rng = np.random.default_rng(4)
    img = rng.random((40, 50))
    rows, cols = rng.uniform(0, 39, (7, 9)), rng.uniform(0, 49, (7, 9))
    rows[0, 0], cols[0, 1] = -0.5, 49.5
    out = np.empty((7, 9))
    bilinear_points(img, rows, cols, out)
    ref = ndi.map_coordinates(img, np.stack([rows, cols]), order=1)
    assert out[0, 0] == 0 and out[0, 1] == 0
    np.testing.assert_allclose(out.ravel()[2:], ref.ravel()[2:], atol=1e-12)


def test_compiled_cubic_convolution():
    """Cubic convolution gives the pixels at whole positions, reproduces a
    quadratic surface exactly inside, and follows smooth content as the
    cubic spline does (within 1 % of its range)."""
    from spectralign.registration.compiled import cubic_sample

    y, x = np.mgrid[:40, :50].astype(np.float64)
    quad = (0.3 * x * x - 0.2 * x * y + 0.5 * y * y + x - 2 * y).astype(np.float32)
    out = np.empty((20, 30), np.float32)
    cubic_sample(quad, np.array([[1.0, 0, 5], [0, 1.0, 7]]), out)
    np.testing.assert_array_equal(out, quad[7:27, 5:35])
    t = Affine.translator((6.3, 4.7)) @ Affine.rotator(0.3) @ Affine.scaler(0.8)
    cubic_sample(quad, np.ascontiguousarray(t.matrix), out)
    yy, xx = np.mgrid[:20, :30].astype(np.float64)
    u, v = t(np.stack([xx.ravel(), yy.ravel()], axis=1)).T
    exact = 0.3 * u * u - 0.2 * u * v + 0.5 * v * v + u - 2 * v
    np.testing.assert_allclose(out.ravel(), exact, atol=1e-3)
    smooth = ndi.gaussian_filter(np.random.default_rng(5).random((60, 60)), 2.0)
    out = np.empty((40, 40), np.float32)
    cubic_sample(smooth.astype(np.float32), np.ascontiguousarray(t.matrix), out)
    ref = ndi.affine_transform(smooth, t.linear[::-1, ::-1], offset=t.matrix[::-1, 2],
                               output_shape=(40, 40), order=3, mode="mirror")
    assert np.abs(out - ref).max() < 0.01 * np.ptp(smooth)


@pytest.mark.parametrize("model", ["translation", "rigid", "similarity", "affine"])
def test_compiled_gauss_newton_rows_match_numpy(model):
    """Each row of the compiled design matrix: the model's fields times the
    averaged gradients (moving's from the spline, checked by central
    differences of SciPy's samples), then the gain surface, then one."""
    from spectralign.registration.compiled import MODEL_CODES, gauss_newton_rows
    from spectralign.registration.direct import _basis

    rng = np.random.default_rng(4)
    img = ndi.gaussian_filter(rng.random((60, 60)), 2.0)
    coef = ndi.spline_filter(img, order=3, mode="mirror")
    inv = Affine.rotator(0.05, (30, 30)) @ Affine.translator((0.3, -0.7))
    x = rng.uniform(5, 55, 200)
    y = rng.uniform(5, 55, 200)
    x[0] = 70.0  # falls outside moving: a row of zeros
    fv, fgx, fgy = rng.normal(size=(3, 200))
    gain_c = np.array([1.2, 0.1, -0.05, 0.02, 0.0, 0.03])
    k = len(_basis(model, np.zeros(1), np.zeros(1)))
    design, sums = np.empty((200, k + 7)), np.empty(6)
    gauss_newton_rows(coef, np.ascontiguousarray(inv.matrix), x, y, fgx, fgy, 30.0, 30.0, 25.0,
                      MODEL_CODES[model], gain_c, 1.2, fv, design, sums)

    def at(px, py):
        u, v = inv((np.stack([px, py], 1)).astype(float)).T
        return ndi.map_coordinates(coef, [v, u], order=3, mode="mirror", prefilter=False)

    e = 1e-5
    gx = (at(x + e, y) - at(x - e, y)) / (2 * e)
    gy = (at(x, y + e) - at(x, y - e)) / (2 * e)
    xn, yn = (x - 30) / 25, (y - 30) / 25
    surface = [np.ones_like(xn), xn, yn, xn * xn, xn * yn, yn * yn]
    gain = sum(c * s for c, s in zip(gain_c, surface))
    ax, ay = 0.5 * (gx + fgx / gain) * gain / 1.2, 0.5 * (gy + fgy / gain) * gain / 1.2
    m = at(x, y)
    cols = [ax * bx + ay * by for bx, by in _basis(model, xn, yn)]
    ref = np.stack(cols + [m * s for s in surface] + [np.ones_like(m)], axis=1)
    np.testing.assert_array_equal(design[0], 0.0)
    np.testing.assert_allclose(design[1:], ref[1:], rtol=1e-6, atol=1e-8)
    assert sums[0] == 199 and np.isclose(sums[5], np.sum(fv[1:] * m[1:]))


@pytest.mark.parametrize("which", ["fixed", "moving"])
def test_binarized_against_gray(sem, which):
    """A thresholded image against a gray one (the scanned-page job): the
    gray one meets it through the same step, softened, so that no edge is
    pulled by the gray edge's asymmetry (measured with a plain gain and
    offset instead: 0.042 and 0.049 px mean corner error), whichever side
    is binary."""
    lin = Affine(np.array([[1.012, 0.01, 0], [-0.015, 0.99, 0]]))
    truth = about_centre(Affine.rotator(np.radians(-0.8)) @ lin, 320, (5.3, -2.2))
    errors = []
    for centre in [(500, 420), (300, 700), (700, 300), (400, 400)]:
        fixed, moving = pair(sem, truth, 320, centre, noise=0.01)
        if which == "fixed":
            fixed = (fixed > np.median(fixed)).astype(np.float32)
        else:
            moving = (moving > np.median(moving)).astype(np.float32)
        errors.append(corner_error(register(fixed, moving, model="affine").transform, truth, 320))
    assert np.mean(errors) < 0.035, errors


def test_binarized_with_inverted_contrast_against_gray(sem):
    """The objects white in the binarized image and dark in the gray one:
    nothing matches as it is, the binary image inverted does, and the
    result is as precise as with the contrast the same way; warp() and
    difference() show the images as given."""
    lin = Affine(np.array([[1.012, 0.01, 0], [-0.015, 0.99, 0]]))
    truth = about_centre(Affine.rotator(np.radians(-0.8)) @ lin, 320, (5.3, -2.2))
    fixed, moving = pair(sem, truth, 320, (500, 420), noise=0.01)
    binary = (fixed > np.median(fixed)).astype(np.float32)
    same = register(binary, moving, model="affine")
    reg = register(1 - binary, moving, model="affine")
    assert corner_error(reg.transform, truth, 320) < 0.05
    assert abs(corner_error(reg.transform, truth, 320)
               - corner_error(same.transform, truth, 320)) < 0.01
    valid = reg.valid()
    assert np.corrcoef(reg.warp()[valid], fixed[valid])[0, 1] > 0.95  # moving as given
    assert reg.ncc > 0.7  # of the images as matched
    # the difference picture reads as the one of the contrast the same way
    spread = np.nanstd(reg.difference(normalize=True))
    assert spread == pytest.approx(np.nanstd(same.difference(normalize=True)), rel=0.05)


def test_blank_part_gives_no_angle_and_no_warning(sem):
    """A constant image (a blank half of a binarized one, say) has no
    spectrum to turn: no candidate, and no division by zero."""
    import warnings

    from spectralign.registration.fourier_mellin import rotation_scale_candidates

    full = np.ones((64, 64), bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rotation_scale_candidates(np.ones((64, 64)), full, sem[:64, :64], full,
                                         scale=True) == []


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_fourier_band_pass_matches_the_spatial_filters(sem, sigma):
    """The band-pass in the Fourier domain is SciPy's difference of
    Gaussians (reflected edges, truncated at 4 and 3 sigmas) to 1 % (the
    sampled kernel and the continuous transfer function differ a little)."""
    from spectralign.registration.direct import _detrend, bandpass

    img = sem[100:300, 200:380] + np.linspace(0, 0.5, 180)[None, :] ** 2
    flat = _detrend(img).astype(np.float64)
    ref = ndi.gaussian_filter(flat, sigma) - ndi.gaussian_filter(flat, 8 * sigma, truncate=3.0)
    assert np.abs(bandpass(img, sigma) - ref).max() < 0.01 * np.abs(ref).max()


def test_band_pass_forms_are_the_spline_and_its_derivatives(sem):
    """The spline coefficients and derivatives folded into the band-pass's
    transfer function are SciPy's spline prefilter and the spline's
    derivative at the pixels, away from the frame's edges (where the two
    guess differently what lies beyond)."""
    from spectralign.registration.direct import bandpass_forms

    img = sem[100:300, 200:380]
    value, coef, dx, dy = bandpass_forms(img, 1.0, ("value", "spline", "dx", "dy"))
    ref = ndi.spline_filter(value.astype(np.float64), order=3, mode="mirror")
    inner = (slice(12, -12), slice(12, -12))
    scale = np.abs(ref[inner]).max()
    assert np.abs(coef[inner] - ref[inner]).max() < 1e-3 * scale
    # the spline's slope at the pixels: central differences of the
    # coefficients across, B-spline weights along
    c1 = ndi.correlate1d
    smooth, diff = np.array([1, 4, 1]) / 6.0, np.array([-0.5, 0.0, 0.5])
    gx = c1(c1(ref, diff, axis=1), smooth, axis=0)
    gy = c1(c1(ref, diff, axis=0), smooth, axis=1)
    assert np.abs(dx[inner] - gx[inner]).max() < 1e-3 * np.abs(gx[inner]).max()
    assert np.abs(dy[inner] - gy[inner]).max() < 1e-3 * np.abs(gy[inner]).max()
    # a wrong sign or axis would be caught: x and y differ
    assert np.abs(dx[inner] - gy[inner]).max() > 0.1 * np.abs(gy[inner]).max()
    with pytest.raises(ValueError, match="Expected a form"):
        bandpass_forms(img, 1.0, ("laplacian",))


@pytest.mark.parametrize("second", [(200, 180), (150, 180)])
def test_band_pass_forms_of_several_images_are_each_ones(sem, second):
    """Several images' forms, through shared transform calls where their
    shapes agree, are each image's own."""
    from spectralign.registration.direct import bandpass_forms, bandpass_forms_of

    a = sem[100:300, 200:380]
    b = sem[400:400 + second[0], 100:100 + second[1]]
    forms = [("value", "dx", "dy"), ("spline",)]
    both = bandpass_forms_of([a, b], 1.0, forms)
    for img, each, got in zip((a, b), forms, both):
        for mine, alone in zip(got, bandpass_forms(img, 1.0, each)):
            assert mine.shape == img.shape
            np.testing.assert_allclose(mine, alone, atol=1e-5 * np.abs(alone).max())
    values = bandpass_forms_of([a, a[::-1]], 2.0, [("value",), ("value",)])
    for img, (got,) in zip((a, a[::-1]), values):
        alone = bandpass_forms(img, 2.0, ("value",))[0]
        np.testing.assert_allclose(got, alone, atol=1e-5 * np.abs(alone).max())


@pytest.mark.parametrize("sigma", [3.0, 4.0, 6.0])
def test_fourier_mask_fill_matches_normalized_convolution(sem, sigma):
    """Invalid pixels take SciPy's normalized convolution (zero beyond the
    frame): exactly below 4 px, within 5 % of the image's range (1 % on
    average) where it runs on blocks; valid ones stay as they were."""
    from spectralign.registration.masked import fill_masked

    img = sem[:150, :170].astype(np.float32)
    mask = np.ones(img.shape, bool)
    mask[40:90, 20:100] = False
    mask[:, 150:] = False
    m = mask.astype(np.float64)
    den = ndi.gaussian_filter(m, sigma, mode="constant")
    ref = ndi.gaussian_filter(img * m, sigma, mode="constant") / np.maximum(den, 1e-3)
    near = ~mask & (den > 1e-2)  # farther in: the valid pixels' mean
    out = fill_masked(img, mask, sigma)
    np.testing.assert_array_equal(out[mask], img[mask])
    assert near.sum() > 1000
    span = float(np.ptp(img))
    if sigma < 4:
        np.testing.assert_allclose(out[near], ref[near], atol=1e-3 * span)
    else:
        err = np.abs(out[near] - ref[near]) / span
        assert err.max() < 0.05 and err.mean() < 0.01, (err.max(), err.mean())
    np.testing.assert_allclose(out[~mask & (den < 5e-4)], img[mask].mean(), atol=1e-5 * span)


def _ordered_consensus(src, dst, weights, model):
    """The consensus by trying each minimal set of the 12 heaviest pairs
    in order: the first that nearly all agree with, else the first of the
    best score."""
    import itertools

    from spectralign.registration.fit import MIN_POINTS, determined, fit_transform

    heavy = np.argsort(-weights, kind="stable")[:12]
    best, best_score = np.ones(len(src), dtype=bool), -1.0
    for combo in itertools.combinations(heavy, MIN_POINTS[model]):
        combo = list(combo)
        if not determined(src[combo], model):
            continue
        inl = np.linalg.norm(fit_transform(src[combo], dst[combo], model)(src) - dst,
                             axis=1) <= 1.5
        score = float(weights[inl].sum())
        if score > best_score:
            best, best_score = inl, score
            if score >= 0.9 * weights.sum():
                break
    return best


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 16), outliers=st.integers(0, 12))
def test_affine_consensus_is_the_ordered_search(seed, outliers):
    """The batched affine consensus picks what trying each triple of the
    heaviest pairs in order picks: the first that nearly all agree with,
    else the first of the best score; chance matches are let go."""
    from spectralign.registration.fit import _consensus

    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 300, (25, 2))
    truth = Affine(np.array([[1.02, 0.03, 4.0], [-0.02, 0.98, -7.0]]))
    dst = truth(src) + rng.normal(0, 0.3, src.shape)
    bad = rng.choice(25, outliers, replace=False)
    dst[bad] += rng.uniform(5, 40, (outliers, 2)) * rng.choice([-1, 1], (outliers, 2))
    weights = rng.uniform(0.5, 1.0, 25)
    got = _consensus(src, dst, "affine", weights, 1.5)
    np.testing.assert_array_equal(got, _ordered_consensus(src, dst, weights, "affine"))
    if outliers <= 8:  # the good pairs hold the majority of the heaviest
        assert not got[bad].any()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 16), outliers=st.integers(0, 12),
       model=st.sampled_from(["translation", "rigid", "similarity"]))
def test_pair_consensus_is_the_ordered_search(seed, outliers, model):
    """The batched consensus of translations, rigid and similarity
    transforms picks what fitting each set of the heaviest pairs in order
    picks."""
    from spectralign.registration.fit import _consensus

    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 300, (25, 2))
    turn = 0.0 if model == "translation" else rng.uniform(-3, 3)
    scale = rng.uniform(0.6, 1.6) if model == "similarity" else 1.0
    truth = (Affine.translator(rng.uniform(-50, 50, 2)) @ Affine.rotator(turn)
             @ Affine.scaler(scale))
    dst = truth(src) + rng.normal(0, 0.3, src.shape)
    bad = rng.choice(25, outliers, replace=False)
    dst[bad] += rng.uniform(5, 40, (outliers, 2)) * rng.choice([-1, 1], (outliers, 2))
    src[rng.integers(25)] = src[rng.integers(25)]  # a pair too close to fix a turn
    weights = rng.uniform(0.5, 1.0, 25)
    got = _consensus(src, dst, model, weights, 1.5)
    np.testing.assert_array_equal(got, _ordered_consensus(src, dst, weights, model))
    if outliers <= 8:
        assert not got[bad].any()


@pytest.mark.parametrize("f", [2, 3, 5])
def test_block_means_over_valid_pixels(f):
    """Block means by strided sums are the reshaped reduction's, over the
    valid pixels only, and a block with any invalid pixel is invalid."""
    from spectralign.registration.register import _shrink

    rng = np.random.default_rng(f)
    img = rng.random((101, 97)).astype(np.float32)
    mask = rng.random(img.shape) > 0.1
    h, w = 101 // f * f, 97 // f * f

    def blocks(a):
        return a[:h, :w].reshape(h // f, f, w // f, f)

    small, valid = _shrink(img, mask, f)
    count = blocks(mask).sum(axis=(1, 3))
    np.testing.assert_allclose(small, blocks(np.where(mask, img, 0)).sum(axis=(1, 3))
                               / np.maximum(count, 1), rtol=1e-6)
    np.testing.assert_array_equal(valid, blocks(mask).all(axis=(1, 3)))
    whole, ok = _shrink(img, np.ones(img.shape, bool), f)
    np.testing.assert_allclose(whole, blocks(img).mean(axis=(1, 3)), rtol=1e-6)
    assert ok.all() and whole.shape == (h // f, w // f)


@pytest.mark.parametrize("model", ["similarity", "affine"])
@pytest.mark.parametrize("section", [5, 10, 20])
def test_the_next_section_is_never_a_silent_answer(model, section):
    """Neighbouring serial TEM sections share structure but not pixels:
    their windows agree (SNR 9-11) on transforms 6-40 px off the known turn
    and scale.  The pixels' low correlation must say so in a warning; the
    same section, turned alike, is found with none."""
    import imagecodecs

    from spectralign.errors import SpectralignWarning

    fixed, nxt = (imagecodecs.imread(shared("sstem_stack", f"{k}.png")).astype(np.float64) / 255
                  for k in (section, section + 1))
    truth = about_centre(Affine.rotator(np.radians(7.0)) @ Affine.scaler(1.05), 512)
    moving = sample(nxt, truth, 512)
    mask = sample(np.ones_like(nxt), truth, 512) > 0.999
    with pytest.warns(SpectralignWarning, match="detail correlates at only"):
        reg = register(fixed, moving, model=model, moving_mask=mask)
    assert reg.detail_ncc < spectralign.registration.NCC_THRESHOLD
    # the same section is found to a hundredth of a pixel, with no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = register(fixed, sample(fixed, truth, 512), model=model, moving_mask=mask)
    assert corner_error(same.transform, truth, 512) < 0.05


def test_register_starts_loading_the_compiled_matching_loops():
    """register() loads numba for its own loops, so the windows' compiled
    loops start loading at its first call (in the background), not after
    two seconds of matching; a fresh process shows it."""
    import subprocess
    import sys

    code = (
        "import time, numpy as np, scipy.ndimage as ndi, spectralign\n"
        "from spectralign.match import loader\n"
        "img = ndi.gaussian_filter(np.random.default_rng(0).random((200, 200)), 2)\n"
        "before = loader.ready()\n"
        "spectralign.register(img[20:148, 20:148], img[24:152, 17:145], 'translation')\n"
        "t = time.time()\n"
        "while not loader.ready() and time.time() - t < 120:\n"
        "    time.sleep(0.05)\n"
        "print(before, loader.ready())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_block_frames_map_full_pixels_to_block_centres(sem):
    """The windows' frames of an image of 256 px and more are 2 x 2 block
    means; a transform carried to them and back is unchanged, block (i, j)
    sits at full pixel (2 j + 0.5, 2 i + 0.5), and a shift of the full
    images by an even number of pixels is half as many blocks, as the
    block means themselves show."""
    from spectralign.registration.register import _frames, _shrink

    img = sem[:300, :280]
    ok = np.ones(img.shape, bool)
    frames = _frames(img, ok, img, ok)
    assert frames.factor == 2 and frames.fill.shape == (150, 140)
    np.testing.assert_allclose(frames.fill[10, 12], img[20:22, 24:26].mean(), rtol=1e-5)
    t = about_centre(Affine.rotator(0.1) @ Affine.scaler(1.05), 280, (3.0, -2.0))
    np.testing.assert_allclose(frames.full(frames.shrunk(t)).matrix, t.matrix, atol=1e-12)
    np.testing.assert_allclose(frames.to_small(np.array([[2 * 7 + 0.5, 2 * 5 + 0.5]])), [[7, 5]])
    # moving(x, y) = fixed(x - 4, y + 6): moving -> fixed is a shift of
    # (-4, 6) px, and block (i, j) of moving is block (i + 3, j - 2) of fixed
    moving = np.roll(img, (-6, 4), axis=(0, 1))
    shift = frames.shrunk(Affine.translator((-4.0, 6.0)))
    np.testing.assert_allclose(shift.matrix, Affine.translator((-2.0, 3.0)).matrix, atol=1e-12)
    small_f, _ = _shrink(img, ok, 2)
    small_m, _ = _shrink(moving, ok, 2)
    np.testing.assert_allclose(small_m[10:100, 10:100], small_f[13:103, 8:98], rtol=1e-6)


@pytest.mark.parametrize("model, lin", [
    ("translation", Affine()),
    ("rigid", Affine.rotator(np.radians(-11))),
    ("similarity", Affine.rotator(np.radians(23)) @ Affine.scaler(1.12)),
    ("affine", Affine(np.array([[1.02, 0.015, 0], [-0.01, 0.985, 0]]))),
])
def test_odd_sized_frames_through_the_block_means(sem, model, lin):
    """An odd-sized pair of 301 x 517 px (block means leave a row and a
    column out) is found to a hundredth of a pixel with every model."""
    h, w = 301, 517
    c = Affine.translator((w / 2, h / 2))
    truth = Affine.translator((5.3, -7.1)) @ c @ lin @ c.inverse()
    at = Affine.translator((250, 300))

    def cut(a):
        return ndi.affine_transform(sem, a.linear[::-1, ::-1], offset=a.matrix[::-1, 2],
                                    output_shape=(h, w), order=5).astype(np.float32)

    reg = register(cut(at), cut(at @ truth), model=model)
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float)
    assert np.abs(reg.transform(corners) - truth(corners)).max() < 0.01
    assert reg.detail_ncc > 0.95


def honeycomb_pair(centre, matrix):
    """Two 200 px crops of the fluorescence tile (blurred as by optics),
    moving through ``matrix`` (moving -> fixed) about ``centre``, with
    white noise of 0.03: fixed, moving and the truth."""
    import tifffile

    fl = tifffile.imread(shared("fluorescence_pair", "tile0.tif")).astype(np.float64)
    fl = ndi.gaussian_filter(fl / np.percentile(fl, 99.9), 0.8)
    truth = Affine(np.array(matrix))
    at = Affine.translator(centre) @ Affine.translator((-99.5, -99.5))
    rng = np.random.default_rng(0)
    fixed, moving = (sample(fl, a, 200) + rng.normal(0, 0.03, (200, 200)).astype(np.float32)
                     for a in (at, at @ truth))
    return fixed, moving, truth


def overlap_points(truth: Affine, n: int = 200) -> np.ndarray:
    """A 9 x 9 grid of moving's points that ``truth`` keeps inside fixed."""
    g = np.linspace(0, n - 1, 9)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    return pts[((truth(pts) >= 0) & (truth(pts) <= n - 1)).all(axis=1)]


@pytest.mark.parametrize("centre, matrix", [
    ((505.645, 317.392), [[1.088842, -0.004702, -8.371911], [0.004702, 1.088842, 58.000673]]),
])
def test_a_pattern_matched_a_period_off_is_doubted(centre, matrix):
    """Two 200 px crops of the fluorescence tile's honeycomb edge, moving
    turned and scaled: the whole spectra's candidate lets the windows agree
    (SNR 9-11) a cell or two along the edge, where the pixels' detail
    correlates at only 0.8.  Such a doubtful agreement sends the search on
    to the parts' candidates, and the most significant result is the known
    one (without that search this pair comes out 60 px off; on other such
    pairs the parts hold no better candidate either, and a warning is all
    there is to give)."""
    fixed, moving, truth = honeycomb_pair(centre, matrix)
    reg = register(fixed, moving, model="similarity")
    inside = overlap_points(truth)
    assert np.abs(reg.transform(inside) - truth(inside)).max() < 1.0
    assert reg.detail_ncc > 0.95



@pytest.mark.parametrize("centre, matrix", [
    ((502.811, 343.358), [[1.074326, 0.177117, 57.444659], [-0.177117, 1.074326, 10.22771]]),
    ((505.645, 317.392), [[1.088842, -0.004702, -8.371911], [0.004702, 1.088842, 58.000673]]),
])
def test_a_pattern_off_its_place_is_never_silent(centre, matrix):
    """The honeycomb edge of the fluorescence tile in two partly
    overlapping crops: the result is the known transform with no warning,
    or a warning names the repeating pattern (the first pair: the windows
    agree 26 px along the edge, and no candidate holds the truth)."""
    import warnings

    from spectralign.errors import SpectralignWarning

    fixed, moving, truth = honeycomb_pair(centre, matrix)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = register(fixed, moving, model="similarity")
    warned = [str(w.message) for w in caught if issubclass(w.category, SpectralignWarning)]
    inside = overlap_points(truth)
    right = np.abs(reg.transform(inside) - truth(inside)).max() < 1.0
    assert (right and not warned) or (not right and any("repeating pattern" in w
                                                        for w in warned))


def test_cli_takes_file_names_with_glob_characters_as_they_are(tmp_path, sem, capsys):
    """The shipped grid's tiles are named like "stitch2d_ex[Grid@0 0].jpg":
    an existing file is one image, not a glob pattern that matches nothing."""
    import tifffile

    f, m = _write_pair(tmp_path, sem)
    fb, mb = tmp_path / "a[Grid@0 0].tif", tmp_path / "a[Grid@1 0].tif"
    fb.write_bytes(f.read_bytes())
    mb.write_bytes(m.read_bytes())
    assert main(["register", str(fb), str(mb), "--model", "rigid", "-o",
                 str(tmp_path / "w.tif")]) == 0
    assert tifffile.imread(tmp_path / "w.tif").shape == tifffile.imread(fb).shape
    assert "a[Grid@1 0].tif -> a[Grid@0 0].tif" in capsys.readouterr().out


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 16), h1=st.integers(6, 14), w1=st.integers(6, 14),
       h2=st.integers(6, 14), w2=st.integers(6, 14), need=st.integers(2, 8))
def test_masked_correlation_is_the_coefficient_at_every_shift(seed, h1, w1, h2, w2, need):
    """Every shift's masked correlation is numpy's correlation coefficient
    of the pixels valid in both at that shift, counted; 0 where fewer than
    ``need`` overlap."""
    from spectralign.registration.masked import masked_ncc

    rng = np.random.default_rng(seed)
    fixed = (rng.random((h1, w1)) * 50 + 100).astype(np.float32)
    moving = (rng.random((h2, w2)) * 50 + 100).astype(np.float32)
    fmask, mmask = rng.random((h1, w1)) > 0.3, rng.random((h2, w2)) > 0.3
    ncc, count = masked_ncc(fixed, moving, fmask, mmask, need)
    assert ncc.shape == count.shape == (h1 + h2 - 1, w1 + w2 - 1)
    checked = 0
    for v in range(h1 + h2 - 1):
        for u in range(w1 + w2 - 1):
            dx, dy = u - w2 + 1, v - h2 + 1
            a, b = [], []
            for y in range(h2):
                for x in range(w2):
                    if 0 <= y + dy < h1 and 0 <= x + dx < w1 and mmask[y, x] and fmask[y + dy, x + dx]:
                        a.append(fixed[y + dy, x + dx])
                        b.append(moving[y, x])
            assert count[v, u] == len(a)
            if len(a) >= max(need, 3):
                assert ncc[v, u] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=2e-4)
                checked += 1
            elif len(a) < need:
                assert ncc[v, u] == 0
    assert checked > 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 16), symmetric=st.booleans(), moving_symmetric=st.booleans(),
       h1=st.integers(20, 48), w1=st.integers(20, 48), h2=st.integers(20, 48),
       w2=st.integers(20, 48))
def test_half_turn_correlation_is_the_turned_images(seed, symmetric, moving_symmetric,
                                                    h1, w1, h2, w2):
    """The half-turn's masked correlation, read off its twin's transforms
    (and, for a symmetric fixed mask, its mirrored sums; for both masks
    symmetric, the twin's own sums of fixed), is the one computed from
    moving turned by half a turn."""
    from spectralign.registration.masked import masked_ncc

    rng = np.random.default_rng(seed)
    fixed = ndi.gaussian_filter(rng.random((h1, w1)), 1.5).astype(np.float32)
    moving = ndi.gaussian_filter(rng.random((h2, w2)), 1.5).astype(np.float32)
    fmask = np.zeros((h1, w1), bool)
    fmask[2:h1 - 2, 3:w1 - 3] = True
    if not symmetric:
        fmask[4:9, 5:12] = False
    mmask = rng.random((h2, w2)) > 0.2
    if moving_symmetric:
        mmask &= mmask[::-1, ::-1]
    need = 0.2 * min(fmask.sum(), mmask.sum())
    both = masked_ncc(fixed, moving, fmask, mmask, need, {}, half_turn=True)
    alone = [masked_ncc(fixed, m, fmask, mm, need)
             for m, mm in ((moving, mmask), (moving[::-1, ::-1], mmask[::-1, ::-1]))]
    for (ncc, count), (ref, ref_count) in zip(both, alone):
        np.testing.assert_array_equal(count, ref_count)
        np.testing.assert_allclose(ncc, ref, atol=2e-5)
        assert np.count_nonzero(ref) > 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 16), h=st.integers(12, 40), w=st.integers(12, 40))
def test_rival_peak_is_the_highest_far_maximum(seed, h, w):
    """The compiled rival search finds what numpy's neighbourhood maximum
    finds: the highest positive 9 x 9 maximum (wrapped) more than 4 px
    from shift 0, and the largest value within 1 px of it."""
    from spectralign.registration.compiled import rival_peak

    rng = np.random.default_rng(seed)
    corr = ndi.gaussian_filter(rng.normal(size=(h, w)), 1.5, mode="wrap").astype(np.float32)
    at, value, dx, dy = rival_peak(corr, 4, 4)
    shifted = np.fft.fftshift(corr)
    cy, cx = h // 2, w // 2
    assert at == shifted[cy - 1:cy + 2, cx - 1:cx + 2].max()
    peaks = (shifted == ndi.maximum_filter(shifted, size=9, mode="wrap")) & (shifted > 0)
    yy, xx = np.nonzero(peaks)
    far = np.hypot(yy - cy, xx - cx) > 4
    if not far.any():
        assert value == 0
        return
    k = np.argmax(shifted[yy[far], xx[far]])
    assert value == shifted[yy[far][k], xx[far][k]]
    assert (dx, dy) == (xx[far][k] - cx, yy[far][k] - cy)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), h=st.integers(16, 200), w=st.integers(16, 200),
       size=st.integers(8, 64))
def test_windows_are_the_mostly_valid_ones_evenly_spread(seed, h, w, size):
    """The windows' centres: every window of the even lattice whose pixels
    are at least 90 % valid (counted directly), and no other."""
    import importlib

    reg_mod = importlib.import_module("spectralign.registration.register")
    rng = np.random.default_rng(seed)
    valid = ndi.gaussian_filter(rng.random((h, w)), 4) > 0.48
    centres = reg_mod._windows(valid, size)
    if size > min(h, w):
        assert centres.shape == (0, 2)
        return
    expected = []
    step = [max(4, size // 2, -(-(n - size) // (reg_mod.MAX_WINDOWS_SIDE - 1))) for n in (w, h)]
    starts = []
    for n, s in zip((w, h), step):
        at = np.arange(0, n - size + 1, s)
        starts.append(at + (n - size - at[-1]) // 2)
    for y0 in starts[1]:
        for x0 in starts[0]:
            if valid[y0:y0 + size, x0:x0 + size].sum() >= 0.9 * size * size:
                expected.append((x0 + size / 2, y0 + size / 2))
    np.testing.assert_array_equal(centres, np.array(expected).reshape(-1, 2))


def test_register_from_threads_and_a_forked_child(sem):
    """Calls from two threads at once give the serial answers (they share
    one helper thread), and a child forked after a call (whose helper
    thread is not there) registers too instead of waiting for ever."""
    import multiprocessing
    import threading

    n = 160
    truths = [about_centre(Affine.rotator(np.radians(a)), n, (s, -s))
              for a, s in ((7.0, 3.2), (-12.0, -5.5), (25.0, 1.7), (-3.0, 8.1))]
    pairs = [pair(sem, t, n, (300 + 40 * k, 260 + 30 * k)) for k, t in enumerate(truths)]
    serial = [register(f, m, "rigid").transform.matrix for f, m in pairs]
    threaded = [None] * len(pairs)

    def work(k):
        threaded[k] = register(*pairs[k], "rigid").transform.matrix
    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b, truth in zip(serial, threaded, truths):
        np.testing.assert_allclose(a, b, atol=1e-9)
        assert corner_error(Affine(a), truth, n) < 0.05
    if "fork" not in multiprocessing.get_all_start_methods():
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        job = pool.apply_async(_register_matrix, pairs[0])
        np.testing.assert_allclose(job.get(timeout=120), serial[0], atol=1e-9)


def _register_matrix(fixed, moving):
    return register(fixed, moving, "rigid").transform.matrix
