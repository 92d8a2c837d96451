"""Model widget: simulate + train in the background with a live plot, Cancel, predict, save/load."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import rgb as _rgb
import torch

from napari_cryo_openset._widgets.model import ModelWidget
from napari_cryo_openset.checkpoint import ModelBundle
from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.layers import picks_layer, tomogram_layer
from napari_cryo_openset.models import NetworkParams, build_model
from napari_cryo_openset.palette import PICK_COLOR, UNKNOWN_COLOR, class_colors

pytestmark = pytest.mark.gui

CLASSES = ["1bxn", "2cg9", "empty", "unknown"]  # two small built-ins (~13 nm): a 24³ box holds them


def _random_bundle(threshold=None) -> ModelBundle:
    """An untrained (seeded) network: enough to exercise the widget's plumbing quickly."""
    torch.manual_seed(0)
    model = build_model(NetworkParams(box=32, num_classes=len(CLASSES))).eval()
    with torch.no_grad():  # its calls are known classes; "unknown" comes from the threshold
        model.head.bias[CLASSES.index("unknown")] = -50.0
    bundle = ModelBundle(model=model, class_names=list(CLASSES), box_size=32, voxel_size=10.0)
    bundle.openset["threshold"] = threshold
    return bundle


@pytest.fixture(scope="module")
def scene():
    from napari_cryo_openset.simulate import sample_scene

    return sample_scene()


def _tiny_training(widget, epochs=2, per_class=8):
    for name, check in widget.template_checks.items():
        check.setChecked(name in ("1bxn", "2cg9"))
    widget.per_class.setValue(per_class)
    widget.box.setValue(24)
    widget.snr.setValue(1.0)
    widget.epochs.setValue(epochs)
    widget.batch_size.setValue(8)
    widget.device.setCurrentText("cpu")


def test_tiny_training_in_background_plots_loss_and_keeps_a_bundle(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = ModelWidget(viewer)
    qtbot.addWidget(widget)
    assert list(widget.template_checks) == sorted(widget.template_checks)
    assert all(c.isChecked() for c in widget.template_checks.values())  # all built-ins by default
    assert widget.cs.value() == pytest.approx(2.7) and widget.box.value() == 32
    _tiny_training(widget)
    assert (widget.decoys.value(), widget.empty.value()) == (8, 4)  # defaults follow "per class"

    worker = widget.start_training()
    assert worker is not None and not widget.train_button.isEnabled()
    qtbot.waitUntil(lambda: widget.bundle is not None, timeout=60_000)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=5_000)

    # 28 subtomograms: 24 train / 4 validation, batch 8 → 3 steps per epoch, 2 epochs
    assert [s for s, _ in widget.loss_history] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(v) and v > 0 for _, v in widget.loss_history)
    assert [e for _, e, _ in widget.val_acc_history] == [1, 2]
    assert len(widget.loss_line.get_xdata()) == 6 and len(widget.acc_line.get_xdata()) == 2
    assert widget.bundle.class_names == CLASSES
    assert widget.bundle.voxel_size == pytest.approx(10.0) and widget.bundle.box_size == 24
    assert "Validation accuracy" in widget.summary.text() and "completed" in widget.summary.text()
    assert widget.save_button.isEnabled() and widget.train_button.isEnabled()
    # the default source: crowded scenes picked as a tomogram is, every class at its count
    assert widget.source_kind.currentText() == "scenes"
    assert widget.train_result.data.info["source_kind"] == "scenes"
    assert widget.train_result.data.counts() == {"1bxn": 8, "2cg9": 8, "empty": 4, "unknown": 8}


def test_isolated_source_choice(make_napari_viewer, qtbot):
    widget = ModelWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    _tiny_training(widget, epochs=1, per_class=4)
    widget.source_kind.setCurrentText("isolated")
    widget.start_training()
    qtbot.waitUntil(lambda: widget.bundle is not None, timeout=60_000)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=5_000)
    assert widget.train_result.data.info["source_kind"] == "isolated"


def test_cancel_stops_training_and_keeps_no_model(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = ModelWidget(viewer)
    qtbot.addWidget(widget)
    _tiny_training(widget, epochs=200, per_class=6)
    worker = widget.start_training()
    qtbot.waitUntil(lambda: len(widget.loss_history) >= 1, timeout=60_000)  # training has begun
    t0 = time.perf_counter()
    widget.cancel()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5_000)
    assert time.perf_counter() - t0 < 5.0
    qtbot.wait(200)
    assert widget.bundle is None and widget.train_result is None  # the cancelled result is discarded
    assert "cancelled" in widget.runner.status.text()
    assert widget.train_button.isEnabled()
    assert len(widget.loss_history) < 200


def test_plot_redraws_are_throttled(make_napari_viewer, qtbot, monkeypatch):
    from napari_cryo_openset.progress import Progress

    widget = ModelWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    redraws = []  # every redraw of the plot asks its canvas to draw once
    monkeypatch.setattr(widget.canvas, "draw_idle", lambda: redraws.append(1))
    for step in range(1, 201):  # a burst of fast batches
        widget.add_train_progress(Progress("train", step, 200, "", {"epoch": 1, "step": step, "loss": 1.0 / step}))
    widget.add_train_progress(Progress("train", 200, 200, "", {"epoch": 1, "loss": 0.1, "val_acc": 0.5}))
    qtbot.wait(2 * 200 + 100)
    assert 1 <= len(redraws) <= 2  # ≤ 5 redraws per second, the last state drawn
    assert len(widget.loss_history) == 200 and widget.val_acc_history == [(200, 1, 0.5)]
    assert len(widget.loss_line.get_xdata()) == 200


def test_voxel_size_follows_the_selected_tomogram(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8, 8), np.float32), scale=(7, 7, 7), name="a")
    widget = ModelWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.image_combo.currentText() == "a" and widget.voxel_size.value() == pytest.approx(7.0)
    viewer.add_image(np.zeros((8, 8, 8), np.float32), scale=(12, 12, 12), name="b")
    viewer.add_points(np.zeros((1, 3)), name="p")  # not listed as a tomogram
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["a", "b"]
    viewer.layers.selection.active = viewer.layers["b"]
    assert widget.voxel_size.value() == pytest.approx(12.0)
    viewer.layers.selection.active = viewer.layers["a"]
    assert widget.voxel_size.value() == pytest.approx(7.0)
    assert widget.picks_combo.currentText() == "p"


def test_predict_colours_picks_by_class_without_losing_rejected(make_napari_viewer, qtbot, scene, tmp_path):
    from skimage.io import imsave

    from napari_cryo_openset._viewer import show_particles_across_slices
    from napari_cryo_openset.predict import PredictParams, predict_picks
    from napari_cryo_openset.progress import run_to_completion

    volume, truth = scene
    picks = truth.drop(columns=["class_name"]).reset_index(drop=True)
    n = len(picks)
    picks["score"] = np.linspace(0.0, 1.0, n)
    picks.loc[n - 3:, "curation"] = "rejected"
    # an unknown threshold that makes about a third of this untrained model's calls "unknown"
    bundle = _random_bundle()
    scores = run_to_completion(predict_picks(bundle, volume, picks, PredictParams(device="cpu"))).picks["unknown_score"]
    bundle.openset["threshold"] = float(np.nanpercentile(scores, 65))

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 960)
    image, image_kwargs, _ = tomogram_layer(Tomogram(volume, (10.0, 10.0, 10.0)), name="scene")
    viewer.add_image(image, **image_kwargs)  # scale (10, 10, 10) Å
    data, kwargs, _ = picks_layer(picks, voxel_size=10.0, name="picks", diameter=200.0)
    layer = viewer.add_points(data, **kwargs)
    layer.metadata["score_threshold"] = 0.1  # the Pick widget's live threshold: lowest 10 % left out
    assert np.allclose(layer.border_color[:, :3], _rgb(PICK_COLOR) / 255, atol=0.01)
    widget = ModelWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Model", area="right")
    widget.bundle = bundle
    assert widget.save_button.isEnabled() and "box 32³ at 10 Å" in widget.summary.text()
    widget.device.setCurrentText("cpu")
    widget.polarity.setCurrentText("dark")
    assert widget.image_combo.currentText() == "scene" and widget.picks_combo.currentText() == "picks"
    assert widget.voxel_size.value() == pytest.approx(10.0)

    worker = widget.start_prediction()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.prediction is not None, timeout=30_000)

    feats = layer.features
    assert len(layer.data) == len(feats) == n  # nothing deleted
    assert {"class_name", "confidence", "unknown_score", "is_unknown"} <= set(feats.columns)
    below = picks["score"].to_numpy() < 0.1
    rejected = (picks["curation"] == "rejected").to_numpy()
    predicted = ~below & ~rejected
    names = feats["class_name"].to_numpy()
    assert set(names[predicted]) <= set(CLASSES) and (names[predicted] != "").all()
    assert (names[~predicted] == "").all() and feats["confidence"][~predicted].isna().all()
    assert (feats["is_unknown"].to_numpy() == (names == "unknown")).all()
    assert "unknown" in set(names[predicted]) and len(set(names[predicted]) - {"unknown"}) >= 1
    assert not layer.shown[rejected].any() and layer.shown[~rejected].all()  # rejected still hidden
    # colours: the one palette, unknown in its reserved colour, unpredicted ones as plain picks
    palette = class_colors(names, widget.bundle.class_names)  # the model's class list, not the classes present
    expected = np.array([_rgb(palette[c]) / 255 for c in names])
    np.testing.assert_allclose(layer.border_color[:, :3], expected, atol=0.01)
    assert np.allclose(layer.border_color[names == "unknown", :3], _rgb(UNKNOWN_COLOR) / 255, atol=0.01)
    assert not np.allclose(layer.border_color[predicted, :3], _rgb(PICK_COLOR) / 255, atol=0.05)
    assert "picks classified" in widget.predict_summary.text()

    # what the user sees
    show_particles_across_slices(viewer, 200.0)
    z = float(np.median(layer.data[predicted, 0]))
    viewer.dims.set_point(0, z * 10.0)
    viewer.reset_view()
    qtbot.wait(100)
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    counts = {}
    for cls in set(names[predicted]):
        d = np.linalg.norm(canvas - _rgb(palette[cls]), axis=-1)
        counts[cls] = int((d < 40).sum())
    assert counts["unknown"] > 20, counts
    assert sum(v for k, v in counts.items() if k != "unknown") > 20, counts
    widget.scroll.ensureWidgetVisible(widget.predict_summary)  # the Predict section in view
    qtbot.wait(50)
    window = viewer.screenshot(canvas_only=False, flash=False)
    imsave(tmp_path / "model_widget.png", window, check_contrast=False)
    imsave("/tmp/model_widget.png", window, check_contrast=False)


def test_save_and_load_round_trip_and_bad_file_keeps_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import napari.utils.notifications as notifications

    errors = []
    monkeypatch.setattr(notifications, "show_error", errors.append)
    viewer = make_napari_viewer()
    widget = ModelWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.save_model(tmp_path / "none.pt") is None  # nothing to save yet
    assert not (tmp_path / "none.pt").exists()

    widget.bundle = original = _random_bundle(threshold=0.4)
    path = widget.save_model(tmp_path / "model")
    assert path == tmp_path / "model.pt" and path.is_file()
    widget.bundle = None
    loaded = widget.load_model(path)
    assert loaded is widget.bundle and loaded.class_names == CLASSES
    assert loaded.openset["threshold"] == pytest.approx(0.4)
    for key, value in original.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    assert "Loaded model.pt" in widget.summary.text()
    assert errors == []

    bad = tmp_path / "not_a_model.pt"
    bad.write_text("this is not a model")
    assert widget.load_model(bad) is None
    assert widget.bundle is loaded  # the old model stays
    assert len(errors) == 1 and "not a napari-cryo-openset model bundle" in str(errors[0])
    assert widget.load_model(tmp_path / "missing.pt") is None and len(errors) == 2
    assert widget.bundle is loaded


def test_read_from_tomogram_fills_the_tilt_range_in_the_background(make_napari_viewer, qtbot):
    from napari_cryo_openset.params import ImagingCondition
    from napari_cryo_openset.simulate.scenes import SceneParams, make_scene

    volume, _ = make_scene(SceneParams(shape=(64, 96, 96), n_particles=20, background=0.05, seed=3,
                                       condition=ImagingCondition(voxel_size=10.0, tilt_range=(-45.0, 45.0))))
    viewer = make_napari_viewer()
    viewer.add_image(volume, scale=(10, 10, 10), name="tomo")
    widget = ModelWidget(viewer)
    qtbot.addWidget(widget)
    assert "defaults" in widget.condition_note.text()
    worker = widget.read_condition()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.estimate is not None, timeout=30_000)
    assert abs(widget.tilt_min.value() + 45) <= 5 and abs(widget.tilt_max.value() - 45) <= 5
    assert "read from the tomogram" in widget.condition_note.text()
    assert widget.imaging_condition().tilt_range == (widget.tilt_min.value(), widget.tilt_max.value())
