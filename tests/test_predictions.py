"""predictions.py: predictions into a picks layer, the threshold re-decided without re-running, and
a new threshold as a new bundle (no display)."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch

from napari_cryo_openset.checkpoint import ModelBundle
from napari_cryo_openset.models import NetworkParams, build_model
from napari_cryo_openset.palette import UNKNOWN_COLOR, class_colors
from napari_cryo_openset.predictions import (
    PREDICTION_COLUMNS,
    picks_at_threshold,
    prediction_features,
    redecide_unknowns,
    with_threshold,
    write_predictions,
)

CLASSES = ["1bxn", "2cg9", "unknown"]


def _bundle(threshold=0.5) -> ModelBundle:
    torch.manual_seed(0)
    model = build_model(NetworkParams(box=16, num_classes=len(CLASSES))).eval()
    bundle = ModelBundle(model=model, class_names=list(CLASSES), box_size=16, voxel_size=10.0)
    bundle.openset["threshold"] = threshold
    return bundle


def _predicted(names):
    names = np.asarray(names, dtype=object)
    return pd.DataFrame({"class_name": names, "confidence": np.linspace(0.5, 0.9, len(names)),
                         "unknown_score": np.linspace(0.1, 0.8, len(names)), "is_unknown": names == "unknown"})


def test_prediction_features_fill_the_rows_and_clear_the_others():
    features = pd.DataFrame({"score": [1.0, 2.0, 3.0, 4.0], "curation": ["unreviewed"] * 4})
    out = prediction_features(features, _predicted(["1bxn", "unknown"]), [1, 3])
    assert list(out["class_name"]) == ["", "1bxn", "", "unknown"]
    assert list(out["is_unknown"]) == [False, False, False, True]
    assert out["confidence"].isna().tolist() == [True, False, True, False]
    assert set(PREDICTION_COLUMNS) <= set(out.columns) and list(out["score"]) == [1.0, 2.0, 3.0, 4.0]
    assert "class_name" not in features.columns  # the input is not changed


def test_write_predictions_colours_a_points_layer_by_class():
    from napari.layers import Points

    layer = Points(np.zeros((3, 3)), features=pd.DataFrame({"curation": ["unreviewed"] * 3}))
    write_predictions(layer, _predicted(["1bxn", "unknown", "2cg9"]), [0, 1, 2])
    assert list(layer.features["class_name"]) == ["1bxn", "unknown", "2cg9"]
    h = UNKNOWN_COLOR.lstrip("#")
    np.testing.assert_allclose(layer.border_color[1, :3], [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)], atol=0.01)
    c = class_colors(["1bxn", "2cg9"])["2cg9"].lstrip("#")
    np.testing.assert_allclose(layer.border_color[2, :3], [int(c[i:i + 2], 16) / 255 for i in (0, 2, 4)], atol=0.01)
    layer.add([[1.0, 1.0, 1.0]])  # a pick added by hand has no class
    assert layer.features["class_name"].iloc[-1] == ""


def test_redecide_unknowns_moves_only_the_threshold():
    from napari_cryo_openset.predict import score_outputs

    bundle = _bundle()
    torch.manual_seed(1)
    logits, feats = torch.randn(20, len(CLASSES)), torch.randn(20, 8)
    logits[:, CLASSES.index("unknown")] = -50.0  # only the threshold makes unknowns
    stored = score_outputs(bundle, logits, feats)
    names, unknown = redecide_unknowns(bundle, stored, bundle.openset["threshold"])
    np.testing.assert_array_equal(names, stored.class_name)
    np.testing.assert_array_equal(unknown, stored.is_unknown)
    names, unknown = redecide_unknowns(bundle, stored, 10.0)  # 1 - confidence is never above 10
    assert not unknown.any() and "unknown" not in set(names)
    names, unknown = redecide_unknowns(bundle, stored, -1.0)
    assert unknown.all() and set(names) == {"unknown"}

    picks = pd.DataFrame({"curation": ["rejected"] + ["unreviewed"] * 20, "class_name": [""] + list(stored.class_name),
                          "is_unknown": [False] + list(stored.is_unknown)})
    adaptation = types.SimpleNamespace(picks=picks, result=types.SimpleNamespace(predictions=stored))
    pd.testing.assert_frame_equal(picks_at_threshold(adaptation, bundle, None), picks)
    moved = picks_at_threshold(adaptation, bundle, -1.0)
    assert moved.loc[0, "class_name"] == "" and set(moved.loc[1:, "class_name"]) == {"unknown"}


def test_with_threshold_makes_a_new_bundle_and_leaves_the_old_one():
    bundle = _bundle(threshold=0.3)
    before = dict(bundle.openset)
    moved = with_threshold(bundle, 0.7, calibrated=0.3)
    assert moved is not bundle and moved.model is bundle.model
    assert moved.openset["threshold"] == pytest.approx(0.7) and moved.openset["calibrated_threshold"] == 0.3
    assert bundle.openset == before
    back = with_threshold(moved, 0.3)
    assert back.openset["threshold"] == pytest.approx(0.3) and "calibrated_threshold" not in back.openset
    assert moved.openset["calibrated_threshold"] == 0.3


def test_a_class_keeps_its_colour_through_predict_adapt_threshold_results_and_the_run_png(tmp_path):
    """One class (2cg9) followed through source-only Predict (few classes present), adaptation
    (all present), a threshold move (some become unknown), the clusters of Results and the PNG."""
    from napari.layers import Points
    from skimage.io import imread

    from napari_cryo_openset.palette import CLUSTER_COLORS
    from napari_cryo_openset.plots import plot_embedding

    model = ["1bxn", "1qvr", "2cg9", "empty", "unknown"]

    def rgb(h):
        return np.array([int(h.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)]) / 255

    layer = Points(np.zeros((6, 3)), features=pd.DataFrame({"curation": ["unreviewed"] * 6}))
    seen = []
    # source-only: mostly empty, only 2cg9 and empty present
    write_predictions(layer, _predicted(["2cg9", "empty", "empty", "empty", "2cg9", "empty"]), range(6), model)
    seen.append(layer.border_color[0, :3].copy())
    assert np.allclose(layer.border_color[1, :3], rgb("#9a9a9a"), atol=0.01)  # empty: its reserved grey
    # adapted: every class present
    write_predictions(layer, _predicted(["2cg9", "1bxn", "1qvr", "unknown", "2cg9", "1qvr"]), range(6), model)
    seen.append(layer.border_color[0, :3].copy())
    # threshold moved: 1qvr picks become unknown
    write_predictions(layer, _predicted(["2cg9", "1bxn", "unknown", "unknown", "2cg9", "unknown"]), range(6), model)
    seen.append(layer.border_color[0, :3].copy())
    # Results: clusters U0 / U1 of the unknowns, recoloured from the layer's own model class list
    from napari_cryo_openset.predictions import color_picks

    features = layer.features.copy()
    features["cluster"] = [-1, -1, 0, 1, -1, 0]
    layer.features = features
    color_picks(layer)
    seen.append(layer.border_color[0, :3].copy())
    for colour in seen:
        np.testing.assert_allclose(colour, seen[0], atol=1e-6)
    np.testing.assert_allclose(layer.border_color[2, :3], rgb(CLUSTER_COLORS[0]), atol=0.01)
    np.testing.assert_allclose(layer.border_color[3, :3], rgb(CLUSTER_COLORS[1]), atol=0.01)
    assert not np.allclose(layer.border_color[2, :3], layer.border_color[3, :3])  # U0 ≠ U1
    # the run's PNG: 2cg9's dots in the same colour (only 2cg9 and unknowns on this map)
    rng = np.random.default_rng(0)
    picks = pd.DataFrame({"class_name": ["2cg9"] * 30 + ["unknown"] * 10, "is_unknown": [False] * 30 + [True] * 10,
                          "cluster": [-1] * 30 + [0] * 10, "tsne_x": rng.normal(size=40), "tsne_y": rng.normal(size=40)})
    img = imread(plot_embedding(picks, tmp_path / "map.png", model_classes=model))[..., :3].astype(float) / 255
    assert (np.abs(img - seen[0]).sum(-1) < 0.05).sum() > 20
