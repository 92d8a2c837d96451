"""Curated labels (``curated_class`` / STAR ``cosCuratedClassName``): round trips, validation, merging.

No torch, no display: the core of :mod:`napari_cryo_openset.curation` and the picks I/O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cryo_openset.curation import (
    allowed_labels,
    check_curated_labels,
    check_labels_fit_tomogram,
    curated_labels,
    is_curated,
    label_summary,
    merge_labels,
    set_curated_class,
)
from napari_cryo_openset.errors import PicksError
from napari_cryo_openset.io import read_picks, write_picks
from napari_cryo_openset.picks import make_picks

CLASSES = ["1bxn", "1qvr", "2cg9", "empty", "unknown"]


def _table(n=6):
    coords = np.arange(3 * n, dtype=float).reshape(n, 3) + 0.25
    return make_picks(coords, score=np.linspace(1, 2, n),
                      curation=["unreviewed", "accepted", "rejected", "unreviewed", "accepted", "unreviewed"][:n],
                      class_name=["1bxn", "unknown", "", "2cg9", "1qvr", "unknown"][:n],
                      unknown_score=np.linspace(0.1, 0.9, n))


@pytest.mark.parametrize("suffix", [".star", ".csv"])
def test_curated_labels_round_trip_exactly(tmp_path, suffix):
    picks = set_curated_class(_table(), [0, 3], "2cg9", CLASSES)
    picks = set_curated_class(picks, [5], "unknown", CLASSES)
    path = write_picks(tmp_path / f"p{suffix}", picks, voxel_size=10.0)
    back = read_picks(path)
    pd.testing.assert_frame_equal(back, picks)
    assert list(back["curated_class"]) == ["2cg9", "", "", "2cg9", "", "unknown"]
    assert list(back["class_name"]) == list(_table()["class_name"])  # the prediction stays beside it
    if suffix == ".star":
        assert "_cosCuratedClassName" in path.read_text()
    write_picks(tmp_path / f"q{suffix}", back, voxel_size=10.0)
    assert (tmp_path / f"q{suffix}").read_bytes() == path.read_bytes()


def test_labels_with_spaces_and_nan_read_back(tmp_path):
    picks = _table()
    picks["curated_class"] = ["my complex", np.nan, "", None, "unknown", "1bxn"]
    for suffix in (".star", ".csv"):
        back = read_picks(write_picks(tmp_path / f"p{suffix}", picks))
        assert list(back["curated_class"]) == ["my complex", "", "", "", "unknown", "1bxn"]


def test_files_without_the_column_read_as_before(tmp_path):
    picks = _table()
    back = read_picks(write_picks(tmp_path / "p.star", picks))
    assert "curated_class" not in back.columns
    assert not is_curated(back).any() and list(curated_labels(back)) == [""] * len(back)
    assert label_summary(back) == {}


def test_set_and_clear_a_label():
    picks = _table()
    before = picks.copy()
    labelled = set_curated_class(picks, 0, "1qvr", CLASSES)
    pd.testing.assert_frame_equal(picks, before)  # the input is never changed (undo = the old table)
    assert labelled.loc[0, "curated_class"] == "1qvr" and labelled.loc[0, "curation"] == "accepted"
    assert labelled.loc[0, "class_name"] == "1bxn"  # the prediction is kept
    assert label_summary(labelled) == {"1qvr": 1}
    cleared = set_curated_class(labelled, [0], None, CLASSES)
    assert cleared.loc[0, "curated_class"] == "" and cleared.loc[0, "curation"] == "accepted"
    assert set_curated_class(labelled, [0], "", CLASSES).loc[0, "curated_class"] == ""
    # unknown is always offered, even for a model without an unknown output
    assert allowed_labels(["a", "b"]) == ["a", "b", "unknown"]
    assert set_curated_class(picks, [1], "unknown", ["a", "b"]).loc[1, "curated_class"] == "unknown"


def test_bad_labels_have_one_clear_message():
    picks = _table()
    with pytest.raises(PicksError, match=r"'4v4r' are not classes of the model \(its classes: 1bxn, 1qvr, 2cg9, "
                                         r"empty\); label a structure the model does not have 'unknown'"):
        set_curated_class(picks, [0], "4v4r", CLASSES)
    with pytest.raises(PicksError, match="pick 3 is rejected"):
        set_curated_class(picks, [2], "1bxn", CLASSES)
    with pytest.raises(PicksError, match="out of range"):
        set_curated_class(picks, [6], "1bxn", CLASSES)
    bad = picks.copy()
    bad["curated_class"] = ["4v4r", "", "", "ribo", "", "1bxn"]
    with pytest.raises(PicksError, match=r"^--labels 'x.star': curated label\(s\) '4v4r', 'ribo' are not classes"):
        check_curated_labels(bad, CLASSES, "--labels 'x.star'")
    on_rejected = picks.copy()
    on_rejected["curated_class"] = ["", "", "1bxn", "", "", ""]
    with pytest.raises(PicksError, match=r"1 rejected pick\(s\) carry a curated label \(row\(s\) 3\)"):
        check_curated_labels(on_rejected, CLASSES)
    check_curated_labels(set_curated_class(picks, [0, 1], "empty", CLASSES), CLASSES)  # fine


def test_merge_labels_by_position():
    picks = _table()
    labels = picks.iloc[[0, 3]].copy()
    labels[["z", "y", "x"]] += 0.4  # the same picks, written with a small rounding
    labels["curated_class"] = ["2cg9", "unknown"]
    extra = make_picks([[40.0, 40.0, 40.0]], curated_class=["1bxn"])
    merged, info = merge_labels(picks, pd.concat([labels, extra], ignore_index=True))
    assert info == {"matched": 2, "added": 1}
    assert len(merged) == len(picks) + 1
    assert list(merged["curated_class"]) == ["2cg9", "", "", "unknown", "", "", "1bxn"]
    assert list(merged["curation"])[:6] == ["accepted", "accepted", "rejected", "accepted", "accepted", "unreviewed"]
    assert merged.loc[6, "curation"] == "accepted" and merged.loc[6, "class_name"] == ""
    assert merged.loc[6, "is_unknown"] if "is_unknown" in merged else True
    # a label on a pick the picks table rejected
    on_rejected = picks.iloc[[2]].copy()
    on_rejected["curation"] = "accepted"
    on_rejected["curated_class"] = "1bxn"
    with pytest.raises(PicksError, match=r"--labels 'l.star': 1 label\(s\) fall on rejected picks \(first: pick 3\)"):
        merge_labels(picks, on_rejected, where="--labels 'l.star'")
    rejected = labels.copy()
    rejected["curation"] = "rejected"
    with pytest.raises(PicksError, match="rejected pick"):
        merge_labels(picks, rejected)


def test_labels_of_another_tomogram_are_refused():
    labels = make_picks([[5.0, 5.0, 5.0], [5.0, 5.0, 300.0]], curated_class=["1bxn", "unknown"])
    with pytest.raises(PicksError, match=r"1 of 2 labelled pick\(s\) lie outside the tomogram of 48×96×96 .* row 2 "
                                         r"at x=300.0"):
        check_labels_fit_tomogram(labels, (48, 96, 96), 10.0)
    inside = labels.iloc[:1].copy()
    inside.attrs["voxel_size"] = (13.5,) * 3
    with pytest.raises(PicksError, match="records 13.5 Å voxels but the tomogram has 10 Å"):
        check_labels_fit_tomogram(inside, (48, 96, 96), 10.0)
    inside.attrs["voxel_size"] = (10.05,) * 3
    check_labels_fit_tomogram(inside, (48, 96, 96), 10.0)  # within 2 %


def test_predictions_carry_the_curated_label_beside_the_predicted_class():
    """Prediction (``fill_predictions``), the layer's columns (``prediction_features``) and a pick added by
    hand (``pick_feature_defaults``) keep ``curated_class`` as it was."""
    from types import SimpleNamespace

    from napari_cryo_openset.layers import pick_feature_defaults
    from napari_cryo_openset.predict import fill_predictions
    from napari_cryo_openset.predictions import prediction_features

    picks = set_curated_class(_table(), [0, 5], "unknown", CLASSES)
    active = (picks["curation"] != "rejected").to_numpy()
    n = int(active.sum())
    pred = SimpleNamespace(class_name=np.array(["1bxn"] * n, dtype=object), confidence=np.full(n, 0.5),
                           unknown_score=np.full(n, 0.2), is_unknown=np.zeros(n, bool))
    out = fill_predictions(picks, active, pred)
    assert list(out["curated_class"]) == list(picks["curated_class"])
    assert (out.loc[active, "class_name"] == "1bxn").all()
    feats = prediction_features(picks.drop(columns=["z", "y", "x"]), pd.DataFrame(
        {"class_name": ["2cg9"] * n, "confidence": 0.5, "unknown_score": 0.1, "is_unknown": False}),
        np.flatnonzero(active))
    assert list(feats["curated_class"]) == list(picks["curated_class"])
    assert pick_feature_defaults(feats)["curated_class"] == ""
