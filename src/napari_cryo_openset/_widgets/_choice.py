"""What the dock widgets share about their inputs: the one layer chooser, the chosen picks, bundles.

:class:`LayerCombo` lists the viewer's tomograms (3-D images) or picks (3-D points) and keeps in
step with the layer list and the active layer; :func:`chosen_picks` turns a tomogram and a
picks layer into what a core job needs; :func:`load_bundle_or_report` and
:func:`save_bundle_as` read and write model bundles with one message on failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox

from ..layers import AVERAGE_OF_KEY, SCORE_THRESHOLD_KEY
from ._task import report_error

MODEL_SUFFIX = ".pt"
BUNDLE_FILTER = "Model bundle (*.pt);;All files (*)"
TOMOGRAMS, PICKS = "tomograms", "picks"
#: Suffix of the band-pass preview layer the Pick widget adds (not a tomogram to work on).
DOG_SUFFIX = "DoG response"


def is_average_layer(layer) -> bool:
    """A class / cluster average added by the Results widget (not a tomogram to work on)."""
    return isinstance(getattr(layer, "metadata", None), dict) and AVERAGE_OF_KEY in layer.metadata


def is_tomogram_layer(layer) -> bool:
    """A 3-D grey image that is a tomogram (not a DoG preview, not an average)."""
    from napari.layers import Image

    return (isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb and not layer.name.endswith(DOG_SUFFIX)
            and not is_average_layer(layer))


def is_picks_layer(layer) -> bool:
    """3-D points (picks in a tomogram)."""
    from napari.layers import Points

    return isinstance(layer, Points) and layer.ndim == 3


class LayerCombo(QComboBox):
    """The layers of one kind (:data:`TOMOGRAMS` or :data:`PICKS`) a widget can work on.

    Follows layers being added and removed (keeping the choice, else the active layer, else the
    newest) and the active layer; ``layer_changed`` is emitted with the chosen layer (or None)
    whenever it changes.
    """

    layer_changed = Signal(object)

    def __init__(self, viewer, kind: str, tooltip: str = "") -> None:
        super().__init__()
        self.viewer = viewer
        self._accepts = {TOMOGRAMS: is_tomogram_layer, PICKS: is_picks_layer}[kind]
        self._chosen = None
        if tooltip:
            self.setToolTip(tooltip)
        self.currentTextChanged.connect(self._emit_if_changed)
        events = ((viewer.layers.events.inserted, self.refresh), (viewer.layers.events.removed, self.refresh),
                  (viewer.layers.selection.events.active, self._follow_selection))
        for emitter, slot in events:
            emitter.connect(slot)
        self.destroyed.connect(lambda *_: [emitter.disconnect(slot) for emitter, slot in events])
        self.refresh()

    def layers(self) -> list:
        return [ly for ly in self.viewer.layers if self._accepts(ly)]

    def layer(self):
        """The chosen layer (None if there is none of this kind)."""
        return next((ly for ly in self.layers() if ly.name == self.currentText()), None)

    def refresh(self, event=None) -> None:
        names = [ly.name for ly in self.layers()]
        current = self.currentText()
        active = self.viewer.layers.selection.active
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        elif active is not None and active.name in names:
            self.setCurrentText(active.name)
        elif names:
            self.setCurrentIndex(len(names) - 1)
        self.blockSignals(False)
        self._emit_if_changed()

    def _follow_selection(self, event=None) -> None:
        active = self.viewer.layers.selection.active
        if active is not None and self._accepts(active) and active.name != self.currentText():
            self.setCurrentText(active.name)

    def _emit_if_changed(self, *_) -> None:
        layer = self.layer()
        if layer is not self._chosen:
            self._chosen = layer
            self.layer_changed.emit(layer)


def to_image_voxels(points, image, zyx: np.ndarray) -> np.ndarray:
    """Points-layer voxel coordinates → the image layer's voxels (through world coordinates)."""
    ps, pt = np.asarray(points.scale[-3:], float), np.asarray(points.translate[-3:], float)
    iscale, it = np.asarray(image.scale[-3:], float), np.asarray(image.translate[-3:], float)
    if np.allclose(ps, iscale) and np.allclose(pt, it):
        return zyx
    return (zyx * ps + pt - it) / iscale


@dataclass
class ChosenPicks:
    """What a job on the chosen layers needs: the layers, the picks (image voxels), their rows, the volume."""

    image: object  # napari Image layer
    points: object  # napari Points layer
    picks: object  # pandas DataFrame (picks table), coordinates in the image's voxels
    rows: np.ndarray  # the points-layer rows of ``picks``
    tomogram: object  # napari_cryo_openset.io.Tomogram over the image's data


def chosen_picks(image, points, who: str, no_picks: str) -> ChosenPicks | None:
    """The tomogram ``image`` and picks ``points``, ready for a core job; None after one warning if one is missing.

    ``who`` prefixes the warning (the widget's name); ``no_picks`` says what to do when the
    picks layer is missing or empty. Picks below a live score threshold are left out (their
    rows too); coordinates are converted to the image's voxels.
    """
    from napari.utils.notifications import show_warning

    from ..io.tomogram import Tomogram
    from ..layers import above_threshold, picks_from_layer

    if image is None:
        show_warning(f"{who}: open a 3-D tomogram first (File ▸ Open, or the sample data).")
        return None
    if points is None or len(points.data) == 0:
        show_warning(f"{who}: {no_picks}")
        return None
    picks = picks_from_layer(points.data, points.features, points.metadata)
    rows = np.flatnonzero(above_threshold(points.features, points.metadata.get(SCORE_THRESHOLD_KEY)))
    if len(rows) != len(picks):  # defensive: the two must agree
        rows = np.arange(len(picks))
    picks[["z", "y", "x"]] = to_image_voxels(points, image, picks[["z", "y", "x"]].to_numpy(float))
    data = image.data[0] if getattr(image, "multiscale", False) else image.data
    path = (image.metadata or {}).get("path")
    tomogram = Tomogram(data=data, voxel_size=tuple(float(s) for s in image.scale[-3:]),
                        path=Path(path) if path else None)
    return ChosenPicks(image, points, picks, rows, tomogram)


def load_bundle_or_report(path):
    """The model bundle at ``path``, or None after one message (a bad file, or a bug with its traceback)."""
    from ..checkpoint import load_bundle

    try:
        return load_bundle(path)
    except Exception as exc:  # noqa: BLE001 - BundleError: one clear message; others with traceback
        report_error(exc)
        return None


def save_bundle_as(bundle, path, who: str, nothing_yet: str) -> Path | None:
    """Write ``bundle`` to ``path`` (``.pt`` added if there is no suffix); tell the user.

    ``who`` prefixes the messages (the widget's name); ``nothing_yet`` is the warning shown
    when ``bundle`` is None. Returns the path written, or None (the reason was shown).
    """
    from napari.utils.notifications import show_info, show_warning

    from ..checkpoint import save_bundle

    if bundle is None:
        show_warning(f"{who}: {nothing_yet}")
        return None
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(MODEL_SUFFIX)
    try:
        out = save_bundle(bundle, path)
    except Exception as exc:  # noqa: BLE001 - shown as one message (user input) or with its traceback
        report_error(exc)
        return None
    show_info(f"{who}: saved to {out}")
    return out


def polarity_combo(tooltip: str = "Is protein dark (raw reconstruction) or bright (inverted) in this tomogram?"):
    """The polarity choice every widget offers: dark, bright or auto (a guess from the picks)."""
    combo = QComboBox()
    combo.addItems(["dark", "bright", "auto"])
    combo.setToolTip(tooltip)
    return combo


def ask_bundle_path(parent, title: str, save_as: str | None = None) -> str:
    """A model bundle file from a file dialog: one to open, or (``save_as``: the suggested name) to write; "" if cancelled."""
    from qtpy.QtWidgets import QFileDialog

    if save_as is None:
        return QFileDialog.getOpenFileName(parent, title, "", BUNDLE_FILTER)[0]
    return QFileDialog.getSaveFileName(parent, title, save_as, BUNDLE_FILTER)[0]
