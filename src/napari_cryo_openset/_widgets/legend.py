"""A compact legend of the picks' colours: class → colour, unknown, each cluster, with counts.

It follows the active picks layer (else the newest one with predictions): its groups (as
:func:`napari_cryo_openset.layers.pick_groups` gives them), coloured through the one palette in
the order of the model's class list, counted over the picks shown; hidden groups are listed
struck out. Updated when the layer's features, visibility or colours change.
"""

from __future__ import annotations

import html

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel

_EVENTS = ("features", "metadata", "border_color", "data")


def legend_entries(features, shown, model_classes=None, hidden=()) -> list[tuple[str, str, int, bool]]:
    """``(label, colour, count shown, hidden)`` for every group of a picks layer, in table order."""
    from ..layers import NO_CLASS, group_order, pick_groups
    from ..palette import class_colors, group_color

    if "class_name" not in features.columns or not len(features):
        return []
    groups = pick_groups(features).astype(str)
    shown = np.asarray(shown, dtype=bool)
    palette = class_colors([g for g in set(groups.tolist())], model_classes)
    hidden = {str(g) for g in hidden}
    out = []
    for group in group_order(groups[shown | np.isin(groups, sorted(hidden))]):
        label = "no class" if group == NO_CLASS else group
        out.append((label, group_color(group, palette), int(np.sum(shown & (groups == group))), group in hidden))
    return out


class Legend(QLabel):
    """The legend line above the workflow panel's steps (rich text: a coloured square per group)."""

    changed = Signal()  # after every refresh (the layer's predictions, colours or hidden groups changed)

    def __init__(self, viewer) -> None:
        super().__init__("")
        self.viewer = viewer
        self._layer = None
        self._watched: set[int] = set()
        self.entries: list[tuple[str, str, int, bool]] = []
        self.setWordWrap(True)
        self.setToolTip("Colours of the picks: known classes, unknown (magenta) and its clusters U0, U1, … "
                        "(shades of it); counts are the picks shown")
        viewer.layers.selection.events.active.connect(self._follow)
        viewer.layers.events.inserted.connect(self._follow)
        viewer.layers.events.removed.connect(self._follow)
        self.destroyed.connect(lambda *_: self._disconnect_viewer(viewer))
        self._follow()

    def _disconnect_viewer(self, viewer) -> None:
        for event in (viewer.layers.selection.events.active, viewer.layers.events.inserted,
                      viewer.layers.events.removed):
            try:
                event.disconnect(self._follow)
            except Exception:  # noqa: BLE001 - the viewer may be gone already
                pass

    @property
    def layer(self):
        """The picks layer the legend describes (None: none)."""
        return self._layer

    def _choose(self):
        from ._choice import is_picks_layer

        active = self.viewer.layers.selection.active
        if is_picks_layer(active) and "class_name" in active.features.columns:
            return active
        layers = [ly for ly in self.viewer.layers if is_picks_layer(ly) and "class_name" in ly.features.columns]
        if self._layer in layers:
            return self._layer
        return layers[-1] if layers else None

    def _watch_all(self) -> None:
        """Follow the features of every picks layer: one that gets predictions may become the legend's."""
        from ._choice import is_picks_layer

        for layer in self.viewer.layers:
            if is_picks_layer(layer) and id(layer) not in self._watched:
                self._watched.add(id(layer))
                layer.events.features.connect(self._follow)

    def _follow(self, *_):
        self._watch_all()
        layer = self._choose()
        if layer is not self._layer:
            for name in _EVENTS:
                if self._layer is not None and hasattr(self._layer.events, name):
                    getattr(self._layer.events, name).disconnect(self.refresh)
            self._layer = layer
            for name in _EVENTS:
                if layer is not None and hasattr(layer.events, name):
                    getattr(layer.events, name).connect(self.refresh)
        self.refresh()

    def refresh(self, *_) -> None:
        self._refresh()
        self.changed.emit()

    def _refresh(self) -> None:
        from ..layers import HIDDEN_GROUPS_KEY, MODEL_CLASSES_KEY

        layer = self._layer
        if layer is None or layer not in self.viewer.layers:
            self.entries = []
            self.setText("")
            self.setVisible(False)
            return
        meta = layer.metadata if isinstance(layer.metadata, dict) else {}
        self.entries = legend_entries(layer.features, layer.shown, meta.get(MODEL_CLASSES_KEY),
                                      meta.get(HIDDEN_GROUPS_KEY, ()))
        if not self.entries:
            self.setText("")
            self.setVisible(False)
            return
        parts = []
        for label, color, count, hidden in self.entries:
            text = f"{html.escape(label)}&nbsp;{count}"
            text = f"<s>{text}</s>" if hidden else text
            parts.append(f"<span style='color:{color}; font-size:14pt'>&#9632;</span>&nbsp;{text}")
        self.setText(f"<b>{html.escape(layer.name)}</b>: " + " &nbsp; ".join(parts))
        self.setVisible(True)
