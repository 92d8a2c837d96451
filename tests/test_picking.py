"""DoG picking: picks land on particles, thresholds, min distance, mask, tiling, errors, CLI."""

from __future__ import annotations

import argparse
import itertools
import warnings

import numpy as np
import pytest

from napari_cryo_openset.errors import CryoOpensetError, ParameterError
from napari_cryo_openset.picking import (
    PickingParams,
    dog_filter,
    match_picks,
    pick,
    pick_particles,
)
from napari_cryo_openset.picking.peaks import suppress
from napari_cryo_openset.picking.thresholds import aitom_threshold
from napari_cryo_openset.progress import Progress
from napari_cryo_openset.synthetic import BlobTomogramParams, blob_tomogram

VOXEL = 10.0  # Å
DIAMETER = 120.0  # Å (12 voxels)


@pytest.fixture(scope="module")
def phantoms():
    """Easy blob phantoms at SNR 1, dark and bright, with ground truth."""
    out = {}
    for polarity in ("dark", "bright"):
        params = BlobTomogramParams(
            shape=(64, 128, 128), voxel_size=VOXEL, diameter=DIAMETER, n_particles=40,
            snr=1.0, polarity=polarity, seed=7,
        )
        out[polarity] = blob_tomogram(params)
    return out


@pytest.fixture(scope="module")
def dark_result(phantoms):
    volume, _ = phantoms["dark"]
    return pick(volume, VOXEL, PickingParams(diameter=DIAMETER))


def _f1(picks, truth):
    return match_picks(picks, truth, 0.3 * DIAMETER, VOXEL)


# --------------------------------------------------------------------------------------------
# picks land on particles
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("polarity", ["dark", "bright"])
def test_picks_land_on_particles(phantoms, polarity):
    volume, truth = phantoms[polarity]
    result = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, polarity=polarity))
    m = _f1(result.picks, truth)
    assert m["f1"] >= 0.9, m
    assert m["mean_distance"] < 1.5 * VOXEL  # within 1.5 voxels of the true centres
    assert (result.picks["score"] > 0).all()  # positive = particle-like after polarity
    assert result.picks["score"].is_monotonic_decreasing


@pytest.mark.parametrize("polarity", ["dark", "bright"])
def test_auto_polarity_guesses_right(phantoms, polarity):
    volume, truth = phantoms[polarity]
    result = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, polarity="auto"))
    assert result.polarity == polarity
    assert result.polarity_guessed
    assert result.polarity_evidence["confident"]
    assert _f1(result.picks, truth)["f1"] >= 0.9


def test_wrong_polarity_finds_few_particles(phantoms):
    volume, truth = phantoms["dark"]
    result = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, polarity="bright"))
    assert _f1(result.picks, truth)["f1"] < 0.5


def test_dog_filter_matches_scipy_gaussian_difference():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    v = ndimage.gaussian_filter(rng.standard_normal((30, 40, 50)), 1.0).astype(np.float32)
    ref = ndimage.gaussian_filter(v, 3.0) - ndimage.gaussian_filter(v, 3.3)
    out = dog_filter(v, 3.0, 3.3)
    assert out.dtype == np.float32 and out.shape == v.shape
    assert np.abs(out - ref).max() < 2e-3 * np.abs(ref).max()


# --------------------------------------------------------------------------------------------
# thresholds
# --------------------------------------------------------------------------------------------


def test_topn_returns_n_best(phantoms):
    volume, _ = phantoms["dark"]
    result = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, threshold_method="topn", max_picks=10))
    assert len(result.picks) == 10
    assert np.array_equal(result.picks["score"].to_numpy(), result.candidates["score"].to_numpy()[:10])


def test_robust_threshold_larger_k_gives_fewer_picks(phantoms):
    volume, _ = phantoms["dark"]
    counts = []
    for k in (1.0, 5.0, 11.0):
        r = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, threshold_method="robust", k_mad=k))
        assert r.threshold == pytest.approx(r.stats["response_median"] + k * r.stats["response_sigma"])
        counts.append(len(r.picks))
    assert counts[0] > counts[1] > counts[2]


def test_aitom_threshold_formula(phantoms):
    assert aitom_threshold(1.0, 21.0, 3.0) == pytest.approx(4.0)  # 1 + 3·20/20
    volume, _ = phantoms["dark"]
    r = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, threshold_method="aitom"))
    m, M = r.stats["peak_min"], r.stats["peak_max"]
    assert r.threshold == pytest.approx(m + 3.0 * (M - m) / 20.0)
    assert M == pytest.approx(r.candidates["score"].max())
    scores = r.candidates["score"].to_numpy()
    assert len(r.picks) == int(np.count_nonzero(scores >= r.threshold))


def test_explicit_value_and_live_threshold_agree(dark_result, phantoms):
    volume, _ = phantoms["dark"]
    t = float(np.median(dark_result.candidates["score"]))
    rerun = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, threshold_method="value", threshold=t))
    live = dark_result.select(t)  # slider: no refiltering
    assert (rerun.picks["score"] >= t).all()
    np.testing.assert_allclose(live[["z", "y", "x"]].to_numpy(), rerun.picks[["z", "y", "x"]].to_numpy())
    assert len(dark_result.select(t, max_picks=3)) == 3


def test_zero_picks_is_a_normal_result(phantoms):
    volume, _ = phantoms["dark"]
    r = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, threshold_method="value", threshold=1e6))
    assert len(r.picks) == 0
    assert list(r.picks.columns)[:4] == ["z", "y", "x", "score"]
    assert "no picks" in r.message


# --------------------------------------------------------------------------------------------
# geometry: min distance, border, mask
# --------------------------------------------------------------------------------------------


def test_min_distance_respected(phantoms):
    volume, _ = phantoms["dark"]
    md = 250.0  # Å, more than twice the diameter: forces suppression between true particles
    r = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, min_distance=md, k_mad=1.0))
    xyz = r.picks[["z", "y", "x"]].to_numpy() * VOXEL
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    d[np.diag_indices_from(d)] = np.inf
    assert len(xyz) > 5 and d.min() >= md


def test_suppression_is_exact_greedy():
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 50, size=(300, 3))
    keep = suppress(pts, 6.0)
    expected = []  # brute-force greedy, best (first) first
    for i, p in enumerate(pts):
        if all(np.linalg.norm(p - pts[j]) >= 6.0 for j in expected):
            expected.append(i)
    assert np.flatnonzero(keep).tolist() == expected


def test_border_exclusion(phantoms):
    volume, _ = phantoms["dark"]
    border = 200.0  # Å = 20 voxels
    r = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, border=border, k_mad=1.0))
    xyz = r.picks[["z", "y", "x"]].to_numpy()
    upper = np.asarray(volume.shape) - 1 - border / VOXEL
    assert len(xyz) > 0
    assert (xyz >= border / VOXEL).all() and (xyz <= upper).all()


def test_mask_excludes_picks(phantoms, dark_result):
    volume, _ = phantoms["dark"]
    mask = np.ones(volume.shape, dtype=bool)
    mask[:, :, 64:] = False
    r = pick(volume, VOXEL, PickingParams(diameter=DIAMETER), mask=mask)
    assert len(r.picks) > 0
    assert (np.floor(r.picks["x"] + 0.5) < 64).all()
    left = dark_result.picks[np.floor(dark_result.picks["x"] + 0.5) < 60]
    assert _f1(r.picks, left)["recall"] >= 0.9  # the allowed half is still picked


# --------------------------------------------------------------------------------------------
# tiling, determinism, memory-mapped input, progress
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "polarity"), [("robust", "dark"), ("aitom", "auto")])
def test_tiled_equals_untiled(phantoms, method, polarity):
    volume, _ = phantoms["dark"]
    whole = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, threshold_method=method, polarity=polarity))
    tiled = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, threshold_method=method, polarity=polarity,
                                              memory_budget_mb=1.0))
    assert tiled.stats["n_tiles"] > 1 and whole.stats["n_tiles"] == 1
    assert len(tiled.candidates) == len(whole.candidates)
    assert len(tiled.picks) == len(whole.picks)
    assert tiled.threshold == pytest.approx(whole.threshold, rel=1e-4)
    np.testing.assert_allclose(
        tiled.candidates[["z", "y", "x"]].to_numpy(), whole.candidates[["z", "y", "x"]].to_numpy(), atol=1e-3
    )
    np.testing.assert_allclose(tiled.candidates["score"], whole.candidates["score"], rtol=1e-4, atol=1e-6)


def test_deterministic(phantoms, dark_result):
    volume, _ = phantoms["dark"]
    again = pick(volume, VOXEL, PickingParams(diameter=DIAMETER))
    assert again.picks.equals(dark_result.picks)
    assert again.threshold == dark_result.threshold


def test_memory_mapped_tomogram_gives_same_picks(tmp_path, phantoms, dark_result):
    from napari_cryo_openset.io import read_tomogram, write_tomogram

    volume, _ = phantoms["dark"]
    tomo = read_tomogram(write_tomogram(tmp_path / "t.mrc", volume, VOXEL))
    assert isinstance(tomo.data, np.memmap)
    r = pick(tomo, None, PickingParams(diameter=DIAMETER, memory_budget_mb=2.0))
    assert r.stats["n_tiles"] > 1
    np.testing.assert_allclose(r.picks[["z", "y", "x"]].to_numpy(), dark_result.picks[["z", "y", "x"]].to_numpy(), atol=1e-3)


def test_generator_yields_progress_per_tile(phantoms):
    volume, _ = phantoms["dark"]
    gen = pick_particles(volume, VOXEL, PickingParams(diameter=DIAMETER, memory_budget_mb=1.0))
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert all(isinstance(e, Progress) for e in events)
    tile_events = [e for e in events if e.stage == "filter" and e.step > 0]
    assert len(tile_events) == result.stats["n_tiles"] > 1
    assert tile_events[-1].step == tile_events[-1].total


def test_nonfinite_voxels_are_replaced_with_a_warning(phantoms):
    volume, truth = phantoms["dark"]
    v = volume.copy()
    v[10, 10:20, 10:20] = np.nan
    v[30, 50, 50] = np.inf
    with pytest.warns(UserWarning, match="NaN/inf"):
        r = pick(v, VOXEL, PickingParams(diameter=DIAMETER))
    assert r.stats["nonfinite"] > 0
    assert _f1(r.picks, truth)["f1"] >= 0.9


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("volume", "params", "mask", "match"),
    [
        (np.zeros((32, 32, 32)) + np.arange(32), dict(diameter=0.0), None, "diameter must be a positive"),
        (np.zeros((32, 32, 32)) + np.arange(32), dict(diameter=-5.0), None, "diameter must be a positive"),
        (np.zeros((32, 32, 32)) + np.arange(32), dict(diameter=400.0), None, "larger than the volume"),
        (np.arange(64 * 64, dtype=np.float32).reshape(64, 64), dict(diameter=50.0), None, "2-D image"),
        (np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64), dict(diameter=50.0), None, "2-D image"),
        (np.full((32, 32, 32), 3.0, np.float32), dict(diameter=50.0), None, "constant"),
        (np.full((32, 32, 32), np.nan, np.float32), dict(diameter=50.0), None, "no finite voxels"),
        (np.zeros((32, 32, 32)) + np.arange(32), dict(diameter=50.0), np.ones((32, 32, 31), bool), "mask has shape"),
        (np.zeros((32, 32, 32)) + np.arange(32), dict(diameter=50.0, polarity="grey"), None, "polarity"),
        (np.zeros((32, 32, 32)) + np.arange(32), dict(diameter=50.0, threshold_method="topn"), None, "max_picks"),
        (np.zeros((32, 32, 32)) + np.arange(32), dict(diameter=50.0, threshold_method="value"), None, "threshold"),
    ],
)
def test_bad_input_gives_parameter_error(volume, params, mask, match):
    with pytest.raises(ParameterError, match=match):
        pick(volume, VOXEL, PickingParams(**params), mask=mask)


def test_large_constant_volume_is_refused_after_a_full_check():
    v = np.zeros((40, 512, 512), np.float32)  # above the exact-statistics size: sampled first
    with pytest.raises(ParameterError, match="constant"):
        pick(v, VOXEL, PickingParams(diameter=50.0))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parser():
    from napari_cryo_openset.cli.pick import register

    parser = argparse.ArgumentParser(prog="napari-cryo-openset")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_pick_writes_star_that_reads_back(tmp_path, phantoms):
    from napari_cryo_openset.io import read_picks, write_tomogram

    volume, truth = phantoms["bright"]
    tomo = write_tomogram(tmp_path / "tomo.mrc", volume, VOXEL)
    out = tmp_path / "picks.star"
    args = _parser().parse_args(
        ["pick", str(tomo), "--diameter", "120", "--polarity", "auto", "-o", str(out), "--quiet"]
    )
    assert args.func(args) == 0
    picks = read_picks(out)
    assert len(picks) > 0 and picks.attrs["voxel_size"] is not None
    assert _f1(picks, truth)["f1"] >= 0.9
    assert (picks["score"] > 0).all()
    # --max-picks N gives N rows
    args = _parser().parse_args(["pick", str(tomo), "--diameter", "120", "--polarity", "bright",
                                 "--max-picks", "7", "-o", str(out), "--quiet"])
    args.func(args)
    assert len(read_picks(out)) == 7


def test_cli_pick_bad_input_gives_one_clear_error(tmp_path, phantoms, capsys):
    from napari_cryo_openset.io import write_tomogram
    from napari_cryo_openset.cli import main as cli_main

    def main(argv):
        return cli_main(["pick", *argv])

    volume, _ = phantoms["dark"]
    tomo = write_tomogram(tmp_path / "tomo.mrc", volume, VOXEL)
    bad_mask = write_tomogram(tmp_path / "mask.mrc", np.ones((8, 8, 8), np.int8), VOXEL)
    cases = [
        (["missing.mrc", "--diameter", "120", "-o", str(tmp_path / "p.star")], "does not exist"),
        ([str(tomo), "--diameter", "-3", "-o", str(tmp_path / "p.star")], "diameter"),
        ([str(tomo), "--diameter", "120", "--mask", str(bad_mask), "-o", str(tmp_path / "p.star")], "mask"),
        ([str(tomo), "--diameter", "120", "-o", str(tmp_path / "p.txt")], "extension"),
        ([str(tomo), "--diameter", "120", "--threshold", "1", "--threshold-method", "aitom",
          "-o", str(tmp_path / "p.star")], "--threshold"),
    ]
    for argv, match in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("napari-cryo-openset: error:") and match in err[0], err
    assert not (tmp_path / "p.star").exists()
    # the subcommand function itself raises the package's error type
    args = _parser().parse_args(["pick", str(tomo), "--diameter", "0", "-o", str(tmp_path / "p.star")])
    with pytest.raises(CryoOpensetError):
        args.func(args)


def test_cli_threshold_and_max_picks_are_exclusive():
    with pytest.raises(SystemExit), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _parser().parse_args(["pick", "t.mrc", "--diameter", "1", "--threshold", "1", "--max-picks", "2", "-o", "p.star"])


def test_params_grid_is_valid():
    for method, pol in itertools.product(("aitom", "robust"), ("dark", "bright", "auto")):
        PickingParams(diameter=100, threshold_method=method, polarity=pol).validate()


REAL = __import__("pathlib").Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "hiv_vlp_40A.mrc"


@pytest.mark.shared_data
@pytest.mark.skipif(not REAL.exists(), reason="../shared/data is not beside the checkout")
def test_auto_polarity_on_the_real_tomogram_is_bright():
    from napari_cryo_openset.io import read_tomogram

    tomo = read_tomogram(REAL)
    result = pick(tomo, None, PickingParams(diameter=160.0, polarity="auto"))
    assert result.polarity == "bright"  # this file is inverted (protein bright), see data README
    assert result.polarity_evidence["confident"]
    assert len(result.picks) > 0


# --------------------------------------------------------------------------------------------
# diameter ranges (multi-scale picking)
# --------------------------------------------------------------------------------------------

SMALL, LARGE = 80.0, 200.0  # Å


@pytest.fixture(scope="module")
def mixed_phantom():
    from napari_cryo_openset.synthetic import mixed_blob_tomogram

    return mixed_blob_tomogram(shape=(64, 128, 128), voxel_size=VOXEL, diameters=(SMALL, LARGE),
                               n_per_size=(20, 10), snr=0.5, seed=0)


@pytest.fixture(scope="module")
def mixed_result(mixed_phantom):
    volume, _ = mixed_phantom
    return pick(volume, VOXEL, PickingParams(diameter=SMALL, max_diameter=LARGE))


def _recall(picks, truth, diameter):
    sub = truth[truth["diameter"] == diameter]
    return match_picks(picks, sub, 0.3 * diameter, VOXEL)["recall"]


def test_range_finds_small_and_large_particles(mixed_phantom, mixed_result):
    volume, truth = mixed_phantom
    single = pick(volume, VOXEL, PickingParams(diameter=LARGE))
    assert _recall(mixed_result.picks, truth, SMALL) >= 0.9
    assert _recall(mixed_result.picks, truth, LARGE) >= 0.9
    assert _recall(mixed_result.picks, truth, SMALL) >= _recall(single.picks, truth, SMALL) + 0.5
    both = match_picks(mixed_result.picks, truth, 0.3 * SMALL, VOXEL)
    assert both["precision"] >= 0.9  # no extra picks inside the large particles
    assert len(mixed_result.stats["scales"]) == len(PickingParams(diameter=SMALL, max_diameter=LARGE).scale_diameters())


def test_range_diameter_column_is_roughly_right(mixed_phantom, mixed_result):
    from scipy.spatial import cKDTree

    _, truth = mixed_phantom
    picks = mixed_result.picks
    assert "diameter" in picks.columns and picks["diameter"].between(SMALL, LARGE).all()
    dist, nearest = cKDTree(picks[["z", "y", "x"]].to_numpy()).query(truth[["z", "y", "x"]].to_numpy())
    for d in (SMALL, LARGE):
        sel = (truth["diameter"].to_numpy() == d) & (dist < 0.3 * d / VOXEL)
        est = picks["diameter"].to_numpy()[nearest[sel]]
        assert abs(np.median(est) / d - 1.0) <= 0.3, (d, est)


def test_range_scores_are_z_scores_and_the_slider_works(mixed_result):
    r = mixed_result
    assert r.threshold == pytest.approx(4.0)  # robust rule on z-scores: k_mad
    scores = r.candidates["score"].to_numpy()
    assert np.all(np.diff(scores) <= 0)  # best first across scales
    lower = r.select(threshold=2.0)
    assert len(lower) >= len(r.picks) and lower.iloc[: len(r.picks)].equals(r.picks)
    assert (r.select(threshold=8.0)["score"] >= 8.0).all()
    assert "scales" in r.summary()


def test_single_diameter_picks_carry_their_diameter(dark_result):
    assert (dark_result.picks["diameter"] == DIAMETER).all()
    assert "scales" not in dark_result.stats


def test_equal_range_is_the_single_scale_picker(phantoms, dark_result):
    volume, _ = phantoms["dark"]
    same = pick(volume, VOXEL, PickingParams(diameter=DIAMETER, max_diameter=DIAMETER))
    assert same.picks.equals(dark_result.picks)


def test_range_star_round_trip_of_diameter(tmp_path, mixed_result):
    from napari_cryo_openset.io import read_picks, write_picks

    out = write_picks(tmp_path / "p.star", mixed_result.picks, voxel_size=VOXEL)
    text = out.read_text()
    assert "_cosDiameterAngst" in text
    back = read_picks(out)
    np.testing.assert_allclose(back["diameter"], mixed_result.picks["diameter"])
    # files without the column still read (no diameter column)
    old = write_picks(tmp_path / "old.star", mixed_result.picks.drop(columns=["diameter"]), voxel_size=VOXEL)
    assert "diameter" not in read_picks(old).columns


def test_scale_diameters_and_defaults():
    p = PickingParams(diameter=160, max_diameter=380)
    d = p.scale_diameters()
    assert d[0] == 160 and d[-1] == 380 and len(d) == 5  # ⌈log(380/160)/log 1.25⌉ + 1
    assert np.allclose(np.diff(np.log(d)), np.log(d[1] / d[0]))
    assert p.largest_diameter == 380 and PickingParams(diameter=120).largest_diameter == 120
    assert len(PickingParams(diameter=100, max_diameter=110).scale_diameters()) == 2
    assert len(PickingParams(diameter=100, max_diameter=300, n_scales=3).scale_diameters()) == 3
    assert PickingParams(diameter=100).scale_diameters() == (100.0,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(diameter=200, max_diameter=100), "inverted range.*--diameter MIN MAX"),
        (dict(diameter=100, max_diameter=0), "zero or negative.*--diameter MIN MAX"),
        (dict(diameter=100, max_diameter=-5), "zero or negative"),
        (dict(diameter=100, max_diameter=200, n_scales=1), "n_scales"),
        (dict(diameter=100, n_scales=4), "n_scales needs a diameter range"),
        (dict(diameter=100, max_diameter=200, sigma1=3.0), "sigma1 fixes one scale"),
    ],
)
def test_bad_ranges_raise_one_clear_error(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        PickingParams(**kwargs).validate()


def test_cli_pick_diameter_range(tmp_path, mixed_phantom, capsys):
    from napari_cryo_openset.cli import main as cli_main
    from napari_cryo_openset.io import read_picks, write_tomogram

    volume, truth = mixed_phantom
    tomo = write_tomogram(tmp_path / "tomo.mrc", volume, VOXEL)
    out = tmp_path / "picks.star"
    assert cli_main(["pick", str(tomo), "--diameter", "80", "200", "-o", str(out), "--quiet"]) == 0
    picks = read_picks(out)
    assert picks["diameter"].between(SMALL, LARGE).all()
    assert _recall(picks, truth, SMALL) >= 0.9
    capsys.readouterr()
    for argv, match in [(["200", "80"], "inverted range"), (["80", "0"], "zero or negative"),
                        (["80", "100", "200"], "one diameter or a range MIN MAX")]:
        assert cli_main(["pick", str(tomo), "--diameter", *argv, "-o", str(tmp_path / "x.star")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--diameter" in err[0] and match in err[0], err
    assert not (tmp_path / "x.star").exists()


def test_run_accepts_a_diameter_range():
    from napari_cryo_openset.cli import build_parser
    from napari_cryo_openset.cli.run import run_params_from_args

    ns = build_parser().parse_args(["run", "--tomo", "t.mrc", "--templates", "builtin", "--diameter", "150", "300",
                                    "--method", "ada", "-o", "out"])
    params = run_params_from_args(ns)
    assert params.picking.diameter == 150 and params.picking.max_diameter == 300


def test_range_tiled_equals_untiled_and_other_rules_work(mixed_phantom, mixed_result):
    volume, _ = mixed_phantom
    base = dict(diameter=SMALL, max_diameter=LARGE)
    tiled = pick(volume, VOXEL, PickingParams(**base, memory_budget_mb=4))
    assert tiled.stats["n_tiles"] > len(mixed_result.stats["scales"])
    cols = ["z", "y", "x", "score", "diameter"]
    np.testing.assert_allclose(tiled.candidates[cols].to_numpy(), mixed_result.candidates[cols].to_numpy(),
                               rtol=1e-4, atol=1e-4)  # float32 FFTs of other lengths
    assert pick(volume, VOXEL, PickingParams(**base, polarity="auto")).polarity == "dark"
    assert len(pick(volume, VOXEL, PickingParams(**base, threshold_method="topn", max_picks=7)).picks) == 7
    assert len(pick(volume, VOXEL, PickingParams(**base, threshold_method="aitom")).picks) > 0
