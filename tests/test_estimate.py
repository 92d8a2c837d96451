"""The imaging condition read from the tomogram (napari_cryo_openset.estimate).

Scenes are small (≤ 96×128×128) and built once per module, so the file stays within seconds;
benchmarks/bench_estimate.py runs the larger grid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.estimate import VolumeEstimate, estimate_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_estimate import slab_scene  # noqa: E402

VOXEL = 10.0


def _scene(tilt_range, shape=(48, 96, 96), seed=3):
    """The product's scene simulator (particles over the whole Z range), full imaging chain."""
    import torch

    from napari_cryo_openset.params import ImagingCondition
    from napari_cryo_openset.simulate.scenes import SceneParams, make_scene

    torch.manual_seed(0)
    cond = ImagingCondition(voxel_size=VOXEL, tilt_range=tilt_range, snr=0.3)
    vol, _ = make_scene(SceneParams(shape=shape, condition=cond, n_particles=15, seed=seed))
    return vol


@pytest.fixture(scope="module")
def scene60():
    return _scene((-60, 60))


@pytest.fixture(scope="module")
def thin_slab():
    return slab_scene(shape=(96, 128, 128), slab=(40, 56), tilt_range=(-55, 55), snr=0.5,
                      n_particles=60, background=0.3, seed=1)


@pytest.fixture(scope="module")
def thick_slab():
    return slab_scene(shape=(96, 128, 128), slab=(16, 80), tilt_range=(-60, 60), snr=0.2,
                      n_particles=60, background=0.3, seed=0)


# --------------------------------------------------------------------------------------------
# tilt range
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tilt_range", [(-40, 40), (-50, 50), (-60, 60), (-70, 70), (-50, 60), (-65, 45)])
def test_tilt_range_is_recovered_within_5_degrees(tilt_range):
    est = estimate_volume(_scene(tilt_range), VOXEL)
    assert est.tilt_axis == "Y"
    assert est.tilt_range is not None, est.tilt_range_reason
    assert abs(est.tilt_range[0] - tilt_range[0]) <= 5
    assert abs(est.tilt_range[1] - tilt_range[1]) <= 5
    assert est.tilt_quality > 0.9 and est.tilt_range_reason is None


def test_full_tilt_range_and_white_noise_give_no_wedge_not_a_number():
    est = estimate_volume(_scene((-90, 90)), VOXEL)
    assert est.tilt_range is None and est.tilt_axis is None
    assert "no missing wedge" in est.tilt_range_reason
    noise = np.random.default_rng(0).standard_normal((64, 96, 96)).astype(np.float32)
    est = estimate_volume(noise, VOXEL)
    assert est.tilt_range is None and "no missing wedge" in est.tilt_range_reason
    assert est.slab is None and est.slab_reason
    assert est.noise_sigma is None and est.snr is None and est.noise_reason
    assert est.resolved("tilt_range") == (None, "none")
    assert "not readable" in est.summary()


def test_wedge_about_x_is_reported_as_tilt_axis_x(scene60):
    est = estimate_volume(np.ascontiguousarray(scene60.transpose(0, 2, 1)), VOXEL)
    assert est.tilt_axis == "X"
    assert abs(est.tilt_range[0] + 60) <= 5 and abs(est.tilt_range[1] - 60) <= 5


# --------------------------------------------------------------------------------------------
# slab, noise
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["thin_slab", "thick_slab"])
def test_slab_thickness_within_10_percent(which, request):
    vol, truth = request.getfixturevalue(which)
    est = estimate_volume(vol, VOXEL)
    assert est.slab is not None, est.slab_reason
    assert abs(est.thickness_voxels - truth["thickness"]) <= 0.10 * truth["thickness"]
    assert est.thickness_angstrom == pytest.approx(est.thickness_voxels * VOXEL)
    assert abs(est.slab_centre - np.mean(truth["slab"])) <= 2.0
    assert abs(est.tilt_range[0] - truth["tilt_range"][0]) <= 5
    # the noise-only slices outside the slab give a noise level and a 3-D SNR
    assert est.noise_sigma is not None and 0 < est.noise_sigma < 1.0  # the volume has unit variance
    assert est.snr > 0


def test_given_values_are_reported_beside_the_estimate(thick_slab):
    vol, truth = thick_slab
    given = {"tilt_range": (-60, 60), "slab_thickness": truth["thickness"] * VOXEL * 1.5, "polarity": "bright"}
    est = estimate_volume(vol, VOXEL, given=given)
    assert est.given["tilt_range"] == (-60.0, 60.0)
    assert est.agreement() == {"tilt_range": True, "slab_thickness": False, "polarity": False}
    assert est.resolved("slab_thickness") == (given["slab_thickness"], "given")
    text = est.summary()
    assert "given" in text and "DISAGREES" in text
    d = json.loads(json.dumps(est.to_dict()))
    assert d["given"]["tilt_range"] == [-60.0, 60.0] and d["agreement"]["tilt_range"] is True
    assert d["thickness_voxels"] == pytest.approx(est.thickness_voxels)
    plain = estimate_volume(vol, VOXEL)
    assert plain.resolved("tilt_range") == (plain.tilt_range, "estimated")
    assert plain.resolved("polarity") == ("dark", "estimated")


# --------------------------------------------------------------------------------------------
# polarity
# --------------------------------------------------------------------------------------------


def test_polarity_of_dark_and_inverted_bright_scenes(scene60):
    dark = estimate_volume(scene60, VOXEL)
    bright = estimate_volume(-scene60, VOXEL)
    assert (dark.polarity, bright.polarity) == ("dark", "bright")
    assert dark.polarity_confident and bright.polarity_confident
    assert bright.tilt_range == dark.tilt_range  # the power spectrum does not see the sign


# --------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "volume, words",
    [
        (np.zeros((64, 64), np.float32), "3-D tomogram"),
        (np.zeros((2, 40, 40, 40), np.float32), "3-D tomogram"),
        (np.zeros((16, 40, 40), np.float32), "too small"),
        (np.zeros((40, 40, 40), np.float32), "constant"),
        (np.full((40, 40, 40), np.nan, np.float32), "non-finite"),
    ],
)
def test_bad_volumes_raise_one_clear_parameter_error(volume, words):
    with pytest.raises(ParameterError, match=words):
        estimate_volume(volume, VOXEL)


def test_a_few_nans_and_bad_given_values_are_refused(scene60):
    vol = scene60.copy()
    vol[20, 40, 40] = np.nan
    with pytest.raises(ParameterError, match="non-finite"):
        estimate_volume(vol, VOXEL)
    for given, words in [({"tilt_step": 3}, "unknown given value"), ({"tilt_range": (60, -60)}, "tilt_range"),
                         ({"polarity": "auto"}, "polarity"), ({"slab_thickness": -1}, "slab_thickness")]:
        with pytest.raises(ParameterError, match=words):
            estimate_volume(scene60, VOXEL, given=given)
    with pytest.raises(ParameterError, match="voxel_size"):
        estimate_volume(scene60, -1.0)


def test_memory_mapped_tomogram_and_no_voxel_size(scene60, tmp_path):
    from napari_cryo_openset.io.tomogram import read_tomogram, write_tomogram

    path = tmp_path / "scene.mrc"
    write_tomogram(path, scene60, voxel_size=VOXEL)
    tomo = read_tomogram(path)
    est = estimate_volume(tomo)
    assert isinstance(est, VolumeEstimate)
    assert est.voxel_size == (VOXEL, VOXEL, VOXEL) and est.shape == scene60.shape
    assert est.tilt_range == estimate_volume(scene60, VOXEL).tilt_range
    bare = estimate_volume(scene60)
    assert bare.voxel_size is None and bare.thickness_angstrom is None
    assert "voxels" in bare.summary()


# --------------------------------------------------------------------------------------------
# the real tomogram (../shared/data/real, when present)
# --------------------------------------------------------------------------------------------


def test_real_hiv_tomogram_is_plausible(shared_data):
    """EMPIAR-10164 tilt series: ±60° in 3° steps; the inverted (bright) tomogram; the VLP layer
    (the Gag-lattice picks) lies inside the slab found."""
    from napari_cryo_openset.io.picks_io import read_picks
    from napari_cryo_openset.io.tomogram import read_tomogram

    path = shared_data / "real" / "hiv_vlp_40A.mrc"
    if not path.is_file():
        pytest.skip("real/hiv_vlp_40A.mrc is not in the shared data")
    est = estimate_volume(read_tomogram(path), given={"tilt_range": (-60, 60)})
    assert est.tilt_axis == "Y" and est.agreement()["tilt_range"] is True
    assert est.polarity == "bright" and est.polarity_confident
    assert est.slab is not None and 1000 <= est.thickness_angstrom <= 2500
    z = read_picks(shared_data / "real" / "hiv_vlp_40A_lattice.star")["z"].to_numpy()
    assert est.slab[0] <= np.percentile(z, 50) <= est.slab[1]
    assert est.seconds < 5
