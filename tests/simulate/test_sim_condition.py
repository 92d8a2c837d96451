"""ImagingCondition: units, validation with clear messages, ranges, JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.params import ImagingCondition


def test_defaults_give_41_tilts_from_minus_60_to_60():
    c = ImagingCondition()
    assert c.n_tilts == 41
    assert c.tilt_angles[0] == -60 and c.tilt_angles[-1] == 60
    assert np.allclose(np.diff(c.tilt_angles), 3.0)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"voxel_size": 0}, "voxel_size"),
        ({"voxel_size": -3}, "voxel_size"),
        ({"snr": 0}, "snr"),
        ({"snr": (0.0, 1.0)}, "snr"),
        ({"defocus": -5}, "defocus"),
        ({"tilt_range": (-95, 60)}, "tilt_range"),
        ({"tilt_range": (-60, 91)}, "tilt_range"),
        ({"tilt_range": (30, -30)}, "tilt_range"),
        ({"tilt_step": 0}, "tilt_step"),
        ({"amplitude_contrast": 1.5}, "amplitude_contrast"),
        ({"voltage": 0}, "voltage"),
        ({"cs": -1}, "cs"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(kwargs, word):
    with pytest.raises(ParameterError, match=word):
        ImagingCondition(**kwargs)


def test_ranges_are_sampled_inside_and_snr_log_uniformly():
    c = ImagingCondition(defocus=(2.0, 6.0), snr=(0.01, 1.0))
    rng = np.random.default_rng(0)
    d = c.sample_defocus(rng, 20000)
    s = c.sample_snr(rng, 20000)
    assert d.min() >= 2.0 and d.max() <= 6.0 and abs(d.mean() - 4.0) < 0.05
    assert s.min() >= 0.01 and s.max() <= 1.0
    # log-uniform: the median is the geometric mean of the bounds (0.1), not 0.5
    assert abs(np.log10(np.median(s)) - (-1.0)) < 0.03


def test_json_round_trip_keeps_every_field():
    c = ImagingCondition(voxel_size=13.7, defocus=(3, 6), snr=0.05, tilt_range=(-50, 70), tilt_step=2,
                         mtf=False, dose_per_tilt=3.0, recon_cutoff=None)
    again = ImagingCondition.from_json(c.to_json())
    assert again == c
    assert isinstance(again.tilt_range, tuple) and isinstance(again.defocus, tuple)
    with pytest.raises(ParameterError, match="unknown field"):
        ImagingCondition.from_dict({**c.to_dict(), "bogus": 1})
