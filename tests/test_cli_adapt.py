"""The ``adapt`` subcommand: an adapted bundle + predictions for both methods; one-line errors.

A tiny simulated set (3 built-in templates × 12, decoys, empty; 24³ boxes, SNR 1) trains a source
model for one epoch (core API, in a module fixture); the target is a 48×96×96 simulated scene of
the same templates and decoys (protein dark) with its particle positions as picks, the first
one rejected. ``adapt`` runs 6 rounds per method. Bad inputs must end with exit status 2, one
``napari-cryo-openset: error:`` line naming the file or option, no traceback and no output file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import one_error_line as _one_error_line

from napari_cryo_openset.cli import main

EXE = str(Path(sys.executable).parent / "napari-cryo-openset")
CONTRACT_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnAutopickFigureOfMerit",
                    "cosClassName", "cosConfidence", "cosUnknownScore", "cosCuration")
VOXEL = 10.0
NAMES = ("1bxn", "1qvr", "2cg9")
CLASSES = ["1bxn", "1qvr", "2cg9", "empty", "unknown"]


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("adapt_cli")


@pytest.fixture(scope="module")
def source(templates, workdir, simulated):
    from napari_cryo_openset.simulate import write_dataset

    return write_dataset(simulated(templates, per_class=12, decoys=12, empty=6), workdir / "source.npz")


@pytest.fixture(scope="module")
def model(source, workdir):
    """A source model trained for one epoch on ``source`` (core API), saved as a bundle."""
    from napari_cryo_openset.checkpoint import bundle_from_training, save_bundle
    from napari_cryo_openset.progress import run_to_completion
    from napari_cryo_openset.simulate import load_dataset
    from napari_cryo_openset.train import TrainParams, train_source

    result = run_to_completion(train_source(load_dataset(source), TrainParams(epochs=1, batch_size=8, device="cpu",
                                                                              threads=2, seed=1)))
    bundle = bundle_from_training(result, source_path=str(source))
    return save_bundle(bundle, workdir / "model.pt")


@pytest.fixture(scope="module")
def scene(templates, workdir):
    """A 48×96×96 tomogram (protein dark), its picks: ~24 particles, 20 % decoys, the first rejected."""
    from napari_cryo_openset.io import write_picks, write_tomogram
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

    volume, picks = make_scene(SceneParams(shape=(48, 96, 96), condition=ImagingCondition(voxel_size=VOXEL, snr=1.0),
                                           templates=tuple(templates), n_particles=24, unknown_fraction=0.2, seed=1))
    picks = picks.drop(columns=["class_name"]).reset_index(drop=True)
    picks.loc[0, "curation"] = "rejected"
    picks.loc[1, "curation"] = "accepted"
    assert len(picks) - 1 >= 16  # enough active picks to adapt to (adapt.common.MIN_TARGET_PICKS)
    tomo = write_tomogram(workdir / "scene.mrc", volume, VOXEL)
    star = write_picks(workdir / "scene_picks.star", picks, voxel_size=VOXEL)
    return tomo, star, picks


def _adapt(model, source, scene, out, method, *extra):
    tomo, star, _ = scene
    return main(["adapt", str(model), "--source", str(source), "--tomo", str(tomo), "--picks", str(star),
                 "--method", method, "-o", str(out), "--iterations", "6", "--batch-size", "8", "--label-iterations", "6",
                 "--label-batch-size", "8", "--device", "cpu", "--threads", "2", *map(str, extra)])


# --------------------------------------------------------------------------------------------
# the happy path
# --------------------------------------------------------------------------------------------


def test_registration_matches_the_core():
    from napari_cryo_openset.adapt import METHODS
    from napari_cryo_openset.cli import build_parser

    adapt = build_parser()._subparsers._group_actions[0].choices["adapt"]
    assert next(a for a in adapt._actions if a.dest == "method").choices == METHODS


@pytest.fixture(scope="module")
def adapted(model, source, scene, workdir):
    """method → (exit status, stderr, ADAPTED.pt, PREDICTIONS.star) of one ``adapt`` run each (in-process)."""
    import contextlib
    import io

    runs = {}
    for method in ("ada", "mluda"):
        out, pred = workdir / f"adapted_{method}.pt", workdir / f"predictions_{method}.star"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = _adapt(model, source, scene, out, method, "--predictions", pred, "--eval-every", "3",
                        "--polarity", "auto")
        runs[method] = rc, err.getvalue(), out, pred
    return runs


@pytest.mark.parametrize("method", ["ada", "mluda"])
def test_adapt_writes_an_adapted_bundle_and_predictions(method, adapted, scene, workdir):
    import torch

    from napari_cryo_openset.checkpoint import load_bundle
    from napari_cryo_openset.io import read_picks

    rc, err, out, pred = adapted[method]
    assert rc == 0, err
    assert "Traceback" not in err
    # progress: a diagnostic line per evaluation round, then the summary lines
    assert "adapt: round 3:" in err and "adapt: round 6:" in err and "predicted on the target" in err
    assert "polarity guessed dark" in err
    assert f"adapt: {method}: " in err  # the stop reason
    # class counts, unknown included
    assert re.search(r"adapt: classes of the 2\d active picks: .+ \(\d+ unknown, \d+%\)", err), err
    assert "adapt: unknown threshold" in err
    assert " s in all → " in err and str(out) in err and str(pred) in err

    raw = torch.load(out, map_location="cpu", weights_only=True)  # only tensors and plain types
    assert raw["class_names"] == CLASSES
    bundle = load_bundle(out)
    assert bundle.provenance["adaptation"]["method"] == method
    assert bundle.provenance["adaptation"]["target_tomogram"].endswith("scene.mrc")
    assert bundle.provenance["adaptation"]["polarity"] == "dark"
    assert bundle.openset["method"] == "centre" and np.isfinite(bundle.openset["threshold"])
    assert not list(workdir.glob(".*.part*"))  # no temporary left behind

    _, _, picks = scene
    header = [line.split()[0] for line in pred.read_text().splitlines() if line.startswith("_")]
    for column in CONTRACT_COLUMNS:
        assert f"_{column}" in header
    table = read_picks(pred)
    assert len(table) == len(picks)
    np.testing.assert_allclose(table[["z", "y", "x"]].to_numpy(), picks[["z", "y", "x"]].to_numpy())
    assert list(table["curation"]) == list(picks["curation"])
    rejected = (table["curation"] == "rejected").to_numpy()
    assert rejected.sum() == 1 and table.loc[rejected, "class_name"].iloc[0] == ""
    active = table[~rejected]
    assert set(active["class_name"]) <= set(CLASSES) and (active["class_name"] != "").all()
    assert ((active["confidence"] >= 0) & (active["confidence"] <= 1)).all()
    assert np.isfinite(active["unknown_score"]).all()
    assert (active["is_unknown"] == (active["class_name"] == "unknown")).all()
    decided = active["unknown_score"] > bundle.openset["threshold"]
    assert (active.loc[decided, "class_name"] == "unknown").all()


def test_adapted_model_predicts_what_adapt_wrote(adapted, scene, workdir, capsys):
    """``predict`` with ADAPTED.pt reproduces the predictions ``adapt`` wrote (MLUDA)."""
    from napari_cryo_openset.io import read_picks

    rc, err, out, pred = adapted["mluda"]
    assert rc == 0, err
    tomo, star, _ = scene
    again = workdir / "predict_predictions.star"
    assert main(["predict", str(out), "--tomo", str(tomo), "--picks", str(star), "-o", str(again), "--device", "cpu",
                 "--quiet"]) == 0
    capsys.readouterr()
    a, b = read_picks(pred), read_picks(again)
    assert list(a["class_name"]) == list(b["class_name"])
    np.testing.assert_allclose(a["unknown_score"], b["unknown_score"], rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------------------------
# bad input: exit 2, one line naming the file/parameter, nothing written
# --------------------------------------------------------------------------------------------


def _fails(argv, words, out, capsys):
    assert main([str(a) for a in argv]) == 2
    line = _one_error_line(capsys.readouterr().err)
    for word in words:
        assert word in line, line
    assert not Path(out).exists()
    assert not list(Path(out).parent.glob(f".{Path(out).stem}*"))
    return line


def test_missing_source_says_the_model_has_no_source_data(model, scene, tmp_path, capsys):
    tomo, star, _ = scene
    out = tmp_path / "a.pt"
    line = _fails(["adapt", model, "--tomo", tomo, "--picks", star, "--method", "ada", "-o", out],
                  ["--source", "model without source data", "model.pt", "source.npz"], out, capsys)
    assert "trained on" in line  # the hint from the bundle's provenance


def test_bad_picks(model, source, scene, tmp_path, capsys):
    from napari_cryo_openset.adapt.common import MIN_TARGET_PICKS
    from napari_cryo_openset.io import write_picks

    tomo, _, picks = scene
    out = tmp_path / "a.pt"

    def argv(star):
        return ["adapt", model, "--source", source, "--tomo", tomo, "--picks", star, "--method", "mluda", "-o", out]

    write_picks(tmp_path / "none.star", picks.iloc[:0])
    _fails(argv(tmp_path / "none.star"), ["--picks", "none.star", "no picks"], out, capsys)
    rejected = picks.copy()
    rejected["curation"] = "rejected"
    write_picks(tmp_path / "rejected.star", rejected)
    _fails(argv(tmp_path / "rejected.star"), ["rejected.star", "all", "rejected"], out, capsys)
    few = picks.copy()
    few.loc[MIN_TARGET_PICKS - 1:, "curation"] = "rejected"  # rows 1 … MIN-2 stay active
    write_picks(tmp_path / "few.star", few)
    _fails(argv(tmp_path / "few.star"), ["few.star", f"only {MIN_TARGET_PICKS - 2} active picks",
                                         f"at least {MIN_TARGET_PICKS}"], out, capsys)
    outside = picks.copy()
    outside.loc[3, "x"] = 500.0
    write_picks(tmp_path / "outside.star", outside)
    _fails(argv(tmp_path / "outside.star"), ["outside.star", "outside the tomogram"], out, capsys)


def test_bad_model_source_and_outputs(model, source, scene, templates, simulated, adapted, tmp_path, capsys):
    from napari_cryo_openset.simulate import write_dataset

    tomo, star, _ = scene
    out = tmp_path / "a.pt"
    rest = ["--tomo", tomo, "--picks", star, "--method", "ada", "-o", out]
    (tmp_path / "text.pt").write_text("not a model\n")
    _fails(["adapt", tmp_path / "text.pt", "--source", source, *rest], ["text.pt", "not a napari-cryo-openset model"],
           out, capsys)
    _fails(["adapt", tmp_path / "none.pt", "--source", source, *rest], ["none.pt", "does not exist"], out, capsys)
    _fails(["adapt", model, "--source", tmp_path / "none.npz", *rest], ["--source", "none.npz", "does not exist"],
           out, capsys)
    _fails(["adapt", model, "--source", tomo, *rest], ["--source", "scene.mrc", "not a simulated set"], out, capsys)
    write_dataset(simulated(templates[:2], per_class=4, decoys=0, empty=0), tmp_path / "other.npz")
    _fails(["adapt", model, "--source", tmp_path / "other.npz", *rest],
           ["--source", "other.npz", "model.pt", "classes"], out, capsys)
    # outputs
    nowhere = tmp_path / "nowhere" / "a.pt"
    _fails(["adapt", model, "--source", source, "--tomo", tomo, "--picks", star, "--method", "ada", "-o", nowhere],
           ["nowhere", "does not exist"], nowhere, capsys)
    _fails(["adapt", model, "--source", source, "--tomo", tomo, "--picks", star, "--method", "ada", "-o",
            tmp_path / "a.pth"], ["a.pth", ".pt"], tmp_path / "a.pth", capsys)
    _fails(["adapt", model, "--source", source, *rest, "--predictions", tmp_path / "nowhere" / "p.star"],
           ["--predictions", "nowhere", "does not exist"], out, capsys)
    _fails(["adapt", model, "--source", source, *rest, "--predictions", star], ["--predictions", "--picks"], out,
           capsys)
    # options
    _fails(["adapt", model, "--source", source, *rest, "--iterations", "0"], ["--iterations"], out, capsys)
    _fails(["adapt", model, "--source", source, *rest, "--batch-size", "2"], ["--batch-size"], out, capsys)
    # an adapted model cannot be adapted again
    _fails(["adapt", adapted["ada"][2], "--source", source, *rest], ["adapted_ada.pt", "already adapted"], out, capsys)


def test_errors_through_the_console_script(scene, tmp_path):
    """The real executable: missing --source is one line on stderr, exit 2, no traceback."""
    tomo, star, _ = scene
    (tmp_path / "m.pt").write_text("x")
    result = subprocess.run([EXE, "adapt", str(tmp_path / "m.pt"), "--tomo", str(tomo), "--picks", str(star),
                             "--method", "ada", "-o", str(tmp_path / "a.pt")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == result.stderr.strip()
    assert "--source" in result.stderr and not (tmp_path / "a.pt").exists()


# --------------------------------------------------------------------------------------------
# adapt --labels: refine with the user's curated labels
# --------------------------------------------------------------------------------------------


def _labels(picks, labels: dict):
    from napari_cryo_openset.curation import set_curated_class

    out = picks.copy()
    for row, name in labels.items():
        out = set_curated_class(out, [row], name)
    return out


def test_adapt_with_labels_refines_and_keeps_them(model, source, scene, workdir, tmp_path):
    import contextlib
    import io

    from napari_cryo_openset.checkpoint import load_bundle
    from napari_cryo_openset.io import read_picks, write_picks

    _, _, picks = scene
    given = {2: "1bxn", 3: "2cg9", 5: "unknown", 7: "1qvr"}
    labels = write_picks(tmp_path / "curated.star", _labels(picks, given), voxel_size=VOXEL)
    out, pred = tmp_path / "refined.pt", tmp_path / "refined.star"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = _adapt(model, source, scene, out, "mluda", "--labels", labels, "--predictions", pred, "--quiet")
    text = err.getvalue()
    assert rc == 0, text
    assert "4 curated picks (1bxn 1, 1qvr 1, 2cg9 1, unknown 1); 4 matched to --picks, 0 added" in text
    assert "refined with 4 curated labels" in text and "not recalibrated on the labels" in text
    table = read_picks(pred)
    assert {i: table.loc[i, "curated_class"] for i in given} == given
    assert (table.drop(index=list(given))["curated_class"] == "").all()
    assert "_cosCuratedClassName" in pred.read_text()
    bundle = load_bundle(out)
    assert bundle.provenance["adaptation"]["labels_file"].endswith("curated.star")
    assert bundle.provenance["adaptation"]["curated_labels"]["n"] == 4


def test_bad_labels(model, source, scene, tmp_path, capsys):
    from napari_cryo_openset.io import write_picks

    tomo, star, picks = scene
    out = tmp_path / "a.pt"

    def argv(labels):
        return ["adapt", model, "--source", source, "--tomo", tomo, "--picks", star, "--method", "mluda", "-o", out,
                "--labels", labels, "--iterations", "2", "--device", "cpu"]

    _fails(argv(tmp_path / "none.star"), ["--labels", "none.star", "does not exist"], out, capsys)
    write_picks(tmp_path / "plain.star", picks)
    _fails(argv(tmp_path / "plain.star"), ["--labels", "plain.star", "no curated labels"], out, capsys)
    foreign = _labels(picks, {2: "4v4r", 3: "ribosome", 4: "1bxn"})
    write_picks(tmp_path / "foreign.star", foreign)
    _fails(argv(tmp_path / "foreign.star"), ["--labels", "foreign.star", "'4v4r', 'ribosome'", "not classes of the model",
                                             "1bxn, 1qvr, 2cg9, empty", "'unknown'"], out, capsys)
    on_rejected = picks.copy()
    on_rejected.loc[0, "curation"] = "accepted"  # rejected in --picks
    write_picks(tmp_path / "on_rejected.star", _labels(on_rejected, {0: "1bxn"}))
    _fails(argv(tmp_path / "on_rejected.star"), ["--labels", "on_rejected.star", "rejected pick"], out, capsys)
    rejected = _labels(picks, {3: "1bxn"})
    rejected.loc[3, "curation"] = "rejected"
    write_picks(tmp_path / "rejected.star", rejected)
    _fails(argv(tmp_path / "rejected.star"), ["--labels", "rejected.star", "rejected pick", "carry a curated label"],
           out, capsys)
    outside = _labels(picks, {3: "1bxn"})
    outside.loc[3, "x"] = 500.0
    write_picks(tmp_path / "outside.star", outside)
    _fails(argv(tmp_path / "outside.star"), ["--labels", "outside.star", "outside the tomogram", "another tomogram"],
           out, capsys)
    write_picks(tmp_path / "binned.star", _labels(picks, {3: "1bxn"}), voxel_size=2 * VOXEL)
    _fails(argv(tmp_path / "binned.star"), ["--labels", "binned.star", "20 Å voxels", "has 10 Å",
                                            "another tomogram"], out, capsys)
