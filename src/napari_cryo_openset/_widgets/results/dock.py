"""Results widget: the picks as the network sees them — classes, unknown clusters, averages, export.

Thin glue over :func:`napari_cryo_openset.embed.embed_picks` (no science here):

- **Model**: the model Adapt & predict adapted for this viewer (shared through :mod:`..state`),
  else the Model widget's current model, else one loaded here (**Load model…**); the latest one
  published wins. It supplies the feature vectors of the picks; their classes are read from the
  picks layer as they are (a moved unknown threshold is respected).
- **Embed & cluster** runs the t-SNE map, the HDBSCAN clusters of the unknown picks and the
  unaligned group averages in a :class:`~.._task.TaskRunner` (progress, Cancel). Only a completed
  run writes ``tsne_x``, ``tsne_y`` and ``cluster`` into the picks layer's ``features``; points
  are never deleted or reordered, curation is never touched.
- The parts: the table of classes and clusters (:mod:`.table`), the map linked to the layer
  (:mod:`.map`), the selected row's average (:mod:`.averages`) and the export (:mod:`.export`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QLabel, QVBoxLayout, QWidget

from .._choice import chosen_picks
from .._layout import scroll_into, theme_colors
from .._task import TaskRunner
from .averages import AveragePreview, add_average_layer
from .embedding import EmbedSettings, prediction_snapshot, write_embedding
from .export import ExportBox, save_averages, save_picks
from .groups import PicksGroups, hidden_groups, hide_groups, summary_text
from .map import EmbeddingMap
from .model_choice import ModelChoice
from .table import GroupTable

from .groups import NO_PREDICTIONS
from .._tell import tell


class ResultsWidget(QWidget):
    """Map, cluster, review and export classified picks (dock widget "Results")."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.result = None  # the PicksEmbedding of the last completed run
        self._result_layer = None  # the layer it was written into
        self._target = None  # (layer, number of points, rows, predictions) of the running run
        self._layer = None  # the picks layer whose events we follow
        self.view = PicksGroups.of(None)  # its groups, as shown

        self.model = ModelChoice(napari_viewer)
        self.settings = EmbedSettings(napari_viewer)
        self.runner = TaskRunner()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)

        self.table = GroupTable()
        table_box, self.show_all_button = self.table.in_box()
        self.canvas = EmbeddingMap(*theme_colors(napari_viewer))
        self.average_box = AveragePreview()
        self.export_box = ExportBox()

        content = QWidget()
        layout = QVBoxLayout(content)
        for part in (self.model, self.settings, self.runner, self.summary, table_box, self.canvas, self.average_box,
                     self.export_box):
            layout.addWidget(part)
        layout.addStretch(1)
        self.scroll = scroll_into(self, content)

        self.model.changed.connect(lambda: self._set_busy(self.runner.running))
        self.settings.embed_button.clicked.connect(self.start_embedding)
        self.show_all_button.clicked.connect(self.show_all)
        self.average_box.add_button.clicked.connect(lambda: self.add_average_layer())
        self.export_box.save_picks_button.clicked.connect(self._choose_picks_path)
        self.export_box.save_averages_button.clicked.connect(self._choose_averages_folder)
        self.table.visibility_changed.connect(self.set_group_visible)
        self.table.itemSelectionChanged.connect(self._show_selected_average)
        self.canvas.pick_clicked.connect(self.select_pick)
        self.settings.picks_combo.layer_changed.connect(self._picks_chosen)
        self.runner.started.connect(lambda: self._set_busy(True))
        self.runner.finished.connect(lambda: self._set_busy(False))
        self._picks_chosen(self.settings.picks_combo.layer())
        self._set_busy(False)

    @property
    def bundle(self):
        """The model that supplies the feature vectors (None: none yet)."""
        return self.model.bundle

    # --- the picks layer ----------------------------------------------------------------------
    def _picks_chosen(self, layer) -> None:
        """Follow the chosen picks layer (its points, features and selection)."""
        if layer is self._layer:
            return
        if self._layer is not None:
            for emitter, slot in self._layer_events(self._layer):
                emitter.disconnect(slot)
        self._layer = layer
        if layer is not None:
            for emitter, slot in self._layer_events(layer):
                emitter.connect(slot)
        self._set_busy(self.runner.running)
        self.refresh()

    def _layer_events(self, layer):
        return ((layer.events.data, self._on_data_changed), (layer.events.features, self._on_features_changed),
                (layer.selected_data.events.items_changed, self._on_layer_selection))

    def _on_data_changed(self, event=None) -> None:
        if not str(getattr(event, "action", "")).endswith(("adding", "removing", "changing")):
            self.refresh()  # the completed event, not the one announcing it

    def _on_features_changed(self, event=None) -> None:
        self._set_busy(self.runner.running)
        self.refresh()

    def _on_layer_selection(self, event=None) -> None:
        if self._layer is not None:
            self.canvas.ring(self._layer.selected_data)

    # --- groups: table, map, average ------------------------------------------------------------
    @property
    def hidden_groups(self) -> set[str]:
        """The groups whose picks the table hides in the current picks layer."""
        return hidden_groups(self._layer)

    def select_group(self, group: str) -> None:
        """Select the table row of ``group`` (e.g. ``"unknown U0"``)."""
        self.table.select_group(group)

    def refresh(self) -> None:
        """Recompute the groups, table, summary and map from the picks layer (e.g. after curation)."""
        self.view = PicksGroups.of(self._layer)
        self.table.fill(self.view, self._averages())
        self.summary.setText(summary_text(self._layer, self.view, self._layer_result()))
        self.canvas.draw_groups(self.view)
        self._on_layer_selection()

    def _layer_result(self):
        """The last embedding, when it was made for the current picks layer (else None)."""
        return self.result if self.result is not None and self._result_layer is self._layer else None

    def _averages(self) -> dict:
        """The averages of the last embedding, when it was made for the current picks layer."""
        result = self._layer_result()
        return result.averages if result is not None else {}

    def _show_selected_average(self) -> None:
        group = self.table.selected_group
        voxel_size = self.result.voxel_size if self.result is not None else None
        self.average_box.show_average(group, self.view.label(group) if group is not None else "", self._averages(),
                                      voxel_size)

    def set_group_visible(self, group: str, visible: bool) -> None:
        """Show or hide the picks of ``group`` (``shown``; never deleted, rejected ones stay hidden)."""
        if self._layer is not None:
            hidden = (self.hidden_groups - {group}) if visible else (self.hidden_groups | {group})
            self._set_hidden(sorted(hidden))

    def show_all(self) -> None:
        """Show the picks of every class and cluster again (rejected picks stay hidden)."""
        if self._layer is not None and self.hidden_groups:
            self._set_hidden([])

    def _set_hidden(self, hidden: list[str]) -> None:
        hide_groups(self._layer, hidden)
        self.refresh()

    def select_pick(self, row: int) -> None:
        """Select point ``row`` of the picks layer and centre the view on it (slice and camera)."""
        from ..._viewer import go_to_pick

        layer = self._layer
        if layer is None or not 0 <= row < len(layer.data):
            return
        if self.viewer.layers.selection.active is not layer:
            self.viewer.layers.selection.active = layer  # napari draws the selection of the active layer
        go_to_pick(self.viewer, layer, row)

    def add_average_layer(self, group: str | None = None):
        """Add the average of ``group`` (default: the selected row) as an Image layer; returns it."""
        from napari.utils.notifications import show_warning

        group = self.table.selected_group if group is None else group
        averages = self._averages()
        if group not in averages:
            show_warning("Results: select a class or cluster with an average (run Embed & cluster first).")
            return None
        avg, n = averages[group]
        centre, row = self._group_centre(group)
        layer = add_average_layer(self.viewer, group, avg, n, self.result.voxel_size, centre)
        if row is not None:
            tell(self.viewer, f"Results: average of {group} added at pick #{row} (the group's most central pick), "
                              f"{self.result.voxel_size:g} Å/voxel")
        return layer

    def _group_centre(self, group: str):
        """World position (Å) and row of the pick of ``group`` nearest the group's centroid (None, None: none)."""
        layer = self._layer
        if layer is None:
            return None, None
        members = np.flatnonzero(self.view.members(group))
        if not members.size:
            return None, None
        world = np.array([layer.data_to_world(layer.data[i]) for i in members], dtype=float)
        k = int(np.argmin(np.linalg.norm(world - world.mean(axis=0), axis=1)))
        return world[k], int(members[k])

    # --- embedding ----------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.model.load_button.setEnabled(not busy)
        self.settings.set_state(self._layer, busy, self.bundle is not None)

    def start_embedding(self):
        """Map, cluster and average the classified picks in the background; returns the worker (None if refused)."""
        from napari.utils.notifications import show_warning

        from ...errors import CryoOpensetError
        from ...jobs import embed_job

        if self.bundle is None:
            show_warning("Results: no model: train one (Model), adapt one (Adapt & predict), or Load model….")
            return None
        try:
            chosen = chosen_picks(self.settings.image_combo.layer(), self.settings.picks_combo.layer(), "Results",
                                  "choose a picks layer with predictions (Model ▸ Predict, or Adapt & predict).")
            if chosen is None:
                return None
            points, picks = chosen.points, chosen.picks
            if "class_name" not in picks.columns or not (picks["class_name"].astype(str) != "").any():
                raise CryoOpensetError(f"'{points.name}' has no predictions yet: {NO_PREDICTIONS}")
            params = self.settings.params()
        except CryoOpensetError as exc:
            show_warning(f"Results: {exc}")
            return None
        self._target = (points, len(points.data), chosen.rows, prediction_snapshot(points))
        polarity = self.settings.polarity.currentText()
        return self.runner.start(embed_job, self.bundle, chosen.tomogram, picks, polarity, params,
                                 on_result=self._on_embedded, label=f"Embedding {points.name}")

    def show_embedding(self, layer, result) -> None:
        """Show a :class:`~napari_cryo_openset.embed.PicksEmbedding` computed elsewhere (``run``, the demo).

        ``layer``'s points must be ``result.picks``'s rows, in order (e.g. a layer made from the
        run's predictions table).
        """
        from ...errors import ParameterError

        if len(layer.data) != len(result.picks):
            raise ParameterError(f"'{layer.name}' has {len(layer.data)} points but the embedding {len(result.picks)} picks")
        if layer in self.settings.picks_combo.layers():
            self.settings.picks_combo.setCurrentText(layer.name)
        self._target = (layer, len(layer.data), np.arange(len(layer.data)), prediction_snapshot(layer))
        self._on_embedded(result)

    def cancel(self) -> None:
        """Cancel the running embedding; the picks layer is left as it was."""
        self.runner.cancel()

    def _on_embedded(self, result) -> None:
        from napari.utils.notifications import show_warning

        layer, n, rows, snapshot = self._target
        if layer not in self.viewer.layers or len(layer.data) != n or prediction_snapshot(layer) != snapshot:
            show_warning(f"Results: the picks or predictions of '{layer.name}' changed while embedding; nothing was "
                         "written: run Embed & cluster again.")
            return
        had_hidden = bool(hidden_groups(layer))
        self.result, self._result_layer = result, layer
        hidden = write_embedding(layer, result, rows)
        if self._layer is layer:
            if had_hidden:
                self._set_hidden(hidden)
            else:
                self.refresh()
        tell(self.viewer, f"Results: {result.summary()}; polarity {result.polarity}; {result.embedding.seconds:.0f} s")

    # --- export -------------------------------------------------------------------------------
    def save_picks(self, path, only_selected: bool | None = None) -> Path | None:
        """Write the picks layer to ``path`` with every column (see :func:`.export.save_picks`);
        ``only_selected`` (default: the checkbox): only the selected row's picks."""
        only = self.export_box.only_selected.isChecked() if only_selected is None else bool(only_selected)
        return save_picks(self._layer, path, self.table.selected_group if only else None, only)

    def save_averages(self, folder) -> list[Path]:
        """Write every average as ``average_<group>.mrc`` into ``folder`` (voxel size in the header)."""
        voxel_size = self.result.voxel_size if self.result is not None else None
        return save_averages(folder, self._averages(), voxel_size)

    def scroll_to_map(self) -> None:
        """Scroll the dock so that the table and the map are in view (the demo's screenshot)."""
        self.scroll.ensureWidgetVisible(self.canvas, 0, 10)

    def _choose_picks_path(self) -> None:
        name = f"{self._layer.name}.star" if self._layer is not None else "picks.star"
        path, _ = QFileDialog.getSaveFileName(self, "Save picks", name, "STAR (*.star);;CSV (*.csv);;All files (*)")
        if path:
            self.save_picks(path)

    def _choose_averages_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save averages into a folder")
        if folder:
            self.save_averages(folder)
