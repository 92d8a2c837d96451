"""pipeline + the ``run`` command: one go from a tomogram to classified, mapped picks and OUTDIR files."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from napari_cryo_openset.cli import main
from napari_cryo_openset.embed import EmbedParams
from napari_cryo_openset.errors import CryoOpensetError, ParameterError
from napari_cryo_openset.pipeline import OUTPUTS, RunParams, run_pipeline, working_geometry, write_run
from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.params import ImagingCondition
from napari_cryo_openset.progress import run_to_completion

VOXEL = 10.0
NAMES = ("1bxn", "1qvr", "2cg9")
#: The align stage is tested in tests/test_align_run.py (off here: it would only add time).
TINY = {"per_class": 10, "epochs": 1, "iterations": 20, "threads": 2, "device": "cpu", "verify_rotations": 24,
        "align": False}


def _run_params(diameter, *, method="mluda", polarity="dark", max_picks=None, neighbours=None, background=None,
                **run):
    """RunParams from the settings a test names (the stages' own parameter sets, composed)."""
    from dataclasses import replace

    from napari_cryo_openset.params import AdaptParams, PickingParams

    picking = PickingParams(diameter=diameter, polarity=polarity, max_picks=max_picks).validate()
    source = RunParams(picking).source
    crowding = {k: v for k, v in (("neighbours", neighbours), ("background", background)) if v is not None}
    return RunParams(picking, source=replace(source, **crowding), adapt=AdaptParams(method=method), **run)


@pytest.fixture(scope="module")
def scene_files(templates, tmp_path_factory):
    """A 64×128×128 simulated scene (3 templates + decoys) on disk, with its true positions as picks."""
    from napari_cryo_openset.io import write_picks, write_tomogram
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

    d = tmp_path_factory.mktemp("run")
    volume, truth = make_scene(SceneParams(shape=(64, 128, 128), condition=ImagingCondition(voxel_size=VOXEL, snr=1.0),
                                           templates=tuple(templates), n_particles=30, unknown_fraction=0.25, seed=1))
    picks = truth.drop(columns=["class_name"]).reset_index(drop=True)
    picks.loc[0, "curation"] = "rejected"
    tomo = write_tomogram(d / "scene.mrc", volume, VOXEL)
    star = write_picks(d / "scene_picks.star", picks, voxel_size=VOXEL)
    return {"tomo": tomo, "picks": star, "truth": truth, "dir": d}


@pytest.mark.parametrize(("voxel", "size", "box", "expected"), [
    (10.0, 250.0, None, (10.0, 30, 1)),   # 1.2 × 25 voxels → 30
    (10.0, 100.0, None, (10.0, 24, 1)),   # small particle: the smallest box the encoder is made for
    (5.0, 250.0, None, (10.0, 30, 2)),    # 60 voxels needed → bin 2
    (2.0, 300.0, None, (10.0, 36, 5)),    # 180 voxels → bin 5
    (10.0, 250.0, 48, (10.0, 48, 1)),     # an explicit box is kept
    (5.0, 300.0, 32, (15.0, 32, 3)),      # an explicit box too small → binned to fit
])
def test_working_geometry_fits_the_largest_structure(voxel, size, box, expected):
    model_vs, b, binning = working_geometry(voxel, size, box)
    assert (model_vs, b, binning) == pytest.approx(expected)
    assert b * model_vs >= 1.2 * size - 1e-9


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"diameter": 0}, "diameter"), ({"diameter": 150, "method": "dann"}, "method"),
    ({"diameter": 150, "polarity": "grey"}, "polarity"), ({"diameter": 150, "epochs": 0}, "epochs"),
    ({"diameter": 150, "box": 8}, "box"), ({"diameter": 150, "max_picks": 2.5}, "max_picks"),
    ({"diameter": 150, "neighbours": -1}, "neighbours"), ({"diameter": 150, "background": float("nan")}, "background"),
])
def test_run_params_name_the_bad_value(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        _run_params(**kwargs)


def test_scene_source_settings_convert_the_slab_and_the_pick_density():
    from types import SimpleNamespace

    import pandas as pd

    from napari_cryo_openset.pipeline import scene_source_settings

    tomo = SimpleNamespace(shape=(200, 400, 400), voxel_size=(5.0,) * 3)
    picks = pd.DataFrame({"curation": ["unreviewed"] * 90 + ["rejected"] * 10})
    # slab Z 50…150 tomogram voxels at bin 2 → 50 working voxels; 90 active picks per µm³ of the slab
    s = scene_source_settings(tomo, picks, (50.0, 150.0), 2, 10.0)
    assert s["slab"] == pytest.approx(50.0) and "shape" not in s
    assert s["pick_density"] == pytest.approx(90 / (100 * 400 * 400 * 125 * 1e-12))
    assert s["density"] == pytest.approx(1.5 * s["pick_density"])
    # no slab: the scene is as thick as the tomogram (working voxels), at most 128
    s = scene_source_settings(tomo, picks, None, 1, 5.0)
    assert s["shape"] == (128, 256, 256) and "slab" not in s
    assert scene_source_settings(tomo, picks, None, 4, 20.0)["shape"][0] == 50


def test_fast_and_full_defaults():
    assert (_run_params(150).n_per_class, _run_params(150).n_epochs, _run_params(150).n_iterations) == (300, 15, 300)
    fast = _run_params(150, fast=True)
    assert (fast.n_per_class, fast.n_epochs, fast.n_iterations) == (150, 10, 100)
    assert _run_params(150, fast=True, epochs=2).n_epochs == 2


def test_pipeline_with_given_picks_writes_every_output(templates, scene_files, tmp_path):
    from napari_cryo_openset.io import read_picks, read_tomogram
    from napari_cryo_openset.io.picks_io import read_picks as read_star

    tomo = read_tomogram(scene_files["tomo"])
    picks = read_picks(scene_files["picks"])
    stages = []
    params = _run_params(diameter=120, method="mluda", embed=EmbedParams(iterations=50), source_kind="scenes", **TINY)
    result = run_to_completion(run_pipeline(tomo, templates, params, picks=picks), lambda e: stages.append(e.stage))
    assert {"scenes", "train", "extract", "adapt", "embed"} <= set(stages)
    assert "filter" not in stages  # no DoG picking when picks are given
    paths = write_run(tmp_path / "out", result)
    for name in OUTPUTS:
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
    assert not list((tmp_path / "out").glob(".*part*"))  # no temporary files left
    pred = read_star(paths["predictions.star"])
    assert len(pred) == len(picks)  # one row per pick, rejected kept
    assert pred.loc[0, "curation"] == "rejected" and pred.loc[0, "class_name"] == ""
    assert (pred.loc[1:, "class_name"] != "").all()
    assert pred.loc[1:, "tsne_x"].notna().all() and np.isnan(pred.loc[0, "tsne_x"])
    text = paths["predictions.star"].read_text()
    for column in ("rlnCoordinateX", "rlnAutopickFigureOfMerit", "cosClassName", "cosConfidence", "cosUnknownScore",
                   "cosCuration", "cosTsneX", "cosCluster"):
        assert column in text
    report = json.loads(paths["report.json"].read_text())
    assert set(report["timings_s"]) >= {"pick", "simulate+train", "adapt", "embed", "total"}
    assert sum(report["class_counts"].values()) == len(picks) - 1
    assert report["parameters"]["method"] == "mluda" and report["geometry"]["box"] >= 24
    assert report["adaptation"]["threshold"] is not None
    # the source set: scenes picked as the target, every class at its count, the target's pick density
    source = report["training"]["source"]
    assert source["kind"] == "scenes" and source["scenes"] >= 1 and source["seconds"] > 0
    assert source["boxes"] == {"1bxn": 10, "1qvr": 10, "2cg9": 10, "empty": 5, "unknown": 10}, source
    slab = report["condition"]["slab_voxels"]  # picks per µm³ of the slab read from the tomogram (or of the volume)
    z = (slab[1] - slab[0]) if slab else tomo.shape[0]
    assert source["pick_density_target"] == pytest.approx(
        (len(picks) - 1) / (z * tomo.shape[1] * tomo.shape[2] * VOXEL**3 * 1e-12), rel=1e-6)
    assert "truth" not in source and "box_position" not in source
    # one average per group, at the model's voxel size
    averages = sorted((tmp_path / "out" / "averages").glob("average_*.mrc"))
    assert len(averages) == len(result.embedded.averages) >= 1
    avg = read_tomogram(averages[0])
    assert avg.voxel_size == pytest.approx((VOXEL,) * 3)
    # the map: a PNG with the unknown colour when some pick is unknown
    from skimage.io import imread

    from napari_cryo_openset.palette import CLUSTER_COLORS, UNKNOWN_COLOR, class_colors

    def pixels(hex_color):
        rgb = [int(hex_color[i:i + 2], 16) for i in (1, 3, 5)]
        return int((np.abs(img - rgb).sum(-1) < 60).sum())

    img = imread(paths["embedding.png"])[..., :3].astype(int)
    unknown = sum(pixels(c) for c in (UNKNOWN_COLOR, *CLUSTER_COLORS))  # unknown, or a cluster's shade of it
    assert (unknown > 20) == bool((pred["class_name"] == "unknown").any())
    # known classes in the viewer's colours: the palette of the model's class list
    palette = class_colors([], result.adapted.class_names)
    known = [c for c in set(pred["class_name"]) if c not in ("", "unknown")]
    assert any(pixels(palette[c]) > 10 for c in known), known


def test_isolated_source_keeps_the_box_simulator(templates, scene_files):
    from napari_cryo_openset.io import read_picks, read_tomogram

    tomo = read_tomogram(scene_files["tomo"])
    params = _run_params(diameter=120, embed=EmbedParams(iterations=50), source_kind="isolated",
                         **{**TINY, "per_class": 4, "iterations": 5, "verify_max_picks": 5})
    stages = []
    result = run_to_completion(run_pipeline(tomo, templates, params, picks=read_picks(scene_files["picks"])),
                               lambda e: stages.append(e.stage))
    assert "simulate" in stages and "scenes" not in stages
    source = result.report()["training"]["source"]
    assert source["kind"] == "isolated" and source["boxes"]["1bxn"] == 4 and "scenes" not in source
    # more active picks than --verify-max-picks: verification is skipped, said so, the network's calls are kept
    report = result.report()
    assert "skipped" in report["verification"] and "--verify-max-picks 5" in report["verification"]["skipped"]
    assert report["open_set"]["decided_by"] == "network" and "verify" not in result.timings


def test_run_command_end_to_end(scene_files, tmp_path, capsys):
    from napari_cryo_openset.io.picks_io import read_picks

    out = tmp_path / "run"
    rc = main(["run", "--tomo", str(scene_files["tomo"]), "--templates", "builtin", "--diameter", "120",
               "--method", "ada", "-o", str(out), "--per-class", "6", "--epochs", "1", "--iterations", "10",
               "--threads", "2", "--device", "cpu", "--quiet", "--max-picks", "40", "--verify-rotations", "24",
               "--no-align"])  # the align stage: tests/test_align_run.py (about 30 s more here)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "run: pick:" in err and "run: classes:" in err and "run: align: " not in err
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["picking"]["n_picks"] >= 16 and report["parameters"]["max_picks"] == 40
    # told nothing but the voxel size: the tilt range is read from the volume and reported as estimated
    cond = report["condition"]
    assert cond["sources"]["voxel_size"] == "given" and cond["sources"]["defocus"] == "default"
    assert cond["sources"]["tilt_range"] == "estimated", cond["notes"]
    lo, hi = cond["values"]["tilt_range"]
    assert abs(lo + 60) <= 5 and abs(hi - 60) <= 5  # the scene's ±60°
    assert "run: imaging condition: tilt" in err
    assert "transfer" in report["adaptation"]["calibration"]
    # the calls were verified against the templates: the fusion was fitted on the source, each pick has its correlation
    ver = report["verification"]
    assert ver["rotations"] == 24 and ver["temperature"] > 0 and report["open_set"]["decided_by"] == "template verification"
    verified = read_picks(out / "predictions.star")
    active = verified["curation"] != "rejected"
    assert verified.loc[active, "template_correlation"].between(-1, 1).all()
    # the source boxes were matched to the target's spectrum; the diagnostic shows the gap before and after
    spec = report["spectrum"]["summary"]
    assert (out / "spectrum.png").is_file() and report["parameters"]["match_spectrum"]
    assert spec["after"]["mean_abs"] < 0.1 < spec["before"]["mean_abs"] or spec["after"]["mean_abs"] < 0.5 * spec["before"]["mean_abs"]
    # the DoG picks land on the scene's particles

    picks = read_picks(out / "picks.star")
    truth = scene_files["truth"][["z", "y", "x"]].to_numpy(float)
    d = np.linalg.norm(picks[["z", "y", "x"]].to_numpy(float)[:, None] - truth[None], axis=-1).min(1)
    assert np.mean(d < 4) > 0.8


@pytest.mark.parametrize(("argv", "match"), [
    (["--tomo", "missing.mrc"], "--tomo 'missing.mrc' does not exist"),
    (["--tilt-range", "-60", "100"], "--tilt-range"),
    (["--snr", "0"], "--snr"),
    (["--epochs", "0"], "--epochs"),
    (["--diameter", "-5"], "--diameter"),
    (["--picks", "nope.star"], "--picks 'nope.star' does not exist"),
])
def test_run_bad_input_is_one_line(scene_files, tmp_path, capsys, argv, match):
    base = {"--tomo": str(scene_files["tomo"]), "--templates": "builtin", "--diameter": "120", "--method": "mluda",
            "-o": str(tmp_path / "o")}
    for key in argv:
        base.pop(key, None)  # the case's own value replaces the base one
    args = ["run"] + [x for kv in base.items() for x in kv] + argv
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_run_refuses_a_file_as_outdir_and_too_few_picks(scene_files, tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["run", "--tomo", str(scene_files["tomo"]), "--templates", "builtin", "--diameter", "120",
                 "--method", "mluda", "-o", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err
    from napari_cryo_openset.io.picks_io import read_picks, write_picks

    few = read_picks(scene_files["picks"]).iloc[:5]
    write_picks(tmp_path / "few.star", few, voxel_size=VOXEL)
    assert main(["run", "--tomo", str(scene_files["tomo"]), "--templates", "builtin", "--diameter", "120",
                 "--method", "mluda", "-o", str(tmp_path / "o"), "--picks", str(tmp_path / "few.star"),
                 "--per-class", "4", "--epochs", "1", "--threads", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "active picks" in err and "at least 16" in err
    assert not (tmp_path / "o" / "predictions.star").exists()


def test_pipeline_without_templates_is_refused(scene_files):
    from napari_cryo_openset.io import read_tomogram

    with pytest.raises(CryoOpensetError, match="template"):
        run_to_completion(run_pipeline(read_tomogram(scene_files["tomo"]), [], _run_params(120)))


def test_an_snr_the_user_did_not_give_is_calibrated_on_scenes_like_the_target():
    """The estimator's 3-D SNR is not the simulator's projection SNR: small scenes like the target
    (slab, tilt range, crowding) are simulated and estimated the same way until they agree."""
    from napari_cryo_openset.pipeline import resolve_run_condition
    from napari_cryo_openset.simulate import builtin_templates
    from napari_cryo_openset.simulate.scenes import SceneParams, make_scene

    templates = [t for t in builtin_templates(10.0) if t.name in ("1bxn", "2cg9", "3j9i")]
    cond = ImagingCondition(voxel_size=10.0, tilt_range=(-50.0, 50.0), snr=0.3)
    volume, truth = make_scene(SceneParams(shape=(96, 128, 128), condition=cond, templates=tuple(templates),
                                           n_particles=40, background=0.05, slab=(24, 72), seed=2))
    tomo = Tomogram(volume, (10.0,) * 3)
    params = _run_params(diameter=120, given=("voxel_size",))
    resolved = resolve_run_condition(tomo, params, templates=templates, picks=truth)
    assert resolved.sources["snr"] == "estimated", resolved.notes
    assert resolved.condition.snr == pytest.approx(0.3, rel=0.35)
    assert len(resolved.details["snr_calibration"]["rounds"]) == 3
    assert resolved.details["snr_calibration"]["statistic"] == "variance"
    # given by the user: kept
    told = resolve_run_condition(tomo, _run_params(diameter=120, given=("voxel_size", "snr")), templates=templates,
                                 picks=truth)
    assert told.sources["snr"] == "given" and told.condition.snr == params.source.condition.snr


def test_a_very_noisy_slab_is_calibrated_on_the_particles_band_not_left_at_the_default():
    """At a projection SNR of 0.03 the slab's variance ratio is within its own scatter (the earlier
    calibration fell back to the default 0.1, 3× too clean): the low-frequency band still
    measures it, on the target and the trial scenes alike."""
    from napari_cryo_openset.pipeline import resolve_run_condition
    from napari_cryo_openset.simulate import builtin_templates
    from napari_cryo_openset.simulate.scenes import SceneParams, make_scene

    templates = [t for t in builtin_templates(10.0) if t.name in ("1bxn", "2cg9", "3j9i", "4cr2")]
    cond = ImagingCondition(voxel_size=10.0, tilt_range=(-50.0, 50.0), snr=0.03)
    volume, truth = make_scene(SceneParams(shape=(160, 192, 192), condition=cond, templates=tuple(templates),
                                           n_particles=110, background=0.05, slab=(24, 120), seed=3))
    resolved = resolve_run_condition(Tomogram(volume, (10.0,) * 3), _run_params(diameter=120, given=("voxel_size",)),
                                     templates=templates, picks=truth)
    cal = resolved.details["snr_calibration"]
    assert resolved.sources["snr"] == "estimated", (resolved.notes, cal)
    assert cal["statistic"] == "band power"
    assert resolved.condition.snr == pytest.approx(0.03, rel=0.4), cal


def test_a_slab_thinner_than_the_largest_template_is_reported_not_fatal():
    from napari_cryo_openset.estimate.condition import ResolvedCondition
    from napari_cryo_openset.pipeline import with_slab_note
    from napari_cryo_openset.simulate import builtin_templates

    templates = builtin_templates(10.0)
    big = max(templates, key=lambda t: t.diameter)
    base = ResolvedCondition(condition=ImagingCondition(voxel_size=10.0), sources={}, slab=(40.0, 50.0))
    noted = with_slab_note(base, templates, 10.0, float(big.diameter))
    assert len(noted.notes) == 1 and "thinner than the largest structure" in noted.notes[0]
    assert big.name in noted.notes[0] and "100 Å" in noted.notes[0]
    thick = replace(base, slab=(0.0, 100.0))
    assert with_slab_note(thick, templates, 10.0, float(big.diameter)).notes == ()
