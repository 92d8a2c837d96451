"""The unknown threshold checked on the target without labels (adapt/transfer.py) and the
imaging condition resolved from given values and estimates (estimate/condition.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryo_openset.adapt.transfer import score_mixture, transfer_threshold
from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.estimate import VolumeEstimate
from napari_cryo_openset.estimate.condition import calibrate_snr, resolve_condition
from napari_cryo_openset.params import ImagingCondition


def _two_populations(n=400, unknown=0.2, seed=0):
    rng = np.random.default_rng(seed)
    k = int(n * unknown)
    known = np.exp(rng.normal(0.0, 0.15, n - k))
    unk = np.exp(rng.normal(1.1, 0.15, k))
    return np.concatenate([known, unk]), np.r_[np.zeros(n - k, bool), np.ones(k, bool)]


def test_a_threshold_that_calls_most_targets_unknown_moves_to_the_target_mixture():
    scores, truth = _two_populations()
    too_low = 0.8  # the source calibration, before the domain gap pushed every target score up
    thr, rep = transfer_threshold(too_low, scores, "auto")
    assert rep["fraction_at_source"] > 0.8
    assert rep["mixture"]["trusted"]
    assert rep["expected_unknown_fraction"] == pytest.approx(0.2, abs=0.03)
    called = scores > thr
    assert np.mean(called == truth) > 0.97  # the labels are only used here, to check
    assert thr != too_low and "expect" in rep["why"]


def test_a_threshold_that_agrees_with_the_target_is_kept():
    scores, _ = _two_populations()
    thr, rep = transfer_threshold(1.7, scores, "auto")
    assert thr == 1.7 and rep["why"] == "source calibration"
    assert transfer_threshold(0.8, scores, "source")[0] == 0.8


def test_one_population_is_not_split():
    rng = np.random.default_rng(1)
    scores = np.exp(rng.normal(0.0, 0.2, 500))
    mix = score_mixture(scores)
    assert not mix["trusted"] and "reason" in mix
    thr, rep = transfer_threshold(0.9, scores, "mixture")
    assert thr == 0.9 and rep["expected_unknown_fraction"] is None
    assert not score_mixture(scores[:10])["trusted"]  # too few picks
    with pytest.raises(ParameterError, match="threshold_transfer must be one of"):
        transfer_threshold(0.9, scores, "nope")


def test_one_population_but_adaptation_saw_fewer_unknowns_moves_to_that_fraction():
    rng = np.random.default_rng(2)
    scores = np.exp(rng.normal(0.0, 0.2, 500))  # no separate unknown population: the mixture is not trusted
    assert transfer_threshold(0.5, scores, "auto", adaptation_fraction=0.25)[0] == 0.5  # auto: not this rule
    thr, rep = transfer_threshold(0.5, scores, "adaptation", adaptation_fraction=0.25)
    assert rep["fraction_at_source"] > 0.95 and not rep["mixture"]["trusted"]
    assert np.mean(scores > thr) == pytest.approx(0.25, abs=0.01)
    assert rep["expected_unknown_fraction"] == 0.25 and "adaptation saw 25%" in rep["why"]
    # the source rule and an agreeing adaptation fraction keep τ
    assert transfer_threshold(0.5, scores, "source", adaptation_fraction=0.25)[0] == 0.5
    assert transfer_threshold(0.5, scores, "adaptation", adaptation_fraction=0.9)[0] == 0.5


def _estimate(tilt=(-45.0, 47.0), snr=0.3, slab=(20.0, 60.0)):
    return VolumeEstimate(shape=(80, 128, 128), voxel_size=(10.0,) * 3, tilt_range=tilt, tilt_axis="Y",
                          tilt_quality=0.9, tilt_uncertainty=2.0, tilt_range_reason=None if tilt else "flat profile",
                          slab=slab, slab_contrast=3.0, slab_band=(0.1, 0.2), slab_reason=None, polarity="dark",
                          polarity_skewness=-0.5, polarity_confident=True, noise_sigma=1.0 if snr else None,
                          snr=snr, noise_reason=None if snr else "no slices outside the slab")


def test_the_condition_takes_what_the_user_gave_and_the_estimate_for_the_rest():
    base = ImagingCondition(voxel_size=10.0, tilt_range=(-60.0, 60.0), snr=0.1)
    est = _estimate()
    # the API default: the condition is the user's, the estimate only reports
    r = resolve_condition(base, None, est)
    assert r.condition == base and r.sources["tilt_range"] == "given" and r.slab == (20.0, 60.0)
    # told only the voxel size: the tilt range and SNR come from the volume
    r = resolve_condition(base, ("voxel_size",), est, snr_calibrator=lambda s: (s / 4.0, {"ratio": 4.0}))
    assert r.condition.tilt_range == (-45.0, 47.0) and r.sources["tilt_range"] == "estimated"
    assert r.condition.snr == pytest.approx(0.075) and r.sources["snr"] == "estimated"
    assert r.sources["defocus"] == "default" and r.to_dict()["values"]["tilt_range"] == [-45.0, 47.0]
    # the user's tilt range wins over the estimate
    r = resolve_condition(base, ("voxel_size", "tilt_range"), est)
    assert r.condition.tilt_range == (-60.0, 60.0) and r.sources["tilt_range"] == "given"


def test_no_wedge_or_noise_in_the_volume_falls_back_to_the_defaults_and_says_so():
    base = ImagingCondition(voxel_size=10.0)
    r = resolve_condition(base, ("voxel_size",), _estimate(tilt=None, snr=None), snr_calibrator=lambda s: (1.0, {}))
    assert r.condition == base
    assert any("tilt range: flat profile" in n for n in r.notes)
    assert any("noise: no slices outside the slab" in n for n in r.notes)


def test_snr_calibration_inverts_a_monotone_simulation():
    def simulate(snr):  # 3-D SNR ≈ 4.3 × projection SNR, a little non-linear
        return 4.3 * snr ** 0.95

    snr, details = calibrate_snr(0.6, simulate, start=0.1, rounds=3)
    assert simulate(snr) == pytest.approx(0.6, rel=0.03)
    assert len(details["rounds"]) == 3
    assert calibrate_snr(0.6, lambda s: None)[0] is None
    # a power law far from linear is still found (log–log secant steps)
    snr, _ = calibrate_snr(0.01, lambda s: 50 * s ** 2, start=0.1, rounds=3)
    assert 50 * snr ** 2 == pytest.approx(0.01, rel=0.05)
    # a trial that measures nothing ends the search at the step from the last one that did
    snr, details = calibrate_snr(0.05, lambda s: 1.0 * s if s > 0.07 else None, start=0.1, rounds=3)
    assert snr == pytest.approx(0.05) and details["rounds"][-1]["snr3d"] is None
