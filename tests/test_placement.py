"""Placement: exact recovery of known transforms, gauge, robustness, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spectralign
from spectralign import Affine, Placement

TILE = 512
STEP = 440


def random_transform(model: str, rng, origin) -> Affine:
    """A tile-to-model transform of the given kind near a grid position."""
    t = Affine.translator(np.asarray(origin) + rng.uniform(-20, 20, 2))
    centre = (TILE / 2, TILE / 2)
    if model in ("euclidean", "similarity", "affine"):
        t = t @ Affine.rotator(rng.uniform(-0.05, 0.05), centre)
    if model in ("similarity", "affine"):
        t = t @ Affine.scaler(1 + rng.uniform(-0.03, 0.03), centre)
    if model == "affine":
        t = t @ Affine([[1 + rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02), 0],
                        [rng.uniform(-0.02, 0.02), 1, 0]])
    return t


def make_grid(model, rows, cols, rng, *, keep=1.0, per_pair=4, noise=0.0):
    """Transforms of a rows x cols grid and exact (or noisy) matches between
    neighbours, a random subset of the edges kept (the graph stays connected
    through a spanning path)."""
    truth = {(r, c): random_transform(model, rng, (c * STEP, r * STEP))
             for r in range(rows) for c in range(cols)}
    edges = []
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((0, 1), (1, 0), (1, 1)):
                if r + dr < rows and c + dc < cols:
                    spanning = (dr, dc) == (0, 1) or (c == 0 and (dr, dc) == (1, 0))
                    if spanning or rng.random() < keep:
                        edges.append(((r, c), (r + dr, c + dc)))
    matches = []
    for a, b in edges:
        p = rng.uniform(0, TILE, (per_pair, 2))
        q = truth[b].inverse()(truth[a](p)) + rng.normal(0, noise, (per_pair, 2))
        matches.append((a, b, p, q))
    return truth, matches


def relative(transforms, fix):
    """Transforms expressed relative to tile ``fix`` (removes the gauge)."""
    inv = transforms[fix].inverse()
    return {t: inv @ a for t, a in transforms.items()}


def max_corner_error(found, truth):
    """Largest distance (px) between the tile corners as found and as true,
    with both expressed relative to the same tile."""
    fix = next(iter(truth))
    f, t = relative(found, fix), relative(truth, fix)
    corners = np.array([[0, 0], [TILE, 0], [0, TILE], [TILE, TILE]], float)
    return max(np.abs(f[k](corners) - t[k](corners)).max() for k in truth)


def place(matches, *, shuffle_rng=None):
    pl = Placement()
    order = range(len(matches))
    if shuffle_rng is not None:
        order = shuffle_rng.permutation(len(matches))
    for i in order:
        a, b, p, q = matches[i]
        pl.addmatches(a, b, p, q)
    return pl


@settings(max_examples=25, deadline=None)
@given(model=st.sampled_from(spectralign.MODELS), rows=st.integers(1, 5),
       cols=st.integers(2, 5), keep=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_exact_matches_give_the_true_transforms(model, rows, cols, keep, seed):
    rng = np.random.default_rng(seed)
    truth, matches = make_grid(model, rows, cols, rng, keep=keep)
    result = place(matches).solve(model)
    assert result.ndropped == 0
    assert result.max < 1e-6
    assert max_corner_error(result.transforms, truth) < 1e-6


@pytest.mark.parametrize("model", spectralign.MODELS)
def test_fix_makes_that_tile_the_identity(model):
    rng = np.random.default_rng(3)
    truth, matches = make_grid(model, 3, 4, rng, keep=0.5)
    pl = place(matches)
    result = pl.solve(model, fix=(1, 2))
    assert result.transforms[(1, 2)].isclose(Affine(), atol=1e-9)
    expect = relative(truth, (1, 2))
    for tile, afm in result.transforms.items():
        assert afm.isclose(expect[tile], atol=1e-6)


@pytest.mark.parametrize("model", spectralign.MODELS)
def test_without_fix_the_gauge_is_mean_zero_and_identity(model):
    rng = np.random.default_rng(4)
    _, matches = make_grid(model, 3, 3, rng)
    mats = place(matches).solve(model).matrices
    np.testing.assert_allclose(mats[:, :, 2].mean(0), 0, atol=1e-6)
    if model in ("similarity", "affine"):
        np.testing.assert_allclose(mats[:, :, :2].mean(0), np.eye(2), atol=1e-9)
    if model == "euclidean":
        angles = [Affine(m).angle() for m in mats]
        assert abs(np.mean(angles)) < 1e-9


@pytest.mark.parametrize("model", spectralign.MODELS)
def test_relabelling_tiles_and_permuting_matches_changes_nothing(model):
    rng = np.random.default_rng(5)
    _, matches = make_grid(model, 3, 4, rng, noise=0.2)
    first = place(matches).solve(model, fix=(0, 0)).transforms
    names = {t: f"tile-{i}" for i, t in enumerate(rng.permutation(12).tolist())}
    keys = {(r, c): names[r * 4 + c] for r in range(3) for c in range(4)}
    renamed = [(keys[a], keys[b], p, q) for a, b, p, q in matches]
    second = place(renamed, shuffle_rng=rng).solve(model, fix=keys[(0, 0)]).transforms
    for tile, afm in first.items():
        assert afm.isclose(second[keys[tile]], atol=1e-7)


def test_rigid_is_translation_and_matches_the_original_convention():
    pl = Placement()
    pl.addmatch("a", "b", (900.0, 40.0), (100.0, 42.0))
    pl.addmatch("a", "b", (900.0, 440.0), (100.0, 442.0))
    pl.addmatch("b", "c", (10.0, 500.0), (12.5, 100.0))
    pos = pl.rigid(fix="a")
    for t, t_, p, p_ in (("a", "b", (900.0, 40.0), (100.0, 42.0)),
                         ("b", "c", (10.0, 500.0), (12.5, 100.0))):
        np.testing.assert_allclose(pos[t] + p, pos[t_] + p_, atol=1e-9)
    np.testing.assert_allclose(pos["a"], 0, atol=1e-12)
    mean_free = pl.rigid()
    np.testing.assert_allclose(np.mean(list(mean_free.values()), 0), 0, atol=1e-9)


def test_addmatch_and_addmatches_agree_and_arrays_of_ids_work():
    rng = np.random.default_rng(6)
    _, matches = make_grid("affine", 3, 3, rng, noise=0.3)
    one = Placement()
    for a, b, p, q in matches:
        for pp, qq in zip(p, q):
            one.addmatch(a, b, pp, qq)
    many = Placement()
    ia = np.array([a for a, _, p, _ in matches for _ in p])
    ib = np.array([b for _, b, p, _ in matches for _ in p])
    many.addmatches(ia, ib, np.concatenate([m[2] for m in matches]),
                    np.concatenate([m[3] for m in matches]))
    assert set(many.tiles) == set(one.tiles) and all(isinstance(t, tuple) for t in many.tiles)
    r1, r2 = one.affine(fix=(0, 0)), many.affine(fix=(0, 0))
    for t in r1:
        assert r1[t].isclose(r2[t], atol=1e-8)


def test_weights_pull_the_solution():
    pl = Placement()
    pl.addmatch(0, 1, (10, 10), (0, 0), weight=3.0)
    pl.addmatch(0, 1, (14, 10), (0, 0), weight=1.0)
    pos = pl.rigid(fix=0, robust=False)
    np.testing.assert_allclose(pos[1], (11.0, 10.0), atol=1e-9)


# -- robustness --------------------------------------------------------------


def test_gross_errors_are_dropped_and_reported():
    """20 x 20 grid, 8 matches per pair, 0.3 px noise, 10 % gross errors."""
    rng = np.random.default_rng(7)
    n, per = 20, 8
    idx = np.arange(n * n).reshape(n, n)
    pos = np.stack(np.meshgrid(np.arange(n) * STEP, np.arange(n) * STEP), -1).reshape(-1, 2)
    pos = pos + rng.normal(0, 10, pos.shape)
    a = np.repeat(np.concatenate([idx[:, :-1].ravel(), idx[:-1].ravel()]), per)
    b = np.repeat(np.concatenate([idx[:, 1:].ravel(), idx[1:].ravel()]), per)
    p = rng.uniform(0, TILE, (len(a), 2))
    q = p + pos[a] - pos[b] + rng.normal(0, 0.3, p.shape)
    bad = rng.random(len(a)) < 0.1
    q[bad] += rng.uniform(20, 200, (bad.sum(), 2)) * rng.choice([-1, 1], (bad.sum(), 2))

    clean = Placement()
    clean.addmatches(a[~bad], b[~bad], p[~bad], q[~bad])
    centre = (TILE / 2, TILE / 2)
    for model in ("translation", "affine"):
        reference = clean.solve(model, robust=False).transforms
        pl = Placement()
        pl.addmatches(a, b, p, q)
        result = pl.solve(model)
        found = np.array([result.transforms[t](centre) for t in range(n * n)])
        want = np.array([reference[t](centre) for t in range(n * n)])
        if model == "translation":
            assert np.sqrt(np.mean(np.sum((found - want) ** 2, 1))) < 0.1
        # the affine model's positions on a 20 x 20 grid are only as good as
        # its bending modes allow (~1 px from 0.3 px noise), so for it the
        # test is that exactly the bad matches went
        assert result.rms < 0.6, model
        assert result.dropped[bad].all(), model
        assert result.dropped.sum() <= bad.sum() + 5, model
        reported = {d.index for d in result.dropped_matches()}
        assert reported == set(np.flatnonzero(result.dropped).tolist())
        assert result.dropped_matches()[0].residual >= result.dropped_matches()[-1].residual

    plain = Placement()
    plain.addmatches(a, b, p, q)
    assert plain.solve(robust=False).ndropped == 0


def test_clean_data_costs_one_solve_and_drops_nothing():
    rng = np.random.default_rng(8)
    _, matches = make_grid("affine", 4, 4, rng, noise=0.2)
    result = place(matches).solve("affine")
    assert result.rounds == 1 and result.ndropped == 0


def test_quality_report():
    rng = np.random.default_rng(9)
    _, matches = make_grid("translation", 3, 3, rng, noise=0.1, per_pair=6)
    a, b, p, q = matches[0]
    q = q.copy()
    q[0] += 50.0
    matches[0] = (a, b, p, q)
    result = place(matches).solve()
    assert result.ndropped == 1
    worst = result.worst(3)
    assert len(worst) == 3 and worst[0].max >= worst[1].max >= worst[2].max
    pairs = {(f.t, f.t_) for f in result.pairs}
    assert (a, b) in pairs or (b, a) in pairs
    fit = next(f for f in result.pairs if {f.t, f.t_} == {a, b})
    assert fit.ndropped == 1 and fit.n == 5
    assert result.rms < 0.5 and result.max < 1.0
    assert result.components == [list(result.tiles)]
    text = result.summary()
    assert "dropped 1 matches" in text and "worst pairs" in text


# -- graphs, priors ---------------------------------------------------------------


def two_islands():
    pl = Placement()
    pl.addmatch("a", "b", (500, 10), (0, 12))
    pl.addmatch("a", "b", (500, 400), (0, 402))
    pl.addmatch("c", "d", (500, 10), (0, 10))
    return pl


def test_disconnected_graph_is_an_error_that_lists_the_pieces():
    pl = two_islands()
    with pytest.raises(spectralign.DisconnectedTileGraphError, match="2 pieces") as info:
        pl.rigid()
    assert isinstance(info.value, ValueError)
    assert sorted(map(sorted, info.value.components)) == [["a", "b"], ["c", "d"]]
    with pytest.raises(spectralign.DisconnectedTileGraphError, match="'c'"):
        pl.rigid(fix="a")


def test_priors_place_each_island():
    pl = two_islands()
    pl.addprior("a", (0, 0), weight=1e-3)
    pl.addprior("c", (5000, 0), weight=1e-3)
    pos = pl.rigid()
    np.testing.assert_allclose(pos["a"], (0, 0), atol=1e-6)
    np.testing.assert_allclose(pos["b"], (500, -2), atol=1e-6)
    np.testing.assert_allclose(pos["d"], (5500, 0), atol=1e-6)
    pl.addmatch("b", "c", (500, 0), (0, 0))  # now joined, priors still hold the frame
    assert len(pl.solve().components) == 1


def test_prior_holds_a_weakly_connected_tile():
    pl = Placement()
    pl.addmatch(0, 1, (400, 0), (0, 0))
    pl.addprior(0, Affine.translator((100, 200)), weight=10.0)
    pl.addprior(1, (520, 200), weight=10.0)
    pos = pl.rigid()
    # the match asks for 400 px apart, the priors for 420: weighted compromise
    assert 400 < pos[1][0] - pos[0][0] < 420


def test_graph_is_networkx():
    rng = np.random.default_rng(10)
    _, matches = make_grid("translation", 2, 3, rng)
    g = place(matches).graph()
    assert g.number_of_nodes() == 6
    assert all(d["nmatches"] == 4 for _, _, d in g.edges(data=True))


# -- bad input -------------------------------------------------------------------


def test_unknown_fix_tile_is_named():
    pl = two_islands()
    with pytest.raises(spectralign.UnknownTileError, match="'zz'") as info:
        pl.rigid(fix="zz")
    assert isinstance(info.value, KeyError)


def test_self_match_names_the_tile():
    pl = Placement()
    with pytest.raises(spectralign.InvalidMatchError, match="'t7' matched with itself"):
        pl.addmatch("t7", "t7", (0, 0), (1, 1))
    with pytest.raises(spectralign.InvalidMatchError, match="itself"):
        pl.addmatches(np.array([1, 2]), np.array([3, 2]), np.zeros((2, 2)), np.zeros((2, 2)))


def test_nan_points_name_the_tiles():
    pl = Placement()
    with pytest.raises(spectralign.InvalidPointError, match="'left'.*'right'"):
        pl.addmatch("left", "right", (np.nan, 0), (1, 1))
    with pytest.raises(spectralign.InvalidPointError, match="tile 1 and tile 2"):
        pl.addmatches(1, 2, np.array([[0, 0], [np.inf, 0]]), np.zeros((2, 2)))
    assert pl.nmatches == 0


def test_bad_weights_and_shapes():
    pl = Placement()
    with pytest.raises(spectralign.InvalidMatchError, match="weight"):
        pl.addmatch(1, 2, (0, 0), (1, 1), weight=-1)
    with pytest.raises(spectralign.InvalidPointError, match=r"\(N, 2\)"):
        pl.addmatches(1, 2, np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="hashable"):
        pl.addmatch([1], 2, (0, 0), (1, 1))
    with pytest.raises(ValueError, match="euclidean"):
        pl.addmatch(1, 2, (0, 0), (1, 1))
        pl.solve("rigid")


def test_no_matches_is_an_error():
    with pytest.raises(spectralign.NoMatchesError, match="at least one match"):
        Placement().rigid()


def test_affine_with_too_few_matches_names_the_tile():
    pl = Placement()
    for y in (0, 200, 400):
        pl.addmatch("a", "b", (500, y), (0, y))
        pl.addmatch("a", "b", (300, y + 50), (-200, y + 50))
    pl.addmatch("b", "lonely", (400, 100), (0, 100))
    with pytest.raises(spectralign.UnderdeterminedTileError, match="'lonely' \\(1 matches\\)") as info:
        pl.affine()
    assert info.value.tiles == ["lonely"]
    with pytest.raises(spectralign.UnderdeterminedTileError, match="'lonely'"):
        pl.similarity()
    pl.rigid()  # one match is enough for a translation


def test_collinear_points_are_not_enough_for_affine():
    pl = Placement()
    for x in (0, 100, 200, 300):
        pl.addmatch("a", "b", (x, 10), (x, 0))
    with pytest.raises(spectralign.UnderdeterminedTileError, match="not on one line"):
        pl.affine()
    euclid = pl.euclidean(fix="a")
    assert euclid["b"].isclose(Affine.translator((0, 10)), atol=1e-9)


def _big_affine_grid(n, rng, per=4, noise=0.1):
    """Matches of an n x n grid of slightly rotated tiles, built with arrays."""
    idx = np.arange(n * n).reshape(n, n)
    pos = np.stack(np.meshgrid(np.arange(n) * STEP, np.arange(n) * STEP), -1).reshape(-1, 2)
    pos = pos + rng.normal(0, 10, pos.shape)
    angle = rng.normal(0, 0.01, n * n)
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)
    a = np.repeat(np.concatenate([idx[:, :-1].ravel(), idx[:-1].ravel()]), per)
    b = np.repeat(np.concatenate([idx[:, 1:].ravel(), idx[1:].ravel()]), per)
    p = rng.uniform(0, TILE, (len(a), 2))
    model_pts = np.einsum("nij,nj->ni", rot[a], p) + pos[a]
    q = np.einsum("nji,nj->ni", rot[b], model_pts - pos[b]) + rng.normal(0, noise, p.shape)
    pl = Placement()
    pl.addmatches(a, b, p, q)
    return pl


@pytest.mark.parametrize("model", ["similarity", "affine"])
def test_large_grid_fit_does_not_depend_on_the_fixed_tile(model):
    # Least squares in model space rewards tiles that shrink; had one tile been
    # pinned to fix the gauge, all others would shrink a little and the misfit
    # would pile up around the pinned one (and grow with the grid).
    pl = _big_affine_grid(80, np.random.default_rng(21))
    free = pl.solve(model, robust=False)
    cost = (free.residual_norms ** 2).sum()
    for fix in (0, 80 * 40 + 40, 80 * 80 - 1):
        fixed = pl.solve(model, robust=False, fix=fix)
        np.testing.assert_allclose(fixed.transforms[fix].matrix, np.eye(2, 3), atol=1e-9)
        assert (fixed.residual_norms ** 2).sum() == pytest.approx(cost, rel=2e-3)
    # no residual stands out from 0.1 px noise (a pile-up reaches 1 px and more)
    assert free.max < 6 * 0.1


def _narrow_overlap_grid(n, rng, noise, *, sheared=False):
    """Matches of an n x n grid of rotated and scaled 512 px tiles that meet
    in 15 % overlaps, a 3 x 5 grid of windows in each (the original README's
    affine recipe), and the true transforms."""
    step = 0.85 * TILE
    truth = {}
    for r in range(n):
        for c in range(n):
            a = (Affine.translator((c * step + rng.normal(0, 5), r * step + rng.normal(0, 5)))
                 @ Affine.rotator(rng.normal(0, 0.01), (256, 256))
                 @ Affine.scaler(1 + rng.normal(0, 0.005), (256, 256)))
            if sheared:
                a = a @ Affine([[1, rng.normal(0, 0.01), 0], [0, 1, 0]])
            truth[r, c] = a
    pl = Placement()
    ov = 0.15 * TILE
    for (r, c), a in truth.items():
        for dr, dc in ((0, 1), (1, 0)):
            if (r + dr, c + dc) not in truth:
                continue
            b = truth[r + dr, c + dc]
            xs = np.linspace(TILE - ov + 10, TILE - 10, 3) if dc else np.linspace(30, TILE - 30, 5)
            ys = np.linspace(30, TILE - 30, 5) if dc else np.linspace(TILE - ov + 10, TILE - 10, 3)
            p = np.array([(x, y) for x in xs for y in ys])
            q = b.inverse()(a(p)) + rng.normal(0, noise, p.shape)
            pl.addmatches((r, c), (r + dr, c + dc), p, q)
    return pl, truth


def _corner_rms(found, truth):
    corners = np.array([[0, 0], [TILE, 0], [0, TILE], [TILE, TILE]], float)
    est = np.vstack([found[t](corners) for t in truth])
    tru = np.vstack([truth[t](corners) for t in truth])
    x = np.column_stack([est, np.ones(len(est))])
    g, *_ = np.linalg.lstsq(x, tru, rcond=None)  # the global (gauge) transform
    return float(np.sqrt(((x @ g - tru) ** 2).sum(1).mean()))


def test_regularized_affine_damps_noise_on_narrow_overlaps():
    pl, truth = _narrow_overlap_grid(10, np.random.default_rng(31), noise=0.05)
    plain = _corner_rms(pl.affine(), truth)
    damped = _corner_rms(pl.affine(regularize=0.1), truth)
    assert damped <= 0.1 and damped <= 0.5 * plain
    # exact data of similarity tiles stay exact: the pull is towards them
    pl, truth = _narrow_overlap_grid(4, np.random.default_rng(32), noise=0.0)
    assert _corner_rms(pl.affine(regularize=0.5), truth) < 1e-6
    with pytest.raises(ValueError, match="similarity or affine"):
        pl.solve("euclidean", regularize=0.1)


def test_regularized_similarity_pulls_scale_towards_one():
    """A chain of tiles whose matches say each is 1 % smaller than the last:
    plain similarity follows them (scales drift along the chain); the pull
    towards the euclidean solution keeps every scale nearer 1."""
    pl = spectralign.Placement()
    pts = np.array([[x, y] for x in (10.0, 90.0) for y in (10.0, 90.0)])
    for k in range(6):
        pl.addmatches(k, k + 1, pts, (pts - pts.mean(0)) / 0.99 + pts.mean(0))
    plain = pl.solve("similarity").scales
    pulled = pl.solve("similarity", regularize=1.0).scales
    assert plain.max() / plain.min() > 1.05
    assert pulled.max() / pulled.min() < 1 + 0.7 * (plain.max() / plain.min() - 1)
    # tiles that are exactly euclidean stay exact
    pl = spectralign.Placement()
    pl.addmatches("a", "b", pts, pts - (70, 0))
    res = pl.solve("similarity", regularize=1.0)
    np.testing.assert_allclose(res.scales, 1, atol=1e-9)


@pytest.mark.parametrize("model", ["similarity", "affine"])
def test_faint_priors_cannot_shrink_the_montage(model):
    """Least squares in model space rewards shrinking tiles; faint stage
    priors must not let it (they collapsed this montage to 1 % of its size)."""
    rng = np.random.default_rng(3)
    truth, matches = make_grid(model, 4, 4, rng, noise=0.3, per_pair=6)
    pl = place(matches)
    for r, c in truth:
        pl.addprior((r, c), (c * STEP, r * STEP), weight=1e-6)
    found = pl.solve(model).transforms
    scales = [np.sqrt(abs(np.linalg.det(a.matrix[:, :2]))) for a in found.values()]
    assert abs(np.mean(scales) - 1) < 0.02
    assert max_corner_error(found, truth) < 2.0
    # the priors still place the montage: its mean position is the stage's
    mean_pos = np.mean([a((TILE / 2, TILE / 2)) for a in found.values()], axis=0)
    np.testing.assert_allclose(mean_pos, np.mean([(c * STEP + TILE / 2, r * STEP + TILE / 2)
                                                  for r, c in truth], axis=0), atol=25)
