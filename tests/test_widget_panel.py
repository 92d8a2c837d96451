"""The workflow panel: one dock with Pick · Curate · Model · Adapt · Results, what each step needs,
the legend of the picks' colours, and what it looks like at 1280×800 and 1920×1080."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import rgb as _rgb

from napari_cryo_openset._widgets.panel import STEPS, dock_panel, open_step, panel_for
from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.layers import picks_layer, tomogram_layer
from napari_cryo_openset.palette import CLUSTER_COLORS, UNKNOWN_COLOR, class_colors
from napari_cryo_openset.predictions import color_picks, write_predictions
from napari_cryo_openset.workflow import NO_MODEL, NO_PICKS, NO_TOMOGRAM

pytestmark = pytest.mark.gui

VOXEL = 10.0
MODEL = ["1bxn", "1qvr", "2cg9", "empty", "unknown"]


@pytest.fixture(scope="module")
def scene(templates):
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene

    volume, truth = make_scene(SceneParams(shape=(48, 96, 96), condition=ImagingCondition(voxel_size=VOXEL, snr=1.0),
                                           templates=tuple(templates), n_particles=24, unknown_fraction=0.3, seed=1))
    return volume, truth.reset_index(drop=True)


def _add_scene(viewer, scene, predicted=True):
    volume, truth = scene
    image, kwargs, _ = tomogram_layer(Tomogram(volume, (VOXEL,) * 3), name="scene")
    viewer.add_image(image, **kwargs)
    data, kwargs, _ = picks_layer(truth.drop(columns=["class_name"]), voxel_size=VOXEL, name="picks", diameter=160.0)
    layer = viewer.add_points(data, **kwargs)
    if predicted:
        names = truth["class_name"].astype(str).to_numpy()
        write_predictions(layer, pd.DataFrame({"class_name": names, "confidence": 0.9,
                                               "unknown_score": (names == "unknown").astype(float),
                                               "is_unknown": names == "unknown"}), np.arange(len(names)), MODEL)
    return layer


def _bundle():
    import torch

    from napari_cryo_openset.checkpoint import ModelBundle
    from napari_cryo_openset.models import NetworkParams, build_model

    torch.manual_seed(0)
    model = build_model(NetworkParams(box=16, num_classes=len(MODEL))).eval()
    return ModelBundle(model=model, class_names=list(MODEL), box_size=16, voxel_size=VOXEL)


# the control a user must reach on each step
KEY_CONTROLS = {"Pick": lambda p: p.pick.pick_button, "Curate": lambda p: p.curate.accept_button,
                "Model": lambda p: p.model.train_button, "Adapt": lambda p: p.adapt.adapt_button,
                "Results": lambda p: p.results.settings.embed_button}


def test_menu_items_open_the_one_panel_at_their_step(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    panel = open_step(viewer, "Model")
    viewer.window.add_dock_widget(panel, name="Model")
    assert panel.step == "Model" and panel_for(viewer) is panel
    again = open_step(viewer, "Curate")  # another menu item: the same panel, moved to its dock
    assert again is panel and panel.step == "Curate"
    viewer.window.add_dock_widget(again, name="Curate picks")
    docks = dict(viewer.window.dock_widgets)
    assert "Model" not in docks and docks["Curate picks"] is panel  # one dock, not two
    with pytest.raises(ValueError, match="Pick, Curate"):
        panel.set_step("Nope")


def test_each_step_says_what_it_is_missing(make_napari_viewer, qtbot, scene):
    from napari_cryo_openset._widgets.state import viewer_state

    viewer = make_napari_viewer()
    panel = panel_for(viewer)
    qtbot.addWidget(panel)
    assert NO_TOMOGRAM in panel.needs_labels["Pick"].text()
    assert NO_PICKS in panel.needs_labels["Curate"].text()
    assert NO_MODEL in panel.needs_labels["Adapt"].text()
    _add_scene(viewer, scene, predicted=False)
    panel.update_needs()
    assert panel.needs_labels["Pick"].text() == "" and panel.needs_labels["Curate"].text() == ""
    assert "No predictions yet" in panel.needs_labels["Results"].text()
    viewer_state(viewer).publish_source(_bundle(), origin="a test")
    assert NO_MODEL not in panel.needs_labels["Adapt"].text()


def test_legend_follows_classes_clusters_and_hidden_groups(make_napari_viewer, qtbot, scene):
    from napari_cryo_openset._widgets.results.groups import hide_groups

    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    panel = panel_for(viewer)
    qtbot.addWidget(panel)
    legend = panel.legend
    palette = class_colors([], MODEL)
    entries = {label: (color, count) for label, color, count, _ in legend.entries}
    names = layer.features["class_name"].astype(str)
    for name in set(names) - {"unknown"}:
        assert entries[name] == (palette[name], int((names == name).sum()))
    assert entries["unknown"][0] == UNKNOWN_COLOR
    # clusters: each its own shade
    feats = layer.features.copy()
    unknown = np.flatnonzero(names.to_numpy() == "unknown")
    feats["cluster"] = -1
    feats.loc[unknown[: len(unknown) // 2], "cluster"] = 0
    feats.loc[unknown[len(unknown) // 2:], "cluster"] = 1
    layer.features = feats
    color_picks(layer)
    entries = {label: color for label, color, _, _ in legend.entries}
    assert entries["unknown U0"] == CLUSTER_COLORS[0] and entries["unknown U1"] == CLUSTER_COLORS[1]
    hide_groups(layer, ["1bxn"])
    hidden = {label: (count, h) for label, _, count, h in legend.entries}
    assert hidden["1bxn"] == (0, True) and "<s>1bxn" in legend.text()


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_every_step_is_visible_in_the_window(make_napari_viewer, qtbot, scene, size):
    """Screenshot of every step at the window size: the step's key control lies inside the panel's
    visible area (not clipped, not squeezed), and the legend's colours are on screen."""
    from qtpy.QtCore import QPoint
    from skimage.io import imsave

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*size)
    layer = _add_scene(viewer, scene)
    panel = dock_panel(viewer, "Pick")
    world = np.asarray(layer.data_to_world(layer.data[3]))
    viewer.dims.set_point(0, world[0])
    assert panel.show_hover(tuple(world), None, [1, 2]).startswith("pick #3")
    qtbot.wait(200)
    w, h = size
    for step in STEPS:
        panel.set_step(step)
        qtbot.wait(150)
        control = KEY_CONTROLS[step](panel)
        page = panel.page(step)
        assert control.isVisible(), step
        # inside the page, horizontally whole; vertically inside after scrolling to it at most
        top_left = control.mapTo(page, QPoint(0, 0))
        assert top_left.x() >= 0 and top_left.x() + control.width() <= page.width(), (step, top_left, page.width())
        if not 0 <= top_left.y() <= page.height() - control.height():
            scroll = getattr(panel.steps[step], "scroll", None) or page.findChild(type(panel.pick.parentWidget().parentWidget()))
            scroll.ensureWidgetVisible(control)
            qtbot.wait(100)
            top_left = control.mapTo(page, QPoint(0, 0))
        assert 0 <= top_left.y() <= page.height() - control.height(), (step, top_left.y(), page.height())
        assert control.height() >= 15 and control.width() >= 60
        shot = viewer.screenshot(canvas_only=False, flash=False)
        imsave(f"/tmp/panel_{step.lower()}_{w}x{h}.png", shot, check_contrast=False)
    # the legend's unknown swatch is on screen
    grab = panel.legend.grab().toImage()
    pixels = np.array([[grab.pixelColor(x, y).getRgb()[:3] for x in range(grab.width())]
                       for y in range(grab.height())], dtype=float)
    assert int((np.linalg.norm(pixels - _rgb(UNKNOWN_COLOR), axis=-1) < 30).sum()) > 10


def test_hovering_a_pick_shows_its_class_confidence_and_unknown_score(make_napari_viewer, qtbot, scene):
    import types

    viewer = make_napari_viewer()
    layer = _add_scene(viewer, scene)
    panel = panel_for(viewer)
    qtbot.addWidget(panel)
    names = layer.features["class_name"].astype(str).to_numpy()
    i = int(np.flatnonzero(names == "unknown")[0])
    world = np.asarray(layer.data_to_world(layer.data[i]))
    viewer.dims.set_point(0, world[0])
    event = types.SimpleNamespace(position=tuple(world), view_direction=None, dims_displayed=[1, 2])
    from napari_cryo_openset._widgets.panel import _on_mouse_move

    assert _on_mouse_move in viewer.mouse_move_callbacks
    _on_mouse_move(viewer, event)
    text = panel.hover.text()
    assert f"pick #{i}" in text and "unknown" in text and "confidence 0.9" in text and "unknown score 1" in text
    assert "Ø 160 Å" in text and "unreviewed" in text
    # far from every pick: nothing
    assert panel.show_hover(tuple(world + np.array([0.0, 1e5, 1e5])), None, [1, 2]) == ""
    assert panel.hover.text().startswith("Hover a pick")


def test_warnings_for_a_near_chance_model_a_mostly_empty_result_and_a_tiny_diameter(make_napari_viewer, qtbot,
                                                                                     scene):
    from skimage.io import imsave

    from napari_cryo_openset._widgets.state import viewer_state

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    layer = _add_scene(viewer, scene, predicted=False)
    panel = dock_panel(viewer, "Model")
    bundle = _bundle()
    bundle.provenance["training"] = {"val_accuracy": 0.17}
    viewer_state(viewer).publish_source(bundle, origin="a test")
    # 5 classes: chance 0.2, 0.17 ≤ 1.5 × 0.2
    assert "near chance" in panel.warning_labels["Model"].text()
    assert "near chance" in panel.warning_labels["Adapt"].text()
    n = len(layer.data)
    names = np.array(["empty"] * (n - 5) + ["1bxn"] * 5, dtype=object)
    write_predictions(layer, pd.DataFrame({"class_name": names, "confidence": 0.6, "unknown_score": 0.1,
                                           "is_unknown": False}), np.arange(n), MODEL)
    viewer.layers.selection.active = layer
    text = panel.warning_labels["Model"].text()
    assert "called empty" in text and "Adapt" in text, text
    assert panel.warning_labels["Model"].isVisibleTo(panel)
    qtbot.wait(100)
    imsave("/tmp/panel_warnings_1280x800.png", viewer.screenshot(canvas_only=False, flash=False),
           check_contrast=False)
    # the Pick step: 100 Å at 10 Å is fine, 30 Å is 3 voxels
    assert panel.warning_labels["Pick"].text() == "" or "voxels across" not in panel.warning_labels["Pick"].text()
    panel.pick.diameter.setValue(30.0)
    assert "3.0 voxels across" in panel.warning_labels["Pick"].text()
    panel.pick.diameter.setValue(120.0)
    assert not panel.warning_labels["Pick"].text()


def test_3d_renders_dark_protein_as_a_minimum_projection_and_says_so(make_napari_viewer, qtbot, scene):
    from skimage.io import imsave

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    layer = _add_scene(viewer, scene)
    layer.metadata["prediction"] = {"polarity": "dark"}
    layer.metadata["source_image"] = "scene"
    panel = dock_panel(viewer, "Results")
    viewer.dims.ndisplay = 3
    qtbot.wait(200)
    assert viewer.layers["scene"].rendering == "minip"
    assert "minimum intensity projection" in panel.message.text() and panel.message.isVisibleTo(panel)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    imsave("/tmp/panel_3d_minip.png", shot, check_contrast=False)
    # not a white square: the view has contrast (dark particles in a lighter volume)
    grey = shot[..., :3].astype(float).mean(-1)
    inside = grey[grey > 5]
    assert inside.size and inside.std() > 5


def test_a_new_user_finishes_the_whole_path_in_the_panel_at_1280x800(make_napari_viewer, qtbot, scene):
    """Pick → Curate → Model (tiny training, Predict) → Adapt → threshold → Results, with only the
    panel open at 1280×800, by clicking its buttons; one class keeps its colour all the way."""
    from skimage.io import imsave

    volume, _ = scene
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    image, kwargs, _ = tomogram_layer(Tomogram(volume, (VOXEL,) * 3), name="scene")
    viewer.add_image(image, **kwargs)
    panel = dock_panel(viewer, "Pick")
    assert panel.needs_labels["Pick"].text() == ""

    def shot(step):
        qtbot.wait(100)
        imsave(f"/tmp/path_{step}_1280x800.png", viewer.screenshot(canvas_only=False, flash=False),
               check_contrast=False)

    # Pick
    panel.pick.diameter.setValue(100.0)
    panel.pick.method.setCurrentText("topn")  # enough picks to adapt to (≥ 16 active)
    panel.pick.max_picks.setValue(30)
    panel.pick.pick_button.click()
    qtbot.waitUntil(lambda: panel.pick.points_layer is not None, timeout=60_000)
    qtbot.waitUntil(lambda: not panel.pick.task.running, timeout=10_000)
    picks = panel.pick.points_layer
    assert len(picks.data) >= 20
    shot("pick")
    # Curate: accept the best pick, reject the next
    panel.set_step("Curate")
    panel.curate.layer_combo.setCurrentText(picks.name)
    from napari_cryo_openset.layers import SCORE_THRESHOLD_KEY, above_threshold

    above = above_threshold(picks.features, picks.metadata.get(SCORE_THRESHOLD_KEY))
    assert len(panel.curate._order) == int(above.sum())  # only the candidates the Pick threshold keeps
    first = panel.curate.current_index
    panel.curate.accept_button.click()
    second = panel.curate.current_index
    panel.curate.reject_button.click()
    assert picks.features.loc[first, "curation"] == "accepted" and picks.features.loc[second, "curation"] == "rejected"
    assert not picks.shown[second]
    shot("curate")
    # Model: a tiny training, then Predict
    panel.set_step("Model")
    model = panel.model
    for name, check in model.template_checks.items():
        check.setChecked(name in ("1bxn", "2cg9"))
    model.per_class.setValue(8)
    model.box.setValue(24)
    model.snr.setValue(1.0)
    model.epochs.setValue(1)
    model.batch_size.setValue(8)
    model.device.setCurrentText("cpu")
    model.train_button.click()
    qtbot.waitUntil(lambda: model.bundle is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not model.runner.running, timeout=10_000)
    assert NO_MODEL not in panel.needs_labels["Adapt"].text()
    model.picks_combo.setCurrentText(picks.name)
    model.predict_button.click()
    qtbot.waitUntil(lambda: "class_name" in picks.features.columns
                    and (picks.features["class_name"].astype(str) != "").any(), timeout=60_000)
    qtbot.waitUntil(lambda: not model.runner.running, timeout=10_000)
    shot("model")

    palette = class_colors([], model.bundle.class_names)

    def colours_hold():
        groups = picks.features["class_name"].astype(str).to_numpy()
        unknown = picks.features["is_unknown"].to_numpy(bool)
        for name in ("1bxn", "2cg9", "empty"):
            rows = (groups == name) & ~unknown
            if "cluster" in picks.features.columns:
                rows &= picks.features["cluster"].to_numpy() < 0
            if rows.any():
                np.testing.assert_allclose(picks.border_color[rows, :3], np.tile(_rgb(palette[name]) / 255,
                                                                                (int(rows.sum()), 1)), atol=0.01)

    colours_hold()
    # Adapt
    panel.set_step("Adapt")
    adapt = panel.adapt
    adapt.picks_combo.setCurrentText(picks.name)
    adapt.method.setCurrentText("MLUDA")
    adapt.iterations.setValue(5)
    adapt.device.setCurrentText("cpu")
    adapt.adapt_button.click()
    qtbot.waitUntil(lambda: adapt.adapted is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not adapt.runner.running, timeout=10_000)
    colours_hold()
    scores = picks.features["unknown_score"].to_numpy(float)
    adapt.set_threshold(float(np.nanmedian(scores)))  # move the threshold
    colours_hold()
    shot("adapt")
    # Results
    panel.set_step("Results")
    results = panel.results
    results.settings.picks_combo.setCurrentText(picks.name)
    results.settings.iterations.setValue(100)
    results.settings.min_cluster.setValue(2)
    assert results.settings.embed_button.isEnabled()
    results.settings.embed_button.click()
    qtbot.waitUntil(lambda: results.result is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not results.runner.running, timeout=10_000)
    colours_hold()
    assert results.table.rowCount() >= 2 and panel.legend.entries
    # the step's news is in the panel's message line, not a notification over the canvas
    assert panel.message.text().startswith("Results: ") and viewer.status.startswith("Results: ")
    shot("results")
    # the map's colours are the layer's: a known class's dots in its palette colour
    for label, color, count, _ in panel.legend.entries:
        if label in palette and count:
            assert color == palette[label]


def _session_viewer(make_napari_viewer, scene, tmp_path):
    from napari_cryo_openset._widgets.results.groups import hide_groups
    from napari_cryo_openset._widgets.state import viewer_state
    from napari_cryo_openset.io import read_tomogram, write_tomogram
    from napari_cryo_openset.predictions import with_threshold

    volume, truth = scene
    tomo_path = write_tomogram(tmp_path / "scene.mrc", volume, VOXEL)
    viewer = make_napari_viewer()
    data, kwargs, _ = tomogram_layer(read_tomogram(tomo_path))
    image = viewer.add_image(data, **kwargs)
    data, kwargs, _ = picks_layer(truth.drop(columns=["class_name"]), voxel_size=VOXEL, name="picks", diameter=160.0,
                                  metadata={"source_image": image.name})
    layer = viewer.add_points(data, **kwargs)
    names = truth["class_name"].astype(str).to_numpy()
    write_predictions(layer, pd.DataFrame({"class_name": names, "confidence": np.linspace(0.2, 0.9, len(names)),
                                           "unknown_score": np.linspace(0.0, 1.0, len(names)),
                                           "is_unknown": names == "unknown"}), np.arange(len(names)), MODEL)
    feats = layer.features.copy()
    feats.loc[0, "curation"] = "rejected"
    feats.loc[1, "curation"] = "accepted"
    feats["cluster"] = np.where(names == "unknown", 0, -1)
    layer.features = feats
    color_picks(layer)
    hide_groups(layer, ["1qvr"])
    state = viewer_state(viewer)
    state.publish_source(_bundle(), origin="a test")
    state.publish_adapted(with_threshold(_bundle(), 0.42), origin="a test")
    viewer.layers.selection.active = layer
    return viewer, layer, tomo_path


def test_session_round_trip_restores_picks_curation_predictions_hidden_groups_threshold_and_models(
        make_napari_viewer, qtbot, scene, tmp_path):
    import torch

    from napari_cryo_openset._widgets.state import viewer_state

    viewer, layer, tomo_path = _session_viewer(make_napari_viewer, scene, tmp_path)
    panel = panel_for(viewer)
    qtbot.addWidget(panel)
    path = panel.save_session(tmp_path / "work")
    assert path.name == "work.cosession.json" and (tmp_path / "work.cosession_files" / "adapted.pt").is_file()
    before = layer.features.copy()
    adapted = viewer_state(viewer).adapted.bundle

    viewer2 = make_napari_viewer()  # "quit and open again"
    panel2 = panel_for(viewer2)
    qtbot.addWidget(panel2)
    restored = panel2.open_session(path)
    assert restored is not None and restored.name == "picks"
    assert [ly.name for ly in viewer2.layers] == ["scene", "picks"]  # the tomogram opened from its path
    for column in ("class_name", "confidence", "unknown_score", "is_unknown", "curation", "cluster"):
        pd.testing.assert_series_equal(restored.features[column].reset_index(drop=True),
                                       before[column].reset_index(drop=True), check_dtype=False)
    np.testing.assert_allclose(restored.data, layer.data)
    np.testing.assert_array_equal(restored.shown, layer.shown)  # rejected and 1qvr hidden
    np.testing.assert_allclose(restored.border_color, layer.border_color)  # the same palette, U0 its shade
    assert restored.metadata["hidden_groups"] == ["1qvr"]
    state2 = viewer_state(viewer2)
    assert state2.adapted.bundle.openset["threshold"] == pytest.approx(0.42)
    assert state2.adapted.bundle.class_names == adapted.class_names
    boxes = torch.randn(4, 1, 16, 16, 16)
    with torch.no_grad():  # identical networks → identical predictions
        torch.testing.assert_close(state2.adapted.bundle.model(boxes), adapted.model(boxes))
    assert "threshold 0.42" in panel2.message.text() and "hidden: 1qvr" in panel2.message.text()
    # autosave after a finished step: the curation made since is in the session file
    from napari_cryo_openset.session import read_session

    feats = restored.features.copy()
    feats.loc[2, "curation"] = "rejected"
    restored.features = feats
    panel2.adapt.runner.finished.emit()  # a step finished
    assert read_session(path).picks.loc[2, "curation"] == "rejected"


def test_session_bad_input_one_message_nothing_overwritten(make_napari_viewer, qtbot, scene, tmp_path, monkeypatch):
    import json

    from napari_cryo_openset._widgets import _task

    viewer, layer, tomo_path = _session_viewer(make_napari_viewer, scene, tmp_path)
    panel = panel_for(viewer)
    qtbot.addWidget(panel)
    path = panel.save_session(tmp_path / "work.cosession.json")
    errors = []
    monkeypatch.setattr(_task, "report_error", lambda exc: errors.append(str(exc)))
    viewer2 = make_napari_viewer()
    panel2 = panel_for(viewer2)
    qtbot.addWidget(panel2)
    # a newer format version
    doc = json.loads(path.read_text())
    newer = tmp_path / "newer.cosession.json"
    newer.write_text(json.dumps({**doc, "version": 99}))
    assert panel2.open_session(newer) is None and "version 99" in errors[-1] and "update" in errors[-1]
    # a corrupted file
    broken = tmp_path / "broken.cosession.json"
    broken.write_text(path.read_text()[:40])
    assert panel2.open_session(broken) is None and "not a readable session" in errors[-1]
    assert len(errors) == 2 and len(viewer2.layers) == 0  # one message each, nothing added
    assert json.loads(path.read_text()) == doc  # the good session untouched
    # the tomogram moved: asked for, and the rest restored when the user cancels
    tomo_path.rename(tmp_path / "moved.mrc")
    asked = []
    restored = panel2.open_session(path, ask_tomogram=lambda old: asked.append(old) or "")
    assert asked == [str(tomo_path.resolve())] and restored is not None and len(restored.data) == len(layer.data)
    assert "no longer at" in panel2.message.text() and [ly.name for ly in viewer2.layers] == ["picks"]
    # … or given its new place
    viewer3 = make_napari_viewer()
    panel3 = panel_for(viewer3)
    qtbot.addWidget(panel3)
    assert panel3.open_session(path, ask_tomogram=lambda old: str(tmp_path / "moved.mrc")) is not None
    assert [ly.name for ly in viewer3.layers] == ["moved", "picks"]


def test_the_plugin_menu_items_dock_the_one_panel(make_napari_viewer, qtbot):
    """Through napari's own plugin path (the manifest's widget contributions)."""
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-cryo-openset", "Model")
    panel = panel_for(viewer)
    assert widget is panel and panel.step == "Model"
    _, again = viewer.window.add_plugin_dock_widget("napari-cryo-openset", "Curate picks")
    assert again is panel and panel.step == "Curate"
    docks = dict(viewer.window.dock_widgets)
    assert [name for name, w in docks.items() if w is panel] == ["Curate picks (napari-cryo-openset)"]
    _, whole = viewer.window.add_plugin_dock_widget("napari-cryo-openset", "Workflow panel (all steps)")
    assert whole is panel and panel.step == "Curate"  # the panel as it was


def test_session_opens_with_file_open(make_napari_viewer, qtbot, scene, tmp_path):
    """File ▸ Open of a .cosession.json (the npe2 reader) restores it through the panel."""
    from napari_cryo_openset._reader import get_reader

    viewer, layer, tomo_path = _session_viewer(make_napari_viewer, scene, tmp_path)
    panel = panel_for(viewer)
    qtbot.addWidget(panel)
    path = panel.save_session(tmp_path / "work")
    assert get_reader(str(path)) is not None and get_reader([str(path), str(tomo_path)]) is None
    viewer2 = make_napari_viewer()
    viewer2.open(str(path), plugin="napari-cryo-openset")
    assert [ly.name for ly in viewer2.layers] == ["scene", "picks"]
    restored = viewer2.layers["picks"]
    np.testing.assert_allclose(restored.data, layer.data)
    assert restored.metadata["hidden_groups"] == ["1qvr"]
    from napari_cryo_openset._widgets.panel import is_docked

    panel2 = panel_for(viewer2, create=False)
    assert panel2 is not None and is_docked(panel2) and panel2.session_file == path
