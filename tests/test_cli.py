"""The console script: --help/--version, info, demo, and one-line errors (never a traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_cryo_openset.io import read_picks, read_tomogram, write_tomogram

EXE = str(Path(sys.executable).parent / "napari-cryo-openset")


def run(*args, cwd=None):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_help_and_version():
    from napari_cryo_openset import __version__

    result = run("--help")
    assert result.returncode == 0
    assert "info" in result.stdout and "demo" in result.stdout
    result = run("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_no_command_prints_help_and_fails():
    result = run()
    assert result.returncode == 2
    assert "usage" in result.stderr


def test_info_tomogram(tmp_path):
    path = write_tomogram(tmp_path / "t.mrc", np.zeros((4, 5, 6), np.float32), 12.5)
    result = run("info", str(path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["shape_zyx"] == [4, 5, 6]
    assert report["voxel_size_A_zyx"] == [12.5, 12.5, 12.5]


def test_info_reads_the_imaging_condition_from_the_volume(tmp_path, shared_data):
    """The real tomogram (EMPIAR-10164 tilt series, ±60° about Y, protein bright): ``info`` reads the
    wedge and the polarity from the volume itself; a volume too small to read says why."""
    report = json.loads(run("info", str(shared_data / "real" / "hiv_vlp_40A.mrc")).stdout)["estimate"]
    lo, hi = report["tilt_range"]
    assert abs(lo + 60) <= 5 and abs(hi - 60) <= 5 and report["tilt_axis"] == "Y"
    assert report["polarity"] == "bright" and report["thickness_angstrom"] > 0
    assert any(line.startswith("tilt range:") for line in report["summary"])
    tiny = write_tomogram(tmp_path / "tiny.mrc", np.zeros((4, 5, 6), np.float32), 12.5)
    assert "error" in json.loads(run("info", str(tiny)).stdout)["estimate"]
    assert "estimate" not in json.loads(run("info", "--no-estimate", str(tiny)).stdout)


def test_info_bad_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.mrc"
    bad.write_text("not a tomogram")
    result = run("info", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.mrc" in lines[0] and lines[0].startswith("napari-cryo-openset: error:")


def test_demo_headless(tmp_path):
    result = run("demo", "--no-gui", "--no-classify", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    tomo = read_tomogram(tmp_path / "out" / "sample_tomogram.mrc")
    picks = read_picks(tmp_path / "out" / "sample_tomogram_truth.star")
    assert tomo.voxel_size == (10.0, 10.0, 10.0)
    assert len(picks) > 20
    # ground-truth picks sit on (dark) particles: after a light low-pass the volume is darker
    # at the picks than at random places
    from scipy import ndimage

    vol = ndimage.gaussian_filter(np.asarray(tomo.data, dtype=np.float32), 2.0)
    vol = (vol - vol.mean()) / vol.std()
    idx = np.round(picks[["z", "y", "x"]].to_numpy()).astype(int)
    rng = np.random.default_rng(0)
    random_idx = rng.integers(0, vol.shape, size=(2000, 3))
    assert vol[tuple(idx.T)].mean() < vol[tuple(random_idx.T)].mean() - 0.5
    assert set(picks["class_name"]) >= {"unknown", "4v4r"}


@pytest.mark.slow
def test_demo_classifies_the_sample(tmp_path):
    """The full demo: the run's files, every pick classified, the held-out structure among the unknowns."""
    result = run("demo", "--no-gui", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out" / "run"
    for name in ("picks.star", "predictions.star", "model.pt", "adapted.pt", "report.json", "embedding.png"):
        assert (out / name).is_file(), name
    pred = read_picks(out / "predictions.star")
    assert (pred["class_name"] != "").all() and (pred["class_name"] == "unknown").any()
    assert "4cr2" not in set(pred["class_name"])  # held out of the model
