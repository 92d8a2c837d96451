"""Results widget: model choice, embedding in the background, Cancel, class visibility, the linked
t-SNE map, averages, export, and what the dock looks like.

A tiny model (3 built-in templates, one epoch; once per module) and a 48×96×96 simulated scene of
the same templates and decoys. The scene's ground-truth classes stand in for predictions
(decoys = ``unknown``); the first pick is rejected.
"""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
from conftest import rgb as _rgb

from napari_cryo_openset._widgets.results import ResultsWidget
from napari_cryo_openset._widgets.state import viewer_state
from napari_cryo_openset.embed import average_file_name
from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.layers import group_order, pick_groups, picks_layer, tomogram_layer
from napari_cryo_openset.palette import UNKNOWN_COLOR
from napari_cryo_openset.predictions import write_predictions

pytestmark = pytest.mark.gui

VOXEL = 10.0
NAMES = ("1bxn", "1qvr", "2cg9")
STAR_CONTRACT = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnAutopickFigureOfMerit", "cosClassName",
                 "cosConfidence", "cosUnknownScore", "cosCuration", "cosTsneX", "cosTsneY", "cosCluster")


@pytest.fixture(scope="module")
def bundle(templates):
    """A one-epoch model on a tiny simulated set (its encoder supplies the features)."""
    from napari_cryo_openset.checkpoint import bundle_from_training
    from napari_cryo_openset.progress import run_to_completion
    from napari_cryo_openset.simulate import (
        DatasetParams,
        ImagingCondition,
        generate_subtomograms,
    )
    from napari_cryo_openset.train import TrainParams, train_source

    params = DatasetParams(box=24, per_class=10, decoys=10, empty=5,
                           condition=ImagingCondition(voxel_size=VOXEL, snr=1.0), seed=0)
    data = run_to_completion(generate_subtomograms(templates, params))
    trained = run_to_completion(train_source(data, TrainParams(epochs=1, batch_size=8, device="cpu", threads=2,
                                                               seed=1)))
    return bundle_from_training(trained)


@pytest.fixture(scope="module")
def scene(templates):
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

    volume, truth = make_scene(SceneParams(shape=(48, 96, 96), condition=ImagingCondition(voxel_size=VOXEL, snr=1.0),
                                           templates=tuple(templates), n_particles=24, unknown_fraction=0.3, seed=1))
    return volume, truth.reset_index(drop=True)


def _add_scene(viewer, scene):
    """The tomogram and its picks with ground-truth classes as predictions (pick 0 rejected, no class)."""
    volume, truth = scene
    image, kwargs, _ = tomogram_layer(Tomogram(volume, (VOXEL,) * 3), name="scene")
    viewer.add_image(image, **kwargs)
    picks = truth.drop(columns=["class_name"])
    picks.loc[0, "curation"] = "rejected"
    data, kwargs, _ = picks_layer(picks, voxel_size=VOXEL, name="picks", diameter=160.0)
    layer = viewer.add_points(data, **kwargs)
    names = truth["class_name"].astype(str).to_numpy().copy()
    names[0] = ""
    predicted = pd.DataFrame({"class_name": names, "confidence": np.where(names == "", np.nan, 0.9),
                              "unknown_score": (names == "unknown").astype(float), "is_unknown": names == "unknown"})
    write_predictions(layer, predicted, np.arange(len(names)))
    layer.metadata["prediction"] = {"polarity": "dark", "model": "test"}
    return layer


def _widget(viewer, qtbot, bundle, dock=False) -> ResultsWidget:
    viewer_state(viewer).publish_adapted(bundle, origin="adapted in a test")
    widget = ResultsWidget(viewer)
    if dock:
        viewer.window.add_dock_widget(widget, name="Results", area="right")
    else:
        qtbot.addWidget(widget)
    widget.settings.iterations.setValue(100)
    widget.settings.min_cluster.setValue(2)
    return widget


def _embed(widget, qtbot):
    worker = widget.start_embedding()
    assert worker is not None and not widget.settings.embed_button.isEnabled()
    qtbot.waitUntil(lambda: widget.result is not None, timeout=60_000)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=5_000)
    return widget.result


def _ringed(widget) -> np.ndarray:
    """The map positions ringed as selected."""
    x, y = widget.canvas.selection_ring.get_data()
    return np.column_stack([np.asarray(x, float), np.asarray(y, float)])


def _click(widget, x, y, button=1):
    """A mouse press at display pixel (x, y) of the map, through matplotlib's event handling."""
    from matplotlib.backend_bases import MouseEvent

    event = MouseEvent("button_press_event", widget.canvas, x, y, button=button)
    widget.canvas.callbacks.process(event.name, event)


def _set_map(layer, seed=0):
    """A hand-made map: tsne_x/y for the active picks (as if embedded), clusters left out."""
    rng = np.random.default_rng(seed)
    features = layer.features.copy()
    xy = rng.uniform(-30, 30, size=(len(features), 2))
    xy[0] = np.nan  # the rejected pick has no place on the map
    features["tsne_x"], features["tsne_y"] = xy[:, 0], xy[:, 1]
    features["cluster"] = -1
    layer.features = features
    return xy


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------


def test_uses_the_adapted_model_else_the_source_model_else_a_loaded_one(make_napari_viewer, qtbot, bundle,
                                                                         tmp_path, monkeypatch):
    import copy

    import napari.utils.notifications as notifications

    from napari_cryo_openset.checkpoint import save_bundle

    errors = []
    monkeypatch.setattr(notifications, "show_error", errors.append)
    viewer = make_napari_viewer()
    state = viewer_state(viewer)
    widget = ResultsWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.bundle is None and not widget.settings.embed_button.isEnabled() and "No model" in widget.model.label.text()

    source, adapted = copy.copy(bundle), copy.copy(bundle)
    state.publish_source(source, origin="trained in the Model widget")
    assert widget.bundle is source and "trained in the Model widget" in widget.model.label.text()
    assert widget.settings.embed_button.isEnabled()
    state.publish_adapted(adapted, origin="adapted to 'picks' in Adapt & predict")
    assert widget.bundle is adapted and "Adapt & predict" in widget.model.label.text()
    assert state.source.bundle is source  # the source model is kept for the Adapt widget
    late = ResultsWidget(viewer)  # opened later: the adapted model first
    qtbot.addWidget(late)
    assert late.bundle is adapted

    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    assert widget.model.load(bad) is None and widget.bundle is adapted and len(errors) == 1
    path = save_bundle(bundle, tmp_path / "model.pt")
    loaded = widget.model.load(path)
    assert widget.bundle is loaded and "loaded from model.pt" in widget.model.label.text()


def test_an_adapted_model_leaves_the_adapt_widgets_source_model_alone(make_napari_viewer, qtbot, bundle):
    """publish_adapted has its own signal: the Adapt widget keeps the source model it loaded."""
    import copy

    from napari_cryo_openset._widgets.adapt import AdaptWidget

    viewer = make_napari_viewer()
    adapt = AdaptWidget(viewer)
    qtbot.addWidget(adapt)
    adapt.use_model(bundle, "loaded from model.pt")  # as Load model… does (nothing published)
    state = viewer_state(viewer)
    adapted = copy.copy(bundle)
    state.publish_adapted(adapted, origin="adapted to 'picks' in Adapt & predict")
    assert adapt.bundle is bundle and state.source is None
    assert state.adapted.bundle is adapted and "Adapt & predict" in state.adapted.origin


# --------------------------------------------------------------------------------------------
# embedding
# --------------------------------------------------------------------------------------------


def test_embedding_fills_the_features_table_and_averages(make_napari_viewer, qtbot, bundle, scene, tmp_path):
    from napari_cryo_openset.io import read_tomogram

    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    before = layer.features.copy()
    colours = layer.border_color.copy()
    shown = layer.shown.copy()
    widget = _widget(viewer, qtbot, bundle)
    assert widget.settings.image_combo.currentText() == "scene" and widget.settings.picks_combo.currentText() == "picks"
    # the polarity the predictions were made with, not a guess
    assert widget.settings.polarity.currentText() == "dark" and not widget.settings.polarity.isEnabled()
    # before embedding the table already counts the classes
    names = before["class_name"].astype(str).to_numpy()
    assert widget.table.rowCount() == len(set(names[1:]))
    assert "Embed & cluster" in widget.summary.text()
    assert not widget.canvas.isVisible() and widget.save_averages(tmp_path) == []

    result = _embed(widget, qtbot)
    feats = layer.features
    n = len(before)
    assert len(feats) == n and len(layer.data) == n  # nothing deleted or reordered
    for column in ("curation", "class_name", "confidence", "is_unknown", "score"):
        pd.testing.assert_series_equal(feats[column], before[column])
    # known classes keep their colours; each cluster of unknowns gets its own shade of the unknown family
    clustered = feats["cluster"].to_numpy() >= 0
    np.testing.assert_allclose(layer.border_color[~clustered], colours[~clustered])
    from napari_cryo_openset.palette import cluster_color

    for k in np.unique(feats["cluster"].to_numpy()[clustered]):
        h = cluster_color(int(k)).lstrip("#")
        np.testing.assert_allclose(layer.border_color[feats["cluster"].to_numpy() == k, :3],
                                   np.tile([int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)],
                                           (int((feats["cluster"] == k).sum()), 1)), atol=0.01)
    np.testing.assert_array_equal(layer.shown, shown)
    assert np.isnan(feats.loc[0, "tsne_x"]) and feats.loc[0, "cluster"] == -1  # rejected: not mapped
    assert feats.loc[1:, ["tsne_x", "tsne_y"]].notna().all().all()
    assert (feats.loc[names != "unknown", "cluster"] == -1).all()
    assert feats["cluster"].dtype == np.int64 and layer.metadata["embedding"]["method"] == "t-SNE"

    # the table: known classes, unknown clusters, unclustered unknowns; counts of active picks
    from qtpy.QtCore import Qt

    groups = pick_groups(feats)
    order = group_order(groups[1:])
    assert [widget.table.item(i, 0).data(Qt.ItemDataRole.UserRole) for i in range(widget.table.rowCount())] == order
    assert order[:3] == sorted(NAMES)
    for i, group in enumerate(order):
        assert int(widget.table.item(i, 1).text()) == int(np.sum(groups[1:] == group))
    clusters = sorted(set(int(c) for c in feats["cluster"] if c >= 0))
    assert [g for g in order if g.startswith("unknown U")] == [f"unknown U{c}" for c in clusters]
    # every group has an average (thumbnail in the table) at the model's voxel size
    assert set(result.averages) == set(order) and result.voxel_size == VOXEL
    assert all(not widget.table.item(i, 2).data(Qt.ItemDataRole.DecorationRole).isNull() for i in range(len(order)))  # DecorationRole

    # the selected row's average and "Add average as layer"
    widget.select_group(order[-1])
    assert widget.average_box.add_button.isEnabled() and "unaligned average of" in widget.average_box.label.text()
    assert not widget.average_box.views[0].pixmap().isNull()
    added = widget.add_average_layer()
    assert added.name == f"average {order[-1]}" and tuple(added.scale) == (VOXEL,) * 3
    np.testing.assert_allclose(added.data, result.averages[order[-1]][0])
    # it sits on one of its group's picks, at its own voxel size: its centre voxel is that pick
    members = np.flatnonzero(widget.view.members(order[-1]))
    centre = np.asarray(added.data_to_world([(s - 1) / 2 for s in added.data.shape]))
    picks_world = np.array([layer.data_to_world(layer.data[i]) for i in members])
    assert np.min(np.linalg.norm(picks_world - centre, axis=1)) < 1e-6
    assert widget.settings.image_combo.currentText() == "scene"  # an average is not a tomogram to work on
    assert [widget.settings.image_combo.itemText(i) for i in range(widget.settings.image_combo.count())] == ["scene"]

    # every average as MRC, named safely, with the voxel size
    written = widget.save_averages(tmp_path)
    assert sorted(p.name for p in written) == sorted(average_file_name(g) for g in order)
    if clusters:
        assert (tmp_path / "average_unknown_U0.mrc").is_file()
    for path, group in zip(written, group_order(list(result.averages))):
        tomo = read_tomogram(path)
        assert tomo.voxel_size == pytest.approx((VOXEL,) * 3)
        np.testing.assert_allclose(np.asarray(tomo.data), result.averages[group][0], rtol=1e-6, atol=1e-6)


def test_cancel_leaves_the_layer_untouched(make_napari_viewer, qtbot, bundle, scene):
    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    before = layer.features.copy()
    widget = _widget(viewer, qtbot, bundle)
    widget.settings.iterations.setValue(100_000)
    worker = widget.start_embedding()
    assert worker is not None
    qtbot.waitUntil(lambda: "t-SNE" in widget.runner.status.text() and widget.runner.progress_bar.value() > 0,
                    timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    qtbot.wait(200)
    assert "cancelled" in widget.runner.status.text() and widget.settings.embed_button.isEnabled()
    assert widget.result is None and "embedding" not in layer.metadata
    pd.testing.assert_frame_equal(layer.features, before)


def test_refuses_picks_without_predictions_with_one_message(make_napari_viewer, qtbot, bundle, scene, monkeypatch):
    import napari.utils.notifications as notifications

    warnings = []
    monkeypatch.setattr(notifications, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    volume, truth = scene
    viewer.add_image(volume, scale=(VOXEL,) * 3, name="scene")
    data, kwargs, _ = picks_layer(truth.drop(columns=["class_name"]), voxel_size=VOXEL, name="raw picks")
    viewer.add_points(data, **kwargs)
    widget = _widget(viewer, qtbot, bundle)
    assert "no predictions yet" in widget.summary.text()
    assert widget.start_embedding() is None and len(warnings) == 1 and "no predictions" in warnings[0]
    assert widget.save_picks("x.star", only_selected=True) is None and len(warnings) == 2  # no row selected


# --------------------------------------------------------------------------------------------
# visibility and the linked map
# --------------------------------------------------------------------------------------------


def test_hiding_a_class_hides_exactly_its_picks_and_rejected_stay_hidden(make_napari_viewer, qtbot, bundle, scene):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    _set_map(layer)
    widget = _widget(viewer, qtbot, bundle)
    names = layer.features["class_name"].astype(str).to_numpy()
    active = np.ones(len(names), bool)
    active[0] = False
    assert widget.canvas.isVisibleTo(widget) and len(widget.canvas.map_rows) == int(active.sum())

    row = widget.table.groups.index("1bxn")
    widget.table.item(row, 0).setCheckState(Qt.CheckState.Unchecked)  # the user unticks the row
    np.testing.assert_array_equal(layer.shown, active & (names != "1bxn"))
    assert len(layer.data) == len(names)  # hidden, not deleted
    assert not set(widget.canvas.map_rows) & set(np.flatnonzero(names == "1bxn"))  # greyed in the map, not clickable
    assert widget.table.item(row, 0).checkState() == Qt.CheckState.Unchecked

    widget.set_group_visible("unknown", False)
    np.testing.assert_array_equal(layer.shown, active & ~np.isin(names, ["1bxn", "unknown"]))
    # the Pick widget's live threshold recomputes `shown`: hidden classes stay hidden
    from napari_cryo_openset.layers import HIDDEN_GROUPS_KEY, visible_picks_mask

    again = visible_picks_mask(layer.features, None, layer.metadata.get(HIDDEN_GROUPS_KEY))
    np.testing.assert_array_equal(again, active & ~np.isin(names, ["1bxn", "unknown"]))
    widget.show_all()
    np.testing.assert_array_equal(layer.shown, active)  # the rejected pick stays hidden
    assert not layer.shown[0] and widget.hidden_groups == set()


def test_clicking_the_map_selects_and_centres_the_pick_and_layer_selection_is_ringed(
        make_napari_viewer, qtbot, bundle, scene):
    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    xy = _set_map(layer)
    widget = _widget(viewer, qtbot, bundle)
    widget.canvas.draw()

    row = 7
    x, y = widget.canvas.ax.transData.transform(xy[row])
    _click(widget, x, y)
    assert set(layer.selected_data) == {row} and viewer.layers.selection.active is layer
    world = layer.data[row] * VOXEL
    assert viewer.dims.point[0] == pytest.approx(world[0], abs=VOXEL / 2)
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], world[1:], atol=1e-6)
    np.testing.assert_allclose(_ringed(widget), xy[[row]])

    # a click far from every point changes nothing; the rejected pick is not on the map
    _click(widget, -1000.0, -1000.0)
    assert set(layer.selected_data) == {row}
    widget.select_pick(3)  # the public way
    assert set(layer.selected_data) == {3}

    # selecting points in the layer rings them in the map
    layer.selected_data = {2, 5}
    np.testing.assert_allclose(sorted(map(tuple, _ringed(widget))), sorted(map(tuple, xy[[2, 5]])))


def test_the_map_ring_follows_the_pick_curate_is_on(make_napari_viewer, qtbot, bundle, scene):
    """Curate's review queue moves the current pick (it selects it); the t-SNE map rings that pick."""
    from napari_cryo_openset._widgets.curate import CurateWidget

    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    xy = _set_map(layer)
    widget = _widget(viewer, qtbot, bundle)
    curate = CurateWidget(viewer)
    qtbot.addWidget(curate)
    curate.order_combo.setCurrentText("review queue (most useful first)")  # stays on the pick it was on …
    for _ in range(len(layer.data)):
        curate.previous()  # … so back to the head of the queue
    seen = []
    for _ in range(3):
        row = curate.current_index
        seen.append(row)
        assert set(layer.selected_data) == {row}
        np.testing.assert_allclose(_ringed(widget), xy[[row]])
        curate.decide("accepted")  # … and on to the next pick of the queue
    assert len(set(seen)) == 3
    curate.undo()  # back to the last pick decided: the ring goes with it
    np.testing.assert_allclose(_ringed(widget), xy[[seen[-1]]])


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def test_export_writes_every_column_and_optionally_only_the_selected_row(make_napari_viewer, qtbot, bundle, scene,
                                                                         tmp_path, monkeypatch):
    import napari.utils.notifications as notifications

    from napari_cryo_openset.io import read_picks

    errors = []
    monkeypatch.setattr(notifications, "show_error", errors.append)
    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    xy = _set_map(layer)
    widget = _widget(viewer, qtbot, bundle)
    names = layer.features["class_name"].astype(str).to_numpy()

    out = widget.save_picks(tmp_path / "all")  # no suffix: STAR
    assert out == tmp_path / "all.star"
    text = out.read_text()
    header = [line.split()[0].lstrip("_") for line in text.splitlines() if line.startswith("_")]
    assert set(STAR_CONTRACT) <= set(header)
    back = read_picks(out)
    assert len(back) == len(names) and back.loc[0, "curation"] == "rejected"  # rejected picks kept, marked
    np.testing.assert_allclose(back[["z", "y", "x"]].to_numpy(), layer.data)
    np.testing.assert_allclose(back.loc[1:, "tsne_x"], xy[1:, 0])
    assert list(back["class_name"]) == list(names)

    widget.select_group("1bxn")
    widget.export_box.only_selected.setChecked(True)
    out = widget.save_picks(tmp_path / "1bxn.csv")
    back = read_picks(out)
    assert len(back) == int(np.sum(names == "1bxn")) and set(back["class_name"]) == {"1bxn"}
    assert "cosConfidence" in out.read_text().splitlines()[0]

    assert widget.save_picks(tmp_path / "missing" / "x.star", only_selected=False) is None
    assert len(errors) == 1 and "does not exist" in str(errors[0])
    assert not (tmp_path / "missing").exists()


# --------------------------------------------------------------------------------------------
# what the user sees
# --------------------------------------------------------------------------------------------


def _unknown_family(pixels) -> int:
    """Pixels in the unknown colour or a cluster's shade of it."""
    from napari_cryo_openset.palette import CLUSTER_COLORS

    return sum(int((np.linalg.norm(pixels - _rgb(c), axis=-1) < 40).sum()) for c in (UNKNOWN_COLOR, *CLUSTER_COLORS))


def test_screenshot_of_the_dock_shows_magenta_unknowns_in_the_map(make_napari_viewer, qtbot, bundle, scene, tmp_path):
    from qtpy.QtCore import QPoint
    from skimage.io import imsave

    from napari_cryo_openset._viewer import show_particles_across_slices

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 960)
    layer = _add_scene(viewer, scene)
    widget = _widget(viewer, qtbot, bundle, dock=True)
    _embed(widget, qtbot)
    show_particles_across_slices(viewer, 160.0)
    viewer.dims.set_point(0, float(np.median(layer.data[:, 0])) * VOXEL)
    viewer.reset_view()
    names = layer.features["class_name"].astype(str).to_numpy()
    assert "unknown" in set(names)
    widget.select_group(widget.table.groups[-1])
    qtbot.wait(300)
    widget.scroll.ensureWidgetVisible(widget.canvas)
    qtbot.wait(300)

    plot = widget.canvas.grab().toImage()
    arr = np.array([[plot.pixelColor(x, y).getRgb()[:3] for x in range(0, plot.width(), 2)]
                    for y in range(0, plot.height(), 2)], dtype=float)
    assert _unknown_family(arr) > 5

    window = viewer.screenshot(canvas_only=False, flash=False)
    imsave(tmp_path / "results_widget.png", window, check_contrast=False)
    imsave("/tmp/results_widget.png", window, check_contrast=False)
    # the map's region of the window screenshot holds the magenta unknowns too
    top = widget.canvas.window()
    ratio = window.shape[1] / top.width()
    origin = widget.canvas.mapTo(top, QPoint(0, 0))
    x0, y0 = int(origin.x() * ratio), int(origin.y() * ratio)
    x1, y1 = x0 + int(widget.canvas.width() * ratio), y0 + int(widget.canvas.height() * ratio)
    assert 0 <= x0 < x1 <= window.shape[1] and 0 <= y0 < y1 <= window.shape[0]
    region = window[y0:y1, x0:x1, :3].astype(float)
    assert _unknown_family(region) > 5

    # the lower half of the dock: the selected row's average and the export buttons
    widget.scroll.ensureWidgetVisible(widget.export_box.save_averages_button)
    qtbot.wait(200)
    assert not widget.average_box.views[0].pixmap().isNull()
    imsave("/tmp/results_widget_bottom.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_show_run_result_adds_the_predictions_and_docks_the_map(make_napari_viewer, qtbot, bundle, scene):
    """What the demo does with a finished run: predictions layer, both models published, the map shown."""
    from napari_cryo_openset._widgets import show_run_result
    from napari_cryo_openset.layers import PREDICTION_KEY

    _, truth = scene
    n = len(truth)
    rng = np.random.default_rng(0)
    predictions = truth.assign(confidence=0.9, unknown_score=0.1, is_unknown=truth["class_name"] == "unknown",
                               tsne_x=rng.normal(size=n), tsne_y=rng.normal(size=n), cluster=-1)
    embedding = types.SimpleNamespace(method="t-SNE", perplexity=5.0, cluster_sizes={}, seconds=1.0,
                                      summary=lambda: "a map")
    embedded = types.SimpleNamespace(picks=predictions, embedding=embedding, averages={}, voxel_size=VOXEL,
                                     polarity="dark", summary=lambda: "a map")
    class _Set:  # stands in for the run's SimulatedSet (the Adapt step describes it)
        box, voxel_size = 24, VOXEL

        def __len__(self):
            return 10

        def counts(self):
            return {"1bxn": 10}

    source, adapted = _Set(), bundle
    result = types.SimpleNamespace(predictions=predictions, adaptation=types.SimpleNamespace(polarity="dark"),
                                   params=types.SimpleNamespace(method="mluda"), model=bundle,
                                   trained=types.SimpleNamespace(data=source), adapted=adapted, embedded=embedded)
    viewer = make_napari_viewer()
    widget = show_run_result(viewer, result, VOXEL)
    layer = viewer.layers["predictions"]
    assert viewer.layers.selection.active is layer and tuple(layer.scale) == (VOXEL,) * 3
    assert layer.metadata[PREDICTION_KEY] == {"polarity": "dark", "method": "mluda"}
    state = viewer_state(viewer)
    assert state.source.bundle is bundle and state.source.data is source and state.adapted.bundle is adapted
    assert widget.bundle is adapted and widget.result is embedded
    assert widget.canvas.isVisibleTo(widget) and len(widget.canvas.map_rows) == n
    widget.scroll_to_map()
