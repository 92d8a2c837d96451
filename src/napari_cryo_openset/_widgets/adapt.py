"""Adapt & predict widget: adapt the source model to this tomogram's picks, classify them, open set.

Thin glue over :func:`napari_cryo_openset.adapt.adapt_to_tomogram` (no science here):

- **Model and source set**: the model the Model widget trained, with the simulated set it
  trained on (shared through :mod:`.state`); or a model file (**Load model…**) and its
  simulated set (**Source set…**, the ``.npz`` from ``simulate``; filled in automatically when
  the model records where it was trained and that file exists). Both methods need the source
  set: 3D-ADA for the source side of its domain discriminator, MLUDA for its supervised loss.
- **Adapt** runs 3D-ADA or MLUDA on the active picks (accepted + unreviewed, and above the Pick
  widget's live threshold) of the chosen Points layer in a :class:`~._task.TaskRunner`
  (progress, Cancel), drawing the losses live (3D-ADA: discriminator and target-encoder losses,
  discriminator accuracy; MLUDA: the total loss and the fraction of target picks beyond the
  unknown margin). Predictions are written into the layer only when a run completes, so a
  cancelled run leaves the previous ones untouched.
- **Results**: the run's summary, a per-class count table in the palette's colours (``unknown``
  in its reserved magenta), the calibrated unknown threshold — which can be overridden to
  re-decide ``unknown`` without re-running — and **Save adapted model…**.
- **Refine with my labels** (:func:`napari_cryo_openset.adapt.refine.refine_with_labels`): adapts
  the *source* model again with the picks you labelled in Curate (``curated_class``, read from the
  layer at the click) as labelled targets, for *Refine rounds* rounds, in the same runner; on
  completion the refined predictions go into the layer as Adapt's do (your labels are never
  changed) and the counts before → after are shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..adapt.common import is_adapted, source_mismatch
from ..layers import PREDICTION_KEY
from ..predictions import picks_at_threshold, with_threshold, write_predictions
from ._choice import PICKS, TOMOGRAMS, LayerCombo, chosen_picks, polarity_combo
from ._choice import ask_bundle_path, load_bundle_or_report, save_bundle_as
from ._layout import Throttle, form, live_plot, scroll_into
from ..params import AdaptParams
from ._counts import CountsTable
from ._form import param_spin
from ._task import TaskRunner, report_error
from .state import follow, viewer_state
from ._tell import tell

METHODS = {"3D-ADA": "ada", "MLUDA": "mluda"}
_NO_MODEL = "No model: simulate && train one in the Model widget, or Load model…"
_NO_SOURCE = "No source set: adaptation needs the simulated set the model was trained on (Source set…)"


class AdaptWidget(QWidget):
    """Adapt the model to a tomogram's picks and classify them (dock widget "Adapt & predict")."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from ..device import available_devices

        self.viewer = napari_viewer
        self.state = viewer_state(napari_viewer)
        self.bundle = None  # the source model
        self.source = None  # the SimulatedSet it was trained on
        self.adapted = None  # the adapted ModelBundle of the last completed run
        self.adaptation = None  # its TomogramAdaptation (result, picks with predictions, polarity)
        self.calibrated_threshold: float | None = None
        self.threshold_override: float | None = None  # None: the calibrated threshold is in use
        self.class_counts: dict[str, int] = {}  # active picks per predicted class (as in the table)
        self.loss_history: dict[str, list[tuple[int, float]]] = {}
        self.rate_history: list[tuple[int, float]] = []  # D accuracy (3D-ADA) / target unknown fraction (MLUDA)
        self._target = None  # (layer, number of points, rows) of the running / last run
        self._plot_method = "ada"

        # --- model and source set ---------------------------------------------------------
        self.model_label = QLabel(_NO_MODEL)
        self.source_label = QLabel(_NO_SOURCE)
        for label in (self.model_label, self.source_label):
            label.setWordWrap(True)
        self.load_model_button = QPushButton("Load model…")
        self.load_model_button.setToolTip("The source model: a bundle (.pt) written by the Model widget or "
                                          "'napari-cryo-openset train'")
        self.source_button = QPushButton("Source set…")
        self.source_button.setToolTip("The simulated set (.npz from 'napari-cryo-openset simulate') the model was "
                                      "trained on")
        model_box = QGroupBox("Source model")
        ml = QVBoxLayout(model_box)
        ml.addWidget(self.model_label)
        ml.addWidget(self.source_label)
        row = QHBoxLayout()
        row.addWidget(self.load_model_button)
        row.addWidget(self.source_button)
        ml.addLayout(row)

        # --- target and settings ----------------------------------------------------------
        self.image_combo = LayerCombo(napari_viewer, TOMOGRAMS, "The tomogram to adapt to")
        self.picks_combo = LayerCombo(napari_viewer, PICKS,
                                      "Its picks: the unlabelled target data; predictions go into this layer")
        self.polarity = polarity_combo()
        self.method = QComboBox()
        for name, key in METHODS.items():
            self.method.addItem(name, key)
        self.method.setToolTip("3D-ADA: adversarial feature alignment (ADDA-style); "
                               "MLUDA: margin losses + CORAL, open-set fine-tuning")
        self.iterations = param_spin(AdaptParams, "iterations", high=1_000_000,
                                     tip="Optimisation rounds (3D-ADA may stop earlier: domains aligned, or a collapse)")
        self.label_iterations = param_spin(AdaptParams, "label_iterations", high=1_000_000,
                                           tip="Optimisation rounds of Refine with my labels")
        self.seed = param_spin(AdaptParams, "seed", tip="Seed of everything random in the adaptation")
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.device.setToolTip("Where the network runs (auto: cuda → mps → cpu)")
        self.adapt_button = QPushButton("Adapt")
        self.adapt_button.setToolTip("Adapt the model to the picks, then classify them (known class or unknown)")
        settings_box = QGroupBox("Adapt to this tomogram")
        form([("Tomogram", self.image_combo), ("Picks layer", self.picks_combo), ("Polarity", self.polarity),
              ("Method", self.method), ("Iterations", self.iterations), ("Refine rounds", self.label_iterations),
              ("Seed", self.seed),
              ("Device", self.device), self.adapt_button], settings_box)

        self.runner = TaskRunner()
        self._build_plot()

        # --- results ----------------------------------------------------------------------
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.counts_table = CountsTable()
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1e9)
        self.threshold.setDecimals(4)
        self.threshold.setKeyboardTracking(False)  # re-decide when typing is done, not per key
        self.threshold.setToolTip("Unknown threshold: a pick whose unknown score (distance to the nearest class "
                                  "centre) is above it is 'unknown'. Calibrated on held-out source data; change it "
                                  "to re-decide without re-running.")
        self.reset_threshold_button = QPushButton("Calibrated")
        self.reset_threshold_button.setToolTip("Back to the calibrated threshold")
        self.threshold_label = QLabel("")
        self.threshold_label.setWordWrap(True)
        self.save_button = QPushButton("Save adapted model…")
        self.refine_button = QPushButton("Refine with my labels")
        self.refine_summary = QLabel("")  # counts before → after and what the labels did
        self.refine_summary.setWordWrap(True)
        results_box = QGroupBox("Results")
        rl = QVBoxLayout(results_box)
        rl.addWidget(self.summary)
        rl.addWidget(self.counts_table)
        rl.addWidget(self.refine_button)
        rl.addWidget(self.refine_summary)
        trow = QHBoxLayout()
        trow.addWidget(QLabel("Unknown threshold"))
        trow.addWidget(self.threshold, 1)
        trow.addWidget(self.reset_threshold_button)
        rl.addLayout(trow)
        rl.addWidget(self.threshold_label)
        rl.addWidget(self.save_button)
        self._set_results_enabled(False)

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(model_box)
        layout.addWidget(settings_box)
        layout.addWidget(self.runner)
        layout.addWidget(self.canvas)
        layout.addWidget(results_box)
        self.canvas.setVisible(False)  # no empty axes: shown when a run starts
        layout.addStretch(1)
        self.scroll = scroll_into(self, content)
        self._redraw = Throttle(self, self.redraw_plot)

        self.load_model_button.clicked.connect(self._choose_model)
        self.source_button.clicked.connect(self._choose_source)
        self.adapt_button.clicked.connect(self.start_adaptation)
        self.refine_button.clicked.connect(self.start_refinement)
        self.picks_combo.layer_changed.connect(self._follow_picks)
        self.save_button.clicked.connect(self._choose_save_path)
        self.threshold.valueChanged.connect(self.set_threshold)
        self.reset_threshold_button.clicked.connect(self.reset_threshold)
        self.runner.started.connect(lambda: self._set_busy(True))
        self.runner.finished.connect(lambda: self._set_busy(False))
        follow(self.state.source_changed, self, self._source_published)
        self._followed = None  # the picks layer whose labels the refine button counts
        self._follow_picks(self.picks_layer())
        self.destroyed.connect(lambda *_: self._unfollow())  # the layer may outlive the dock
        if self.state.source is not None:
            self._source_published(self.state.source)

    # --- model and source set -------------------------------------------------------------
    def image_layer(self):
        return self.image_combo.layer()

    def picks_layer(self):
        return self.picks_combo.layer()

    def _source_published(self, published) -> None:
        """The Model widget trained or loaded a model: use it (with its training set, if known)."""
        self.use_model(published.bundle, published.origin or "from the Model widget")
        if published.data is not None:
            self._use_source(published.data, "the set it was trained on, in memory")

    def use_model(self, bundle, origin: str) -> None:
        """Adapt ``bundle`` from now on (``origin`` says where it came from); a source set of another model is dropped."""
        self.bundle = bundle
        if bundle is None:
            self.model_label.setText(_NO_MODEL)
        else:
            self.model_label.setText(f"Model ({origin}): {bundle.describe()}.")
        why = source_mismatch(bundle, self.source)
        if why is not None:  # the previous source set belongs to another model
            self._use_source(None, "")
        self._update_adapt_button()

    def _use_source(self, source, origin: str) -> None:
        self.source = source
        if source is None:
            self.source_label.setText(_NO_SOURCE)
        else:
            counts = ", ".join(f"{k} {v}" for k, v in source.counts().items())
            self.source_label.setText(f"Source set ({origin}): {len(source)} subtomograms of {source.box}³ at "
                                      f"{source.voxel_size:g} Å ({counts}).")
        self._update_adapt_button()

    def load_model(self, path):
        """Load a source model bundle; on failure, say why and keep the current model."""
        from napari.utils.notifications import show_error

        bundle = load_bundle_or_report(path)
        if bundle is None:
            return None
        if is_adapted(bundle):
            show_error(f"Adapt: '{Path(path).name}' is an adapted model; load the source model it was adapted from.")
            return None
        self.use_model(bundle, f"loaded from {Path(path).name}")
        recorded = bundle.provenance.get("source_path") if isinstance(bundle.provenance, dict) else None
        if self.source is None and isinstance(recorded, str) and recorded and Path(recorded).is_file():
            self.set_source(recorded, quiet=True)  # the set the model records it was trained on
        tell(self.viewer, f"Adapt: loaded model {Path(path).name}")
        return bundle

    def set_source(self, path, quiet: bool = False):
        """Use the simulated set at ``path`` (``.npz`` from ``simulate``) as the source data."""
        from napari.utils.notifications import show_error

        from ..errors import CryoOpensetError
        from ..simulate.datasets import load_dataset

        try:
            data = load_dataset(path)
        except CryoOpensetError as exc:
            if not quiet:
                report_error(exc)
            return None
        except Exception as exc:  # noqa: BLE001 - e.g. a file that is no .npz at all
            if not quiet:
                show_error(f"Adapt: '{path}' is not a simulated set ({type(exc).__name__}: {exc})")
            return None
        why = source_mismatch(self.bundle, data)
        if why is not None:
            if not quiet:
                show_error(f"Adapt: '{Path(path).name}' is not the set the model was trained on: {why}.")
            return None
        self._use_source(data, Path(path).name)
        if not quiet:
            tell(self.viewer, f"Adapt: source set {Path(path).name}")
        return data

    def _choose_model(self) -> None:
        path = ask_bundle_path(self, "Load source model")
        if path:
            self.load_model(path)

    def _choose_source(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Simulated source set", "", "Simulated set (*.npz);;All files (*)")
        if path:
            self.set_source(path)

    # --- plot -----------------------------------------------------------------------------
    def _build_plot(self) -> None:
        self.figure, self.canvas, ax, ax2, self._fg = live_plot(self.viewer, "adaptation round")
        self.lines = {
            "loss_d": ax.plot([], [], color="#56b4e9", lw=1.0, label="D loss")[0],
            "loss_t": ax.plot([], [], color="#009e73", lw=1.0, label="target loss")[0],
            "loss": ax.plot([], [], color="#56b4e9", lw=1.0, label="loss")[0],
        }
        self.rate_line = ax2.plot([], [], color="#e69f00", lw=1.2, label="")[0]
        self._ax, self._ax2 = ax, ax2
        self._style_plot("ada")

    def _style_plot(self, method: str) -> None:
        self._plot_method = method
        fg = self._fg
        if method == "ada":
            self._ax.set_ylabel("loss (D, target)", color="#56b4e9", fontsize=7)
            self._ax2.set_ylabel("D accuracy", color="#e69f00", fontsize=7)
            self.rate_line.set_marker("")
        else:
            self._ax.set_ylabel("loss", color="#56b4e9", fontsize=7)
            self._ax2.set_ylabel("target unknown fraction", color="#e69f00", fontsize=7)
            self.rate_line.set_marker("o")
            self.rate_line.set_markersize(3)
        legend = self._ax.get_legend()
        if legend is not None:
            legend.remove()
        names = ("loss_d", "loss_t") if method == "ada" else ("loss",)
        handles = [self.lines[n] for n in names] + [self.rate_line]
        labels = [self.lines[n].get_label() for n in names] + [self._ax2.get_ylabel()]
        self._ax.legend(handles, labels, fontsize=6, loc="upper right", frameon=False, labelcolor=fg)

    def redraw_plot(self) -> None:
        """Redraw the loss / accuracy plot from ``loss_history`` and ``rate_history``."""
        for name, line in self.lines.items():
            points = self.loss_history.get(name) or []
            line.set_data(*(zip(*points) if points else ([], [])))
        self.rate_line.set_data(*(zip(*self.rate_history) if self.rate_history else ([], [])))
        self._ax.relim()
        self._ax.autoscale_view()
        self._ax2.set_ylim(0, 1.02)
        self.canvas.draw_idle()

    def _on_progress(self, event) -> None:
        metrics = getattr(event, "metrics", None) or {}
        if getattr(event, "stage", "") != "adapt" or "iteration" not in metrics:
            return
        it = int(metrics["iteration"])
        if self._plot_method == "ada":
            for name in ("loss_d", "loss_t"):
                if name in metrics:
                    self.loss_history.setdefault(name, []).append((it, float(metrics[name])))
            if "d_acc" in metrics and "histogram" not in metrics:  # per round (eval records are window means)
                self.rate_history.append((it, float(metrics["d_acc"])))
        else:
            if "loss" in metrics:
                self.loss_history.setdefault("loss", []).append((it, float(metrics["loss"])))
            if "target_unknown_fraction" in metrics:
                self.rate_history.append((it, float(metrics["target_unknown_fraction"])))
        self._redraw.request()

    # --- adaptation -----------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.load_model_button.setEnabled(not busy)
        self.source_button.setEnabled(not busy)
        self._update_adapt_button(busy)
        self._set_results_enabled(not busy and self.adapted is not None)

    def _update_adapt_button(self, busy: bool | None = None) -> None:
        busy = self.runner.running if busy is None else busy
        ready = not busy and self.bundle is not None and self.source is not None
        self.adapt_button.setEnabled(ready)
        labels = layer_labels(self.picks_layer())
        self.refine_button.setEnabled(ready and bool(labels))
        self.refine_button.setToolTip(refine_tip(self, labels, busy))

    def _follow_picks(self, layer) -> None:
        """Count the curated labels of the chosen picks layer as Curate changes them (for the refine button)."""
        self._unfollow()
        self._followed = layer
        if layer is not None:
            for emitter in _label_events(layer):
                emitter.connect(self._labels_changed)
        self._update_adapt_button()

    def _unfollow(self) -> None:
        if self._followed is not None:
            for emitter in _label_events(self._followed):
                emitter.disconnect(self._labels_changed)
        self._followed = None

    def _labels_changed(self, event=None) -> None:
        self._update_adapt_button()

    def _set_results_enabled(self, enabled: bool) -> None:
        for w in (self.save_button, self.threshold, self.reset_threshold_button):
            w.setEnabled(enabled)

    def adapt_params(self):
        from ..params import AdaptParams

        return AdaptParams(method=self.method.currentData(), iterations=int(self.iterations.value()),
                           label_iterations=int(self.label_iterations.value()), seed=int(self.seed.value()),
                           device=self.device.currentText())

    def start_adaptation(self):
        """Adapt the model to the chosen picks in the background; returns the worker (None if refused)."""
        from ..adapt.run import adapt_to_tomogram

        chosen = self._chosen_target()
        if chosen is None:
            return None
        return self._run(adapt_to_tomogram, chosen, self._on_adapted, f"{self.method.currentText()} on "
                                                                      f"{chosen.points.name}")

    def start_refinement(self):
        """Refine with the curated labels of the chosen picks (read now) in the background: the source
        model adapted again with them; returns the worker (None if refused, with one message)."""
        from napari.utils.notifications import show_warning

        from ..adapt.refine import refine_with_labels
        from ..curation import check_curated_labels, label_summary
        from ..errors import CryoOpensetError

        chosen = self._chosen_target()
        if chosen is None:
            return None
        name = chosen.points.name
        try:  # labels the model cannot learn: one message, before any work
            check_curated_labels(chosen.picks, self.bundle.class_names, f"'{name}'")
        except CryoOpensetError as exc:
            show_warning(f"Adapt: {exc}")
            return None
        labels = label_summary(chosen.picks)
        if not labels:
            show_warning(f"Adapt: '{name}' has no curated labels to refine with: label picks in Curate first "
                         "(number keys 1–9 for the model's classes, 0 for unknown).")
            return None
        return self._run(refine_with_labels, chosen, self._on_refined,
                         f"Refining {self.method.currentText()} with {sum(labels.values())} labels on {name}")

    def _chosen_target(self):
        """The tomogram and picks to adapt to (:func:`~._choice.chosen_picks`), or None after one message."""
        from napari.utils.notifications import show_warning

        from ..adapt.common import MIN_TARGET_PICKS
        from ..errors import CryoOpensetError

        if self.bundle is None:
            show_warning("Adapt: simulate & train a model in the Model widget, or Load model… first.")
            return None
        if self.source is None:
            show_warning("Adapt: choose the simulated set the model was trained on (Source set…): "
                         "adaptation needs the source data.")
            return None
        try:
            chosen = chosen_picks(self.image_layer(), self.picks_layer(), "Adapt",
                                  "pick particles first (Pick widget, or open a STAR/CSV file of picks).")
        except CryoOpensetError as exc:
            show_warning(f"Adapt: {exc}")
            return None
        if chosen is None:
            return None
        n_active = int((chosen.picks["curation"] != "rejected").sum())
        if n_active < MIN_TARGET_PICKS:
            show_warning(f"Adapt: '{chosen.points.name}' has {n_active} active picks (not rejected, above the "
                         f"picking threshold); adaptation needs at least {MIN_TARGET_PICKS}")
            return None
        return chosen

    def _run(self, job, chosen, on_result, label: str):
        """Run ``job(bundle, source, tomogram, picks, params, polarity=…)`` (adapt or refine) in the runner."""
        from napari.utils.notifications import show_warning

        from ..errors import CryoOpensetError

        try:
            params = self.adapt_params()
        except CryoOpensetError as exc:
            show_warning(f"Adapt: {exc}")
            return None
        self._target = (chosen.points, len(chosen.points.data), chosen.rows)
        self.loss_history, self.rate_history = {}, []
        self._style_plot(params.method)
        self.canvas.setVisible(True)
        self.redraw_plot()
        return self.runner.start(job, self.bundle, self.source, chosen.tomogram, chosen.picks, params,
                                 polarity=self.polarity.currentText(), on_result=on_result,
                                 on_progress=self._on_progress, label=label)

    def cancel(self) -> None:
        """Cancel the running adaptation; the layer keeps its previous predictions."""
        self.runner.cancel()

    def _on_adapted(self, adaptation) -> None:
        self.refine_summary.setText("")
        self._show_result(adaptation, f"adapted to '{self._target[0].name}' in Adapt & predict")

    def _on_refined(self, refinement) -> None:
        """A refinement completed: its predictions go in like an adaptation's; say what the labels changed."""
        n = refinement.labels.get("n", 0)
        self._show_result(refinement, f"refined with {n} labels on '{self._target[0].name}' in Adapt & predict",
                          heading=f"Adapt (refined with {n} labels)")
        order = self.bundle.class_names if self.bundle is not None else ()
        self.refine_summary.setText(f"Refined with your labels — picks before → after:\n"
                                    f"{before_after_text(refinement.counts_before, refinement.counts_after, order)}"
                                    f"\n{refinement.summary()}.")

    def _show_result(self, adaptation, origin: str, heading: str = "Adapt") -> None:
        """Publish a completed run's model, show its threshold and summary, write its predictions."""
        from napari.utils.notifications import show_warning

        self._redraw.stop()
        self.redraw_plot()
        self.adaptation = adaptation
        self.adapted = adaptation.result.bundle
        self._adapted_origin = origin
        self.state.publish_adapted(self.adapted, origin=self._adapted_origin)
        self.calibrated_threshold = float(self.adapted.openset.get("threshold"))
        self.threshold_override = None
        self.threshold.blockSignals(True)
        self.threshold.setSingleStep(max(self.calibrated_threshold / 20.0, 1e-4))
        self.threshold.setValue(self.calibrated_threshold)
        self.threshold.blockSignals(False)
        self._show_threshold()
        self._set_results_enabled(True)
        written = self._write_to_layer()
        result = adaptation.result
        text = (f"{result.summary()}; polarity {adaptation.polarity}; {result.seconds:.0f} s"
                + (" (boxes resampled to the model's voxel size)" if adaptation.resampled else ""))
        self.summary.setText(f"{text}. The table counts the picks at the threshold in use.")
        if written:
            tell(self.viewer, f"{heading}: {text}")
        else:
            layer = self._target[0]
            show_warning(f"Adapt: the picks of '{layer.name}' changed during adaptation; the adapted model is kept "
                         "(Save adapted model…) but its predictions were not written: run Adapt again.")
        self._update_adapt_button()

    @property
    def threshold_in_use(self) -> float | None:
        return self.calibrated_threshold if self.threshold_override is None else self.threshold_override

    def _write_to_layer(self) -> bool:
        """Write the predictions (at the current threshold) into the target layer; False if it changed."""
        layer, n, rows = self._target
        picks = picks_at_threshold(self.adaptation, self.adapted, self.threshold_override)
        active = (picks["curation"] != "rejected").to_numpy()
        self._fill_counts(picks.loc[active, "class_name"].astype(str).to_numpy())
        if layer not in self.viewer.layers or len(layer.data) != n:
            return False
        write_predictions(layer, picks, rows, self.adapted.class_names)
        counts = picks.loc[active, "class_name"].astype(str).value_counts().to_dict()
        layer.metadata[PREDICTION_KEY] = {
            "model": self.adapted.describe(), "method": self.adapted.provenance.get("adaptation", {}).get("method"),
            "polarity": self.adaptation.polarity, "resampled": bool(self.adaptation.resampled),
            "counts": {str(k): int(v) for k, v in counts.items()}, "threshold": self.threshold_in_use,
            "calibrated_threshold": self.calibrated_threshold,
        }
        return True

    def _fill_counts(self, names: np.ndarray) -> None:
        self.class_counts = self.counts_table.fill(names, self.bundle.class_names if self.bundle is not None else ())

    # --- threshold override ---------------------------------------------------------------
    def set_threshold(self, value: float) -> None:
        """Re-decide ``unknown`` at threshold ``value`` without re-running; the adapted model keeps it.

        A value within the spin box's rounding of the calibrated threshold means the calibrated one.
        The adapted model with the new threshold is a new bundle, published for the other widgets
        (the one they hold is not changed under them).
        """
        if self.adaptation is None or self.adapted is None or self.calibrated_threshold is None:
            return
        value = float(value)
        tolerance = 0.5 * 10.0 ** -self.threshold.decimals()
        self.threshold_override = None if abs(value - self.calibrated_threshold) <= tolerance else value
        self.threshold.blockSignals(True)
        self.threshold.setValue(self.threshold_in_use)
        self.threshold.blockSignals(False)
        calibrated = None if self.threshold_override is None else self.calibrated_threshold
        self.adapted = with_threshold(self.adapted, self.threshold_in_use, calibrated)
        self._show_threshold()
        self._write_to_layer()
        self.state.publish_adapted(self.adapted, origin=self._adapted_origin)

    def _show_threshold(self) -> None:
        rule = self.adapted.openset.get("rule", "") if self.adapted is not None else ""
        text = f"calibrated: {self.calibrated_threshold:.4g}" + (f" ({rule})" if rule else "")
        transfer = self.adapted.openset.get("transfer") if self.adapted is not None else None
        if transfer:
            text += f"; {transfer_text(transfer)}"
        if self.threshold_override is not None:
            text += f"; in use: {self.threshold_override:.4g} (overridden)"
        self.threshold_label.setText(text)

    def reset_threshold(self) -> None:
        if self.calibrated_threshold is not None:
            self.set_threshold(self.calibrated_threshold)

    # --- save -----------------------------------------------------------------------------
    def save_adapted(self, path) -> Path | None:
        """Write the adapted model (with the threshold in use) to ``path`` (``.pt`` added if no suffix)."""
        return save_bundle_as(self.adapted, path, "Adapt", "there is no adapted model to save yet (run Adapt).")

    def _choose_save_path(self) -> None:
        path = ask_bundle_path(self, "Save adapted model", save_as="adapted.pt")
        if path:
            self.save_adapted(path)


def _label_events(layer):
    """What changes a layer's curated labels: Curate sets them in the features, then moves on to the
    next pick (a selection change)."""
    return layer.events.features, layer.selected_data.events.items_changed


def layer_labels(layer) -> dict[str, int]:
    """The curated labels on the active picks of a Points ``layer`` (per label; empty when none)."""
    from ..curation import CURATED_COLUMN, label_summary

    feats = getattr(layer, "features", None)
    if feats is None or CURATED_COLUMN not in feats.columns or "curation" not in feats.columns:
        return {}
    return label_summary(feats)


def refine_tip(widget: AdaptWidget, labels: dict[str, int], busy: bool) -> str:
    """The refine button's tooltip: what it would use, or why it cannot run."""
    from ..picks import UNKNOWN_CLASS

    layer = widget.picks_layer()
    if busy:
        return "Busy: wait for the running job to finish (or Cancel it)"
    if widget.bundle is None:
        return f"Refine with my labels: {_NO_MODEL}"
    if widget.source is None:
        return f"Refine with my labels: {_NO_SOURCE}"
    if layer is None:
        return "Refine with my labels: choose a picks layer"
    if not labels:
        return (f"No curated labels on '{layer.name}': label picks in Curate first (number keys 1–9 for the "
                "model's classes, 0 for unknown)")
    n, unknown = sum(labels.values()), labels.get(UNKNOWN_CLASS, 0)
    return (f"Adapt the source model again with your {n} curated label{'s' if n != 1 else ''} on '{layer.name}' "
            f"({n - unknown} known, {unknown} unknown) as labelled targets, for the Refine rounds; your labels are "
            "never changed")


def before_after_text(before: dict, after: dict, order=()) -> str:
    """``1bxn 5 → 7 · unknown 10 → 8`` for the classes of ``before`` and ``after`` (``order`` first;
    each class's counts kept on one line when the text wraps)."""
    names = [c for c in order if c in before or c in after]
    names += sorted((set(before) | set(after)) - set(names))
    if not before:
        return "no predictions before; now " + (" · ".join(f"{c}\u00a0{after[c]}" for c in names) or "none")
    return " · ".join(f"{c}\u00a0{before.get(c, 0)}\u00a0→\u00a0{after.get(c, 0)}" for c in names)


def transfer_text(transfer: dict) -> str:
    """One line on the label-free check of the threshold on the target (adapt/transfer.py)."""
    expected = transfer.get("expected_unknown_fraction")
    at_source = transfer.get("fraction_at_source")
    if transfer.get("threshold") != transfer.get("source_threshold"):
        return (f"moved from the source's {transfer['source_threshold']:.4g}: {transfer.get('why')}")
    if expected is not None:
        return f"the target's scores expect ~{expected:.0%} unknown; this threshold calls {at_source:.0%}"
    reason = (transfer.get("mixture") or {}).get("reason", "")
    return f"expected unknown fraction not known ({reason})" if reason else "kept from the source"

