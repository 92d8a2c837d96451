"""The Dataset dock: a batch output's tomograms with class counts; opening one adds its tomogram and predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cryo_openset.batch import read_batch_output
from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.io import write_picks, write_tomogram
from napari_cryo_openset.palette import UNKNOWN_COLOR
from napari_cryo_openset.picks import make_picks

CLASSES = ["1bxn", "4v4r", "empty", "unknown"]


def _batch_output(tmp_path):
    """A batch output as `batch` writes it: TS_01 done (5 picks), TS_02 failed with its one line."""
    out = tmp_path / "batch_out"
    folder = out / "tomograms" / "TS_01"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(24, 48, 48)).astype(np.float32)
    volume[12 - 3:12 + 3, 24 - 3:24 + 3, 24 - 3:24 + 3] -= 4.0  # a dark particle under the first pick
    tomo = write_tomogram(tmp_path / "TS_01.mrc", volume, (10.0, 10.0, 10.0))
    names = ["1bxn", "1bxn", "4v4r", "unknown", "unknown"]
    picks = make_picks([[12, 24, 24], [12, 10, 10], [12, 36, 36], [12, 10, 38], [12, 38, 10]], score=np.arange(5.0),
                       class_name=names, confidence=np.full(5, 0.8), is_unknown=[n == "unknown" for n in names])
    write_picks(folder / "predictions.star", picks, voxel_size=(10.0, 10.0, 10.0))
    counts = {"1bxn": 2, "4v4r": 1, "unknown": 2}
    (folder / "report.json").write_text(json.dumps({
        "command": "run", "tomogram": str(tomo), "class_counts": counts, "training": {"classes": CLASSES},
        "geometry": {"tomogram_voxel_size": 10.0, "tomogram_shape": [24, 48, 48]}}))
    (out / "batch_report.json").write_text(json.dumps({"command": "batch", "tomograms": [
        {"name": "TS_01", "status": "done", "seconds": 12.5, "class_counts": counts},
        {"name": "TS_02", "status": "failed", "error": "TS_02.mrc: not an MRC file (truncated header)"}]}))
    return out


def test_read_batch_output_lists_every_tomogram(tmp_path):
    rows = read_batch_output(_batch_output(tmp_path))
    assert list(rows["tomogram"]) == ["TS_01", "TS_02"]
    assert rows.loc[0, "picks"] == 5 and rows.loc[0, "class_counts"]["unknown"] == 2 and rows.loc[0, "folder"]
    assert rows.loc[1, "folder"] == "" and "truncated" in rows.loc[1, "error"]
    with pytest.raises(ParameterError, match="not a batch output folder"):
        read_batch_output(tmp_path)


def test_dataset_dock_lists_counts_and_opens_a_tomogram(make_napari_viewer, qtbot, tmp_path):
    from napari_cryo_openset._widgets.dataset import DatasetDock

    viewer = make_napari_viewer()
    dock = DatasetDock(viewer)
    qtbot.addWidget(dock)
    viewer.window.add_dock_widget(dock, name="Dataset", area="right")
    assert dock.load(_batch_output(tmp_path))
    headers = [dock.table.horizontalHeaderItem(j).text() for j in range(dock.table.columnCount())]
    assert headers == ["tomogram", "status", "picks", "1bxn", "4v4r", "unknown"]
    assert [dock.table.item(0, j).text() for j in range(6)] == ["TS_01", "done", "5", "2", "1", "2"]
    assert dock.table.item(1, 1).text() == "failed" and "truncated" in dock.table.item(1, 1).toolTip()
    assert "TS_02: TS_02.mrc: not an MRC file" in dock.message.text()
    assert dock.open_row(1) is None and "no predictions" in dock.message.text()  # the failed one
    layer = dock.open_row(0)
    assert [ly.name for ly in viewer.layers] == ["TS_01", "TS_01 predictions"]
    assert len(layer.data) == 5 and list(layer.features["class_name"]) == ["1bxn", "1bxn", "4v4r", "unknown", "unknown"]
    np.testing.assert_allclose(layer.scale, (10.0, 10.0, 10.0))
    unknown = np.array([int(UNKNOWN_COLOR[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    np.testing.assert_allclose(layer.border_color[3, :3], unknown, atol=1e-6)  # the palette's unknown colour
    assert dock.open_row(0) is layer and len(viewer.layers) == 2  # opened once
    viewer.dims.set_point(0, 120.0)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.shape[0] > 100
    from imageio.v3 import imwrite

    imwrite(tmp_path / "dataset_dock.png", shot)
