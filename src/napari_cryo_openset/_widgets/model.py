"""Model widget: templates + imaging condition → simulate → train a classifier; save/load; predict.

Thin glue over the core (no science here):

- **Templates**: the built-in library (one checkbox each) and the user's own maps / atomic
  models (files or folders), loaded at the chosen voxel size in the background job.
- **Imaging**: an :class:`~napari_cryo_openset.simulate.ImagingCondition` (voxel size pre-filled
  from the selected tomogram layer's scale, Å), and a
  :class:`~napari_cryo_openset.simulate.DatasetParams` (box, number per class, decoys labelled
  ``unknown``, empty boxes).
- **Simulate & train** runs :func:`~napari_cryo_openset.train.simulate_and_train` (source
  ``isolated``) or :func:`~napari_cryo_openset.train.simulate_scenes_and_train` (source
  ``scenes``: crowded scenes picked with DoG at the largest template's diameter) in a
  :class:`~._task.TaskRunner` (progress, Cancel, stale results discarded) and draws the
  per-batch training loss and the per-epoch validation accuracy live (matplotlib, at most
  5 redraws per second). The result becomes a
  :class:`~napari_cryo_openset.checkpoint.ModelBundle` (``self.bundle``), which can be saved and
  loaded.
- **Predict** runs :func:`~napari_cryo_openset.predict.predict_picks` on a tomogram + picks layer
  and writes ``class_name``, ``confidence``, ``unknown_score`` and ``is_unknown`` back into the
  picks layer's ``features`` for *every* point (picks that were not classified — rejected, or
  below the Pick widget's live threshold — get an empty class); the border colour then follows
  ``class_name`` through the one palette (``unknown`` in its reserved colour).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..layers import PREDICTION_KEY
from ..predictions import write_predictions
from ._choice import PICKS, TOMOGRAMS, LayerCombo, chosen_picks, polarity_combo
from ._choice import ask_bundle_path, load_bundle_or_report, save_bundle_as
from ._layout import Throttle, form, live_plot, scroll_into
from ..params import DatasetParams, TrainParams
from ._form import param_spin, spin
from ._task import TaskRunner
from .state import viewer_state
from ._tell import tell

_TEMPLATE_FILTER = (
    "Maps and atomic models (*.mrc *.map *.ccp4 *.mrcs *.rec *.pdb *.ent *.cif *.mmcif *.gz);;All files (*)"
)


class ModelWidget(QWidget):
    """Simulate + train a classifier, save/load it, classify picks (dock widget "Model")."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from ..device import available_devices
        from ..simulate import ImagingCondition, builtin_template_names

        self.viewer = napari_viewer
        self._bundle = None
        self.train_result = None
        self.prediction = None
        self.loss_history: list[tuple[int, float]] = []  # (training step, batch loss)
        self.val_acc_history: list[tuple[int, int, float]] = []  # (training step, epoch, val acc)
        default = ImagingCondition()

        # --- templates ---------------------------------------------------------------------
        self.template_checks: dict[str, QCheckBox] = {}
        builtin_grid = QGridLayout()
        builtin_grid.setContentsMargins(0, 0, 0, 0)
        for i, name in enumerate(builtin_template_names()):
            check = QCheckBox(name)
            check.setChecked(True)
            check.setToolTip(f"built-in template {name}")
            self.template_checks[name] = check
            builtin_grid.addWidget(check, i // 3, i % 3)
        self.template_list = QListWidget()
        self.template_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.template_list.setMaximumHeight(56)
        self.template_list.setToolTip("Your own templates: MRC maps or PDB/mmCIF models (files or folders)")
        self.add_files_button = QPushButton("Add files…")
        self.add_folder_button = QPushButton("Add folder…")
        self.remove_button = QPushButton("Remove")
        file_row = QHBoxLayout()
        file_row.addWidget(self.add_files_button)
        file_row.addWidget(self.add_folder_button)
        file_row.addWidget(self.remove_button)
        templates_box = QGroupBox("Templates")
        tl = QVBoxLayout(templates_box)
        tl.addLayout(builtin_grid)
        tl.addWidget(self.template_list)
        tl.addLayout(file_row)

        # --- imaging condition -------------------------------------------------------------
        self.image_combo = LayerCombo(napari_viewer, TOMOGRAMS,
                                      "Tomogram layer: its voxel size fills in the simulation's; prediction runs on it")
        self.voxel_size = param_spin(default, "voxel_size", low=0.1, high=1000.0, decimals=2, suffix=" Å",
                                     tip="Voxel size of the simulated subtomograms (Å); "
                                         "filled from the tomogram layer's scale")
        self.defocus = param_spin(default, "defocus", low=0.1, high=100.0, decimals=2, suffix=" µm", step=0.5,
                                  tip="Defocus, µm underfocus (positive)")
        self.cs = param_spin(default, "cs", low=0.0, high=10.0, decimals=2, suffix=" mm", step=0.1)
        self.voltage = param_spin(default, "voltage", low=10.0, high=1000.0, decimals=0, suffix=" kV", step=100.0)
        self.tilt_min = spin(-90.0, 90.0, default.tilt_range[0], decimals=1, suffix="°", step=5.0,
                             tip="Lowest tilt angle (degrees)")
        self.tilt_max = spin(-90.0, 90.0, default.tilt_range[1], decimals=1, suffix="°", step=5.0,
                             tip="Highest tilt angle (degrees)")
        self.tilt_step = param_spin(default, "tilt_step", low=0.1, high=30.0, decimals=1, suffix="°", step=0.5)
        self.snr = param_spin(default, "snr", low=0.001, high=100.0, decimals=3, step=0.05,
                              tip="Signal-to-noise ratio per projection: var(signal)/var(noise)")
        self.read_button = QPushButton("Read from tomogram")
        self.read_button.setToolTip("Estimate the tilt range (missing wedge), slab and polarity from the tomogram "
                                    "layer and fill in the tilt range (runs in the background)")
        self.condition_note = QLabel("Tilt range: defaults (Read from tomogram to use the tomogram's own).")
        self.condition_note.setWordWrap(True)
        self.estimate = None
        imaging_box = QGroupBox("Imaging")
        grid = QGridLayout(imaging_box)
        grid.addWidget(QLabel("Tomogram"), 0, 0)
        grid.addWidget(self.image_combo, 0, 1, 1, 3)
        for row, pairs in enumerate(
            (
                (("Voxel size", self.voxel_size), ("SNR", self.snr)),
                (("Defocus", self.defocus), ("Cs", self.cs)),
                (("Voltage", self.voltage), ("Tilt step", self.tilt_step)),
                (("Tilt min", self.tilt_min), ("Tilt max", self.tilt_max)),
            ),
            start=1,
        ):
            for col, (label, field) in enumerate(pairs):
                grid.addWidget(QLabel(label), row, 2 * col)
                grid.addWidget(field, row, 2 * col + 1)
        grid.addWidget(self.read_button, 5, 0, 1, 4)
        grid.addWidget(self.condition_note, 6, 0, 1, 4)

        # --- data set and training ---------------------------------------------------------
        self.per_class = param_spin(DatasetParams, "per_class", high=100_000, tip="Simulated subtomograms per template")
        self.box = param_spin(DatasetParams, "box", high=256, tip="Subtomogram edge (voxels)")
        self.decoys = spin(0, 100_000, 100, integer=True,
                           tip="Procedural decoy subtomograms, labelled 'unknown' (default = per class)")
        self.empty = spin(0, 100_000, 50, integer=True, tip="Empty (noise-only) subtomograms (default = per class ÷ 2)")
        self.epochs = param_spin(TrainParams, "epochs", high=10_000, tip="Maximum passes over the training set")
        self.batch_size = param_spin(TrainParams, "batch_size", high=4096, tip="Subtomograms per training step")
        self.seed = param_spin(TrainParams, "seed", tip="Seed for simulation, split and training")
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.device.setToolTip("Where the network runs (auto: cuda → mps → cpu)")
        self.source_kind = QComboBox()
        self.source_kind.addItems(["scenes", "isolated"])
        self.source_kind.setToolTip(
            "scenes: simulate crowded tomograms (slab read from the tomogram if any) and pick them with DoG "
            "(diameter = the largest template) as a tomogram is picked; isolated: one particle per box")
        self._linked = {"decoys": True, "empty": True}
        train_box = QGroupBox("Simulate && train")
        grid = QGridLayout(train_box)
        for row, pairs in enumerate(
            (
                (("Per class", self.per_class), ("Box", self.box)),
                (("Decoys (unknown)", self.decoys), ("Empty", self.empty)),
                (("Epochs", self.epochs), ("Batch", self.batch_size)),
                (("Seed", self.seed), ("Device", self.device)),
                (("Source", self.source_kind), ("", QLabel(""))),
            )
        ):
            for col, (label, field) in enumerate(pairs):
                grid.addWidget(QLabel(label), row, 2 * col)
                grid.addWidget(field, row, 2 * col + 1)
        self.train_button = QPushButton("Simulate && train")
        grid.addWidget(self.train_button, 5, 0, 1, 4)

        # --- live plot ---------------------------------------------------------------------
        self._build_plot()

        # --- model bundle ------------------------------------------------------------------
        self.save_button = QPushButton("Save model…")
        self.load_button = QPushButton("Load model…")
        self.save_button.setEnabled(False)
        self.summary = QLabel("No model yet: simulate & train, or load one.")
        self.summary.setWordWrap(True)
        model_row = QHBoxLayout()
        model_row.addWidget(self.save_button)
        model_row.addWidget(self.load_button)

        # --- prediction --------------------------------------------------------------------
        self.picks_combo = LayerCombo(napari_viewer, PICKS,
                                      "Points layer whose picks are classified (results go into its features)")
        self.polarity = polarity_combo()
        self.predict_button = QPushButton("Predict")
        self.predict_summary = QLabel("")
        self.predict_summary.setWordWrap(True)
        predict_box = QGroupBox("Predict")
        form([("Picks layer", self.picks_combo), ("Polarity", self.polarity), self.predict_button,
              self.predict_summary], predict_box)

        self.runner = TaskRunner()

        # the form is tall: scroll rather than push the dock off small screens
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(templates_box)
        layout.addWidget(imaging_box)
        layout.addWidget(train_box)
        layout.addWidget(self.runner)
        layout.addWidget(self.canvas)
        layout.addLayout(model_row)
        self.canvas.setVisible(False)  # no empty axes: shown when a run starts
        layout.addWidget(self.summary)
        layout.addWidget(predict_box)
        layout.addStretch(1)
        self.scroll = scroll_into(self, content)
        self._redraw = Throttle(self, self.redraw_plot)

        self.add_files_button.clicked.connect(self._choose_files)
        self.add_folder_button.clicked.connect(self._choose_folder)
        self.remove_button.clicked.connect(self.remove_selected_templates)
        self.train_button.clicked.connect(self.start_training)
        self.read_button.clicked.connect(self.read_condition)
        self.predict_button.clicked.connect(self.start_prediction)
        self.save_button.clicked.connect(self._choose_save_path)
        self.load_button.clicked.connect(self._choose_load_path)
        self.per_class.valueChanged.connect(self._per_class_changed)
        self.decoys.valueChanged.connect(lambda _: self._linked.__setitem__("decoys", False))
        self.empty.valueChanged.connect(lambda _: self._linked.__setitem__("empty", False))
        self.image_combo.layer_changed.connect(self._image_chosen)
        self.runner.started.connect(lambda: self._set_busy(True))
        self.runner.finished.connect(lambda: self._set_busy(False))
        self._image_chosen(self.image_combo.layer())

    # --- the model ----------------------------------------------------------------------------
    @property
    def bundle(self):
        """The current :class:`~napari_cryo_openset.checkpoint.ModelBundle` (None before training/loading)."""
        return self._bundle

    @bundle.setter
    def bundle(self, bundle) -> None:
        self._bundle = bundle
        self.save_button.setEnabled(bundle is not None and not self.runner.running)
        self.summary.setText("No model yet: simulate & train, or load one." if bundle is None
                             else f"Model: {bundle.describe()}.")

    # --- plot -----------------------------------------------------------------------------
    def _build_plot(self) -> None:
        self.figure, self.canvas, ax, ax2, _ = live_plot(self.viewer, "training step (batch)")
        ax.set_ylabel("loss", color="#56b4e9", fontsize=7)
        ax2.set_ylabel("val accuracy", color="#e69f00", fontsize=7)
        (self.loss_line,) = ax.plot([], [], color="#56b4e9", lw=1.0, label="train loss (batch)")
        (self.acc_line,) = ax2.plot([], [], color="#e69f00", marker="o", ms=3, lw=1.2, label="val accuracy (epoch)")
        self._ax, self._ax2 = ax, ax2

    def redraw_plot(self) -> None:
        """Redraw the loss/accuracy plot from ``loss_history`` and ``val_acc_history``."""
        if self.loss_history:
            x, y = zip(*self.loss_history)
            self.loss_line.set_data(x, y)
        else:
            self.loss_line.set_data([], [])
        if self.val_acc_history:
            x2, _, acc = zip(*self.val_acc_history)
            self.acc_line.set_data(x2, acc)
        else:
            self.acc_line.set_data([], [])
        self._ax.relim()
        self._ax.autoscale_view()
        self._ax2.set_ylim(0, 1.02)
        self.canvas.draw_idle()

    # --- layers ---------------------------------------------------------------------------
    def image_layer(self):
        return self.image_combo.layer()

    def picks_layer(self):
        return self.picks_combo.layer()

    def _image_chosen(self, layer) -> None:
        if layer is None:
            return
        scale = np.asarray(layer.scale[-3:], dtype=float)
        if np.all(scale > 0):
            self.voxel_size.setValue(float(np.mean(scale)))

    def read_condition(self):
        """Estimate the imaging condition of the tomogram layer in the background; returns the worker."""
        from napari.utils.notifications import show_warning

        layer = self.image_layer()
        if layer is None:
            show_warning("Model: choose a tomogram layer to read its imaging condition from.")
            return None
        from ..jobs import estimate_job

        return self.runner.start(estimate_job, layer.data, float(self.voxel_size.value()),
                                 on_result=self.use_estimate, label="Read the imaging condition")

    def use_estimate(self, estimate) -> None:
        """Fill in what the tomogram tells (the tilt range) and say what it could not read."""
        self.estimate = estimate
        lines = []
        if estimate.tilt_range is not None:
            lo, hi = (round(v) for v in estimate.tilt_range)
            self.tilt_min.setValue(float(lo))
            self.tilt_max.setValue(float(hi))
            lines.append(f"Tilt range {lo:+d}…{hi:+d}° read from the tomogram (missing wedge about "
                         f"{estimate.tilt_axis}, depth {estimate.tilt_quality:.2f}).")
        else:
            lines.append(f"Tilt range not readable ({estimate.tilt_range_reason}): keeping "
                         f"{self.tilt_min.value():+.0f}…{self.tilt_max.value():+.0f}°.")
        if estimate.thickness_angstrom is not None:
            lines.append(f"Slab {estimate.thickness_angstrom:.0f} Å thick; polarity {estimate.polarity}.")
        self.condition_note.setText(" ".join(lines))

    def selected_builtin(self) -> list[str]:
        return [name for name, check in self.template_checks.items() if check.isChecked()]

    def template_paths(self) -> list[str]:
        return [self.template_list.item(i).text() for i in range(self.template_list.count())]

    def add_template_paths(self, paths) -> None:
        """Add template files or folders (MRC maps, PDB/mmCIF models) to the user list."""
        have = set(self.template_paths())
        for p in paths:
            p = str(p)
            if p and p not in have:
                self.template_list.addItem(p)
                have.add(p)

    def remove_selected_templates(self) -> None:
        for item in self.template_list.selectedItems():
            self.template_list.takeItem(self.template_list.row(item))

    def _choose_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add template maps or models", "", _TEMPLATE_FILTER)
        self.add_template_paths(paths)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a folder of templates")
        if path:
            self.add_template_paths([path])

    def _per_class_changed(self, value: int) -> None:
        for name, box, linked_value in (("decoys", self.decoys, value), ("empty", self.empty, value // 2)):
            if self._linked[name]:
                box.blockSignals(True)
                box.setValue(linked_value)
                box.blockSignals(False)

    # --- parameters -----------------------------------------------------------------------
    def imaging_condition(self):
        from ..simulate import ImagingCondition

        return ImagingCondition(
            voxel_size=float(self.voxel_size.value()), defocus=float(self.defocus.value()), cs=float(self.cs.value()),
            voltage=float(self.voltage.value()),
            tilt_range=(float(self.tilt_min.value()), float(self.tilt_max.value())),
            tilt_step=float(self.tilt_step.value()), snr=float(self.snr.value()),
        )

    def dataset_params(self):
        from ..simulate import DatasetParams

        return DatasetParams(box=int(self.box.value()), per_class=int(self.per_class.value()),
                             decoys=int(self.decoys.value()), empty=int(self.empty.value()),
                             condition=self.imaging_condition(), seed=int(self.seed.value()))

    def scene_slab(self) -> float | None:
        """Slab thickness (voxels) of the scenes: the one read from the tomogram (Read from tomogram), else None."""
        slab = getattr(getattr(self, "estimate", None), "slab", None)
        return float(slab[1] - slab[0]) if slab is not None else None

    def train_params(self):
        from ..train import TrainParams

        return TrainParams(epochs=int(self.epochs.value()), batch_size=int(self.batch_size.value()),
                           seed=int(self.seed.value()), device=self.device.currentText())

    # --- training -------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.train_button.setEnabled(not busy)
        self.read_button.setEnabled(not busy)
        self.predict_button.setEnabled(not busy)
        self.load_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and self.bundle is not None)

    def start_training(self):
        """Simulate the chosen templates and train on them in the background; returns the worker."""
        from napari.utils.notifications import show_warning

        from ..errors import CryoOpensetError

        builtin, paths = self.selected_builtin(), self.template_paths()
        if not builtin and not paths:
            show_warning("Model: choose at least one template (a built-in one, or Add files…).")
            return None
        try:
            dataset_params = self.dataset_params()
            train_params = self.train_params()
        except CryoOpensetError as exc:
            show_warning(f"Model: {exc}")
            return None
        self.loss_history = []
        self.canvas.setVisible(True)
        self.val_acc_history = []
        self.redraw_plot()
        from ..jobs import train_job

        return self.runner.start(
            train_job, builtin, paths, float(dataset_params.condition.voxel_size), dataset_params, train_params,
            self.source_kind.currentText(), None, self.scene_slab(), on_result=self.use_training_result, on_progress=self.add_train_progress, label="Simulate & train",
        )

    def add_train_progress(self, event) -> None:
        """Take one progress event of the training job into the live plot (batch loss, epoch accuracy)."""
        metrics = getattr(event, "metrics", None) or {}
        if getattr(event, "stage", "") != "train" or "loss" not in metrics:
            return
        if "val_acc" in metrics:  # end of an epoch (its "loss" is the epoch mean: not plotted)
            self.val_acc_history.append((int(event.step), int(metrics.get("epoch", 0)), float(metrics["val_acc"])))
        else:
            self.loss_history.append((int(metrics.get("step", event.step)), float(metrics["loss"])))
        self._redraw.request()

    def use_training_result(self, result) -> None:
        """Use a completed :class:`~napari_cryo_openset.train.TrainResult`: its bundle becomes the
        current model, published (with the set it learned) for the other widgets."""

        from ..checkpoint import bundle_from_training

        self.train_result = result
        self.bundle = bundle_from_training(result)
        viewer_state(self.viewer).publish_source(self.bundle, data=result.data, origin="trained in the Model widget")
        self._redraw.stop()
        self.redraw_plot()
        text = (f"Validation accuracy {result.val_accuracy:.3f} (best epoch {result.best_epoch} of "
                f"{len(result.history)}); classes: {', '.join(result.class_names)}; {result.stopped}; "
                f"{result.seconds:.0f} s on {result.device}.")
        self.summary.setText(text)
        tell(self.viewer, f"Model: {text}")

    def cancel(self) -> None:
        """Cancel the running job (training or prediction); its result is discarded."""
        self.runner.cancel()

    # --- save / load ----------------------------------------------------------------------
    def save_model(self, path) -> Path | None:
        """Write the current model bundle to ``path`` (``.pt`` added if there is no suffix)."""
        return save_bundle_as(self.bundle, path, "Model",
                              "there is no model to save yet (simulate & train, or load one).")

    def load_model(self, path):
        """Load a model bundle from ``path``; on failure, say why and keep the current model."""

        bundle = load_bundle_or_report(path)
        if bundle is None:
            return None
        self.bundle = bundle
        self.train_result = None
        viewer_state(self.viewer).publish_source(bundle, origin=f"loaded from {Path(path).name}")
        training = bundle.provenance.get("training") or {}
        acc = training.get("val_accuracy")
        acc_s = f" Validation accuracy {float(acc):.3f}." if isinstance(acc, (int, float)) else ""
        self.summary.setText(f"Loaded {Path(path).name}: {bundle.describe()}.{acc_s}")
        tell(self.viewer, f"Model: loaded {Path(path).name}")
        return bundle

    def _choose_save_path(self) -> None:
        path = ask_bundle_path(self, "Save model bundle", save_as="model.pt")
        if path:
            self.save_model(path)

    def _choose_load_path(self) -> None:
        path = ask_bundle_path(self, "Load model bundle")
        if path:
            self.load_model(path)

    # --- prediction -----------------------------------------------------------------------
    def start_prediction(self):
        """Classify the picks of the chosen Points layer on the chosen tomogram; returns the worker."""
        from napari.utils.notifications import show_warning

        from ..errors import CryoOpensetError
        from ..jobs import predict_job
        from ..predict import PredictParams

        if self.bundle is None:
            show_warning("Model: train or load a model before predicting.")
            return None
        try:
            chosen = chosen_picks(self.image_layer(), self.picks_layer(), "Model",
                                  "pick particles first (Pick widget, or open a STAR/CSV file of picks).")
            if chosen is None:
                return None
            params = PredictParams(polarity=self.polarity.currentText(), device=self.device.currentText())
        except CryoOpensetError as exc:
            show_warning(f"Model: {exc}")
            return None
        points = chosen.points
        self._predict_target = (points, len(points.data), chosen.rows)
        return self.runner.start(predict_job, self.bundle, chosen.tomogram, chosen.picks, params,
                                 on_result=self._on_predicted, label=f"Predicting {points.name}")

    def _on_predicted(self, result) -> None:
        from napari.utils.notifications import show_warning

        layer, n, rows = self._predict_target
        if layer not in self.viewer.layers or len(layer.data) != n:
            show_warning(f"Model: the picks of '{layer.name}' changed during prediction; run Predict again.")
            return
        self.prediction = result
        write_predictions(layer, result.picks, rows,
                          self.bundle.class_names if self.bundle is not None else None)
        layer.metadata[PREDICTION_KEY] = {
            "model": self.bundle.describe() if self.bundle is not None else "",
            "polarity": result.polarity, "resampled": bool(result.resampled), "counts": dict(result.counts),
        }
        text = result.summary() + (" (boxes resampled to the model's voxel size)" if result.resampled else "")
        self.predict_summary.setText(text)
        tell(self.viewer, f"Model: {text}")

