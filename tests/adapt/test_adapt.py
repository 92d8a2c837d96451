"""Adaptation end to end: 3D-ADA and MLUDA on tiny simulated data (CPU, one thread).

Source: 3 built-in templates × 16, 12 decoys, 8 empty boxes (24³, SNR 2), a model trained for
3 epochs (the conftest's ``source_set`` and ``source_bundle``). Target: another simulated set of the same templates at 8 µm defocus
(another seed), as canonical boxes — no target labels are used anywhere. The runs are 3–10
rounds; what is checked is the contract (result, open-set rule, progress metrics, frozen
source encoder, determinism, save/load, guards, stop rules), not the accuracy.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from napari_cryo_openset.adapt import AdaptParams, AdaptResult, adapt_boxes, adapt_to_tomogram
from napari_cryo_openset.adapt.common import DEFAULT_LEARNING_RATE, MIN_TARGET_PICKS
from napari_cryo_openset.adapt.loop import adapt_batchnorm
from napari_cryo_openset.errors import ParameterError, PicksError
from napari_cryo_openset.progress import run_to_completion

VOXEL = 10.0
CLASSES = ["1bxn", "1qvr", "2cg9", "empty", "unknown"]
KNOWN = CLASSES[:-1]


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module


@pytest.fixture(scope="module")
def source(source_set):
    """The conftest ``source_set``: the default templates × 16, 12 decoys, 8 empty, SNR 2."""
    return source_set


@pytest.fixture(scope="module")
def target(templates, simulate):
    """Canonical target boxes (N, 1, 24, 24, 24): the same structures at another defocus."""
    from napari_cryo_openset.simulate import ImagingCondition
    from napari_cryo_openset.train import source_boxes

    data = simulate(templates, box=24, per_class=12, decoys=8, empty=4,
                    condition=ImagingCondition(defocus=8.0, snr=2.0), seed=7)
    return source_boxes(data.subtomograms, data.polarity)


@pytest.fixture(scope="module")
def bundle(source_bundle):
    """The conftest ``source_bundle``: 3 epochs on ``source``."""
    assert source_bundle.class_names == CLASSES
    return source_bundle


def _params(method: str, **kw) -> AdaptParams:
    base = dict(method=method, iterations=10, eval_every=5, batch_size=8, threads=1, device="cpu", seed=3,
                aligned_patience=0)
    return AdaptParams(**{**base, **kw})


def _run(bundle, source, target, params: AdaptParams) -> tuple[AdaptResult, list]:
    events: list = []
    result = run_to_completion(adapt_boxes(bundle, source, target, params), events.append)
    return result, events


def _state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _assert_same_state(a: dict, b: dict, exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5, msg=k)


def _all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in module.state_dict().values() if v.is_floating_point())


def _same_predictions(a, b) -> None:
    assert list(a.class_name) == list(b.class_name)
    np.testing.assert_array_equal(a.unknown_score, b.unknown_score)
    np.testing.assert_array_equal(a.confidence, b.confidence)


@pytest.fixture(scope="module")
def original_encoder_state(bundle):
    """The source model's encoder state before any adaptation ran (fixtures below adapt it)."""
    return _state(bundle.model.encoder)


@pytest.fixture(scope="module")
def runs(bundle, source, target, original_encoder_state):
    """method → (AdaptResult, progress events) of a 10-round run, evaluated every 5 rounds."""
    return {m: _run(bundle, source, target, _params(m)) for m in ("ada", "mluda")}


@pytest.fixture(scope="module")
def ada_round3(bundle, source, target):
    """A 3-round 3D-ADA run: the state a later stop at round > 3 must restore (checks every 3)."""
    return _run(bundle, source, target, _params("ada", iterations=3, eval_every=3))[0]


# --------------------------------------------------------------------------------------------
# results of both methods
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ada", "mluda"])
def test_result_bundle_and_open_set_rule(method, runs, bundle, target):
    result, _ = runs[method]
    assert isinstance(result, AdaptResult)
    assert result.stopped == "completed"
    adapted = result.bundle
    assert adapted is not bundle and adapted.model is not bundle.model
    assert adapted.class_names == CLASSES and adapted.box_size == 24 and adapted.voxel_size == VOXEL

    openset = adapted.openset
    assert openset["method"] == "centre"
    assert openset["centre_classes"] == KNOWN  # one centre per known class, never 'unknown'
    centres = openset["centres"]
    assert isinstance(centres, torch.Tensor)
    assert centres.shape == (len(KNOWN), adapted.model.encoder.out_dim)
    assert bool(torch.isfinite(centres).all())
    assert math.isfinite(openset["threshold"]) and openset["threshold"] > 0
    assert openset["rule"] in ("youden", "quantile")
    assert openset["rule"] == "youden"  # the source set has decoys: 'auto' → Youden's J
    assert openset["temperature"] > 0
    assert openset["assign"] == ("argmax" if method == "ada" else "nearest")
    assert openset["normalize"] is (method == "mluda")
    assert result.calibration["threshold"] == pytest.approx(openset["threshold"])

    prov = adapted.provenance["adaptation"]
    assert prov["method"] == method and prov["target_picks"] == len(target) and prov["stopped"] == "completed"
    assert prov["params"]["learning_rate"] == DEFAULT_LEARNING_RATE[method]

    pred = result.predictions
    n = len(target)
    for column in (pred.class_name, pred.confidence, pred.unknown_score, pred.is_unknown):
        assert len(column) == n
    assert pred.probabilities.shape == (n, len(CLASSES))
    assert set(pred.class_name) <= set(CLASSES)
    assert np.isfinite(pred.unknown_score).all() and (pred.unknown_score >= 0).all()
    assert ((pred.confidence >= 0) & (pred.confidence <= 1)).all()
    np.testing.assert_array_equal(pred.is_unknown, pred.class_name == "unknown")
    assert pred.is_unknown[pred.unknown_score > openset["threshold"]].all()
    assert pred.threshold == pytest.approx(openset["threshold"])
    assert method in result.summary()


def test_ada_progress_metrics_and_history(runs, target):
    result, events = runs["ada"]
    rounds = [e for e in events if e.stage == "adapt" and e.metrics]
    assert [e.metrics["iteration"] for e in rounds] == list(range(1, 11))
    for e in rounds:
        assert {"d_acc", "loss_d", "loss_t"} <= set(e.metrics)
        assert 0.0 <= e.metrics["d_acc"] <= 1.0
        assert math.isfinite(e.metrics["loss_d"]) and math.isfinite(e.metrics["loss_t"])
    checks = [e.metrics for e in rounds if "histogram" in e.metrics]
    assert [m["iteration"] for m in checks] == [5, 10]
    assert [h["iteration"] for h in result.history] == [5, 10]
    for record in result.history:
        assert {"d_acc", "loss_d", "loss_t", "entropy", "entropy_source_only", "histogram", "seconds"} <= set(record)
        assert len(record["histogram"]) == len(CLASSES) and sum(record["histogram"]) == len(target)
    assert any(e.stage == "calibrate" for e in events)
    # the bundle keeps the training history and appends the adaptation records
    assert [h["adaptation"]["iteration"] for h in result.bundle.history if "adaptation" in h] == [5, 10]


def test_mluda_progress_metrics_and_history(runs, target):
    result, events = runs["mluda"]
    rounds = [e for e in events if e.stage == "adapt" and e.metrics]
    assert [e.metrics["iteration"] for e in rounds] == list(range(1, 11))
    for e in rounds:
        terms = {"ce", "coral", "pull", "separation", "unknown_margin", "loss"}
        assert terms <= set(e.metrics)
        assert all(math.isfinite(e.metrics[k]) and e.metrics[k] >= 0 for k in terms)
    assert [h["iteration"] for h in result.history] == [5, 10]
    for record in result.history:
        assert {"ce", "coral", "pull", "separation", "unknown_margin", "target_unknown_fraction", "histogram"} <= set(record)
        assert 0.0 <= record["target_unknown_fraction"] <= 1.0
        assert len(record["histogram"]) == len(CLASSES) and sum(record["histogram"]) <= len(target)


# --------------------------------------------------------------------------------------------
# 3D-ADA: the source encoder stays frozen and independent (the reference code's defect)
# --------------------------------------------------------------------------------------------


def test_ada_source_encoder_frozen_and_independent(runs, bundle, original_encoder_state):
    adapted = runs["ada"][0].bundle
    # the model that was adapted is untouched (weights and BatchNorm statistics)
    _assert_same_state(_state(bundle.model.encoder), original_encoder_state)
    # the adapted bundle's F_s is the original encoder, F_t moved away from it
    assert adapted.source_encoder is not None and adapted.discriminator is not None
    _assert_same_state(_state(adapted.source_encoder), original_encoder_state)
    moved = [name for name, p in adapted.model.encoder.named_parameters()
             if not torch.equal(p.detach(), original_encoder_state[name])]
    assert moved, "the target encoder was not trained"
    # no shared storage between F_s, F_t and the original model
    ptrs = [{p.data_ptr() for p in m.parameters()}
            for m in (adapted.source_encoder, adapted.model.encoder, bundle.model.encoder)]
    assert not (ptrs[0] & ptrs[1]) and not (ptrs[0] & ptrs[2]) and not (ptrs[1] & ptrs[2])
    # the classifier head is frozen during 3D-ADA
    _assert_same_state(_state(adapted.model.head), _state(bundle.model.head))


def test_mluda_leaves_the_source_model_alone(runs, bundle, original_encoder_state):
    _assert_same_state(_state(bundle.model.encoder), original_encoder_state)
    adapted = runs["mluda"][0].bundle
    assert not torch.equal(adapted.model.head.weight, bundle.model.head.weight)  # MLUDA fine-tunes all


# --------------------------------------------------------------------------------------------
# determinism, save/load
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ada", "mluda"])
def test_same_seed_same_predictions(method, runs, bundle, source, target):
    again, _ = _run(bundle, source, target, _params(method))
    first = runs[method][0]
    _same_predictions(first.predictions, again.predictions)
    assert first.bundle.openset["threshold"] == again.bundle.openset["threshold"]
    _assert_same_state(_state(first.bundle.model), _state(again.bundle.model))


@pytest.mark.parametrize("method", ["ada", "mluda"])
def test_adapted_bundle_saves_loads_and_predicts_the_same(method, runs, target, tmp_path):
    from napari_cryo_openset.checkpoint import load_bundle, save_bundle
    from napari_cryo_openset.predict import classify_boxes

    result, _ = runs[method]
    path = save_bundle(result.bundle, tmp_path / f"adapted_{method}.pt")
    loaded = load_bundle(path)
    assert loaded.class_names == CLASSES
    assert loaded.openset["method"] == "centre" and loaded.openset["centre_classes"] == KNOWN
    torch.testing.assert_close(loaded.openset["centres"], result.bundle.openset["centres"])
    assert loaded.openset["threshold"] == pytest.approx(result.bundle.openset["threshold"])
    assert loaded.provenance["adaptation"]["method"] == method
    _assert_same_state(_state(loaded.model), _state(result.bundle.model))
    if method == "ada":
        _assert_same_state(_state(loaded.source_encoder), _state(result.bundle.source_encoder))
        assert loaded.discriminator is not None
    pred = classify_boxes(loaded, target, device="cpu")
    assert list(pred.class_name) == list(result.predictions.class_name)
    np.testing.assert_allclose(pred.unknown_score, result.predictions.unknown_score, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.confidence, result.predictions.confidence, rtol=1e-4, atol=1e-5)
    # an adapted model is not adapted again
    with pytest.raises(ParameterError, match="already adapted"):
        run_to_completion(adapt_boxes(loaded, None, target, _params(method)))


# --------------------------------------------------------------------------------------------
# guards
# --------------------------------------------------------------------------------------------


def test_no_source_is_refused(bundle, target):
    with pytest.raises(ParameterError, match="source data"):
        run_to_completion(adapt_boxes(bundle, None, target, _params("ada")))


def test_source_with_other_classes_is_refused(bundle, source, target):
    other = dataclasses.replace(source, class_names=["a", "b", "c", "empty", "unknown"])
    with pytest.raises(ParameterError, match="not the model's"):
        run_to_completion(adapt_boxes(bundle, other, target, _params("mluda")))


@pytest.mark.parametrize("method", ["ada", "mluda"])
def test_too_few_or_no_target_picks_are_refused(method, bundle, source, target):
    few = target[:MIN_TARGET_PICKS - 1]
    with pytest.raises(ParameterError, match=f"only {MIN_TARGET_PICKS - 1} target picks.*at least {MIN_TARGET_PICKS}"):
        run_to_completion(adapt_boxes(bundle, source, few, _params(method)))
    with pytest.raises(ParameterError, match="no target picks"):
        run_to_completion(adapt_boxes(bundle, source, target[:0], _params(method)))
    with pytest.raises(ParameterError, match="target boxes must be"):
        run_to_completion(adapt_boxes(bundle, source, target[:, :, :20, :20, :20], _params(method)))


def test_exactly_min_target_picks_is_enough(bundle, source, target):
    result, _ = _run(bundle, source, target[:MIN_TARGET_PICKS], _params("mluda", iterations=2, eval_every=1))
    assert len(result.predictions.class_name) == MIN_TARGET_PICKS


# --------------------------------------------------------------------------------------------
# stop rules: NaN/inf, collapse, alignment
# --------------------------------------------------------------------------------------------


def test_ada_nan_loss_stops_and_restores_the_last_good_weights(bundle, source, target, ada_round3, monkeypatch):
    import napari_cryo_openset.adapt.ada as ada

    real = ada.F.binary_cross_entropy_with_logits
    calls = {"n": 0}

    def nan_from_round_5(*args, **kwargs):  # 3 calls a round (2 for D, 1 for F_t with k = 1)
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] > 12 else out

    monkeypatch.setattr(ada.F, "binary_cross_entropy_with_logits", nan_from_round_5)
    result, _ = _run(bundle, source, target, _params("ada", eval_every=3))
    assert "round 5" in result.stopped and "NaN/inf" in result.stopped and "restored" in result.stopped
    assert result.bundle.provenance["adaptation"]["stopped"] == result.stopped
    assert [h["iteration"] for h in result.history] == [3]
    adapted = result.bundle
    assert _all_finite(adapted.model.encoder) and _all_finite(adapted.discriminator)
    # the last good weights are those of round 3 (the last check): as a 3-round run ends
    _assert_same_state(_state(adapted.model.encoder), _state(ada_round3.bundle.model.encoder))
    _assert_same_state(_state(adapted.discriminator), _state(ada_round3.bundle.discriminator))
    _same_predictions(result.predictions, ada_round3.predictions)
    assert np.isfinite(result.predictions.unknown_score).all()


def test_mluda_nan_loss_stops_and_restores_the_last_good_weights(bundle, source, target, monkeypatch):
    import napari_cryo_openset.adapt.mluda as mluda

    reference, _ = _run(bundle, source, target, _params("mluda", iterations=3, eval_every=3))
    real = mluda.coral_loss
    calls = {"n": 0}

    def nan_from_round_5(*args, **kwargs):  # one CORAL term a round
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("inf") * 0.0 if calls["n"] > 4 else out  # inf·0 = NaN

    monkeypatch.setattr(mluda, "coral_loss", nan_from_round_5)
    result, _ = _run(bundle, source, target, _params("mluda", eval_every=3))
    assert "round 5" in result.stopped and "NaN/inf" in result.stopped and "restored" in result.stopped
    assert _all_finite(result.bundle.model)
    _assert_same_state(_state(result.bundle.model), _state(reference.bundle.model))
    _same_predictions(result.predictions, reference.predictions)


def test_ada_collapse_stops_and_restores_the_last_healthy_weights(bundle, source, target, ada_round3, monkeypatch):
    """The target predictions collapse to one class at the second check (round 6)."""
    import napari_cryo_openset.adapt.ada as ada

    real = ada.encode
    calls = {"n": 0}

    def collapse_after_first_check(encoder, x, device, *args, **kwargs):
        calls["n"] += 1  # 1: source-only baseline, 2: check at round 3, 3: check at round 6
        h = real(encoder, x, device, *args, **kwargs)
        return h[:1].expand_as(h).clone() if calls["n"] >= 3 else h

    monkeypatch.setattr(ada, "encode", collapse_after_first_check)
    result, events = _run(bundle, source, target, _params("ada", eval_every=3))
    assert ada_round3.stopped == "completed"
    assert result.history[0]["entropy_source_only"] > 0
    assert "round 6" in result.stopped and "collapsed" in result.stopped and "restored" in result.stopped
    last = result.history[-1]
    assert last["iteration"] == 6 and last["entropy"] == 0 and max(last["histogram"]) == len(target)
    assert [e for e in events if e.stage == "adapt"][-1].message == result.stopped
    _assert_same_state(_state(result.bundle.model.encoder), _state(ada_round3.bundle.model.encoder))
    _assert_same_state(_state(result.bundle.discriminator), _state(ada_round3.bundle.discriminator))
    _same_predictions(result.predictions, ada_round3.predictions)


def test_ada_collapse_at_the_first_check_keeps_the_adabn_start(bundle, source, target, original_encoder_state):
    """collapse_fraction 10: any entropy is 'collapsed'; F_t returns to its start (AdaBN, no training)."""
    result, _ = _run(bundle, source, target, _params("ada", eval_every=3, collapse_fraction=10.0))
    assert "round 3" in result.stopped and "collapsed" in result.stopped
    encoder = result.bundle.model.encoder
    for name, p in encoder.named_parameters():
        assert torch.equal(p.detach(), original_encoder_state[name]), name
    start = copy.deepcopy(bundle.model.encoder)
    assert adapt_batchnorm(start, target, torch.device("cpu"))
    _assert_same_state(_state(encoder), _state(start), exact=False)


def test_ada_label_free_stop_when_aligned(bundle, source, target):
    result, events = _run(bundle, source, target,
                          _params("ada", aligned_d_acc=1.0, aligned_patience=1, collapse_fraction=0.0))
    assert result.stopped.startswith("stopped at round 5") and "aligned" in result.stopped
    assert [h["iteration"] for h in result.history] == [5]
    adapt_events = [e for e in events if e.stage == "adapt"]
    assert adapt_events[-1].step == 5 and adapt_events[-1].message == result.stopped


# --------------------------------------------------------------------------------------------
# a tomogram's picks
# --------------------------------------------------------------------------------------------


def test_adapt_to_tomogram_predicts_the_active_picks(bundle, source, templates):
    from napari_cryo_openset.io.tomogram import Tomogram
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

    volume, truth = make_scene(SceneParams(shape=(48, 96, 96), n_particles=24, unknown_fraction=0.2,
                                           condition=ImagingCondition(snr=2.0), templates=tuple(templates), seed=1))
    picks = truth.drop(columns=["class_name"]).reset_index(drop=True)
    picks.loc[[0, 3], "curation"] = "rejected"
    picks.loc[1, "curation"] = "accepted"
    rejected = (picks["curation"] == "rejected").to_numpy()
    assert (~rejected).sum() >= MIN_TARGET_PICKS
    tomo = Tomogram(volume, (VOXEL,) * 3)

    out = run_to_completion(adapt_to_tomogram(bundle, source, tomo, picks,
                                              _params("mluda", iterations=4, eval_every=2), polarity="auto"))
    assert out.polarity == "dark" and not out.resampled
    assert out.result.bundle.provenance["adaptation"]["polarity"] == "dark"
    assert len(out.result.predictions.class_name) == (~rejected).sum()
    table = out.picks
    assert len(table) == len(picks)
    np.testing.assert_allclose(table[["z", "y", "x"]].to_numpy(), picks[["z", "y", "x"]].to_numpy())
    assert list(table["curation"]) == list(picks["curation"])
    assert (table.loc[rejected, "class_name"] == "").all() and table.loc[rejected, "unknown_score"].isna().all()
    active = table[~rejected]
    assert (active["class_name"] != "").all() and set(active["class_name"]) <= set(CLASSES)
    assert list(active["class_name"]) == list(out.result.predictions.class_name)
    assert np.isfinite(active["unknown_score"].to_numpy(float)).all()

    everything_rejected = picks.assign(curation="rejected")
    with pytest.raises(PicksError, match="no picks"):
        run_to_completion(adapt_to_tomogram(bundle, source, tomo, everything_rejected, _params("ada")))


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


def test_adapt_params_validation():
    with pytest.raises(ParameterError, match="m2"):
        AdaptParams(m1=0.5, m2=1.0)  # m2 = 2·m1: classes of radius m1 would touch
    with pytest.raises(ParameterError, match="m2"):
        AdaptParams(m1=0.5, m2=0.9, m3=0.6)
    with pytest.raises(ParameterError, match="m3"):
        AdaptParams(m1=0.35, m3=0.35)
    with pytest.raises(ParameterError, match="m3"):
        AdaptParams(m1=0.35, m3=0.2)
    with pytest.raises(ParameterError, match="method"):
        AdaptParams(method="dann")
    for bad in (dict(iterations=0), dict(batch_size=2), dict(learning_rate=-1.0), dict(gamma=1.5),
                dict(threshold_rule="otsu"), dict(threshold_quantile=0.0), dict(eval_every=True)):
        with pytest.raises(ParameterError):
            AdaptParams(**bad)
    AdaptParams(m1=0.3, m2=0.61, m3=0.31)  # just inside the geometry


def test_adapt_params_learning_rate_by_method():
    assert set(DEFAULT_LEARNING_RATE) == {"ada", "mluda"}
    for method, lr in DEFAULT_LEARNING_RATE.items():
        assert AdaptParams(method=method).learning_rate == lr
        assert AdaptParams(method=method, learning_rate=None).learning_rate == lr
        assert AdaptParams(method=method, learning_rate=3e-4).learning_rate == 3e-4
    p = AdaptParams(method="mluda", iterations=7.0, seed=2)
    assert p.iterations == 7 and isinstance(p.iterations, int)
    assert AdaptParams.from_dict({**p.to_dict(), "not_a_field": 1}) == p


# --------------------------------------------------------------------------------------------
# the OSBP-style baseline of benchmarks/bench_openset.py
# --------------------------------------------------------------------------------------------


def test_osbp_baseline_runs_and_decides_by_the_unknown_output(bundle, source, target):
    import sys
    from pathlib import Path

    from napari_cryo_openset.adapt import load_source

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from _osbp import _GradReverse, adapt_osbp

    x = torch.ones(3, requires_grad=True)
    _GradReverse.apply(x).sum().backward()
    assert torch.equal(x.grad, -torch.ones(3))  # the encoder ascends the adversarial loss

    before = copy.deepcopy(bundle.model.state_dict())
    pred = adapt_osbp(bundle, load_source(source, bundle), target, iterations=4, batch_size=8)
    assert all(torch.equal(v, bundle.model.state_dict()[k]) for k, v in before.items())  # a copy is trained
    assert pred.probabilities.shape == (len(target), len(CLASSES))
    assert np.allclose(pred.probabilities.sum(1), 1, atol=1e-5)
    assert np.array_equal(pred.unknown_score, pred.probabilities[:, CLASSES.index("unknown")])
    assert list(pred.class_name) == [CLASSES[i] for i in pred.probabilities.argmax(1)]
