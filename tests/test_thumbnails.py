"""thumbnails.py: Curate's slices show the particle itself, darker than its surround, whatever the
tomogram's polarity (on the simulated sample scene)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.thumbnails import centre_contrast, particle_view, pick_box


@pytest.fixture(scope="module")
def sample():
    from napari_cryo_openset.simulate.scenes import SAMPLE_SCENE, sample_scene

    volume, picks = sample_scene()
    return volume, picks, float(SAMPLE_SCENE.condition.voxel_size)


def _contrasts(volume, picks, diameter_vox, polarity, lowpass):
    return np.array([centre_contrast(particle_view(volume, zyx, diameter_vox, polarity, lowpass).planes[0],
                                     diameter_vox / 2) for zyx in picks[["z", "y", "x"]].to_numpy()])


def test_the_xy_slice_shows_the_particle_darker_than_its_surround(sample):
    volume, picks, voxel = sample
    d = 200.0 / voxel  # the sample's typical particle (its point size)
    smooth = _contrasts(volume, picks, d, "dark", lowpass=True)
    raw = _contrasts(volume, picks, d, "dark", lowpass=False)
    assert (smooth <= -1.0).mean() >= 0.9, np.percentile(smooth, [5, 50, 95])
    assert (raw <= -0.5).mean() >= 0.75  # the raw slices too, less clearly (noise)
    # an inverted (bright-protein) tomogram, told so, looks the same: protein dark
    inverted = _contrasts(-volume, picks, d, "bright", lowpass=True)
    np.testing.assert_allclose(inverted, smooth, atol=1e-4)
    # … and told wrongly, the particle comes out bright: polarity matters
    assert (_contrasts(-volume, picks, d, "dark", lowpass=True) >= 1.0).mean() >= 0.9


def test_box_limits_and_bad_polarity():
    vol = np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32)
    vol[18:23, 18:23, 18:23] -= 5.0
    view = particle_view(vol, (20, 20, 20), 6.0)
    assert all(p.shape == (17, 17) for p in view.planes) and view.radius == 3.0
    lo, hi = view.limits
    assert lo < -1.5 and 1.5 < hi < 4  # the box's percentiles, not its extremes
    box = pick_box(vol, (0, 0, 0), 4)  # edge-padded at the corner
    assert box.shape == (9, 9, 9) and box[0, 0, 0] == vol[0, 0, 0]
    with pytest.raises(ParameterError, match="polarity"):
        particle_view(vol, (20, 20, 20), 6.0, polarity="auto")
