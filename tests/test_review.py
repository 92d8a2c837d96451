"""The review queue (:mod:`napari_cryo_openset.review`) on constructed tables: the documented order,
diversity across classes, the modes, what is skipped. No torch, no display."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cryo_openset.curation import set_curated_class
from napari_cryo_openset.errors import ParameterError, PicksError
from napari_cryo_openset.picks import make_picks
from napari_cryo_openset.review import normalised_entropy, review_priorities, review_queue, robust_scale

THRESHOLD = 1.0


def _table(scores, names, confidence=None, curation=None, cluster=None):
    n = len(scores)
    feats = dict(class_name=names, unknown_score=np.asarray(scores, float),
                 confidence=np.full(n, 0.9) if confidence is None else np.asarray(confidence, float),
                 is_unknown=[c == "unknown" for c in names])
    if curation is not None:
        feats["curation"] = curation
    if cluster is not None:
        feats["cluster"] = cluster
    return make_picks(np.arange(3 * n, dtype=float).reshape(n, 3), score=np.ones(n), **feats)


def test_priority_is_the_documented_formula():
    scores = [0.2, 0.6, 0.95, 1.1, 1.8, 3.0]
    names = ["a", "a", "a", "unknown", "unknown", "unknown"]
    conf = [0.95, 0.6, 0.5, 0.4, 0.8, 0.99]
    table = review_priorities(_table(scores, names, conf), THRESHOLD)
    sigma = 1.4826 * np.median(np.abs(np.asarray(scores) - np.median(scores)))
    assert robust_scale(np.asarray(scores)) == pytest.approx(sigma)
    expected = 0.5 * (np.exp(-np.abs(np.asarray(scores) - THRESHOLD) / sigma) + (1 - np.asarray(conf)))
    np.testing.assert_allclose(table["priority"], expected)
    np.testing.assert_allclose(table["margin"], np.abs(np.asarray(scores) - THRESHOLD) / sigma)
    # with probabilities: normalised entropy instead of 1 − confidence
    probs = np.array([[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05],
                      [0, 0, 1]])
    h = normalised_entropy(probs)
    assert h[0] == 0 and h[2] == pytest.approx(1.0) and h[1] == pytest.approx(np.log(2) / np.log(3))
    table = review_priorities(_table(scores, names, conf), THRESHOLD, probabilities=probs)
    np.testing.assert_allclose(table["u_entropy"], h)


def test_unknowns_and_one_class_are_by_priority():
    scores = [0.2, 0.9, 1.05, 2.5, 1.3, 0.5]
    names = ["a", "a", "unknown", "unknown", "unknown", "b"]
    picks = _table(scores, names)
    unk = review_queue(picks, THRESHOLD, mode="unknowns")
    assert list(unk["row"]) == [2, 4, 3]  # nearest the threshold first
    assert list(unk["rank"]) == [1, 2, 3]
    a = review_queue(picks, THRESHOLD, mode="class", class_name="a")
    assert list(a["row"]) == [1, 0]
    with pytest.raises(ParameterError, match="no pick is predicted 'c' \\(classes: a, b, unknown\\)"):
        review_queue(picks, THRESHOLD, mode="class", class_name="c")
    with pytest.raises(ParameterError, match="needs class_name"):
        review_queue(picks, THRESHOLD, mode="class")
    with pytest.raises(ParameterError, match="mode must be one of queue, unknowns, class"):
        review_queue(picks, THRESHOLD, mode="random")


def test_queue_is_diverse_across_classes():
    """Class a holds the 10 most uncertain picks, yet the first three picks cover a, unknown and b."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([1.0 + rng.uniform(-0.05, 0.05, 10), [0.1, 0.15], [2.0, 2.5, 3.0]])
    names = ["a"] * 10 + ["b"] * 2 + ["unknown"] * 3
    picks = _table(scores, names)
    by_priority = review_priorities(picks, THRESHOLD).sort_values("priority", ascending=False)
    assert set(by_priority["class_name"].head(10)) == {"a"}
    queue = review_queue(picks, THRESHOLD)
    assert len(queue) == len(picks) and sorted(queue["row"]) == list(range(len(picks)))
    assert set(queue["class_name"].head(3)) == {"a", "b", "unknown"}
    assert queue["class_name"].iloc[0] == "a"  # the group with the best pick leads
    # within a class, the queue keeps the priority order
    for _, group in queue.groupby("class_name"):
        assert group["priority"].is_monotonic_decreasing


def test_small_clusters_are_up_weighted():
    scores = [2.0] * 8
    names = ["unknown"] * 8
    cluster = [0, 0, 0, 0, 0, 1, 1, -1]  # U0 of 5, U1 of 2; median 3.5
    table = review_priorities(_table(scores, names, cluster=cluster), THRESHOLD)
    np.testing.assert_allclose(table["rarity"], [0, 0, 0, 0, 0, 1 - 2 / 3.5, 1 - 2 / 3.5, 0])
    queue = review_queue(_table(scores, names, cluster=cluster), THRESHOLD, mode="unknowns")
    assert list(queue["row"][:2]) == [5, 6]


def test_rejected_curated_and_unclassified_picks_are_skipped():
    scores = [1.0, 1.01, 0.99, 1.02, np.nan]
    names = ["a", "a", "unknown", "b", ""]
    picks = _table(scores, names, curation=["rejected", "unreviewed", "accepted", "unreviewed", "unreviewed"])
    picks = set_curated_class(picks, [3], "a", ["a", "b"])
    queue = review_queue(picks, THRESHOLD)
    assert sorted(queue["row"]) == [1, 2]
    assert sorted(review_queue(picks, THRESHOLD, include_curated=True)["row"]) == [1, 2, 3]
    everything = set_curated_class(picks, [1, 2], "b", ["a", "b"])
    assert review_queue(everything, THRESHOLD).empty
    # probabilities of the active picks only (table order) line up with their rows
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    table = review_priorities(picks, THRESHOLD, probabilities=probs)
    assert list(table["row"]) == [1, 2] and list(table["u_entropy"]) == [1.0, 0.0]
    with pytest.raises(PicksError, match="classify them first"):
        review_queue(picks.drop(columns=["unknown_score"]), THRESHOLD)
