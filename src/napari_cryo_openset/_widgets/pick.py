"""Pick widget: Difference-of-Gaussian picking on a tomogram layer, with a live threshold.

Parameters in (image layer, particle diameter in Å, polarity, threshold rule), the core
generator :func:`napari_cryo_openset.picking.pick_particles` in a background worker (progress,
Cancel), a Points layer out: the image's scale, point size = each pick's diameter, features
``score``, ``diameter`` and ``curation``. A **max diameter** above the diameter picks every size in
between (multi-scale: scores are robust z-scores per scale, one slider for all sizes). The layer holds every candidate peak; the **threshold slider** only changes which
are shown (``shown``), instantly, without filtering again. Saving or using the picks keeps those
at or above the threshold (and every pick the user accepted); see
:func:`napari_cryo_openset.layers.picks_from_layer`.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..layers import ANGSTROM, HIDDEN_GROUPS_KEY, SCORE_THRESHOLD_KEY, picks_layer
from ._choice import DOG_SUFFIX, TOMOGRAMS, LayerCombo, polarity_combo
from ._layout import form
from ..params import PickingParams
from ._form import param_spin
from ._task import TaskRunner
from ._tell import tell

_SLIDER_STEPS = 1000


class PickWidget(QWidget):
    """DoG particle picking (dock widget)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.result = None
        self.points_layer = None

        self.image_combo = LayerCombo(napari_viewer, TOMOGRAMS, "The tomogram to pick particles in")
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(1.0, 100000.0)
        self.diameter.setDecimals(1)
        self.diameter.setValue(120.0)
        self.diameter.setSuffix(" Å")
        self.diameter.setToolTip("Particle diameter in Å (sets σ of the band-pass and the point size)")
        self.max_diameter = QDoubleSpinBox()
        self.max_diameter.setRange(0.0, 100000.0)
        self.max_diameter.setDecimals(1)
        self.max_diameter.setValue(0.0)
        self.max_diameter.setSuffix(" Å")
        self.max_diameter.setSpecialValueText("single size")
        self.max_diameter.setToolTip(
            "Largest particle diameter in Å: picks every size from the diameter to this one "
            "(multi-scale DoG; each pick gets its own size). 0 = one size."
        )
        self.polarity = polarity_combo()
        self.method = QComboBox()
        self.method.addItems(["robust", "aitom", "topn"])
        self.method.setToolTip(
            "robust: median + k·MAD of the response; aitom: m + 3(M−m)/20 of the peaks; topn: the N best"
        )
        self.k_mad = param_spin(PickingParams, "k_mad", low=0.0, high=50.0)
        self.max_picks = QSpinBox()
        self.max_picks.setRange(0, 10_000_000)
        self.max_picks.setValue(0)
        self.max_picks.setSpecialValueText("no limit")
        self.min_distance = QDoubleSpinBox()
        self.min_distance.setRange(0.0, 100000.0)
        self.min_distance.setSuffix(" Å")
        self.min_distance.setSpecialValueText("auto (0.8 × diameter)")
        self.preview = QCheckBox("Show band-pass (DoG) preview")
        self.pick_button = QPushButton("Pick particles")
        self.task = TaskRunner()
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, _SLIDER_STEPS)
        self.threshold_slider.setEnabled(False)
        self.threshold_label = QLabel("Threshold: pick first")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(form([("Tomogram", self.image_combo), ("Particle diameter", self.diameter),
                               ("Max diameter", self.max_diameter),
                               ("Polarity", self.polarity), ("Threshold rule", self.method), ("k (robust)", self.k_mad),
                               ("Max picks", self.max_picks), ("Min distance", self.min_distance)]))
        layout.addWidget(self.preview)
        layout.addWidget(self.pick_button)
        layout.addWidget(self.task)
        slider_row = QHBoxLayout()
        slider_row.addWidget(QLabel("Threshold"))
        slider_row.addWidget(self.threshold_slider, 1)
        layout.addLayout(slider_row)
        layout.addWidget(self.threshold_label)
        layout.addWidget(self.summary)
        layout.addStretch(1)

        self.pick_button.clicked.connect(self.start_picking)
        self.threshold_slider.valueChanged.connect(self._on_slider)
        self.method.currentTextChanged.connect(self._update_enabled)
        self.task.started.connect(lambda: self.pick_button.setEnabled(False))
        self.task.finished.connect(lambda: self.pick_button.setEnabled(True))
        self._update_enabled()

    # --- inputs ---------------------------------------------------------------------------
    def _update_enabled(self) -> None:
        method = self.method.currentText()
        self.k_mad.setEnabled(method == "robust")

    def image_layer(self):
        return self.image_combo.layer()

    def params(self):
        """The :class:`~napari_cryo_openset.picking.PickingParams` the widget describes."""
        from ..picking import PickingParams

        method = self.method.currentText()
        max_picks = self.max_picks.value() or None
        if method == "topn" and max_picks is None:
            max_picks = 100
        return PickingParams(
            diameter=float(self.diameter.value()),
            max_diameter=float(self.max_diameter.value()) or None,
            polarity=self.polarity.currentText(),
            threshold_method=method,
            k_mad=float(self.k_mad.value()),
            max_picks=max_picks,
            min_distance=float(self.min_distance.value()) or None,
        )

    # --- running --------------------------------------------------------------------------
    def start_picking(self):
        """Start picking in the background; returns the worker (None if there is no image)."""
        from napari.utils.notifications import show_warning

        from ..errors import CryoOpensetError
        from ..jobs import pick_job

        image = self.image_layer()
        if image is None:
            show_warning("Pick: open a 3-D tomogram first (File ▸ Open, or the sample data).")
            return None
        voxel_size = tuple(float(s) for s in image.scale[-3:])
        try:
            params = self.params().validate()
        except CryoOpensetError as exc:
            show_warning(f"Pick: {exc}")
            return None
        self._image_name = image.name
        return self.task.start(
            pick_job,
            image.data,
            voxel_size,
            params,
            self.preview.isChecked(),
            on_result=self._on_result,
            label=f"Picking {image.name}",
        )

    def _on_result(self, output) -> None:
        from .._viewer import show_particles_across_slices

        result, response = output
        self.result = result
        image = self.image_layer()
        scale = tuple(float(s) for s in result.voxel_size)
        name = f"{self._image_name} picks"
        data, kwargs, _ = picks_layer(
            result.candidates,
            voxel_size=scale,
            name=name,
            diameter=result.params.largest_diameter,
            metadata={"picking": result.to_dict(), "source_image": self._image_name},
        )
        existing = next((ly for ly in self.viewer.layers if ly.name == name), None)
        if existing is not None and _has_curation(existing):
            kwargs["name"] = f"{name} (new)"  # never overwrite what the user curated
            existing = None
        if existing is not None:
            self.viewer.layers.remove(existing)
        self.points_layer = self.viewer.add_points(data, **kwargs)
        if response is not None:
            prev = f"{self._image_name} {DOG_SUFFIX}"
            if prev in self.viewer.layers:
                self.viewer.layers.remove(prev)
            lo, hi = np.percentile(response[:: max(1, response.shape[0] // 16)], (1, 99.9))
            self.viewer.add_image(
                response, name=prev, scale=scale, units=ANGSTROM, colormap="magma", blending="additive",
                contrast_limits=(float(lo), float(hi)), visible=True, opacity=0.6,
            )
            self.viewer.layers.move(self.viewer.layers.index(self.points_layer), len(self.viewer.layers) - 1)
        display = show_particles_across_slices(self.viewer, result.params.largest_diameter)
        self._setup_slider(result)
        self.summary.setText(f"{result.message or result.summary()}. Display: {display}.")
        if image is not None:
            self.viewer.layers.selection.active = self.points_layer
        tell(self.viewer, f"Pick: {result.summary()}")

    # --- live threshold -------------------------------------------------------------------
    def _setup_slider(self, result) -> None:
        scores = result.candidates["score"].to_numpy(dtype=float)
        scores = scores[np.isfinite(scores)]
        if scores.size == 0:
            self.threshold_slider.setEnabled(False)
            self.threshold_label.setText("Threshold: no candidates")
            self._score_range = (0.0, 1.0)
            self._set_threshold(result.threshold)
            return
        lo, hi = float(scores.min()), float(scores.max())
        if not hi > lo:
            hi = lo + 1.0
        self._score_range = (lo, hi)
        self.threshold_slider.setEnabled(True)
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(self._to_slider(result.threshold))
        self.threshold_slider.blockSignals(False)
        self._set_threshold(result.threshold)

    def _to_slider(self, t: float) -> int:
        lo, hi = self._score_range
        return int(round(np.clip((t - lo) / (hi - lo), 0, 1) * _SLIDER_STEPS))

    def _from_slider(self, value: int) -> float:
        lo, hi = self._score_range
        return lo + (hi - lo) * value / _SLIDER_STEPS

    def _on_slider(self, value: int) -> None:
        self._set_threshold(self._from_slider(value))

    def set_threshold(self, threshold: float) -> None:
        """Show the picks at or above ``threshold`` (used by the slider; no refiltering)."""
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(self._to_slider(threshold))
        self.threshold_slider.blockSignals(False)
        self._set_threshold(threshold)

    def _set_threshold(self, threshold: float) -> None:
        layer = self.points_layer
        if layer is None or layer not in self.viewer.layers:
            return
        from ..layers import visible_picks_mask

        layer.metadata[SCORE_THRESHOLD_KEY] = float(threshold)
        # classes/clusters hidden in the Results widget stay hidden
        shown = visible_picks_mask(layer.features, threshold, layer.metadata.get(HIDDEN_GROUPS_KEY))
        layer.shown = shown
        self.threshold_label.setText(
            f"Threshold {threshold:.4g}: {int(shown.sum())} of {len(shown)} candidates shown"
        )


def _has_curation(layer) -> bool:
    feats = getattr(layer, "features", None)
    return feats is not None and "curation" in feats.columns and bool((feats["curation"] != "unreviewed").any())

