"""Subtomogram extraction: borders, centring, normalisation, resampling, memory maps, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.extract import (
    CANONICAL_POLARITY,
    extract_subtomograms,
    normalise_subtomograms,
)
from napari_cryo_openset.picks import make_picks


def _ball(shape, centre, radius, value=-1.0, soft=0.5):
    """A soft-edged ball of ``value`` on a zero background (dark protein by default)."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    d = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    return (value / (1.0 + np.exp(np.clip((d - radius) / soft, -50, 50)))).astype(np.float32)


def _centre_of_mass(box):
    w = np.clip(box, 0, None)
    grids = np.meshgrid(*[np.arange(n) for n in box.shape], indexing="ij")
    return np.array([(g * w).sum() / w.sum() for g in grids])


def test_canonical_polarity_is_bright():
    assert CANONICAL_POLARITY == "bright"


def test_border_boxes_are_padded_with_the_mean():
    rng = np.random.default_rng(0)
    vol = rng.normal(5.0, 1.0, size=(20, 30, 40)).astype(np.float32)
    boxes = extract_subtomograms(vol, [[0, 0, 0], [19, 29, 39], [10, 15, 20]], 16, normalise=False)
    assert boxes.shape == (3, 16, 16, 16) and boxes.dtype == np.float32
    assert np.isfinite(boxes).all()
    corner = boxes[0]
    inside = vol[0:8, 0:8, 0:8]  # box index 8 = voxel 0
    np.testing.assert_array_equal(corner[8:, 8:, 8:], inside)
    np.testing.assert_allclose(corner[:8], inside.mean(), rtol=1e-5)  # padding = mean inside
    np.testing.assert_array_equal(boxes[2], vol[2:18, 7:23, 12:28])


def test_box_centres_the_particle_with_subvoxel_rounding():
    centre = (20.4, 31.6, 27.5)  # rounds to (20, 32, 28)
    vol = _ball((48, 64, 56), centre, 5.0)
    box = extract_subtomograms(vol, [centre], 24, polarity="dark")[0]
    com = _centre_of_mass(box)  # normalised: protein positive
    assert np.abs(com - 12).max() <= 1.0
    assert np.abs(com - (12 + np.array(centre) - np.floor(np.array(centre) + 0.5))).max() < 0.3


def test_normalisation_zero_mean_unit_variance_and_canonical_polarity():
    vol = _ball((40, 40, 40), (20, 20, 20), 6.0, value=-3.0) + 7.0  # dark protein, offset
    dark = extract_subtomograms(vol, [[20, 20, 20]], 20, polarity="dark")[0]
    assert abs(float(dark.mean())) < 1e-5 and float(dark.std()) == pytest.approx(1.0, abs=1e-4)
    assert dark[10, 10, 10] > 0  # protein positive after normalisation
    bright = extract_subtomograms(-vol, [[20, 20, 20]], 20, polarity="bright")[0]
    np.testing.assert_allclose(bright, dark, atol=1e-5)  # same canonical box from both contrasts


def test_normalise_batch_single_constant_and_nonfinite():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(5, 8, 8, 8)).astype(np.float32)
    x[3] = 4.2  # constant box
    x[4, 0, 0, 0] = np.nan
    out = normalise_subtomograms(x, "bright")
    assert out.dtype == np.float32 and out.shape == x.shape and np.isfinite(out).all()
    means = out.mean(axis=(1, 2, 3))
    sds = out.std(axis=(1, 2, 3))
    np.testing.assert_allclose(means, 0.0, atol=1e-5)
    np.testing.assert_allclose(sds[[0, 1, 2, 4]], 1.0, atol=1e-4)
    assert np.all(out[3] == 0)  # zero variance guarded
    np.testing.assert_allclose(normalise_subtomograms(x[0], "dark"), -out[0], atol=1e-6)
    with pytest.raises(ParameterError, match="auto"):
        normalise_subtomograms(x, "auto")


def test_resampling_gives_the_expected_scale():
    # A ball of radius 40 Å at 5 Å/voxel (8 voxels) extracted at 10 Å/voxel has radius 4 voxels.
    vol = _ball((64, 64, 64), (32.3, 31.8, 32.0), 8.0, value=1.0)
    same = extract_subtomograms(vol, [[32.3, 31.8, 32.0]], 32, voxel_size=5.0, target_voxel_size=5.0,
                                normalise=False)[0]
    np.testing.assert_array_equal(same, vol[16:48, 16:48, 16:48])  # no resampling: exact copy
    half = extract_subtomograms(vol, [[32.3, 31.8, 32.0]], 16, voxel_size=5.0, target_voxel_size=10.0,
                                normalise=False)[0]
    radius = (3.0 * float((half > 0.5).sum()) / (4.0 * np.pi)) ** (1 / 3)
    assert radius == pytest.approx(4.0, rel=0.1)
    assert np.abs(_centre_of_mass(half) - 8).max() < 0.5  # centred on the exact position
    double = extract_subtomograms(vol, [[32.3, 31.8, 32.0]], 48, voxel_size=5.0, target_voxel_size=2.5,
                                  normalise=False)[0]
    radius = (3.0 * float((double > 0.5).sum()) / (4.0 * np.pi)) ** (1 / 3)
    assert radius == pytest.approx(16.0, rel=0.05)


def test_memory_mapped_tomogram_and_picks_table(tmp_path):
    from napari_cryo_openset.io import read_tomogram, write_tomogram

    rng = np.random.default_rng(2)
    vol = rng.standard_normal((30, 40, 50)).astype(np.float32)
    tomo = read_tomogram(write_tomogram(tmp_path / "t.mrc", vol, 10.0))
    picks = make_picks([[0.2, 5.7, 49.4], [15, 20, 25], [29, 39, 0]])
    a = extract_subtomograms(tomo, picks, 12, polarity="dark")
    b = extract_subtomograms(vol, picks[["z", "y", "x"]].to_numpy(), 12, polarity="dark")
    np.testing.assert_array_equal(a, b)
    r = extract_subtomograms(tomo, picks, 6, target_voxel_size=20.0, polarity="bright")
    assert r.shape == (3, 6, 6, 6) and np.isfinite(r).all()


def test_no_picks_gives_an_empty_batch():
    out = extract_subtomograms(np.zeros((10, 10, 10), np.float32), np.zeros((0, 3)), 8)
    assert out.shape == (0, 8, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(coords_zyx=[[50, 5, 5]], box=8), "outside the tomogram"),
        (dict(coords_zyx=[[5, 5]], box=8), r"\(N, 3\)"),
        (dict(coords_zyx=[[5, 5, 5]], box=0), "box"),
        (dict(coords_zyx=[[5, 5, 5]], box=8, target_voxel_size=20.0), "voxel_size"),
        (dict(coords_zyx=[[5, 5, 5]], box=8, polarity="auto"), "auto"),
        (dict(coords_zyx=[[np.nan, 5, 5]], box=8), "NaN"),
    ],
)
def test_bad_input(kwargs, match):
    vol = np.zeros((20, 20, 20), np.float32)
    with pytest.raises(ParameterError, match=match):
        extract_subtomograms(vol, **kwargs)


def test_two_dimensional_volume_is_refused():
    with pytest.raises(ParameterError, match="3-D"):
        extract_subtomograms(np.zeros((20, 20), np.float32), [[1, 1, 1]], 4)


def test_boxes_at_dog_picks_are_centred_on_particles():
    from napari_cryo_openset.picking import PickingParams, pick
    from napari_cryo_openset.synthetic import BlobTomogramParams, blob_tomogram

    volume, _ = blob_tomogram(BlobTomogramParams(shape=(48, 96, 96), n_particles=20, snr=1.0, seed=4))
    picks = pick(volume, 10.0, PickingParams(diameter=120.0)).picks
    boxes = extract_subtomograms(volume, picks, 24, polarity="dark")
    assert boxes.shape == (len(picks), 24, 24, 24) and len(picks) >= 15
    core = boxes[:, 6:18, 6:18, 6:18]  # the particle (12 voxels across) in the middle
    com = np.array([_centre_of_mass(b) for b in core]) + 6  # noisy, per box
    assert np.median(np.abs(com - 12)) <= 0.5 and np.abs(com - 12).max() <= 1.5
    assert np.abs(_centre_of_mass(core.mean(axis=0)) + 6 - 12).max() <= 0.5  # the average box
    assert (boxes[:, 12, 12, 12] > 1.0).all()  # protein bright (canonical), well above the mean
