"""The ``align`` stage of a run (napari_cryo_openset.align.groups): classes and clusters aligned, named and written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_cryo_openset.align import MIN_BOXES
from napari_cryo_openset.align.groups import PICK_COLUMNS, align_run_groups
from napari_cryo_openset.params import AdaptParams, EmbedParams, PickingParams, RunParams
from napari_cryo_openset.pipeline import run_pipeline, write_run
from napari_cryo_openset.progress import run_to_completion

VOXEL = 10.0
#: Tiny run settings (as tests/test_pipeline.py) with the --fast alignment preset.
TINY = dict(per_class=10, epochs=1, iterations=20, threads=1, device="cpu", verify_rotations=24, fast=True,
            embed=EmbedParams(iterations=50))
CALL = r"^(resembles \S+( average)? \(-?\d\.\d\d\)|no known structure above 0\.5( \(best .*\))?)$"


def _params(**kw) -> RunParams:
    return RunParams(PickingParams(diameter=120, polarity="dark"), adapt=AdaptParams(method="mluda"), **{**TINY, **kw})


@pytest.fixture(scope="module")
def scene(templates, tmp_path_factory):
    """A 64×128×128 scene (3 templates + decoys, SNR 1) on disk with its true positions as picks."""
    from napari_cryo_openset.io import read_tomogram, write_tomogram
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

    d = tmp_path_factory.mktemp("align_run")
    volume, truth = make_scene(SceneParams(shape=(64, 128, 128), condition=ImagingCondition(voxel_size=VOXEL, snr=1.0),
                                           templates=tuple(templates), n_particles=30, unknown_fraction=0.25, seed=1))
    picks = truth.drop(columns=["class_name"]).reset_index(drop=True)
    picks.loc[0, "curation"] = "rejected"
    path = write_tomogram(d / "scene.mrc", volume, VOXEL)
    return {"tomo": read_tomogram(path), "path": path, "picks": picks, "dir": d}


@pytest.fixture(scope="module")
def aligned_run(templates, scene):
    """One tiny run with alignment (the --fast preset), its stages and its OUTDIR."""
    stages = []
    result = run_to_completion(run_pipeline(scene["tomo"], templates, _params(), picks=scene["picks"]),
                               lambda e: stages.append(e.stage))
    paths = write_run(scene["dir"] / "out", result)
    return {"result": result, "stages": stages, "paths": paths, "out": scene["dir"] / "out"}


def test_a_run_aligns_every_class_and_writes_its_maps(aligned_run):
    from napari_cryo_openset.io import read_tomogram

    result, out = aligned_run["result"], aligned_run["out"]
    assert "align" in aligned_run["stages"] and result.timings["align"] > 0
    report = json.loads((out / "report.json").read_text())
    averages = report["averages"]
    aligned = {g: a for g, a in averages.items() if a["aligned"]}
    assert aligned, averages  # the scene's classes have ≥ 4 picks
    for group, a in aligned.items():
        folder = out / "averages" / group.replace(" ", "_")
        for name in ("average.mrc", "half1.mrc", "half2.mrc"):
            vol = read_tomogram(folder / name)
            assert vol.voxel_size == pytest.approx((VOXEL,) * 3) and vol.shape == (result.geometry["box"],) * 3
            assert np.isfinite(np.asarray(vol.data)).all() and float(np.asarray(vol.data).std()) > 0
        fsc = pd.read_csv(folder / "fsc.csv")
        assert list(fsc.columns) == ["spatial_frequency_per_angst", "resolution_angst", "fsc"]
        assert fsc["fsc"].iloc[0] == pytest.approx(1.0) and np.isinf(fsc["resolution_angst"].iloc[0])
        assert np.allclose(fsc["resolution_angst"].iloc[1:], 1 / fsc["spatial_frequency_per_angst"].iloc[1:])
        assert (folder / "fsc.png").stat().st_size > 1000
        assert 2 * VOXEL <= a["resolution_angst"] < 500
        assert a["resembles"]["name"] and -1 <= a["resembles"]["score"] <= 1
        assert pd.Series([a["call"]]).str.match(CALL).all(), a["call"]
        assert a["n"] >= MIN_BOXES and a["boxes"] == min(a["n"], 60)
    # known classes start from their template; a class seldom looks like another structure than its own
    assert all(report["alignment"]["groups"][g]["reference"] == g for g in aligned if not g.startswith("unknown"))
    assert report["alignment"]["tilt_range_source"] in ("given", "estimated", "default")
    # the unaligned averages are still written, one per group
    assert len(list((out / "averages").glob("average_*.mrc"))) == len(result.embedded.averages)


def test_small_and_structureless_groups_are_reported_not_errors(aligned_run):
    report = json.loads((aligned_run["out"] / "report.json").read_text())
    skipped = {g: a for g, a in report["averages"].items() if not a["aligned"]}
    assert skipped, report["averages"]
    for group, a in skipped.items():
        assert a["message"] and a["resolution_angst"] is None and a["call"] is None
        assert not (aligned_run["out"] / "averages" / group.replace(" ", "_")).exists()
        if group == "unknown":
            assert "no cluster" in a["message"]
        elif group == "empty":
            assert "no template" in a["message"]
        else:
            assert a["n"] < MIN_BOXES and f"at least {MIN_BOXES}" in a["message"]


def test_predictions_carry_the_orientations_of_aligned_picks(aligned_run):
    from napari_cryo_openset.io import read_picks

    result, out = aligned_run["result"], aligned_run["out"]
    text = (out / "predictions.star").read_text()
    for column in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
                   "rlnOriginZAngst"):
        assert f"_{column} " in text
    back = read_picks(out / "predictions.star")
    pd.testing.assert_frame_equal(back[list(PICK_COLUMNS)], result.predictions[list(PICK_COLUMNS)], check_exact=True)
    rows = np.concatenate([g.rows for g in result.alignments.groups.values() if g.aligned])
    done = np.zeros(len(back), bool)
    done[rows] = True
    assert back.loc[done, ["rot", "tilt", "psi"]].notna().all().all()
    assert back.loc[~done, ["rot", "tilt", "psi"]].isna().all().all()  # not aligned: NaN
    assert back.loc[done, "tilt"].between(0, 180).all() and back.loc[done, "rot"].between(-180, 180).all()
    assert (back.loc[done, ["origin_x", "origin_y", "origin_z"]].abs() <= 0.3 * result.geometry["box"] * VOXEL).all().all()


def test_relion5_and_warp_exports_carry_the_angles(aligned_run, scene, tmp_path):
    import starfile

    from napari_cryo_openset.cli import main
    from napari_cryo_openset.io import read_picks

    pred = read_picks(aligned_run["out"] / "predictions.star")
    done = pred["rot"].notna().to_numpy()
    for fmt in ("relion5", "warp"):
        out = tmp_path / f"{fmt}.star"
        assert main(["export", str(aligned_run["out"] / "predictions.star"), "--tomo", str(scene["path"]),
                     "--format", fmt, "-o", str(out), "--tomograms-star", "-"]) == 0
        table = starfile.read(out, always_dict=True)["particles"]
        for ours, theirs in (("rot", "rlnAngleRot"), ("tilt", "rlnAngleTilt"), ("psi", "rlnAnglePsi"),
                             ("origin_x", "rlnOriginXAngst")):
            np.testing.assert_allclose(table[theirs].to_numpy()[done], pred[ours].to_numpy()[done])
            assert (table[theirs].to_numpy()[~done] == 0).all()  # no pose: the identity, RELION needs a number


def test_a_cluster_is_aligned_reference_free_and_named(aligned_run, scene, templates):
    """A cluster of unknowns (here: one class's picks relabelled) is aligned without a reference and compared
    with every template and the known classes' averages; a group of 3 picks is reported, not aligned."""
    result = aligned_run["result"]
    picks = result.predictions.copy()
    counts = picks.loc[picks["curation"] != "rejected", "class_name"].value_counts()
    big = next(c for c in counts.index if c not in ("unknown", "empty") and counts[c] >= MIN_BOXES)
    members = np.flatnonzero((picks["class_name"] == big).to_numpy())
    picks.loc[members, ["class_name", "is_unknown", "cluster"]] = ["unknown", True, 0]
    picks.loc[members[:3], "cluster"] = 1  # a cluster of 3: too small
    rest = np.setdiff1d(members, members[:3])
    job = align_run_groups(result.adapted, scene["tomo"], picks, result.embedded.polarity, templates,
                           (-60.0, 60.0), tilt_source="default", max_boxes=8,
                           params=_params().align_params(), threshold=0.5)
    events = []
    out = run_to_completion(job, events.append)
    assert {e.stage for e in events} == {"align"} and events[-1].step == events[-1].total
    u0, u1 = out.groups["unknown U0"], out.groups["unknown U1"]
    assert u0.aligned and u0.reference is None and len(u0.rows) == min(8, len(rest))
    assert set(u0.rows) <= set(rest)
    assert ("subset of 8" in u0.message) == (len(rest) > 8)
    names = {m.name for m in u0.matches}
    assert {t.name for t in templates} <= names  # every known template, and the known classes' averages
    assert any(n.endswith(" average") for n in names)
    assert pd.Series([u0.call]).str.match(CALL).all(), u0.call
    assert not u1.aligned and "at least 4" in u1.message and u1.n == 3
    assert any("default" in n for n in out.notes)  # the default tilt range is said to be one
    lines = out.summary()  # what `run` prints, one line per group
    assert any(line.startswith("unknown U0: ") and "(reference-free)" in line and u0.call in line for line in lines)
    assert any(line.startswith("unknown U1: not aligned: ") for line in lines)
    cols = out.apply(picks)
    assert cols.loc[u0.rows, "rot"].notna().all() and cols.loc[members[:3], "rot"].isna().all()


def test_no_align_writes_only_the_unaligned_averages(aligned_run, scene, templates, tmp_path):
    from napari_cryo_openset.cli import build_parser
    from napari_cryo_openset.cli.run import run_params_from_args

    args = build_parser().parse_args(["run", "--tomo", "t.mrc", "--templates", "builtin", "--diameter", "120",
                                      "--method", "mluda", "-o", "o", "--no-align", "--align-max-boxes", "20"])
    told = run_params_from_args(args)
    assert told.align is False and told.n_align_boxes == 20 and told.resembles_threshold == 0.5
    stages = []
    result = run_to_completion(run_pipeline(scene["tomo"], templates, _params(align=False), picks=scene["picks"],
                                            trained=aligned_run["result"].trained), lambda e: stages.append(e.stage))
    assert "align" not in stages and "align" not in result.timings and result.alignments is None
    assert "rot" not in result.predictions.columns
    write_run(tmp_path / "out", result)
    folder = tmp_path / "out" / "averages"
    assert not [p for p in folder.iterdir() if p.is_dir()]
    assert len(list(folder.glob("average_*.mrc"))) == len(result.embedded.averages)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert all(not a["aligned"] and "--no-align" in a["message"] for a in report["averages"].values())
    assert "skipped" in report["alignment"]
