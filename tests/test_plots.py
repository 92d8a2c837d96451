"""plots.py: one embedding map for the run's PNG and the Results dock."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from napari_cryo_openset.errors import PicksError
from napari_cryo_openset.plots import HIDDEN_COLOR, MapStyle, draw_embedding, plot_embedding


def _groups():
    return np.array(["1bxn", "2cg9", "unknown U0", "unknown U0", "unknown", ""], dtype=object)


def test_draw_embedding_returns_the_points_drawn_in_colour():
    xy = np.arange(12, dtype=float).reshape(6, 2)
    xy[5] = np.nan  # no place on the map
    hidden = np.array([False, True, False, False, False, False])
    ax = Figure().add_subplot(111)
    rows = draw_embedding(ax, xy, _groups(), hidden=hidden, style=MapStyle(legend=False, ring_clusters=False))
    assert sorted(rows.tolist()) == [0, 2, 3, 4]  # not the hidden one, not the unmapped one
    assert rows.tolist()[-3:] == [2, 3, 4]  # unknowns drawn last, on top
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["U0"]  # one label per cluster
    greys = [c for c in ax.collections if len(c.get_offsets()) and np.allclose(
        c.get_facecolors()[0][:3], [int(HIDDEN_COLOR[i:i + 2], 16) / 255 for i in (1, 3, 5)])]
    assert len(greys) == 1 and len(greys[0].get_offsets()) == 1


def test_plot_embedding_writes_a_png_with_magenta_unknowns(tmp_path):
    from skimage.io import imread

    rng = np.random.default_rng(0)
    names = np.array(["1bxn"] * 20 + ["unknown"] * 20, dtype=object)
    picks = pd.DataFrame({"class_name": names, "is_unknown": names == "unknown",
                          "cluster": [-1] * 30 + [0] * 10, "tsne_x": rng.normal(size=40), "tsne_y": rng.normal(size=40)})
    path = plot_embedding(picks, tmp_path / "map.png", title="test")
    img = imread(path)[..., :3].astype(int)
    assert (np.abs(img - [255, 0, 255]).sum(-1) < 60).sum() > 20
    with pytest.raises(PicksError):
        plot_embedding(picks.drop(columns=["tsne_x"]), tmp_path / "no.png")
