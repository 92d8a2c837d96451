"""Refine with my labels (:mod:`napari_cryo_openset.adapt.refine`): the curated picks are learnt, never changed.

The session's small source model (3 built-in templates, 3 epochs) and the small 48×96×96 scene of the
same templates with 20 % decoys; 8 of its 24 picks are labelled from the scene's truth (5 known,
3 unknown), one other pick is rejected. MLUDA runs 60 rounds of 8 + 8 boxes on 2 threads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cryo_openset.errors import PicksError

LABELLED = (0, 2, 4, 6, 9, 12, 15, 18)


@pytest.fixture(scope="module")
def target(small_scene, tmp_path_factory, source_bundle):
    from napari_cryo_openset.curation import set_curated_class
    from napari_cryo_openset.io import read_tomogram, write_tomogram

    volume, truth_picks = small_scene
    tomo = read_tomogram(write_tomogram(tmp_path_factory.mktemp("refine") / "scene.mrc", volume, 10.0))
    truth = truth_picks["class_name"].astype(str).to_numpy()
    truth = np.where(np.isin(truth, source_bundle.class_names), truth, "unknown")
    picks = truth_picks.drop(columns=["class_name"]).reset_index(drop=True)
    unknown_rows = [i for i in range(len(picks)) if truth[i] == "unknown"][:3]
    known_rows = [i for i in LABELLED if truth[i] != "unknown"][:5]
    for row in unknown_rows + known_rows:
        picks = set_curated_class(picks, [row], truth[row], source_bundle.class_names)
    free = [i for i in range(len(picks)) if i not in unknown_rows + known_rows]
    picks.loc[free[0], "curation"] = "rejected"
    return tomo, picks, truth


def _params(method="mluda", **kw):
    from napari_cryo_openset.adapt import AdaptParams

    kw = {"method": method, "iterations": 60, "batch_size": 8, "eval_every": 20, "device": "cpu", "threads": 2,
          "seed": 0, **kw}
    kw.setdefault("label_iterations", kw["iterations"])  # a refinement runs label_iterations rounds
    kw.setdefault("label_batch_size", kw["batch_size"])
    return AdaptParams(**kw)


@pytest.fixture(scope="module")
def refined(source_bundle, source_set, target):
    from napari_cryo_openset.adapt import adapt_to_tomogram, refine_with_labels
    from napari_cryo_openset.progress import run_to_completion

    tomo, picks, _ = target
    before = picks.copy()
    events = []
    refinement = run_to_completion(refine_with_labels(source_bundle, source_set, tomo, picks, _params()), events.append)
    pd.testing.assert_frame_equal(picks, before)  # the input table is not touched
    free = run_to_completion(adapt_to_tomogram(source_bundle, source_set, tomo, picks, _params()))
    return refinement, free, events


def test_refinement_learns_the_curated_picks_and_never_changes_them(refined, target):
    refinement, free, events = refined
    _, picks, _ = target
    out = refinement.picks
    # the user's labels, exactly as given; the model's call beside them
    assert list(out["curated_class"]) == list(picks["curated_class"])
    assert out.attrs.get("source") == picks.attrs.get("source")
    labelled = (picks["curated_class"] != "").to_numpy()
    assert refinement.labels == {"n": 8, "known": 5, "unknown": 3,
                                 "per_class": dict(picks.loc[labelled, "curated_class"].value_counts().sort_index())}
    agree = np.mean(out.loc[labelled, "class_name"] == picks.loc[labelled, "curated_class"])
    agree_free = np.mean(free.picks.loc[labelled, "class_name"] == picks.loc[labelled, "curated_class"])
    assert refinement.agreement == pytest.approx(agree)
    assert agree >= 0.75 and agree > agree_free, (agree, agree_free)
    # rejected picks: left out, unclassified, still in the table
    rejected = (out["curation"] == "rejected").to_numpy()
    assert rejected.sum() == 1 and out.loc[rejected, "class_name"].iloc[0] == ""
    # the threshold: recalibrated on the labels (5 known, 3 unknown) or the label-free one, said which
    t = refinement.threshold
    assert t["n_known"] == 5 and t["n_unknown"] == 3 and t["rule"] in ("curated-youden", "label-free") and t["why"]
    bundle = refinement.result.bundle
    assert bundle.openset["threshold"] == pytest.approx(t["threshold"])
    assert bundle.openset["curated_calibration"]["rule"] == t["rule"]
    assert bundle.provenance["adaptation"]["curated_labels"]["n"] == 8
    active = out[~rejected]
    assert (active.loc[active["unknown_score"] > t["threshold"], "class_name"] == "unknown").all()
    assert [e.stage for e in events][-1] == "refine" and "curated labels" in events[-1].message
    assert "labelled_ce" in refinement.result.history[-1]


def test_the_threshold_rule_on_curated_scores():
    from napari_cryo_openset.adapt.refine import recalibrate_on_labels

    scores = np.array([0.1, 0.2, 0.25, 0.3, 0.9, 1.0, 1.2])
    unknown = np.array([False, False, False, False, True, True, True])
    t = recalibrate_on_labels(scores, unknown, label_free=0.5)
    assert t["rule"] == "curated-youden" and 0.3 <= t["threshold"] < 0.9 and t["n_used"] == 7
    assert t["youden_j"] == pytest.approx(1.0)
    few = recalibrate_on_labels(scores[2:], unknown[2:], label_free=0.5)
    assert few["rule"] == "label-free" and few["threshold"] == 0.5 and "2 curated known and 3" in few["why"]
    mixed = recalibrate_on_labels(np.array([0.9, 1.0, 1.1, 0.1, 0.2, 0.3]), np.array([0, 0, 0, 1, 1, 1], bool), 0.5)
    assert mixed["rule"] == "label-free" and "do not separate" in mixed["why"]


def test_bad_labels_are_refused_before_any_work(source_bundle, source_set, target):
    from napari_cryo_openset.adapt import refine_with_labels
    from napari_cryo_openset.progress import run_to_completion

    tomo, picks, _ = target
    foreign = picks.copy()
    foreign.loc[1, "curated_class"] = "4v4r"
    with pytest.raises(PicksError, match="'4v4r' are not classes of the model .* 'unknown'"):
        run_to_completion(refine_with_labels(source_bundle, source_set, tomo, foreign, _params()))
    on_rejected = picks.copy()
    row = int(np.flatnonzero(on_rejected["curation"] == "rejected")[0])
    on_rejected.loc[row, "curated_class"] = "1bxn"
    with pytest.raises(PicksError, match="rejected pick"):
        run_to_completion(refine_with_labels(source_bundle, source_set, tomo, on_rejected, _params()))


def test_stopping_the_iteration_cancels(source_bundle, source_set, target):
    from napari_cryo_openset.adapt import refine_with_labels

    tomo, picks, _ = target
    before = picks.copy()
    job = refine_with_labels(source_bundle, source_set, tomo, picks, _params(iterations=50))
    stages = []
    for event in job:
        stages.append(event.stage)
        if event.stage == "adapt" and event.step >= 2:
            break
    job.close()  # what a widget's Cancel does (thread_worker.quit at the next yield)
    assert "extract" in stages and stages[-1] == "adapt"
    pd.testing.assert_frame_equal(picks, before)


def test_ada_refinement_runs_with_labels(source_bundle, source_set, target):
    from napari_cryo_openset.adapt import refine_with_labels
    from napari_cryo_openset.progress import run_to_completion

    tomo, picks, _ = target
    out = run_to_completion(refine_with_labels(source_bundle, source_set, tomo, picks, _params("ada", iterations=10,
                                                                                           eval_every=5)))
    assert list(out.picks["curated_class"]) == list(picks["curated_class"])
    assert out.labels["n"] == 8 and np.isfinite(out.threshold["threshold"])
    assert "labelled_ce" in out.result.history[-1]
