"""Curate widget: step, accept/reject/undo, rejected picks hidden not deleted, hand edits."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryo_openset._widgets.curate import CurateWidget, ortho_slices
from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.layers import picks_layer, tomogram_layer
from napari_cryo_openset.synthetic import BlobTomogramParams, blob_tomogram

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_with_picks(make_napari_viewer):
    params = BlobTomogramParams(shape=(32, 64, 64), n_particles=6, voxel_size=10.0, diameter=120.0)
    volume, picks = blob_tomogram(params)
    picks["score"] = np.arange(len(picks), dtype=float)  # highest score = last row
    viewer = make_napari_viewer(show=True)
    data, kw, _ = tomogram_layer(Tomogram(volume, (10.0,) * 3))
    viewer.add_image(data, **kw)
    data, kw, _ = picks_layer(picks, voxel_size=10.0, diameter=120.0, name="picks")
    layer = viewer.add_points(data, **kw)
    return viewer, layer


def test_ortho_slices_are_centred_and_padded():
    vol = np.zeros((20, 20, 20), np.float32)
    vol[2, 3, 4] = 5.0
    xy, xz, yz = ortho_slices(vol, (2, 3, 4), 6)
    assert xy.shape == xz.shape == yz.shape == (13, 13)
    assert xy[6, 6] == xz[6, 6] == yz[6, 6] == 5.0


def test_review_accept_reject_undo(viewer_with_picks, qtbot):
    viewer, layer = viewer_with_picks
    widget = CurateWidget(viewer)
    qtbot.addWidget(widget)
    n = len(layer.data)
    assert widget.layer_combo.currentText() == "picks"
    first = widget.current_index
    assert first == n - 1  # ordered by score, high first
    # the view is centred on the pick
    assert viewer.dims.point[0] == pytest.approx(layer.data[first][0] * 10.0, abs=10.0)
    assert widget.views[0].pixmap() is not None and not widget.views[0].pixmap().isNull()

    widget.decide("accepted")
    assert layer.features.loc[first, "curation"] == "accepted"
    second = widget.current_index
    assert second != first
    widget.decide("rejected")
    assert layer.features.loc[second, "curation"] == "rejected"
    assert not layer.shown[second]  # hidden ...
    assert len(layer.data) == n  # ... not deleted
    assert "2 / 6 reviewed" in widget.progress_label.text()

    widget.undo()
    assert layer.features.loc[second, "curation"] == "unreviewed"
    assert layer.shown[second]
    assert widget.current_index == second
    widget.undo()
    assert layer.features.loc[first, "curation"] == "unreviewed"


def test_keys_on_layer(viewer_with_picks, qtbot):
    """A/R/U/N/B are bound on the picks layer and act like the buttons."""
    from app_model.types import KeyBinding

    viewer, layer = viewer_with_picks
    widget = CurateWidget(viewer)
    qtbot.addWidget(widget)

    def press(key):
        layer.keymap[KeyBinding.from_str(key)](layer)

    first = widget.current_index
    press("A")
    assert layer.features.loc[first, "curation"] == "accepted"
    second = widget.current_index
    press("R")
    assert layer.features.loc[second, "curation"] == "rejected"
    press("U")
    assert layer.features.loc[second, "curation"] == "unreviewed"
    press("B")
    assert widget.current_index == first
    press("N")
    assert widget.current_index == second


def test_points_added_and_deleted_by_hand_stay_consistent(viewer_with_picks, qtbot):
    viewer, layer = viewer_with_picks
    widget = CurateWidget(viewer)
    qtbot.addWidget(widget)
    widget.decide("rejected")
    layer.add([[10.0, 20.0, 30.0]])
    assert len(layer.features) == len(layer.data) == 7
    assert layer.features["curation"].iloc[-1] == "unreviewed"
    assert np.isnan(layer.features["score"].iloc[-1])
    layer.selected_data = {0}
    layer.remove_selected()
    assert len(layer.features) == len(layer.data) == 6
    assert widget.current_index is not None and widget.current_index < 6


def test_thumbnails_show_the_raw_particle_with_a_circle_and_its_call(viewer_with_picks, qtbot):
    """The slices come from the raw tomogram (not a DoG preview added later), ≥ 160 px, the
    particle darker than the box edge, a circle at its diameter; the call is shown above them."""
    from skimage.io import imsave

    from napari_cryo_openset._widgets.panel import dock_panel
    from napari_cryo_openset.predictions import write_predictions

    viewer, layer = viewer_with_picks
    image = viewer.layers[0]
    layer.metadata["source_image"] = image.name
    # a newer image at the same scale that is not the picks' tomogram: a bright band-pass stand-in
    viewer.add_image(-np.asarray(image.data), name="filtered copy", scale=image.scale)
    n = len(layer.data)
    names = np.array(["1bxn"] * (n - 1) + ["unknown"], dtype=object)
    import pandas as pd

    write_predictions(layer, pd.DataFrame({"class_name": names, "confidence": 0.87, "unknown_score": 0.42,
                                           "is_unknown": names == "unknown"}), np.arange(n), ["1bxn", "unknown"])
    viewer.layers.selection.active = layer
    viewer.window.resize(1280, 800)
    panel = dock_panel(viewer, "Curate")
    widget = panel.curate
    widget.layer_combo.setCurrentText("picks")
    widget._update_view()
    qtbot.wait(200)
    assert "<b>unknown</b>" in widget.call.text() and "confidence 0.87" in widget.call.text()
    assert "unknown score 0.42" in widget.call.text()
    for lowpass in (False, True):
        widget.lowpass.setChecked(lowpass)
        img = widget.views[0].pixmap().toImage()
        assert img.width() >= 160 and img.height() >= 160 and widget.views[0].width() >= 160
        grey = np.array([[img.pixelColor(x, y).getRgb()[:3] for x in range(img.width())]
                         for y in range(img.height())], dtype=float)
        c = img.width() // 2
        centre = grey[c - 8:c + 8, c - 8:c + 8].mean()
        edge = np.concatenate([grey[:10].reshape(-1, 3), grey[-10:].reshape(-1, 3)]).mean()
        assert centre < edge - 40, (lowpass, centre, edge)  # a dark particle on a lighter surround
        # the circle at the particle's diameter (120 Å = 12 voxels in a 25-voxel box): gold pixels
        gold = np.linalg.norm(grey - [255, 215, 0], axis=-1) < 60
        assert gold.sum() > 100
        ys, xs = np.nonzero(gold)
        radius = np.median(np.hypot(ys - c, xs - c))
        assert radius == pytest.approx(6 / 25 * img.width(), rel=0.15)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    imsave("/tmp/curate_panel_1280x800.png", shot, check_contrast=False)


def test_stepping_uses_no_deprecated_napari_api(viewer_with_picks, qtbot):
    """napari 0.9 deprecates ``viewer.camera`` (→ ``viewer.scene.camera``): stepping through picks,
    in 2-D and 3-D, warns nothing."""
    import warnings

    viewer, layer = viewer_with_picks
    widget = CurateWidget(viewer)
    qtbot.addWidget(widget)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", FutureWarning)
        widget.next()
        viewer.dims.ndisplay = 3
        widget.next()
        widget.decide("accepted")
    world = layer.data_to_world(layer.data[widget.current_index])
    np.testing.assert_allclose(viewer.scene.camera.center, world, atol=1e-6)


def _classified(layer, classes=("1bxn", "4v4r", "empty", "unknown")):
    """Predictions on the picks as Predict writes them (the model's classes in the metadata)."""
    from napari_cryo_openset.layers import MODEL_CLASSES_KEY

    n = len(layer.data)
    feats = layer.features.copy()
    feats["class_name"] = ["1bxn", "4v4r", "unknown", "1bxn", "4v4r", "unknown"][:n]
    feats["confidence"] = np.linspace(0.95, 0.4, n)
    feats["unknown_score"] = np.array([0.1, 0.2, 0.9, 0.52, 0.48, 0.7])[:n]
    feats["is_unknown"] = feats["class_name"] == "unknown"
    layer.features = feats
    layer.metadata[MODEL_CLASSES_KEY] = list(classes)


def test_relabel_with_keys_and_undo_and_the_review_queue(viewer_with_picks, qtbot, tmp_path):
    from napari_cryo_openset.io import read_picks, write_picks
    from napari_cryo_openset.picks import from_points

    viewer, layer = viewer_with_picks
    _classified(layer)
    widget = CurateWidget(viewer)
    qtbot.addWidget(widget)
    viewer.window.add_dock_widget(widget, area="right")
    assert widget.class_choices() == ["1bxn", "4v4r", "empty", "unknown"]
    assert [widget.label_combo.itemText(k) for k in range(widget.label_combo.count())] == widget.class_choices()
    first = widget.current_index
    predicted = str(layer.features.loc[first, "class_name"])
    from app_model.types import KeyBinding

    layer.keymap[KeyBinding.from_str("2")](layer)  # key 2 (bound on the layer) → the second class
    assert layer.features.loc[first, "curated_class"] == "4v4r"
    assert layer.features.loc[first, "class_name"] == predicted  # the prediction stays beside it
    assert layer.features.loc[first, "curation"] == "accepted"
    second = widget.current_index
    layer.keymap[KeyBinding.from_str("0")](layer)  # key 0 → unknown
    assert layer.features.loc[second, "curated_class"] == "unknown"
    widget.undo()
    assert layer.features.loc[second, "curated_class"] == "" and layer.features.loc[second, "curation"] == "unreviewed"
    assert widget.current_index == second
    widget.decide("rejected")  # a rejected pick carries no label; labelling it is refused
    third = widget.current_index
    widget.previous()
    widget.relabel("1bxn")
    assert layer.features.loc[second, "curated_class"] == "" and "rejected" in widget.info.text()
    widget.relabel("5mrc")  # not a class of the model: refused, nothing changed
    assert "5mrc" in widget.info.text() and third is not None
    # review queue: the picks nearest the threshold / least confident first, rejected and curated ones last
    widget.order_combo.setCurrentText("review queue (most useful first)")
    order = list(widget._order)
    assert set(order) == set(range(len(layer.data)))
    assert order[-1] in (first, second) and order[-2] in (first, second)
    # the label travels in the picks file
    path = write_picks(tmp_path / "curated.star", from_points(layer.data, layer.features), voxel_size=10.0)
    assert read_picks(path).loc[first, "curated_class"] == "4v4r"
    widget.order_combo.setCurrentText("score (high → low)")
    widget._pos = list(widget._order).index(first)
    widget._update_view()
    assert "your label" in widget.call.text() and "4v4r" in widget.call.text()
    assert widget.grab().save(str(tmp_path / "curate_relabel.png"))
