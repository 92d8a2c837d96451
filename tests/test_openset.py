"""Open-set scores, threshold calibration, decisions and metrics on hand-computed examples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_cryo_openset import openset
from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.metrics import auroc, closed_set_metrics, open_set_metrics
from napari_cryo_openset.openset import (
    calibrate_threshold,
    centre_distances,
    decide,
    nearest_centre,
    softmax_unknown_score,
)
from napari_cryo_openset.picks import UNKNOWN_CLASS

U = UNKNOWN_CLASS


# ----------------------------------------------------------------------------- scores
def test_softmax_unknown_score():
    probs = [[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0]]
    np.testing.assert_allclose(softmax_unknown_score(probs), [0.3, 0.6, 0.0])


def test_softmax_unknown_score_rejects_bad_input():
    with pytest.raises(ParameterError, match="probs"):
        softmax_unknown_score([0.5, 0.5])
    with pytest.raises(ParameterError, match="probs"):
        softmax_unknown_score([[np.nan, 0.5]])


def test_centre_distances_and_nearest():
    features = [[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]]
    centres = [[0.0, 0.0], [6.0, 8.0]]
    expected = np.array([[0.0, 10.0], [5.0, 5.0], [10.0, math.sqrt(80.0)]])
    np.testing.assert_allclose(centre_distances(features, centres), expected)
    dist, index = nearest_centre(features, centres)
    np.testing.assert_allclose(dist, [0.0, 5.0, math.sqrt(80.0)])
    np.testing.assert_array_equal(index, [0, 0, 1])  # exact tie -> first centre
    assert index.dtype == np.int64


def test_centre_distances_in_blocks_match(monkeypatch):
    rng = np.random.default_rng(0)
    f, c = rng.normal(size=(37, 5)), rng.normal(size=(4, 5))
    full = centre_distances(f, c)
    monkeypatch.setattr(openset, "_DISTANCE_BLOCK", 30)  # 1 row per block
    np.testing.assert_allclose(centre_distances(f, c), full)
    np.testing.assert_allclose(full, np.linalg.norm(f[:, None] - c[None], axis=-1))


def test_centre_distances_dimension_mismatch():
    with pytest.raises(ParameterError, match="centres"):
        centre_distances(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ParameterError, match="centres"):
        centre_distances(np.zeros((2, 3)), np.zeros((0, 3)))


# ----------------------------------------------------------------------------- threshold
def test_calibrate_quantile_rule():
    known = np.arange(11.0)  # 0, 1, ..., 10
    cal = calibrate_threshold(known, quantile=0.9)
    assert cal.rule == "quantile"
    assert cal.threshold == pytest.approx(9.0)
    assert cal.details["known_rejected"] == pytest.approx(1 / 11)
    assert calibrate_threshold(known).threshold == pytest.approx(9.5)  # default 0.95
    # empty unknowns fall back to the quantile rule
    assert calibrate_threshold(known, [], quantile=0.9).rule == "quantile"


def test_calibrate_youden_rule_hand_example():
    known = [0.1, 0.2, 0.3, 0.6]
    unknown = [0.4, 0.5, 0.7, 0.9]
    # J(t) = TPR - FPR with "score > t":
    # t=.1: 1-3/4  t=.2: 1-2/4  t=.3: 1-1/4 = .75 (best)  t=.4: 3/4-1/4  t=.6: 2/4-0 ...
    cal = calibrate_threshold(known, unknown)
    assert cal.rule == "youden"
    assert cal.threshold == pytest.approx(0.3)
    assert cal.details["youden_j"] == pytest.approx(0.75)
    assert cal.details["balanced_accuracy"] == pytest.approx(0.875)
    assert cal.details["known_rejected"] == pytest.approx(0.25)
    assert cal.details["unknown_detected"] == pytest.approx(1.0)
    json.dumps(cal.to_dict())


def test_calibrate_youden_perfect_separation_and_ties():
    assert calibrate_threshold([1.0, 2.0], [3.0, 4.0]).threshold == pytest.approx(2.0)
    # J(0) = 1 - 1/2 = 0.5 and J(2) = 1/2 - 0 = 0.5: the larger threshold wins
    assert calibrate_threshold([0.0, 2.0], [1.0, 3.0]).threshold == pytest.approx(2.0)


def test_calibrate_force_quantile_with_unknowns():
    cal = calibrate_threshold(np.arange(11.0), [20.0, 30.0], quantile=0.5, rule="quantile")
    assert cal.rule == "quantile"
    assert cal.threshold == pytest.approx(5.0)
    assert cal.details["unknown_detected"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"known_scores": []}, "known_scores"),
        ({"known_scores": [0.1, np.nan]}, "known_scores"),
        ({"known_scores": [0.1], "unknown_scores": [np.nan]}, "unknown_scores"),
        ({"known_scores": [0.1], "quantile": 0.0}, "quantile"),
        ({"known_scores": [0.1], "quantile": 1.5}, "quantile"),
        ({"known_scores": [0.1], "rule": "median"}, "rule"),
        ({"known_scores": [0.1], "rule": "youden"}, "unknown_scores"),
    ],
)
def test_calibrate_rejects_bad_input(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        calibrate_threshold(**kwargs)


# ----------------------------------------------------------------------------- decide
def test_decide():
    out = decide([0, 1, 2, 0], [0.1, 0.9, 0.2, 0.5], 0.5, ["a", "b", "c"])
    assert list(out) == ["a", U, "c", "a"]  # 0.5 is not > 0.5
    assert len(decide(np.array([], dtype=int), [], 0.5, ["a"])) == 0


def test_decide_rejects_bad_input():
    with pytest.raises(ParameterError, match="pred_index"):
        decide([0, 3], [0.1, 0.2], 0.5, ["a", "b", "c"])
    with pytest.raises(ParameterError, match="pred_index"):
        decide([0.0, 1.0], [0.1, 0.2], 0.5, ["a", "b"])
    with pytest.raises(ParameterError, match="unknown_scores"):
        decide([0, 1], [0.1], 0.5, ["a", "b"])
    with pytest.raises(ParameterError, match="unknown_scores"):
        decide([0, 1], [0.1, np.nan], 0.5, ["a", "b"])


# ----------------------------------------------------------------------------- open-set metrics
# 2 known classes (A, B) + unknown, 10 samples.
TRUE = ["A", "A", "A", "A", "B", "B", "B", U, U, U]
PRED = ["A", "A", "A", "B", "B", "B", U, U, U, "A"]
SCORES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.65, 0.8, 0.5]


def test_open_set_metrics_hand_example():
    m = open_set_metrics(TRUE, PRED, SCORES)
    assert m.labels == ["A", "B", U]
    np.testing.assert_array_equal(m.confusion, [[3, 1, 0], [0, 2, 1], [1, 0, 2]])
    assert m.confusion.dtype == np.int64
    assert m.per_class_recall == pytest.approx({"A": 3 / 4, "B": 2 / 3, U: 2 / 3})
    assert m.all == pytest.approx(7 / 10)
    assert m.os_star == pytest.approx(17 / 24)  # (3/4 + 2/3) / 2
    assert m.unk == pytest.approx(2 / 3)
    assert m.os == pytest.approx(25 / 36)  # (2·17/24 + 2/3) / 3
    assert m.hos == pytest.approx(68 / 99)  # 2·(17/24)(2/3) / (17/24 + 2/3)
    # unknown scores .65, .8, .5 vs known .1….7: 6 + 7 + (4 + ½ tie) = 17.5 of 21 pairs
    assert m.auroc == pytest.approx(17.5 / 21)
    assert m.n == 10
    d = m.to_dict()
    assert json.loads(json.dumps(d))["confusion"] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert isinstance(d["hos"], float)


def test_open_set_metrics_maps_names_outside_known_classes():
    true = list(TRUE)
    true[-1] = "ribosome"  # a true class outside the known list -> unknown
    pred = list(PRED)
    pred[6] = "proteasome"  # a predicted class outside the known list -> unknown
    m = open_set_metrics(true, pred, SCORES, known_classes=["B", "A"])
    ref = open_set_metrics(TRUE, PRED, SCORES)
    assert m.labels == ["A", "B", U]
    np.testing.assert_array_equal(m.confusion, ref.confusion)
    assert m.hos == pytest.approx(ref.hos)


def test_open_set_metrics_known_class_absent_from_truth():
    m = open_set_metrics(TRUE, PRED, known_classes=["A", "B", "C"])
    assert m.labels == ["A", "B", "C", U]
    assert math.isnan(m.per_class_recall["C"])
    assert m.os_star == pytest.approx(17 / 24)  # K = 2 classes present
    assert m.os == pytest.approx(25 / 36)
    assert math.isnan(m.auroc)  # no scores given


def test_open_set_metrics_without_unknowns():
    m = open_set_metrics(["A", "A", "B", "B"], ["A", "B", "B", "B"], [0.1, 0.2, 0.3, 0.4])
    assert m.os_star == pytest.approx(0.75)
    assert m.os == pytest.approx(0.75)
    assert m.all == pytest.approx(0.75)
    assert math.isnan(m.unk) and math.isnan(m.hos) and math.isnan(m.auroc)
    json.dumps(m.to_dict())


def test_open_set_metrics_all_predicted_unknown():
    m = open_set_metrics(["A", "A", "B", U], [U] * 4)
    assert m.os_star == 0.0
    assert m.unk == 1.0
    assert m.os == pytest.approx(1 / 3)
    assert m.hos == 0.0
    assert m.all == pytest.approx(1 / 4)


def test_open_set_metrics_hos_zero_when_both_zero():
    m = open_set_metrics(["A", U], [U, "A"])
    assert m.os_star == 0.0 and m.unk == 0.0 and m.hos == 0.0


def test_open_set_metrics_only_unknowns():
    m = open_set_metrics([U, U], [U, "A"], known_classes=["A"])
    assert m.unk == 0.5
    assert m.os == 0.5
    assert math.isnan(m.os_star) and math.isnan(m.hos)


def test_open_set_metrics_rejects_bad_input():
    with pytest.raises(ParameterError, match="pred_names"):
        open_set_metrics(["A", "B"], ["A"])
    with pytest.raises(ParameterError, match="true_names"):
        open_set_metrics([], [])
    with pytest.raises(ParameterError, match="unknown_scores"):
        open_set_metrics(["A", U], ["A", U], [0.1])
    with pytest.raises(ParameterError, match="unknown_scores"):
        open_set_metrics(["A", U], ["A", U], [0.1, np.nan])
    with pytest.raises(ParameterError, match="known_classes"):
        open_set_metrics(["A", U], ["A", U], known_classes=["A", U])


# ----------------------------------------------------------------------------- AUROC
def test_auroc_edge_cases():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0  # perfect separation
    assert auroc([0, 0, 1, 1], [0.3, 0.4, 0.1, 0.2]) == 0.0  # perfectly inverted
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied
    # positive .2 vs negatives .1, .2: 1 + ½ of 2 pairs
    assert auroc([0, 0, 1], [0.1, 0.2, 0.2]) == pytest.approx(0.75)
    assert math.isnan(auroc([1, 1], [0.1, 0.2]))
    assert math.isnan(auroc([0, 0], [0.1, 0.2]))


def test_auroc_matches_sklearn_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=300)
    s = np.round(rng.normal(size=300) + y, 1)  # many ties
    assert auroc(y, s) == pytest.approx(metrics.roc_auc_score(y, s))


# ----------------------------------------------------------------------------- closed-set metrics
def test_closed_set_metrics_hand_example():
    true = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    m = closed_set_metrics(true, pred)
    assert m.labels == ["a", "b", "c"]
    np.testing.assert_array_equal(m.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert m.accuracy == pytest.approx(3 / 5)
    # F1 = 2TP/(2TP+FP+FN): a 2/4, b 4/5, c 0
    assert m.per_class_f1 == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0})
    assert m.macro_f1 == pytest.approx(1.3 / 3)
    assert m["accuracy"] == m.accuracy
    assert set(m.keys()) >= {"accuracy", "macro_f1", "confusion", "labels"}
    json.dumps(m.to_dict())

    metrics = pytest.importorskip("sklearn.metrics")
    assert m.macro_f1 == pytest.approx(metrics.f1_score(true, pred, average="macro"))


def test_closed_set_metrics_class_names():
    m = closed_set_metrics(["b", "a"], ["b", "b"], class_names=["b", "a", "d"])
    assert m.labels == ["b", "a", "d"]
    np.testing.assert_array_equal(m.confusion, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])
    assert math.isnan(m.per_class_f1["d"])
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.0) / 2)  # d left out
    with pytest.raises(ParameterError, match="class_names"):
        closed_set_metrics(["a", "e"], ["a", "a"], class_names=["a", "b"])
    with pytest.raises(ParameterError, match="pred_names"):
        closed_set_metrics(["a"], ["a", "b"])
