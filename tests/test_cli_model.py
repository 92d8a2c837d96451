"""The ``train`` and ``predict`` subcommands: contract outputs, and one-line errors on bad input.

A tiny simulated set (3 built-in templates × 10, 24³ boxes, SNR 1) is trained for 2 epochs
(in-process, through ``cli.main``); ``predict`` then runs on a small simulated scene through the
real console script. Bad inputs must end
with exit status 2, one ``napari-cryo-openset: error:`` line naming the file or option, no
traceback and no output file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import one_error_line as _one_error_line

from napari_cryo_openset.cli import main

EXE = str(Path(sys.executable).parent / "napari-cryo-openset")
CONTRACT_COLUMNS = ("cosClassName", "cosConfidence", "cosUnknownScore", "cosCuration")
VOXEL = 10.0


def run(*args, timeout=120):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------
# fixtures: a tiny simulated set, a trained model, a small scene
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("model_cli")


@pytest.fixture(scope="module")
def source(templates, workdir, simulated):
    from napari_cryo_openset.simulate import write_dataset

    return write_dataset(simulated(templates), workdir / "source.npz")


@pytest.fixture(scope="module")
def trained(source, workdir):
    """(model path, exit status, stderr) of ``train`` (in-process: the console script costs an import)."""
    import contextlib
    import io

    model = workdir / "model.pt"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["train", str(source), "-o", str(model), "--epochs", "2", "--batch-size", "8", "--device", "cpu",
                   "--seed", "1", "--threads", "2"])
    return model, rc, err.getvalue()


@pytest.fixture(scope="module")
def scene(templates, workdir):
    """A 48×64×64 tomogram of the same templates (protein dark), its picks (first one rejected)."""
    from napari_cryo_openset.io import write_picks, write_tomogram
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

    volume, picks = make_scene(SceneParams(shape=(48, 64, 64), condition=ImagingCondition(voxel_size=VOXEL, snr=1.0),
                                           templates=tuple(templates), n_particles=8, seed=1))
    picks = picks.drop(columns=["class_name"])
    picks.loc[0, "curation"] = "rejected"
    picks.loc[1, "curation"] = "accepted"
    tomo = write_tomogram(workdir / "scene.mrc", volume, VOXEL)
    star = write_picks(workdir / "scene_picks.star", picks, voxel_size=VOXEL)
    return tomo, star, picks


# --------------------------------------------------------------------------------------------
# the happy path
# --------------------------------------------------------------------------------------------


def test_registration_matches_the_core_and_does_not_import_torch():
    from napari_cryo_openset import models, params
    from napari_cryo_openset.cli import build_parser

    assert params.ARCHITECTURES == models.ARCHITECTURES
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    assert next(a for a in train._actions if a.dest == "architecture").choices == models.ARCHITECTURES
    code = ("import sys; from napari_cryo_openset.cli import build_parser; build_parser(); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_train_writes_a_safe_bundle(trained, templates):
    import torch

    from napari_cryo_openset.checkpoint import load_bundle

    model, rc, err = trained
    assert rc == 0, err
    assert "epoch 1:" in err and "epoch 2:" in err
    assert "validation accuracy" in err and str(model) in err
    raw = torch.load(model, map_location="cpu", weights_only=True)
    assert raw["class_names"] == sorted(t.name for t in templates) and raw["box_size"] == 24
    bundle = load_bundle(model)
    assert bundle.voxel_size == VOXEL and bundle.network.architecture == "fast"
    assert bundle.provenance["training"]["epochs"] == 2 and bundle.provenance["seed"] == 1
    assert len(bundle.history) == 2
    assert not list(model.parent.glob(".*.part*"))  # no temporary left behind


def test_predict_writes_one_row_per_pick(trained, scene, workdir):
    from napari_cryo_openset.io import read_picks

    model = trained[0]
    tomo, star, picks = scene
    out = workdir / "predictions.star"
    result = run("predict", model, "--tomo", tomo, "--picks", star, "-o", out, "--polarity", "auto",
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "polarity guessed dark" in result.stderr
    assert "classified" in result.stderr and str(out) in result.stderr
    header = [line.split()[0] for line in out.read_text().splitlines() if line.startswith("_")]
    for column in CONTRACT_COLUMNS:
        assert f"_{column}" in header
    pred = read_picks(out)
    assert len(pred) == len(picks)
    np.testing.assert_allclose(pred[["z", "y", "x"]].to_numpy(), picks[["z", "y", "x"]].to_numpy())
    assert list(pred["curation"]) == list(picks["curation"])
    rejected = pred["curation"] == "rejected"
    assert rejected.sum() == 1
    assert pred.loc[rejected, "class_name"].iloc[0] == "" and np.isnan(pred.loc[rejected, "confidence"]).all()
    active = pred[~rejected]
    assert set(active["class_name"]) <= {"1bxn", "1qvr", "2cg9", "unknown"}
    assert ((active["confidence"] > 0) & (active["confidence"] <= 1)).all()
    assert np.isfinite(active["unknown_score"]).all()


def test_predict_reports_resampling(trained, scene, workdir, capsys):
    from napari_cryo_openset.io import read_picks, read_tomogram, write_picks, write_tomogram

    model = trained[0]
    tomo, star, picks = scene
    tomo8 = write_tomogram(workdir / "scene8.mrc", np.asarray(read_tomogram(tomo).data), 8.0)
    star8 = write_picks(workdir / "scene8.csv", read_picks(star), voxel_size=8.0)
    out = workdir / "predictions8.csv"
    assert main(["predict", str(model), "--tomo", str(tomo8), "--picks", str(star8), "-o", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "resampled" in err and "8 Å" in err and "10 Å" in err
    assert len(read_picks(out)) == len(picks)
    # refusing to resample is an error naming the tomogram
    out2 = workdir / "refused.star"
    assert main(["predict", str(model), "--tomo", str(tomo8), "--picks", str(star8), "-o", str(out2),
                 "--device", "cpu", "--no-resample"]) == 2
    assert "scene8.mrc" in _one_error_line(capsys.readouterr().err)
    assert not out2.exists()


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


def test_train_bad_sources(templates, workdir, simulated, tmp_path, capsys):
    from napari_cryo_openset.simulate import write_dataset

    out = tmp_path / "m.pt"
    _fails(["train", tmp_path / "missing.npz", "-o", out], ["SOURCE", "missing.npz", "does not exist"], out, capsys)
    full = simulated(templates[:2], per_class=2)
    empty = full.__class__(**{**full.__dict__, "subtomograms": full.subtomograms[:0], "labels": full.labels[:0],
                              "template": full.template[:0], "defocus": full.defocus[:0], "snr": full.snr[:0],
                              "rotations": full.rotations[:0], "shifts": full.shifts[:0]})
    write_dataset(empty, tmp_path / "empty.npz")
    _fails(["train", tmp_path / "empty.npz", "-o", out], ["empty.npz", "empty"], out, capsys)
    write_dataset(simulated(templates[:1], per_class=3), tmp_path / "one.npz")
    _fails(["train", tmp_path / "one.npz", "-o", out], ["one.npz", "single class"], out, capsys)
    (tmp_path / "text.npz").write_text("not a simulated set")
    _fails(["train", tmp_path / "text.npz", "-o", out], ["SOURCE", "text.npz"], out, capsys)


def test_train_bad_options(source, tmp_path, capsys):
    out = tmp_path / "m.pt"
    _fails(["train", source, "-o", tmp_path / "m.pth"], ["-o", "m.pth", ".pt"], tmp_path / "m.pth", capsys)
    _fails(["train", source, "-o", tmp_path / "nowhere" / "m.pt"], ["nowhere", "does not exist"],
           tmp_path / "nowhere" / "m.pt", capsys)
    _fails(["train", source, "-o", out, "--epochs", "0"], ["--epochs"], out, capsys)
    _fails(["train", source, "-o", out, "--validation-fraction", "0.9"], ["--validation-fraction"], out, capsys)
    _fails(["train", source, "-o", out, "--learning-rate", "-1"], ["--learning-rate"], out, capsys)
    _fails(["train", source, "-o", out, "--threads", "0"], ["--threads"], out, capsys)


def test_train_divergence_is_one_clear_line(source, tmp_path, capsys):
    out = tmp_path / "m.pt"
    _fails(["train", source, "-o", out, "--epochs", "1", "--batch-size", "8", "--learning-rate", "1e6",
            "--device", "cpu", "--threads", "2"], ["diverged", "learning rate"], out, capsys)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(source, trained, scene, tmp_path, capsys):
    out = tmp_path / "m.pt"
    _fails(["train", source, "-o", out, "--device", "cuda"], ["--device", "cuda"], out, capsys)
    tomo, star, _ = scene
    out = tmp_path / "p.star"
    _fails(["predict", trained[0], "--tomo", tomo, "--picks", star, "-o", out, "--device", "cuda"],
           ["--device", "cuda"], out, capsys)


def test_predict_bad_inputs(trained, scene, source, tmp_path, capsys):
    from napari_cryo_openset.io import write_picks

    model = trained[0]
    tomo, star, picks = scene
    out = tmp_path / "p.star"
    common = ["--tomo", tomo, "--picks", star, "-o", out]
    # model files that are not bundles: text, a simulated set, missing
    (tmp_path / "text.pt").write_text("junk\n")
    _fails(["predict", tmp_path / "text.pt", *common], ["text.pt", "not a napari-cryo-openset model"], out, capsys)
    _fails(["predict", source, *common], ["source.npz", "not a napari-cryo-openset model"], out, capsys)
    _fails(["predict", tmp_path / "none.pt", *common], ["none.pt", "does not exist"], out, capsys)
    # output
    _fails(["predict", model, "--tomo", tomo, "--picks", star, "-o", tmp_path / "p.txt"], ["p.txt", ".star"],
           tmp_path / "p.txt", capsys)
    # picks outside the tomogram (the rejected first pick is ignored; pick 3 is moved out)
    bad = picks.copy()
    bad.loc[3, "x"] = 500.0
    outside = write_picks(tmp_path / "outside.star", bad)
    _fails(["predict", model, "--tomo", tomo, "--picks", outside, "-o", out],
           ["outside.star", "outside the tomogram", "scene.mrc", "row 4"], out, capsys)
    # no picks / all rejected
    write_picks(tmp_path / "none.star", picks.iloc[:0])
    _fails(["predict", model, "--tomo", tomo, "--picks", tmp_path / "none.star", "-o", out],
           ["none.star", "no picks"], out, capsys)
    rejected = picks.copy()
    rejected["curation"] = "rejected"
    write_picks(tmp_path / "rejected.star", rejected)
    _fails(["predict", model, "--tomo", tomo, "--picks", tmp_path / "rejected.star", "-o", out],
           ["rejected.star", "rejected"], out, capsys)
    # the tomogram is not an MRC file
    _fails(["predict", model, "--tomo", star, "--picks", star, "-o", out], ["scene_picks.star"], out, capsys)


def test_errors_through_the_console_script(source, tmp_path):
    """The real executable: one line on stderr, exit 2, no traceback."""
    result = run("train", tmp_path / "missing.npz", "-o", tmp_path / "m.pt")
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == result.stderr.strip()
    assert "missing.npz" in result.stderr
