"""Pick widget: picks in the background, land on particles, live threshold, Cancel, real data."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_cryo_openset._widgets.pick import PickWidget
from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.layers import picks_from_layer, tomogram_layer
from napari_cryo_openset.synthetic import BlobTomogramParams, blob_tomogram

pytestmark = pytest.mark.gui


def _add_tomogram(viewer, shape=(48, 96, 96), n=15, seed=0, polarity="dark"):
    params = BlobTomogramParams(shape=shape, n_particles=n, voxel_size=10.0, diameter=120.0, seed=seed, polarity=polarity, snr=2.0)
    volume, truth = blob_tomogram(params)
    data, kw, _ = tomogram_layer(Tomogram(volume, (10.0,) * 3), name="tomo")
    viewer.add_image(data, **kw)
    return truth


def _run(widget, qtbot, timeout=60_000):
    worker = widget.start_picking()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=timeout)
    return worker


def _matched(picks_zyx, truth_zyx, tol):
    d = np.linalg.norm(picks_zyx[:, None, :] - truth_zyx[None, :, :], axis=-1)
    return int((d.min(axis=0) <= tol).sum()) if len(picks_zyx) else 0


def test_pick_lands_on_particles_and_slider_filters_without_refiltering(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer(show=True)
    truth = _add_tomogram(viewer)
    widget = PickWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.image_combo.currentText() == "tomo"
    widget.diameter.setValue(120.0)
    widget.polarity.setCurrentText("auto")
    _run(widget, qtbot)
    layer = widget.points_layer
    assert layer is not None and layer.name == "tomo picks"
    np.testing.assert_allclose(layer.scale, [10, 10, 10])
    assert layer.size[0] == pytest.approx(12.0)  # point size = diameter (voxels)
    assert {"score", "curation"} <= set(layer.features.columns)
    assert widget.result.polarity == "dark"
    shown = layer.data[layer.shown]
    truth_zyx = truth[["z", "y", "x"]].to_numpy()
    assert _matched(shown, truth_zyx, 0.3 * 12) >= 0.9 * len(truth_zyx)

    # the slider only changes `shown`: picking is not run again
    import napari_cryo_openset.picking as picking

    monkeypatch.setattr(picking, "pick_particles", lambda *a, **k: pytest.fail("refiltered"))
    n_before = int(layer.shown.sum())
    widget.threshold_slider.setValue(widget.threshold_slider.maximum())
    assert int(layer.shown.sum()) <= 1 < n_before
    widget.threshold_slider.setValue(0)
    assert int(layer.shown.sum()) == len(layer.data) >= n_before
    assert len(layer.data) == len(widget.result.candidates)  # nothing deleted or added
    # saving keeps the picks above the live threshold
    widget.set_threshold(widget.result.threshold)
    saved = picks_from_layer(layer.data, layer.features, layer.metadata)
    assert len(saved) == n_before


def test_cancel_stops_within_two_seconds(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.standard_normal((160, 256, 256)).astype(np.float32), scale=(10, 10, 10), name="big")
    widget = PickWidget(viewer)
    qtbot.addWidget(widget)
    widget.diameter.setValue(100.0)
    worker = widget.start_picking()
    qtbot.wait(200)
    t0 = time.perf_counter()
    widget.task.cancel()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=2000)
    assert time.perf_counter() - t0 < 2.0
    qtbot.wait(100)
    assert widget.points_layer is None  # the cancelled result is discarded
    assert "cancelled" in widget.task.status.text()


def test_no_image_and_bad_diameter_give_messages(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = PickWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.start_picking() is None  # no tomogram: a warning, nothing started
    viewer.add_image(np.zeros((20, 20, 20), np.float32), scale=(10, 10, 10), name="flat")
    widget.diameter.setValue(5000.0)  # larger than the volume
    worker = widget.start_picking()
    errors = []
    if worker is not None:
        worker.errored.connect(errors.append)
        qtbot.waitUntil(lambda: not widget.task.running, timeout=10_000)
    assert widget.points_layer is None
    assert "failed" in widget.task.status.text() or worker is None


@pytest.mark.shared_data
def test_pick_widget_on_real_tomogram(make_napari_viewer, qtbot, shared_data, tmp_path):
    from skimage.io import imsave

    viewer = make_napari_viewer(show=True)
    viewer.open(str(shared_data / "real" / "hiv_vlp_40A.mrc"), plugin="napari-cryo-openset")
    widget = PickWidget(viewer)
    qtbot.addWidget(widget)
    widget.diameter.setValue(160.0)  # Gag hexamer spacing scale at 40 Å/voxel
    widget.polarity.setCurrentText("bright")
    _run(widget, qtbot)
    layer = widget.points_layer
    assert layer is not None and int(layer.shown.sum()) > 10
    viewer.dims.set_point(0, 52 * 40.0)
    qtbot.wait(50)
    img = viewer.screenshot(canvas_only=True, flash=False)
    assert img[..., :3].std() > 5
    imsave(tmp_path / "hiv_picks.png", img, check_contrast=False)


def test_diameter_range_picks_both_sizes_with_their_point_sizes(make_napari_viewer, qtbot, tmp_path):
    from skimage.io import imsave

    from napari_cryo_openset.synthetic import mixed_blob_tomogram

    viewer = make_napari_viewer(show=True)
    volume, truth = mixed_blob_tomogram(shape=(48, 128, 128), voxel_size=10.0, diameters=(80.0, 200.0),
                                        n_per_size=(15, 6), snr=1.0, seed=1)
    data, kw, _ = tomogram_layer(Tomogram(volume, (10.0,) * 3), name="tomo")
    viewer.add_image(data, **kw)
    widget = PickWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.params().max_diameter is None  # 0 = a single size
    widget.diameter.setValue(80.0)
    widget.max_diameter.setValue(200.0)
    assert widget.params().is_range
    _run(widget, qtbot)
    layer = widget.points_layer
    assert "diameter" in layer.features.columns
    np.testing.assert_allclose(layer.size, layer.features["diameter"].to_numpy() / 10.0)
    shown = layer.data[layer.shown]
    sizes = layer.size[layer.shown]
    for d in (80.0, 200.0):
        t = truth[truth["diameter"] == d][["z", "y", "x"]].to_numpy()
        assert _matched(shown, t, 0.3 * d / 10.0) >= 0.9 * len(t)
    assert sizes.min() < 12 and sizes.max() > 15  # small and large points
    # the live threshold works across scales
    n_before = int(layer.shown.sum())
    widget.threshold_slider.setValue(widget.threshold_slider.maximum())
    assert int(layer.shown.sum()) <= 1 < n_before
    widget.set_threshold(widget.result.threshold)
    assert int(layer.shown.sum()) == n_before
    assert "scales" in widget.summary.text() or "per scale" in widget.summary.text()
    z = float(truth[truth["diameter"] == 200.0]["z"].iloc[0])
    viewer.dims.set_point(0, z * 10.0)
    qtbot.wait(50)
    img = viewer.screenshot(canvas_only=False, flash=False)
    assert img[..., :3].std() > 5
    imsave(tmp_path / "pick_range.png", img, check_contrast=False)
