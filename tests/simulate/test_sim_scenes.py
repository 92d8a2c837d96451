"""Whole synthetic tomograms: non-overlapping particles, ground truth on dark particles, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_cryo_openset.io import read_picks, write_picks
from napari_cryo_openset.params import ImagingCondition
from napari_cryo_openset.simulate.scenes import SAMPLE_SCENE, SceneParams, make_scene, sample_scene
from napari_cryo_openset.simulate.templates import builtin_templates

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def small_scene():
    params = SceneParams(shape=(48, 96, 96), condition=ImagingCondition(voxel_size=10.0, defocus=5.0, snr=1.0),
                         templates=tuple(builtin_templates(10.0)[:4]), n_particles=12, unknown_fraction=0.25, seed=3)
    return params, *make_scene(params)


def test_scene_picks_are_inside_apart_and_labelled(small_scene):
    params, vol, picks = small_scene
    assert vol.shape == params.shape and vol.dtype == np.float32
    assert abs(float(vol.mean())) < 1e-3 and abs(float(vol.std()) - 1) < 1e-3
    assert 6 <= len(picks) <= 12
    names = {t.name: t for t in params.templates}
    assert set(picks["class_name"]) <= set(names) | {"unknown"}
    assert (picks["class_name"] == "unknown").any()
    xyz = picks[["z", "y", "x"]].to_numpy()
    assert np.all(xyz >= 0) and np.all(xyz <= np.array(params.shape) - 1)
    d = np.sqrt(((xyz[:, None] - xyz[None]) ** 2).sum(-1)) + np.eye(len(xyz)) * 1e9
    assert d.min() >= 6.0  # the smallest particles have radius > 3 voxels
    assert picks.attrs["voxel_size"] == 10.0 and picks.attrs["polarity"] == "dark"


def test_particles_are_dark_at_their_picks(small_scene):
    _, vol, picks = small_scene
    smooth = ndimage.gaussian_filter(vol, 2.0)
    smooth = (smooth - smooth.mean()) / smooth.std()
    at = ndimage.map_coordinates(smooth, picks[["z", "y", "x"]].to_numpy().T, order=1)
    assert np.median(at) < -1.0  # well below the background


def test_scene_is_deterministic(small_scene):
    params, vol, picks = small_scene
    vol2, picks2 = make_scene(params)
    assert np.array_equal(vol, vol2) and picks.equals(picks2)


def test_scene_picks_write_star_with_class_names(small_scene, tmp_path):
    _, _, picks = small_scene
    path = write_picks(tmp_path / "truth.star", picks, voxel_size=10.0)
    assert "cosClassName" in path.read_text()
    back = read_picks(path)
    assert list(back["class_name"]) == list(picks["class_name"])


def test_sample_scene_128x256x256_with_about_100_particles_in_under_30_s():
    t0 = time.perf_counter()
    vol, picks = sample_scene()
    seconds = time.perf_counter() - t0
    assert vol.shape == (128, 256, 256)
    assert 90 <= len(picks) <= 100
    assert set(picks["class_name"]) <= {"1bxn", "1qvr", "2cg9", "3j9i", "4cr2", "4v4r", "unknown"}
    assert seconds < 30.0, seconds
    assert SAMPLE_SCENE.condition.voxel_size == 10.0
