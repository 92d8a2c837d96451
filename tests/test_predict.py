"""Prediction on a small synthetic tomogram: columns, unknown scores, thresholds, errors,
voxel-size mismatch and polarity."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from napari_cryo_openset.checkpoint import BundleError, ModelBundle, bundle_from_training
from napari_cryo_openset.errors import CryoOpensetError, ParameterError, PicksError
from napari_cryo_openset.extract import extract_subtomograms
from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.models import NetworkParams, build_model
from napari_cryo_openset.picks import UNKNOWN_CLASS
from napari_cryo_openset.predict import (
    PredictParams,
    classify_boxes,
    guess_polarity_at_picks,
    predict_picks,
    score_outputs,
)
from napari_cryo_openset.progress import Progress, run_to_completion
from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

BOX = 24
VS = 10.0
TEMPLATE_NAMES = ("2cg9", "3j9i")  # the conftest ``templates``, at 10 Å
CPU = dict(device="cpu", threads=1)  # other jobs share the CPUs: one thread is faster then


@pytest.fixture(scope="module")
def bundle(easy_model):
    """A model trained on 2cg9 / 3j9i / empty at SNR 5 (the conftest ``easy_model``, own copy)."""
    return bundle_from_training(dataclasses.replace(easy_model, model=copy.deepcopy(easy_model.model)))


@pytest.fixture(scope="module")
def scene(templates, one_thread):
    """48×96×96 at 10 Å, 12 particles, protein dark (the raw convention); ~0.2 s."""
    volume, picks = make_scene(SceneParams(shape=(48, 96, 96), n_particles=12, templates=tuple(templates), seed=1,
                                           condition=ImagingCondition(voxel_size=VS, snr=5.0)))
    return volume, picks


@pytest.fixture
def tomo(scene):
    return Tomogram(data=scene[0], voxel_size=(VS, VS, VS))


def predict(bundle, tomogram, picks, **kw):
    events = []
    result = run_to_completion(predict_picks(bundle, tomogram, picks, PredictParams(**{**CPU, **kw})), events.append)
    return result, events


# ----------------------------------------------------------------------------- columns
def test_predictions_fill_the_columns(bundle, scene, tomo):
    _, truth = scene
    picks = truth.drop(columns=["class_name"]).copy()
    picks["curation"] = ["rejected" if i in (0, 5) else ("accepted" if i % 2 else "unreviewed")
                         for i in range(len(picks))]
    result, events = predict(bundle, tomo, picks, batch_size=4)
    out = result.picks
    assert len(out) == len(picks)
    assert np.allclose(out[["z", "y", "x"]].to_numpy(), picks[["z", "y", "x"]].to_numpy())
    assert list(out["curation"]) == list(picks["curation"])
    active = (out["curation"] != "rejected").to_numpy()
    # active picks: a class of the model (or unknown), confidence in 0..1, a finite score
    assert set(out.loc[active, "class_name"]) <= set(bundle.class_names) | {UNKNOWN_CLASS}
    assert out.loc[active, "class_name"].str.len().min() > 0
    conf = out.loc[active, "confidence"].to_numpy()
    assert np.all((conf > 0) & (conf <= 1))
    assert np.isfinite(out.loc[active, "unknown_score"]).all()
    assert out["is_unknown"].dtype == bool
    # rejected picks keep their row, without a prediction
    rejected = out[~active]
    assert list(rejected.index) == [0, 5]
    assert (rejected["class_name"] == "").all()
    assert rejected["confidence"].isna().all() and rejected["unknown_score"].isna().all()
    assert not rejected["is_unknown"].any()
    # bookkeeping
    assert result.polarity == "dark" and result.resampled is False
    assert sum(result.counts.values()) == active.sum()
    assert np.array_equal(result.active_index, np.flatnonzero(active))
    assert result.features.shape == (active.sum(), 32)
    assert "picks classified" in result.summary()
    assert [e.stage for e in events if e.stage == "predict"] == ["predict"] * 3  # 10 picks, batches of 4
    assert all(isinstance(e, Progress) for e in events)
    assert all(p.device.type == "cpu" for p in bundle.model.parameters())
    assert not bundle.model.training


def test_the_classes_of_the_scene_are_recovered(bundle, scene, tomo):
    """End to end: a model trained on simulated subtomograms classifies the scene's particles."""
    _, truth = scene
    result, _ = predict(bundle, tomo, truth.drop(columns=["class_name"]))
    accuracy = (result.picks["class_name"].to_numpy() == truth["class_name"].to_numpy()).mean()
    assert accuracy >= 0.75, result.picks.assign(truth=truth["class_name"])[["class_name", "confidence", "truth"]]


def test_unknown_score_is_one_minus_max_softmax(bundle):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 3, generator=g) * 3
    feats = torch.randn(20, 32, generator=g)
    pred = score_outputs(bundle, logits, feats)
    probs = torch.softmax(logits, dim=1).numpy()
    assert np.allclose(pred.unknown_score, 1 - probs.max(1), atol=1e-6)
    assert np.allclose(pred.confidence, probs.max(1), atol=1e-6)
    assert list(pred.class_name) == [bundle.class_names[i] for i in probs.argmax(1)]
    assert not pred.is_unknown.any()  # no unknown output, no threshold
    assert pred.probabilities.shape == (20, 3) and pred.features.shape == (20, 32)


def test_unknown_output_of_the_network_means_unknown():
    torch.manual_seed(0)
    b = ModelBundle(model=build_model(NetworkParams(box=BOX, num_classes=3, embedding_dim=4, width=2)),
                    class_names=["a", "b", UNKNOWN_CLASS], box_size=BOX, voxel_size=VS)
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    pred = score_outputs(b, logits, torch.zeros(2, 4))
    assert list(pred.class_name) == ["a", UNKNOWN_CLASS]
    assert list(pred.is_unknown) == [False, True]


def test_threshold_override_marks_high_scores_unknown(bundle, scene, tomo):
    picks = scene[1].drop(columns=["class_name"])
    plain, _ = predict(bundle, tomo, picks)
    scores = plain.picks["unknown_score"].to_numpy()
    thr = float(np.median(scores))
    over, _ = predict(bundle, tomo, picks, threshold=thr)
    high = scores > thr
    assert high.any() and (~high).any()
    assert np.array_equal(over.picks["is_unknown"].to_numpy(), high)
    assert (over.picks.loc[high, "class_name"] == UNKNOWN_CLASS).all()
    assert np.array_equal(over.picks.loc[~high, "class_name"], plain.picks.loc[~high, "class_name"])
    assert np.allclose(over.picks["unknown_score"], scores)  # the score itself does not change
    assert over.counts.get(UNKNOWN_CLASS) == high.sum()
    # the bundle's own threshold is used when no override is given
    bundle.openset = {**bundle.openset, "threshold": thr}
    try:
        own, _ = predict(bundle, tomo, picks)
    finally:
        bundle.openset = {**bundle.openset, "threshold": None}
    assert np.array_equal(own.picks["is_unknown"].to_numpy(), high)


def test_centre_rule(bundle):
    centres = torch.zeros(2, 4)
    centres[1, 0] = 10.0
    b = ModelBundle(model=bundle.model, class_names=bundle.class_names, box_size=BOX, voxel_size=VS,
                    openset={"method": "centre", "threshold": 2.0, "centres": centres,
                             "centre_classes": ["3j9i", "2cg9"]})
    feats = torch.tensor([[0.5, 0, 0, 0], [9.0, 0, 0, 0], [5.0, 0, 0, 0]])
    pred = score_outputs(b, torch.zeros(3, 3), feats)
    assert np.allclose(pred.unknown_score, [0.5, 1.0, 5.0])
    assert list(pred.class_name) == ["3j9i", "2cg9", UNKNOWN_CLASS]
    assert list(pred.is_unknown) == [False, False, True]
    no_centres = ModelBundle(model=bundle.model, class_names=bundle.class_names, box_size=BOX, voxel_size=VS,
                             openset={"method": "centre", "threshold": 1.0})
    with pytest.raises(ParameterError, match="centres"):
        score_outputs(no_centres, torch.zeros(1, 3), torch.zeros(1, 4))


def test_classify_boxes_matches_predict(bundle, scene, tomo):
    volume, truth = scene
    boxes = extract_subtomograms(volume, truth, BOX, polarity="dark")
    pred = classify_boxes(bundle, boxes, device="cpu")
    result, _ = predict(bundle, tomo, truth.drop(columns=["class_name"]))
    assert list(pred.class_name) == list(result.picks["class_name"])
    assert np.allclose(pred.confidence, result.picks["confidence"], atol=1e-6)


# ------------------------------------------------------------------------------- errors
def test_picks_outside_the_tomogram_are_a_clear_error(bundle, scene, tomo):
    picks = scene[1].drop(columns=["class_name"]).copy()
    picks.loc[3, "x"] = 500.0  # X beyond 96 voxels
    with pytest.raises(CryoOpensetError, match=r"1 pick\(s\) lie outside the tomogram of shape") as info:
        predict(bundle, tomo, picks)
    message = str(info.value)
    assert "pick 3" in message and "500" in message and "voxels of this tomogram" in message
    assert all(str(n) in message for n in (48, 96))
    picks.loc[3, "x"] = 10.0
    picks.loc[4, "z"] = -3.0
    with pytest.raises(CryoOpensetError, match="outside the tomogram"):
        predict(bundle, tomo, picks)


def test_all_rejected_picks_is_an_error(bundle, scene, tomo):
    picks = scene[1].drop(columns=["class_name"]).copy()
    picks["curation"] = "rejected"
    with pytest.raises(PicksError, match="no picks to classify"):
        predict(bundle, tomo, picks)
    with pytest.raises(PicksError, match="no picks to classify"):
        predict(bundle, tomo, picks.iloc[:0])


def test_bad_coordinates_and_params(bundle, scene, tomo):
    picks = scene[1].drop(columns=["class_name"]).copy()
    picks.loc[2, "y"] = np.nan
    with pytest.raises(PicksError, match="non-finite"):
        predict(bundle, tomo, picks)
    with pytest.raises(ParameterError, match="polarity"):
        PredictParams(polarity="inverted")
    with pytest.raises(ParameterError, match="batch_size"):
        PredictParams(batch_size=0)


# ----------------------------------------------------------------------- voxel size
def test_voxel_size_mismatch_is_resampled_by_default(bundle, scene):
    volume, truth = scene
    # the same volume declared at 12 Å: the model (10 Å) boxes are resampled from it
    tomo12 = Tomogram(data=volume, voxel_size=(12.0, 12.0, 12.0))
    picks = truth.drop(columns=["class_name"])
    result, _ = predict(bundle, tomo12, picks)
    assert result.resampled is True
    assert result.picks["class_name"].str.len().min() > 0
    assert np.isfinite(result.picks["unknown_score"]).all()
    with pytest.raises(BundleError, match=r"12 Å voxels but the model was trained at 10 Å"):
        predict(bundle, tomo12, picks, allow_resampling=False)
    # within tolerance, or no voxel size at all (a bare array): no resampling
    assert predict(bundle, Tomogram(data=volume, voxel_size=(10.1, 10.1, 10.1)), picks)[0].resampled is False
    assert predict(bundle, volume, picks)[0].resampled is False


# -------------------------------------------------------------------------------- polarity
def test_polarity_guess_at_picks(scene):
    volume, truth = scene
    raw = extract_subtomograms(volume, truth, BOX, normalise=False)
    guess, contrast = guess_polarity_at_picks(raw)
    assert guess == "dark" and contrast < -0.3
    guess, contrast = guess_polarity_at_picks(-raw)
    assert guess == "bright" and contrast > 0.3


def test_auto_polarity_makes_inverted_tomograms_equivalent(bundle, scene, tomo):
    volume, truth = scene
    picks = truth.drop(columns=["class_name"])
    dark, _ = predict(bundle, tomo, picks, polarity="auto")
    assert dark.polarity == "dark"
    inverted = Tomogram(data=-volume, voxel_size=(VS, VS, VS))
    bright, _ = predict(bundle, inverted, picks, polarity="auto")
    assert bright.polarity == "bright"
    pd.testing.assert_frame_equal(dark.picks, bright.picks)
    # a wrong explicit polarity changes the answer (the setting matters)
    wrong, _ = predict(bundle, inverted, picks, polarity="dark")
    assert not np.allclose(wrong.picks["confidence"], dark.picks["confidence"])
