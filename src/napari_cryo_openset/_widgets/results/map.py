"""The Results map: the t-SNE of the picks in the dock, linked to the picks layer.

Drawn by :func:`napari_cryo_openset.plots.draw_embedding` (the same map ``run`` saves as
``embedding.png``) in the viewer's theme. A left click near a point emits ``pick_clicked(row)``
with that point's row in the layer; the points selected in the layer are ringed
(:attr:`EmbeddingMap.selection_ring`). Hidden groups are grey and cannot be clicked.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QSizePolicy

from .groups import PicksGroups

CLICK_PX = 10  # how close (pixels) a click must be to a point of the map


class EmbeddingMap(FigureCanvasQTAgg):
    """A matplotlib canvas with the map of the active picks; hidden until the picks have a map."""

    pick_clicked = Signal(int)

    def __init__(self, background: str, foreground: str) -> None:
        from matplotlib.figure import Figure

        from ...plots import MapStyle

        super().__init__(Figure(figsize=(3.2, 3.0), dpi=90, facecolor=background, layout="constrained"))
        self.style = MapStyle(background=background, foreground=foreground, point_size=20.0, label_size=8.0,
                              legend=False, ring_clusters=False)
        self.setMinimumHeight(240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("t-SNE map of the picks: click a point to go to that pick")
        self.ax = self.figure.add_subplot(111)
        self.map_rows = np.zeros(0, dtype=int)  # layer rows of the points drawn in colour (clickable)
        self._map_xy = np.zeros((0, 2))  # their map positions
        self._all_xy = None  # map position of every point of the layer
        (self.selection_ring,) = self.ax.plot([], [], "o")
        self.mpl_connect("button_press_event", self._on_press)
        self.setVisible(False)

    def draw_groups(self, view: PicksGroups) -> None:
        """Redraw from ``view`` (active picks with a map position; hidden groups grey); hide if no map."""
        from ...plots import draw_embedding

        ax = self.ax
        ax.clear()
        self._all_xy = view.xy
        if view.xy is None:
            self.map_rows, self._map_xy = np.zeros(0, dtype=int), np.zeros((0, 2))
            self.setVisible(False)
            return
        xy = np.where(view.active[:, None], view.xy, np.nan)  # rejected / below threshold: not on the map
        self.map_rows = draw_embedding(ax, xy, view.groups, hidden=view.hidden_mask, style=self.style,
                                       model_classes=view.model_classes)
        self._map_xy = view.xy[self.map_rows]
        fg = self.style.foreground
        (self.selection_ring,) = ax.plot([], [], "o", ms=9, mfc="none", mec=fg, mew=1.4)
        mapped = int(np.isfinite(xy).all(axis=1).sum())
        ax.set_title(f"t-SNE of {mapped} picks (click a point)", color=fg, fontsize=8)
        self.setVisible(True)
        self.draw_idle()

    def ring(self, rows) -> None:
        """Ring the points of layer ``rows`` (those with a map position)."""
        xy_all = self._all_xy
        if xy_all is None:
            return
        rows = [int(i) for i in rows if 0 <= int(i) < len(xy_all)]
        xy = xy_all[rows] if rows else np.zeros((0, 2))
        xy = xy[np.isfinite(xy).all(axis=1)]
        self.selection_ring.set_data(xy[:, 0], xy[:, 1])
        self.draw_idle()

    def click_at(self, x: float, y: float) -> int | None:
        """A left click at display pixel (``x``, ``y``): the row of the nearest point within
        :data:`CLICK_PX` (emitted as ``pick_clicked``), else None."""
        if len(self.map_rows) == 0:
            return None
        display = self.ax.transData.transform(self._map_xy)
        d = np.hypot(display[:, 0] - x, display[:, 1] - y)
        best = int(np.argmin(d))
        if d[best] > CLICK_PX * self.devicePixelRatioF():
            return None
        row = int(self.map_rows[best])
        self.pick_clicked.emit(row)
        return row

    def _on_press(self, event) -> None:
        if event.inaxes is self.ax and getattr(event, "button", 1) == 1:
            self.click_at(event.x, event.y)
