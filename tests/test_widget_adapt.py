"""Adapt & predict widget: the shared model, model/source files, Cancel, predictions, threshold, screenshot.

A tiny source set (3 built-in templates × 10, decoys, empty; 24³ boxes, SNR 1) trains a model
for one epoch (core API, once per module); the target is a 48×96×96 simulated scene of the same
templates and decoys with its particle positions as picks (the first one rejected).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from conftest import rgb as _rgb

from napari_cryo_openset._widgets.adapt import AdaptWidget
from napari_cryo_openset._widgets.model import ModelWidget
from napari_cryo_openset._widgets.state import viewer_state
from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.layers import picks_layer, tomogram_layer
from napari_cryo_openset.palette import UNKNOWN_COLOR, class_colors
from napari_cryo_openset.predictions import write_predictions

pytestmark = pytest.mark.gui

VOXEL = 10.0
NAMES = ("1bxn", "1qvr", "2cg9")
CLASSES = ["1bxn", "1qvr", "2cg9", "empty", "unknown"]


def _simulate(templates, per_class=10, decoys=10, empty=5):
    from napari_cryo_openset.progress import run_to_completion
    from napari_cryo_openset.simulate import DatasetParams, ImagingCondition, generate_subtomograms

    params = DatasetParams(box=24, per_class=per_class, decoys=decoys, empty=empty,
                           condition=ImagingCondition(voxel_size=VOXEL, snr=1.0), seed=0)
    return run_to_completion(generate_subtomograms(templates, params))


@pytest.fixture(scope="module")
def trained(templates):
    """A :class:`TrainResult` of one epoch on a tiny set (``.data`` is the set)."""
    from napari_cryo_openset.progress import run_to_completion
    from napari_cryo_openset.train import TrainParams, train_source

    return run_to_completion(train_source(_simulate(templates), TrainParams(epochs=1, batch_size=8, device="cpu",
                                                                            threads=2, seed=1)))


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    """The model (no recorded source), the same model recording its source, and the source set, on disk."""
    from napari_cryo_openset.checkpoint import bundle_from_training, save_bundle
    from napari_cryo_openset.simulate import write_dataset

    d = tmp_path_factory.mktemp("adapt_widget")
    source = write_dataset(trained.data, d / "source.npz")
    model = save_bundle(bundle_from_training(trained), d / "model.pt")
    recorded = save_bundle(bundle_from_training(trained, source_path=str(source)), d / "model_recorded.pt")
    return {"model": model, "recorded": recorded, "source": source, "dir": d}


@pytest.fixture(scope="module")
def scene(templates):
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

    volume, truth = make_scene(SceneParams(shape=(48, 96, 96), condition=ImagingCondition(voxel_size=VOXEL, snr=1.0),
                                           templates=tuple(templates), n_particles=24, unknown_fraction=0.2, seed=1))
    picks = truth.drop(columns=["class_name"]).reset_index(drop=True)
    picks.loc[0, "curation"] = "rejected"
    return volume, picks


def _add_scene(viewer, scene):
    volume, picks = scene
    image, kwargs, _ = tomogram_layer(Tomogram(volume, (VOXEL,) * 3), name="scene")
    viewer.add_image(image, **kwargs)
    data, kwargs, _ = picks_layer(picks, voxel_size=VOXEL, name="picks", diameter=160.0)
    return viewer.add_points(data, **kwargs)


def _bundle(trained):
    from napari_cryo_openset.checkpoint import bundle_from_training

    return bundle_from_training(trained)


# --------------------------------------------------------------------------------------------
# the model and its source set
# --------------------------------------------------------------------------------------------


def test_follows_the_model_widget_through_the_viewer_state(make_napari_viewer, qtbot, trained, files):
    viewer = make_napari_viewer()
    model_widget = ModelWidget(viewer)
    adapt = AdaptWidget(viewer)
    qtbot.addWidget(model_widget)
    qtbot.addWidget(adapt)
    assert adapt.bundle is None and not adapt.adapt_button.isEnabled()
    assert "No model" in adapt.model_label.text()

    model_widget.use_training_result(trained)  # as when "Simulate & train" completes
    assert adapt.bundle is model_widget.bundle and adapt.source is trained.data
    assert "trained in the Model widget" in adapt.model_label.text()
    assert "in memory" in adapt.source_label.text() and "45 subtomograms" in adapt.source_label.text()
    assert adapt.adapt_button.isEnabled()
    late = AdaptWidget(viewer)  # a widget opened later finds the model too
    qtbot.addWidget(late)
    assert late.bundle is model_widget.bundle and late.source is trained.data

    # a model loaded in the Model widget has no source set: a fitting one is kept
    loaded = model_widget.load_model(files["model"])
    assert adapt.bundle is loaded and adapt.source is trained.data
    assert "loaded from model.pt" in adapt.model_label.text()
    assert viewer_state(viewer).source.bundle is loaded and viewer_state(make_napari_viewer()).source is None


def test_model_and_source_set_from_files(make_napari_viewer, qtbot, files, templates, tmp_path, monkeypatch):
    import napari.utils.notifications as notifications

    from napari_cryo_openset.simulate import write_dataset

    errors = []
    monkeypatch.setattr(notifications, "show_error", errors.append)
    adapt = AdaptWidget(make_napari_viewer())
    qtbot.addWidget(adapt)
    bundle = adapt.load_model(files["model"])
    assert bundle is adapt.bundle and bundle.class_names == CLASSES
    assert adapt.source is None and not adapt.adapt_button.isEnabled()  # no source set yet
    assert "No source set" in adapt.source_label.text()

    write_dataset(_simulate(templates[:2], per_class=3, decoys=0, empty=0), tmp_path / "other.npz")
    assert adapt.set_source(tmp_path / "other.npz") is None and adapt.source is None
    assert "not the set the model was trained on" in str(errors[-1])
    (tmp_path / "junk.npz").write_text("junk")
    assert adapt.set_source(tmp_path / "junk.npz") is None and len(errors) == 2
    data = adapt.set_source(files["source"])
    assert data is adapt.source and list(data.class_names) == CLASSES and adapt.adapt_button.isEnabled()
    assert "source.npz" in adapt.source_label.text()
    assert len(errors) == 2

    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    assert adapt.load_model(bad) is None and adapt.bundle is bundle and len(errors) == 3

    # a model that records its source set brings it along
    fresh = AdaptWidget(make_napari_viewer())
    qtbot.addWidget(fresh)
    fresh.load_model(files["recorded"])
    assert fresh.source is not None and "source.npz" in fresh.source_label.text()


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def test_cancel_mid_run_keeps_the_previous_predictions(make_napari_viewer, qtbot, trained, scene):
    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    n = len(layer.data)
    previous = layer.features.copy()
    previous["class_name"] = np.resize(["1bxn", "2cg9", "unknown"], n)
    previous["confidence"] = np.linspace(0.2, 0.9, n)
    previous["unknown_score"] = np.linspace(0.0, 1.0, n)
    previous["is_unknown"] = previous["class_name"] == "unknown"
    write_predictions(layer, previous, np.arange(n))  # "the previous run's" predictions
    before = layer.features.copy()
    colours = layer.border_color.copy()

    viewer_state(viewer).publish_source(_bundle(trained), data=trained.data, origin="test")
    adapt = AdaptWidget(viewer)
    qtbot.addWidget(adapt)
    adapt.device.setCurrentText("cpu")
    adapt.method.setCurrentText("3D-ADA")
    adapt.iterations.setValue(100_000)
    worker = adapt.start_adaptation()
    assert worker is not None and not adapt.adapt_button.isEnabled()
    qtbot.waitUntil(lambda: len(adapt.loss_history.get("loss_d", [])) >= 2, timeout=60_000)  # adapting
    t0 = time.perf_counter()
    adapt.cancel()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    assert time.perf_counter() - t0 < 10.0
    qtbot.wait(300)
    assert "cancelled" in adapt.runner.status.text()
    assert adapt.adapted is None and adapt.adaptation is None and not adapt.save_button.isEnabled()
    assert adapt.adapt_button.isEnabled()
    for column in ("class_name", "confidence", "unknown_score", "is_unknown", "curation"):
        assert list(layer.features[column]) == list(before[column]), column
    np.testing.assert_allclose(layer.border_color, colours)
    # the live plot got the per-round losses and discriminator accuracy
    assert len(adapt.lines["loss_d"].get_xdata()) >= 1
    assert len(adapt.loss_history["loss_t"]) >= 2 and len(adapt.rate_history) >= 2
    assert all(0.0 <= acc <= 1.0 for _, acc in adapt.rate_history)


def test_completed_run_colours_picks_and_threshold_override_makes_both_known_and_unknown(
        make_napari_viewer, qtbot, trained, scene, tmp_path):
    """A completed MLUDA run writes predictions (unknown in magenta) for every active pick; the tiny
    one-epoch model calls most picks unknown at its calibrated threshold, so the threshold override
    is raised to the median unknown score to show both known classes and unknowns on the canvas."""
    from skimage.io import imsave

    from napari_cryo_openset._viewer import show_particles_across_slices
    from napari_cryo_openset.checkpoint import load_bundle

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 960)
    layer = _add_scene(viewer, scene)
    _, picks = scene
    rejected = (picks["curation"] == "rejected").to_numpy()
    viewer_state(viewer).publish_source(_bundle(trained), data=trained.data, origin="trained in the Model widget")
    adapt = AdaptWidget(viewer)
    viewer.window.add_dock_widget(adapt, name="Adapt & predict", area="right")
    adapt.device.setCurrentText("cpu")
    adapt.method.setCurrentText("MLUDA")
    adapt.iterations.setValue(8)
    assert adapt.image_combo.currentText() == "scene" and adapt.picks_combo.currentText() == "picks"
    worker = adapt.start_adaptation()
    assert worker is not None
    qtbot.waitUntil(lambda: adapt.adapted is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not adapt.runner.running, timeout=5_000)

    # the plot: loss per round, the target unknown fraction at the evaluation round
    assert [i for i, _ in adapt.loss_history["loss"]] == list(range(1, 9))
    assert len(adapt.rate_history) >= 1 and 0 <= adapt.rate_history[-1][1] <= 1
    # predictions for every active pick; the rejected one unpredicted; nothing deleted
    feats = layer.features
    names = feats["class_name"].to_numpy().astype(str)
    assert len(feats) == len(picks)
    assert (names[rejected] == "").all() and (names[~rejected] != "").all()
    assert set(names[~rejected]) <= set(CLASSES) and "unknown" in set(names[~rejected])
    assert (feats["is_unknown"].to_numpy() == (names == "unknown")).all()
    calibrated = adapt.calibrated_threshold
    assert calibrated == pytest.approx(adapt.adapted.openset["threshold"])
    assert f"{calibrated:.4g}" in adapt.threshold_label.text()
    assert adapt.threshold.value() == pytest.approx(calibrated, abs=1e-4) and adapt.threshold.isEnabled()
    assert "mluda:" in adapt.summary.text() and adapt.save_button.isEnabled()
    assert viewer_state(viewer).adapted.bundle is adapt.adapted  # for the Results widget
    assert sum(adapt.class_counts.values()) == int((~rejected).sum())
    assert adapt.counts_table.rowCount() == len(adapt.class_counts)

    # override: the median unknown score as threshold (no re-run) → both known and unknown
    scores = feats["unknown_score"].to_numpy(float)
    threshold = float(np.round(np.nanmedian(scores[~rejected]), 4)) + 5e-5
    adapt.set_threshold(threshold)
    feats = layer.features
    names = feats["class_name"].to_numpy().astype(str)
    active_names = names[~rejected]
    assert "unknown" in set(active_names) and len(set(active_names) - {"unknown"}) >= 1
    above = scores[~rejected] > threshold
    # MLUDA assigns the nearest class centre, so unknown ⇔ distance above the threshold
    np.testing.assert_array_equal(active_names == "unknown", above)
    assert (feats["is_unknown"].to_numpy() == (names == "unknown")).all()
    assert adapt.threshold_override == pytest.approx(threshold) and "overridden" in adapt.threshold_label.text()
    assert adapt.class_counts.get("unknown") == int((active_names == "unknown").sum())
    palette = class_colors(names, adapt.adapted.class_names)  # the model's class list, not the classes present
    expected = np.array([_rgb(palette[c]) / 255 for c in names])
    np.testing.assert_allclose(layer.border_color[:, :3], expected, atol=0.01)
    assert np.allclose(layer.border_color[names == "unknown", :3], _rgb(UNKNOWN_COLOR) / 255, atol=0.01)

    # what the user sees: magenta unknowns and known-class colours on the canvas
    show_particles_across_slices(viewer, 160.0)
    z = float(np.median(layer.data[~rejected, 0]))
    viewer.dims.set_point(0, z * VOXEL)
    viewer.reset_view()
    qtbot.wait(300)  # let the dock's scroll area settle its layout, then show the results
    adapt.scroll.ensureWidgetVisible(adapt.save_button)
    qtbot.wait(200)
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    counts = {cls: int((np.linalg.norm(canvas - _rgb(palette[cls]), axis=-1) < 40).sum()) for cls in set(active_names)}
    assert counts["unknown"] > 20, counts
    assert sum(v for k, v in counts.items() if k != "unknown") > 20, counts
    window = viewer.screenshot(canvas_only=False, flash=False)
    imsave(tmp_path / "adapt_widget.png", window, check_contrast=False)
    imsave("/tmp/adapt_widget.png", window, check_contrast=False)

    # saving keeps the threshold in use (the calibrated one recorded)
    saved = adapt.save_adapted(tmp_path / "adapted")
    assert saved == tmp_path / "adapted.pt"
    reloaded = load_bundle(saved)
    assert reloaded.openset["threshold"] == pytest.approx(threshold)
    assert reloaded.openset["calibrated_threshold"] == pytest.approx(calibrated)
    assert reloaded.provenance["adaptation"]["method"] == "mluda"

    # back to the calibrated threshold
    adapt.reset_threshold()
    assert adapt.threshold_override is None and "calibrated_threshold" not in adapt.adapted.openset
    assert adapt.adapted.openset["threshold"] == pytest.approx(calibrated)


# --------------------------------------------------------------------------------------------
# refine with my labels
# --------------------------------------------------------------------------------------------

LABELS = {1: "1bxn", 2: "2cg9", 3: "unknown", 4: "1qvr"}  # rows of the scene's picks (row 0 is rejected)


def _label(layer, labels):
    """Curated labels as Curate sets them (the label in ``curated_class``, the pick accepted)."""
    feats = layer.features.copy()
    if "curated_class" not in feats.columns:
        feats["curated_class"] = ""
    for row, name in labels.items():
        feats.loc[row, "curated_class"] = name
        feats.loc[row, "curation"] = "accepted"
    layer.features = feats


def _previous_predictions(layer):
    """"The previous run's" predictions in the layer (with the model's classes, as Adapt writes them)."""
    n = len(layer.data)
    previous = layer.features.copy()
    previous["class_name"] = np.resize(["1bxn", "2cg9", "unknown"], n)
    previous["confidence"] = np.linspace(0.2, 0.9, n)
    previous["unknown_score"] = np.linspace(0.0, 1.0, n)
    previous["is_unknown"] = previous["class_name"] == "unknown"
    write_predictions(layer, previous, np.arange(n), CLASSES)
    return layer.features.copy()


def _refine_widget(viewer, qtbot, trained, rounds=3, method="MLUDA"):
    viewer_state(viewer).publish_source(_bundle(trained), data=trained.data, origin="test")
    adapt = AdaptWidget(viewer)
    qtbot.addWidget(adapt)
    adapt.device.setCurrentText("cpu")
    adapt.method.setCurrentText(method)
    adapt.label_iterations.setValue(rounds)
    return adapt


def test_refine_button_needs_a_model_a_source_and_curated_labels(make_napari_viewer, qtbot, trained, scene,
                                                                 monkeypatch):
    import napari.utils.notifications as notifications

    from napari_cryo_openset._widgets.curate import CurateWidget

    warnings = []
    monkeypatch.setattr(notifications, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    bare = AdaptWidget(viewer)  # no model yet
    qtbot.addWidget(bare)
    assert not bare.refine_button.isEnabled() and "No model" in bare.refine_button.toolTip()

    _previous_predictions(layer)
    adapt = _refine_widget(viewer, qtbot, trained)
    assert adapt.adapt_button.isEnabled() and not adapt.refine_button.isEnabled()
    assert "No curated labels on 'picks'" in adapt.refine_button.toolTip()
    assert adapt.start_refinement() is None and "no curated labels" in str(warnings[-1])

    _label(layer, LABELS)
    assert adapt.refine_button.isEnabled()
    tip = adapt.refine_button.toolTip()
    assert "4 curated labels" in tip and "(3 known, 1 unknown)" in tip

    # labels set and undone in Curate: the button follows
    _label(layer, {row: "" for row in LABELS})
    assert not adapt.refine_button.isEnabled()
    curate = CurateWidget(viewer)
    qtbot.addWidget(curate)
    while layer.features.loc[curate.current_index, "curation"] == "rejected":
        curate.next()  # a rejected pick takes no label
    row = curate.current_index
    curate.relabel("1qvr")
    assert layer.features.loc[row, "curated_class"] == "1qvr", curate.info.text()
    assert adapt.refine_button.isEnabled() and "1 curated label " in adapt.refine_button.toolTip()
    curate.undo()  # in place in the features, then back to that pick
    assert not adapt.refine_button.isEnabled()


def test_refine_runs_in_the_background_and_writes_predictions_keeping_the_labels(
        make_napari_viewer, qtbot, trained, scene, tmp_path):
    from skimage.io import imsave

    from napari_cryo_openset.adapt.common import is_adapted

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 960)
    layer = _add_scene(viewer, scene)
    _previous_predictions(layer)
    _label(layer, LABELS)
    labels_before = layer.features["curated_class"].copy()
    source = _bundle(trained)
    viewer_state(viewer).publish_source(source, data=trained.data, origin="trained in the Model widget")
    adapt = AdaptWidget(viewer)
    viewer.window.add_dock_widget(adapt, name="Adapt & predict", area="right")
    adapt.device.setCurrentText("cpu")
    adapt.method.setCurrentText("MLUDA")
    adapt.label_iterations.setValue(3)
    worker = adapt.start_refinement()
    assert worker is not None
    assert not adapt.refine_button.isEnabled() and not adapt.adapt_button.isEnabled()  # busy
    assert "Refining MLUDA with 4 labels on picks" in adapt.runner.status.text()
    qtbot.waitUntil(lambda: adapt.adapted is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not adapt.runner.running, timeout=5_000)

    assert [i for i, _ in adapt.loss_history["loss"]] == [1, 2, 3]  # the refine rounds, drawn live
    refinement = adapt.adaptation
    assert adapt.adapted.provenance["adaptation"]["curated_labels"]["n"] == 4
    assert adapt.bundle is viewer_state(viewer).source.bundle and not is_adapted(adapt.bundle)  # from the source
    # predictions written for every active pick; the curated labels untouched
    feats = layer.features
    names = feats["class_name"].to_numpy().astype(str)
    active = (feats["curation"] != "rejected").to_numpy()
    assert (names[~active] == "").all() and set(names[active]) <= set(CLASSES)
    np.testing.assert_array_equal(names[active], refinement.picks["class_name"].astype(str).to_numpy()[active])
    assert list(feats["curated_class"]) == list(labels_before)
    assert sum(adapt.class_counts.values()) == int(active.sum())
    assert adapt.class_counts == refinement.counts_after
    assert adapt.counts_table.rowCount() == len(adapt.class_counts)
    text = adapt.refine_summary.text()
    assert "before → after:" in text and "4 curated labels (3 known, 1 unknown)" in text
    first = next(iter(refinement.counts_after))
    counts = f"{first} {refinement.counts_before.get(first, 0)} → {refinement.counts_after[first]}"
    assert counts.replace(" ", "\u00a0") in text
    assert adapt.refine_button.isEnabled() and adapt.save_button.isEnabled()
    assert viewer_state(viewer).adapted.bundle is adapt.adapted

    # what the user sees
    qtbot.wait(300)
    adapt.scroll.ensureWidgetVisible(adapt.refine_summary)
    qtbot.wait(200)
    window = viewer.screenshot(canvas_only=False, flash=False)
    imsave(tmp_path / "refine_dock.png", window, check_contrast=False)
    imsave("/tmp/refine_dock.png", window, check_contrast=False)

    # a plain Adapt afterwards clears the refinement's summary
    adapt.iterations.setValue(2)
    adapt.start_adaptation()
    qtbot.waitUntil(lambda: adapt.adaptation is not refinement and not adapt.runner.running, timeout=120_000)
    assert adapt.refine_summary.text() == "" and list(layer.features["curated_class"]) == list(labels_before)


def test_cancel_mid_refine_keeps_the_previous_predictions(make_napari_viewer, qtbot, trained, scene):
    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    _previous_predictions(layer)
    _label(layer, LABELS)
    before = layer.features.copy()
    colours = layer.border_color.copy()
    adapt = _refine_widget(viewer, qtbot, trained, rounds=100_000, method="3D-ADA")
    worker = adapt.start_refinement()
    assert worker is not None
    qtbot.waitUntil(lambda: len(adapt.loss_history.get("loss_d", [])) >= 2, timeout=60_000)  # refining
    adapt.cancel()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    qtbot.wait(300)
    assert "cancelled" in adapt.runner.status.text()
    assert adapt.adapted is None and adapt.adaptation is None and adapt.refine_summary.text() == ""
    assert adapt.refine_button.isEnabled() and adapt.adapt_button.isEnabled()
    for column in ("class_name", "confidence", "unknown_score", "is_unknown", "curation", "curated_class"):
        assert list(layer.features[column]) == list(before[column]), column
    np.testing.assert_allclose(layer.border_color, colours)


def test_a_label_the_model_lacks_is_one_clear_message_and_changes_nothing(make_napari_viewer, qtbot, trained, scene,
                                                                          monkeypatch):
    import napari.utils.notifications as notifications

    warnings = []
    monkeypatch.setattr(notifications, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    _previous_predictions(layer)
    _label(layer, {**LABELS, 5: "5mrc"})
    before = layer.features.copy()
    adapt = _refine_widget(viewer, qtbot, trained)
    assert adapt.refine_button.isEnabled()  # labels there; which ones fit is said at the click
    assert adapt.start_refinement() is None
    assert len(warnings) == 1
    message = str(warnings[0])
    assert message.startswith("Adapt: 'picks': curated label(s) '5mrc' are not classes of the model"), message
    assert "1bxn, 1qvr, 2cg9, empty" in message and "'unknown'" in message
    assert not adapt.runner.running and adapt.adapted is None and not adapt.canvas.isVisible()
    pd.testing.assert_frame_equal(layer.features, before)
