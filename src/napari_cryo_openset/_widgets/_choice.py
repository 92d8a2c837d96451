"""What the Model and Adapt & predict widgets share: the tomogram / picks choice, saving a bundle.

:class:`TomogramPicksChoice` is a mixin for a ``QWidget`` with ``self.viewer``,
``self.image_combo`` and ``self.picks_combo``: it lists the 3-D image and points layers, keeps
both combo boxes in step with the layer list and the active layer, and answers the chosen
layers. A widget that wants to react to a new tomogram overrides :meth:`_image_chosen`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QComboBox

from ._task import report_error

MODEL_SUFFIX = ".pt"


def fill_combo(combo: QComboBox, names: list[str], active_name: str | None) -> None:
    """Refill ``combo`` with ``names``: keep its choice, else the active layer, else the newest."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    elif active_name in names:
        combo.setCurrentText(active_name)
    elif names:
        combo.setCurrentIndex(len(names) - 1)
    combo.blockSignals(False)


def is_average_layer(layer) -> bool:
    """A class / cluster average added by the Results widget (not a tomogram to work on)."""
    return isinstance(getattr(layer, "metadata", None), dict) and "average_of" in layer.metadata


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


class TomogramPicksChoice:
    """Mixin: the tomogram (3-D image) and picks (3-D points) layers a widget works on."""

    def _connect_layer_events(self) -> None:
        """Follow layers being added/removed and the active layer; fill the combos now."""
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._follow_selection)
        self._refresh_layers()

    def _images(self):
        from napari.layers import Image

        return [ly for ly in self.viewer.layers
                if isinstance(ly, Image) and ly.ndim == 3 and not ly.rgb and not ly.name.endswith("DoG response")
                and not is_average_layer(ly)]

    def _points(self):
        from napari.layers import Points

        return [ly for ly in self.viewer.layers if isinstance(ly, Points) and ly.ndim == 3]

    def _refresh_layers(self, event=None) -> None:
        active = self.viewer.layers.selection.active
        active_name = active.name if active is not None else None
        before = self.image_combo.currentText()
        fill_combo(self.image_combo, [ly.name for ly in self._images()], active_name)
        fill_combo(self.picks_combo, [ly.name for ly in self._points()], active_name)
        if self.image_combo.currentText() != before:
            self._image_chosen(self.image_combo.currentText())

    def _follow_selection(self, event=None) -> None:
        active = self.viewer.layers.selection.active
        if active is None:
            return
        if active.name in [ly.name for ly in self._images()]:
            self.image_combo.setCurrentText(active.name)
        elif active.name in [ly.name for ly in self._points()]:
            self.picks_combo.setCurrentText(active.name)

    def _image_chosen(self, name: str) -> None:
        """Called when the chosen tomogram changes (override to react)."""

    def image_layer(self):
        return next((ly for ly in self._images() if ly.name == self.image_combo.currentText()), None)

    def picks_layer(self):
        return next((ly for ly in self._points() if ly.name == self.picks_combo.currentText()), None)

    def chosen_picks(self, who: str, no_picks: str) -> ChosenPicks | None:
        """The chosen tomogram and picks, ready for a core job; None after one warning if one is missing.

        ``who`` prefixes the warning (the widget's name); ``no_picks`` says what to do when the
        picks layer is missing or empty. Picks below a live score threshold are left out (their
        rows too); coordinates are converted to the image's voxels.
        """
        from napari.utils.notifications import show_warning

        from ..io.tomogram import Tomogram
        from ..layers import above_threshold, picks_from_layer

        image, points = self.image_layer(), self.picks_layer()
        if image is None:
            show_warning(f"{who}: open a 3-D tomogram first (File ▸ Open, or the sample data).")
            return None
        if points is None or len(points.data) == 0:
            show_warning(f"{who}: {no_picks}")
            return None
        picks = picks_from_layer(points.data, points.features, points.metadata)
        rows = np.flatnonzero(above_threshold(points.features, points.metadata.get("score_threshold")))
        if len(rows) != len(picks):  # defensive: the two must agree
            rows = np.arange(len(picks))
        picks[["z", "y", "x"]] = to_image_voxels(points, image, picks[["z", "y", "x"]].to_numpy(float))
        data = image.data[0] if getattr(image, "multiscale", False) else image.data
        path = (image.metadata or {}).get("path")
        tomogram = Tomogram(data=data, voxel_size=tuple(float(s) for s in image.scale[-3:]),
                            path=Path(path) if path else None)
        return ChosenPicks(image, points, picks, rows, tomogram)

    def _schedule_redraw(self) -> None:
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()


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
