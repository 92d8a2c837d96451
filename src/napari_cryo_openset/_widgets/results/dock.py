"""Results widget: the picks as the network sees them — classes, unknown clusters, averages, export.

Thin glue over :func:`napari_cryo_openset.embed.embed_picks` (no science here):

- **Model**: the model Adapt & predict adapted for this viewer (shared through :mod:`.session`),
  else the Model widget's current model, else one loaded here (**Load model…**); the latest one
  published wins. It supplies the feature vectors of the picks; their classes are read from the
  picks layer as they are (a moved unknown threshold is respected).
- **Embed & cluster** runs the t-SNE map, the HDBSCAN clusters of the unknown picks and the
  unaligned group averages in a :class:`~._task.TaskRunner` (progress, Cancel). Only a completed
  run writes ``tsne_x``, ``tsne_y`` and ``cluster`` into the picks layer's ``features``; points
  are never deleted or reordered, curation is never touched.
- **Table**: one row per class (known classes, the unknown clusters ``unknown U0``, ``U1``, …,
  the unknowns in no cluster, the picks with no class), with its palette colour, its number of
  active picks, its average (XY | XZ | YZ central slices) and a checkbox that shows or hides its
  picks through ``shown`` (rejected picks stay hidden).
- **t-SNE plot**, linked to the layer: click a point to select that pick and centre the view on
  it; points selected in the layer are ringed in the plot; hidden classes are greyed.
- **Average** of the selected row (three orthogonal central slices) and **Add average as
  layer** (an Image at the model's voxel size).
- **Export**: **Save picks…** (STAR/CSV, every column, atomic; optionally only the selected
  row's picks) and **Save averages…** (one MRC per group, with the voxel size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QImage, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..layers import HIDDEN_GROUPS_KEY as _HIDDEN_KEY  # layer.metadata: the groups hidden in the table
from ..layers import NO_CLASS, pick_groups
from ._choice import TomogramPicksChoice
from ._layout import scroll_into, theme_colors
from ._task import TaskRunner, report_error
from .session import session_for

_NO_MODEL = ("No model: train one in the Model widget, adapt it in Adapt & predict, or Load model… "
             "(the one that made the predictions).")
_THUMB_PX = 24  # one slice of a table thumbnail
_PREVIEW_PX = 92  # one slice of the selected row's average
_CLICK_PX = 10  # how close (pixels) a click must be to a point of the map


# --------------------------------------------------------------------------------------------
# groups of picks (no Qt)
# --------------------------------------------------------------------------------------------
def active_mask(features, threshold=None) -> np.ndarray:
    """Points that count: not rejected and above the Pick widget's live threshold."""
    from ..layers import visible_picks_mask

    return visible_picks_mask(features, threshold)


def group_order(groups) -> list[str]:
    """Known classes (sorted), unknown clusters U0, U1, …, unclustered ``unknown``, then no class."""
    from ..picks import UNKNOWN_CLASS

    present = {str(g) for g in groups}
    clusters = sorted((g for g in present if g.startswith(f"{UNKNOWN_CLASS} U")), key=lambda g: int(g.split("U")[-1]))
    known = sorted(present - set(clusters) - {UNKNOWN_CLASS, NO_CLASS})
    tail = [g for g in (UNKNOWN_CLASS, NO_CLASS) if g in present]
    return known + clusters + tail


def group_color(group: str, palette: dict[str, str]) -> str:
    from ..palette import PICK_COLOR, UNKNOWN_COLOR
    from ..picks import UNKNOWN_CLASS

    if group.startswith(UNKNOWN_CLASS):
        return UNKNOWN_COLOR
    return palette.get(group, PICK_COLOR)


def central_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The XY, XZ and YZ slices through the centre of a (Z, Y, X) box."""
    v = np.asarray(volume, dtype=np.float32)
    cz, cy, cx = (s // 2 for s in v.shape)
    return [v[cz], v[:, cy, :], v[:, :, cx]]


def _gray_pixmap(image: np.ndarray, lo: float, hi: float, height: int) -> QPixmap:
    scaled = np.clip((image - lo) / ((hi - lo) or 1.0) * 255.0, 0, 255).astype(np.uint8)
    scaled = np.ascontiguousarray(scaled)
    h, w = scaled.shape
    qimg = QImage(scaled.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return QPixmap.fromImage(qimg).scaledToHeight(height, Qt.TransformationMode.SmoothTransformation)


def _limits(volume: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(volume, dtype=np.float32), (1.0, 99.5))
    return float(lo), float(hi)


def thumbnail(volume: np.ndarray, height: int = _THUMB_PX) -> QPixmap:
    """XY | XZ | YZ central slices of a box side by side (a thin grey line between them)."""
    slices = central_slices(volume)
    lo, hi = _limits(volume)
    rows = max(s.shape[0] for s in slices)
    padded = [np.pad(s, ((0, rows - s.shape[0]), (0, 0)), constant_values=lo) for s in slices]
    gap = np.full((rows, 1), lo + 0.4 * (hi - lo), dtype=np.float32)
    return _gray_pixmap(np.hstack([padded[0], gap, padded[1], gap, padded[2]]), lo, hi, height)


def _describe(group: str, label: str) -> str:
    from ..picks import UNKNOWN_CLASS

    if group.startswith(f"{UNKNOWN_CLASS} U"):
        return f"{group}: a cluster of unknown picks (a candidate new structure)"
    if group == UNKNOWN_CLASS:
        return "unknown picks in no cluster" if label != group else "unknown picks"
    return "picks without a class" if group == NO_CLASS else f"picks classified as {group}"


def _swatch(color: str, size: int = 12) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(color))
    return pixmap


# --------------------------------------------------------------------------------------------
# the widget
# --------------------------------------------------------------------------------------------
class ResultsWidget(TomogramPicksChoice, QWidget):
    """Map, cluster, review and export classified picks (dock widget "Results")."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from ..embed import EmbedParams

        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.bundle = None
        self.model_origin = ""
        self.result = None  # the PicksEmbedding of the last completed run
        self._result_layer = None  # the layer it was written into
        self._target = None  # (layer, number of points, rows, class names) of the running run
        self._layer = None  # the picks layer whose events we follow
        self._groups = np.zeros(0, dtype=object)  # group of every point of self._layer
        self._active = np.zeros(0, dtype=bool)
        self._order: list[str] = []  # the table's groups, top to bottom
        self._plot_rows = np.zeros(0, dtype=int)  # layer rows drawn in the map (visible groups)
        self._plot_xy = np.zeros((0, 2))
        self._map_xy = None  # tsne_x/y of every point (NaN where none)
        self.redraw_count = 0
        defaults = EmbedParams()

        # --- model ----------------------------------------------------------------------------
        self.model_label = QLabel(_NO_MODEL)
        self.model_label.setWordWrap(True)
        self.load_model_button = QPushButton("Load model…")
        self.load_model_button.setToolTip("A model bundle (.pt): the one that made the predictions of the picks")
        model_box = QGroupBox("Model")
        ml = QVBoxLayout(model_box)
        ml.addWidget(self.model_label)
        ml.addWidget(self.load_model_button)

        # --- embedding ------------------------------------------------------------------------
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The tomogram the picks are in")
        self.picks_combo = QComboBox()
        self.picks_combo.setToolTip("Picks with predictions (class_name, from Predict or Adapt & predict); "
                                    "the map and clusters go into its features")
        self.polarity = QComboBox()
        self.polarity.addItems(["dark", "bright", "auto"])
        self.perplexity = QDoubleSpinBox()
        self.perplexity.setRange(2.0, 500.0)
        self.perplexity.setDecimals(0)
        self.perplexity.setValue(defaults.perplexity)
        self.perplexity.setToolTip("t-SNE neighbourhood size (capped at (picks − 1) / 3)")
        self.min_cluster = QSpinBox()
        self.min_cluster.setRange(2, 100_000)
        self.min_cluster.setValue(defaults.min_cluster_size)
        self.min_cluster.setToolTip("The fewest unknown picks reported as a cluster (a candidate new structure)")
        self.iterations = QSpinBox()
        self.iterations.setRange(0, 100_000)
        self.iterations.setSingleStep(100)
        self.iterations.setValue(defaults.iterations)
        self.iterations.setToolTip("t-SNE rounds after the 250 early-exaggeration ones")
        self.embed_button = QPushButton("Embed && cluster")
        self.embed_button.setToolTip("Map the classified picks with t-SNE, cluster the unknown ones and average "
                                     "every class and cluster (in the background)")
        settings_box = QGroupBox("Embed && cluster")
        form = QFormLayout(settings_box)
        form.addRow("Tomogram", self.image_combo)
        form.addRow("Picks layer", self.picks_combo)
        form.addRow("Polarity", self.polarity)
        form.addRow("Perplexity", self.perplexity)
        form.addRow("t-SNE rounds", self.iterations)
        form.addRow("Min cluster size", self.min_cluster)
        form.addRow(self.embed_button)

        self.runner = TaskRunner()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)

        # --- classes and clusters ---------------------------------------------------------------
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["class / cluster", "picks", "average"])
        self.table.horizontalHeaderItem(2).setToolTip("Unaligned average: XY | XZ | YZ central slices")
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setDefaultSectionSize(_THUMB_PX + 4)
        self.table.setToolTip("Untick a row to hide its picks (they are kept, and saved)")
        self._fit_table_height(0)
        self.show_all_button = QPushButton("Show all")
        self.show_all_button.setToolTip("Show the picks of every class and cluster (rejected picks stay hidden)")
        table_box = QGroupBox("Classes and clusters")
        tl = QVBoxLayout(table_box)
        tl.addWidget(self.table)
        tl.addWidget(self.show_all_button)

        # --- the map ----------------------------------------------------------------------------
        self._build_plot()

        # --- the selected row's average ---------------------------------------------------------
        self.average_views = [QLabel() for _ in range(3)]
        grid = QGridLayout()
        for col, (title, view) in enumerate(zip(("XY", "XZ", "YZ"), self.average_views)):
            view.setFixedSize(_PREVIEW_PX, _PREVIEW_PX)
            view.setAlignment(Qt.AlignmentFlag.AlignCenter)
            view.setStyleSheet("background: black;")
            grid.addWidget(QLabel(title), 0, col, alignment=Qt.AlignmentFlag.AlignCenter)
            grid.addWidget(view, 1, col)
        self.average_label = QLabel("Select a row to see its average.")
        self.average_label.setWordWrap(True)
        self.add_average_button = QPushButton("Add average as layer")
        self.add_average_button.setToolTip("An image layer of the selected row's average, at the model's voxel size")
        self.average_box = average_box = QGroupBox("Average of the selected row")
        al = QVBoxLayout(average_box)
        al.addLayout(grid)
        al.addWidget(self.average_label)
        al.addWidget(self.add_average_button)

        # --- export -----------------------------------------------------------------------------
        self.only_selected = QCheckBox("only the selected row's picks")
        self.only_selected.setToolTip("Save picks… writes only the picks of the selected class / cluster")
        self.save_picks_button = QPushButton("Save picks…")
        self.save_picks_button.setToolTip("STAR or CSV with every column (class, confidence, unknown score, "
                                          "curation, map, cluster); hidden picks are saved too")
        self.save_averages_button = QPushButton("Save averages…")
        self.save_averages_button.setToolTip("One MRC per class and cluster (with the voxel size) into a folder")
        export_box = QGroupBox("Export")
        el = QVBoxLayout(export_box)
        el.addWidget(self.only_selected)
        row = QHBoxLayout()
        row.addWidget(self.save_picks_button)
        row.addWidget(self.save_averages_button)
        el.addLayout(row)

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(model_box)
        layout.addWidget(settings_box)
        layout.addWidget(self.runner)
        layout.addWidget(self.summary)
        layout.addWidget(table_box)
        layout.addWidget(self.canvas)
        layout.addWidget(average_box)
        layout.addWidget(export_box)
        layout.addStretch(1)
        self.canvas.setVisible(False)  # no empty axes: shown when the picks have a map
        average_box.setVisible(False)  # no empty views: shown when there are averages
        self.scroll = scroll_into(self, content)

        self.load_model_button.clicked.connect(self._choose_model)
        self.embed_button.clicked.connect(self.start_embedding)
        self.show_all_button.clicked.connect(self.show_all)
        self.add_average_button.clicked.connect(lambda: self.add_average_layer())
        self.save_picks_button.clicked.connect(self._choose_picks_path)
        self.save_averages_button.clicked.connect(self._choose_averages_folder)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.itemSelectionChanged.connect(self._show_selected_average)
        self.picks_combo.currentTextChanged.connect(lambda _: self._picks_chosen())
        self.runner.started.connect(lambda: self._set_busy(True))
        self.runner.finished.connect(lambda: self._set_busy(False))
        self.session.connect(self._session_changed)
        self.session.connect(self._adapted_changed, adapted=True)
        if self.session.adapted is not None:
            self._use_model(self.session.adapted, self.session.adapted_origin or "adapted in Adapt & predict")
        elif self.session.bundle is not None:
            self._use_model(self.session.bundle, self.session.origin or "from the Model widget")
        self._connect_layer_events()
        self._set_busy(False)

    # --- model --------------------------------------------------------------------------------
    def _session_changed(self, session) -> None:
        self._follow(session.bundle, session.origin or "from the Model widget")

    def _adapted_changed(self, session) -> None:
        self._follow(session.adapted, session.adapted_origin or "adapted in Adapt & predict")

    def _follow(self, bundle, origin: str) -> None:
        try:
            if bundle is not None:
                self._use_model(bundle, origin)
        except RuntimeError:  # the Qt side of this widget is gone (dock closed)
            self.session.disconnect(self._session_changed)
            self.session.disconnect(self._adapted_changed)

    def _use_model(self, bundle, origin: str) -> None:
        self.bundle, self.model_origin = bundle, origin
        self.model_label.setText(_NO_MODEL if bundle is None else f"Model ({origin}): {bundle.describe()}.")
        self._set_busy(self.runner.running)

    def load_model(self, path):
        """Use the model bundle at ``path``; on failure, say why and keep the current model."""
        from napari.utils.notifications import show_info

        from ..checkpoint import load_bundle

        try:
            bundle = load_bundle(path)
        except Exception as exc:  # noqa: BLE001 - BundleError: one clear message; others with traceback
            report_error(exc)
            return None
        self._use_model(bundle, f"loaded from {Path(path).name}")
        show_info(f"Results: loaded model {Path(path).name}")
        return bundle

    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "Model bundle (*.pt);;All files (*)")
        if path:
            self.load_model(path)

    # --- layers -------------------------------------------------------------------------------
    def _refresh_layers(self, event=None) -> None:
        super()._refresh_layers(event)
        self._picks_chosen()

    def _picks_chosen(self) -> None:
        """Follow the chosen picks layer (its points, features and selection)."""
        layer = self.picks_layer()
        if layer is self._layer:
            return
        self._disconnect_layer()
        self._layer = layer
        if layer is not None:
            layer.events.data.connect(self._on_data_changed)
            layer.events.features.connect(self._on_features_changed)
            layer.selected_data.events.items_changed.connect(self._on_layer_selection)
        self._update_polarity()
        self.refresh()

    def _disconnect_layer(self) -> None:
        layer = self._layer
        if layer is None:
            return
        for emitter, slot in ((layer.events.data, self._on_data_changed),
                              (layer.events.features, self._on_features_changed),
                              (layer.selected_data.events.items_changed, self._on_layer_selection)):
            try:
                emitter.disconnect(slot)
            except (TypeError, ValueError, RuntimeError):  # already gone
                pass

    def _on_data_changed(self, event=None) -> None:
        action = str(getattr(event, "action", ""))
        if action.endswith(("adding", "removing", "changing")):
            return  # wait for the completed event
        self.refresh()

    def _on_features_changed(self, event=None) -> None:
        self._update_polarity()
        self.refresh()

    def _prediction_polarity(self, layer) -> str | None:
        meta = (layer.metadata or {}).get("prediction") if layer is not None else None
        polarity = meta.get("polarity") if isinstance(meta, dict) else None
        return polarity if polarity in ("dark", "bright") else None

    def _update_polarity(self) -> None:
        polarity = self._prediction_polarity(self._layer)
        if polarity is not None:
            self.polarity.setCurrentText(polarity)
            self.polarity.setEnabled(False)
            self.polarity.setToolTip(f"{polarity}: the polarity the predictions of this layer were made with")
        else:
            self.polarity.setEnabled(not self.runner.running)
            self.polarity.setToolTip("Is protein dark (raw reconstruction) or bright (inverted) in this tomogram?")

    # --- table --------------------------------------------------------------------------------
    @property
    def hidden_groups(self) -> set[str]:
        """The groups whose picks the table hides in the current picks layer."""
        if self._layer is None:
            return set()
        return {str(g) for g in self._layer.metadata.get(_HIDDEN_KEY, ())}

    def refresh(self) -> None:
        """Recompute the groups, table and map from the picks layer (e.g. after curation)."""
        self._recompute()
        self._fill_table()
        self._update_summary()
        self.redraw_plot()

    def _recompute(self) -> None:
        """The group and active state of every point, and the map, from the layer as it is now."""
        layer = self._layer
        if layer is None:
            self._groups, self._active, self._map_xy = np.zeros(0, dtype=object), np.zeros(0, bool), None
            return
        features = layer.features
        self._groups = pick_groups(features)
        self._active = active_mask(features, layer.metadata.get("score_threshold"))
        self._map_xy = None
        if {"tsne_x", "tsne_y"} <= set(features.columns):
            xy = features[["tsne_x", "tsne_y"]].to_numpy(dtype=float)
            self._map_xy = xy if np.isfinite(xy).all(axis=1).any() else None

    def _palette(self) -> dict[str, str]:
        from ..palette import class_colors

        if self._layer is None or "class_name" not in self._layer.features.columns:
            return class_colors([])
        return class_colors(self._layer.features["class_name"].astype(str))  # as the layer's border colours

    def _label(self, group: str) -> str:
        from ..picks import UNKNOWN_CLASS

        if group == NO_CLASS:
            return "no class"
        if group == UNKNOWN_CLASS and any(g.startswith(f"{UNKNOWN_CLASS} U") for g in self._order):
            return "other unknowns"  # in no cluster (HDBSCAN noise)
        return group

    def _averages(self) -> dict:
        """The averages of the last run, when it was made for the current picks layer."""
        if self.result is None or self._result_layer is not self._layer:
            return {}
        return self.result.averages

    def _fill_table(self) -> None:
        selected = self.selected_group
        groups = self._groups[self._active]
        self._order = group_order(groups)
        counts = {g: int(np.sum(groups == g)) for g in self._order}
        palette, hidden, averages = self._palette(), self.hidden_groups, self._averages()
        fg = self.palette().color(self.foregroundRole())
        self.table.blockSignals(True)
        self.table.clearSelection()
        self.table.setRowCount(len(self._order))
        for i, group in enumerate(self._order):
            item = QTableWidgetItem(self._label(group))
            item.setData(Qt.ItemDataRole.UserRole, group)
            item.setData(Qt.ItemDataRole.DecorationRole, _swatch(group_color(group, palette)))
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if group in hidden else Qt.CheckState.Checked)
            item.setForeground(QColor("#808080") if group in hidden else fg)
            item.setToolTip(f"{_describe(group, self._label(group))}: untick to hide its picks")
            self.table.setItem(i, 0, item)
            count = QTableWidgetItem(str(counts[group]))
            count.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
            count.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            self.table.setItem(i, 1, count)
            thumb = QTableWidgetItem("")
            thumb.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            if group in averages:
                avg, n = averages[group]
                thumb.setData(Qt.ItemDataRole.DecorationRole, thumbnail(avg))
                thumb.setToolTip(f"Unaligned average of {n} picks (XY | XZ | YZ)")
            self.table.setItem(i, 2, thumb)
        self.table.blockSignals(False)
        self._fit_table_height(len(self._order))
        if selected in self._order:
            self.table.selectRow(self._order.index(selected))
        self._show_selected_average()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self._fit_table_height(self.table.rowCount())  # the header's height is known once styled

    def _fit_table_height(self, rows: int) -> None:
        """Show every row (up to 10, then scroll), however little room the dock has."""
        header = self.table.horizontalHeader().sizeHint().height()
        rows_px = self.table.verticalHeader().defaultSectionSize() * max(1, min(rows, 10))
        self.table.setFixedHeight(header + rows_px + 2 * self.table.frameWidth() + 2)

    @property
    def selected_group(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() is not None else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return None if item is None else str(item.data(Qt.ItemDataRole.UserRole))

    def select_group(self, group: str) -> None:
        """Select the table row of ``group`` (e.g. ``"unknown U0"``)."""
        if group in self._order:
            self.table.selectRow(self._order.index(group))

    def _on_item_changed(self, item) -> None:
        if item.column() != 0:
            return
        group = str(item.data(Qt.ItemDataRole.UserRole))
        self.set_group_visible(group, item.checkState() == Qt.CheckState.Checked)

    def set_group_visible(self, group: str, visible: bool) -> None:
        """Show or hide the picks of ``group`` (``shown``; never deleted, rejected ones stay hidden)."""
        layer = self._layer
        if layer is None:
            return
        hidden = self.hidden_groups
        hidden = (hidden - {group}) if visible else (hidden | {group})
        layer.metadata[_HIDDEN_KEY] = sorted(hidden)
        self._apply_visibility()
        self.refresh()

    def show_all(self) -> None:
        """Show the picks of every class and cluster again (rejected picks stay hidden)."""
        if self._layer is not None and self.hidden_groups:
            self._layer.metadata[_HIDDEN_KEY] = []
            self._apply_visibility()
            self.refresh()

    def _apply_visibility(self) -> None:
        """``shown`` = active (not rejected, above the live threshold) and not in a hidden group."""
        layer = self._layer
        self._recompute()  # curation may have changed since the table was filled
        shown = self._active.copy()
        hidden = self.hidden_groups
        if hidden:
            shown &= ~np.isin(self._groups.astype(str), sorted(hidden))
        layer.shown = shown

    def _update_summary(self) -> None:
        layer = self._layer
        if layer is None:
            self.summary.setText("Choose a picks layer with predictions (Model ▸ Predict, or Adapt & predict).")
            return
        n_active = int(self._active.sum())
        classified = int(np.sum(self._groups[self._active] != NO_CLASS))
        if "class_name" not in layer.features.columns or classified == 0:
            self.summary.setText(f"'{layer.name}' has no predictions yet: classify its picks first (Model ▸ Predict, "
                                 "or Adapt & predict).")
            return
        text = f"'{layer.name}': {classified} of {n_active} active picks classified."
        if self.result is not None and self._result_layer is layer:
            text += f" {self.result.summary()}; polarity {self.result.polarity}."
        elif self._map_xy is None:
            text += " Embed & cluster to map them and find groups among the unknowns."
        self.summary.setText(text)

    # --- the map ------------------------------------------------------------------------------
    def _build_plot(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self._bg, self._fg = theme_colors(self.viewer)
        self.figure = Figure(figsize=(3.2, 3.0), dpi=90, facecolor=self._bg, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(240)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.canvas.setToolTip("t-SNE map of the picks: click a point to go to that pick")
        self._ax = self.figure.add_subplot(111)
        self.canvas.mpl_connect("button_press_event", self._on_plot_click)

    def redraw_plot(self) -> None:
        """Redraw the map from the layer's ``tsne_x``/``tsne_y`` (hidden groups grey, clusters labelled)."""
        from ..palette import UNKNOWN_COLOR
        from ..picks import UNKNOWN_CLASS

        ax = self._ax
        ax.clear()
        ax.set_facecolor(self._bg)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(self._fg)
        xy_all = self._map_xy
        if xy_all is None or self._layer is None:
            self._plot_rows, self._plot_xy = np.zeros(0, dtype=int), np.zeros((0, 2))
            self.canvas.setVisible(False)
            return
        mapped = self._active & np.isfinite(xy_all).all(axis=1)
        groups = self._groups.astype(str)
        hidden = np.isin(groups, sorted(self.hidden_groups)) & mapped
        shown = mapped & ~hidden
        palette = self._palette()
        if hidden.any():
            ax.scatter(xy_all[hidden, 0], xy_all[hidden, 1], s=10, c="#808080", alpha=0.3, linewidths=0)
        rows = np.flatnonzero(shown)
        colors = [group_color(g, palette) for g in groups[rows]]
        ax.scatter(xy_all[rows, 0], xy_all[rows, 1], s=20, c=colors, linewidths=0)
        self._plot_rows, self._plot_xy = rows, xy_all[rows]
        for group in self._order:
            if not group.startswith(f"{UNKNOWN_CLASS} U"):
                continue
            members = mapped & (groups == group)
            if members.any():
                cx, cy = xy_all[members].mean(axis=0)
                ax.annotate(group.split(" ")[-1], (cx, cy), color=self._fg, fontsize=8, ha="center", va="center",
                            bbox={"boxstyle": "round,pad=0.2", "fc": self._bg, "ec": UNKNOWN_COLOR, "alpha": 0.8})
        (self._selection_ring,) = ax.plot([], [], "o", ms=9, mfc="none", mec=self._fg, mew=1.4)
        ax.set_title(f"t-SNE of {int(mapped.sum())} picks (click a point)", color=self._fg, fontsize=8)
        self.canvas.setVisible(True)
        self._on_layer_selection()
        self.canvas.draw_idle()
        self.redraw_count += 1

    def _on_layer_selection(self, event=None) -> None:
        """Ring the picks selected in the layer on the map."""
        if self._layer is None or self._map_xy is None or not hasattr(self, "_selection_ring"):
            return
        selected = [i for i in self._layer.selected_data if 0 <= i < len(self._map_xy)]
        xy = self._map_xy[selected] if selected else np.zeros((0, 2))
        xy = xy[np.isfinite(xy).all(axis=1)]
        self._selection_ring.set_data(xy[:, 0], xy[:, 1])
        self.canvas.draw_idle()

    @property
    def ringed(self) -> np.ndarray:
        """The map positions ringed as selected (for tests and scripts)."""
        x, y = self._selection_ring.get_data()
        return np.column_stack([np.asarray(x, float), np.asarray(y, float)])

    def _on_plot_click(self, event) -> None:
        if event.inaxes is not self._ax or len(self._plot_rows) == 0 or getattr(event, "button", 1) != 1:
            return
        display = self._ax.transData.transform(self._plot_xy)
        d = np.hypot(display[:, 0] - event.x, display[:, 1] - event.y)
        best = int(np.argmin(d))
        if d[best] <= _CLICK_PX * self.canvas.devicePixelRatioF():
            self.select_pick(int(self._plot_rows[best]))

    def select_pick(self, row: int) -> None:
        """Select point ``row`` of the picks layer and centre the view on it (slice and camera)."""
        layer = self._layer
        if layer is None or not 0 <= row < len(layer.data):
            return
        if self.viewer.layers.selection.active is not layer:
            self.viewer.layers.selection.active = layer  # napari draws the selection of the active layer
        layer.selected_data = {int(row)}
        world = np.asarray(layer.data_to_world(np.asarray(layer.data[row], dtype=float)), dtype=float)
        dims = self.viewer.dims
        point = np.asarray(dims.point, dtype=float)
        point[-len(world):] = world
        for axis in dims.not_displayed:
            dims.set_point(axis, point[axis])
        self.viewer.camera.center = tuple(point[list(dims.displayed)])

    # --- embedding ----------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.embed_button.setEnabled(not busy and self.bundle is not None)
        self.load_model_button.setEnabled(not busy)
        self.polarity.setEnabled(not busy and self._prediction_polarity(self._layer) is None)

    def embed_params(self):
        from ..embed import EmbedParams

        return EmbedParams(perplexity=float(self.perplexity.value()), iterations=int(self.iterations.value()),
                           min_cluster_size=int(self.min_cluster.value()))

    def start_embedding(self):
        """Map, cluster and average the classified picks in the background; returns the worker (None if refused)."""
        from napari.utils.notifications import show_warning

        from ..embed import embed_picks
        from ..errors import CryoOpensetError

        if self.bundle is None:
            show_warning("Results: no model: train one (Model), adapt one (Adapt & predict), or Load model….")
            return None
        try:
            chosen = self.chosen_picks("Results", "choose a picks layer with predictions (Model ▸ Predict, or "
                                                  "Adapt & predict).")
            if chosen is None:
                return None
            points, picks, rows = chosen.points, chosen.picks, chosen.rows
            if "class_name" not in picks.columns or not (picks["class_name"].astype(str) != "").any():
                raise CryoOpensetError(f"'{points.name}' has no predictions yet: classify its picks first "
                                       "(Model ▸ Predict, or Adapt & predict)")
            params = self.embed_params()
        except CryoOpensetError as exc:
            show_warning(f"Results: {exc}")
            return None
        tomogram = chosen.tomogram
        self._target = (points, len(points.data), rows, self._prediction_snapshot(points))
        return self.runner.start(embed_picks, self.bundle, tomogram, picks, polarity=self.polarity.currentText(),
                                 params=params, on_result=self._on_embedded, label=f"Embedding {points.name}")

    @staticmethod
    def _prediction_snapshot(layer) -> tuple:
        features = layer.features
        names = tuple(features["class_name"].astype(str)) if "class_name" in features.columns else ()
        unknown = tuple(features["is_unknown"].astype(bool)) if "is_unknown" in features.columns else ()
        return names, unknown

    def show_embedding(self, layer, result) -> None:
        """Show a :class:`~napari_cryo_openset.embed.PicksEmbedding` computed elsewhere (``run``, the demo).

        ``layer``'s points must be ``result.picks``'s rows, in order (e.g. a layer made from the
        run's predictions table).
        """
        from ..errors import ParameterError

        if len(layer.data) != len(result.picks):
            raise ParameterError(f"'{layer.name}' has {len(layer.data)} points but the embedding {len(result.picks)} picks")
        if layer.name in [ly.name for ly in self._points()]:
            self.picks_combo.setCurrentText(layer.name)
        self._target = (layer, len(layer.data), np.arange(len(layer.data)), self._prediction_snapshot(layer))
        self._on_embedded(result)

    def cancel(self) -> None:
        """Cancel the running embedding; the picks layer is left as it was."""
        self.runner.cancel()

    def _on_embedded(self, result) -> None:
        import pandas as pd
        from napari.utils.notifications import show_info, show_warning

        from ..layers import pick_feature_defaults
        from ..picks import UNKNOWN_CLASS

        layer, n, rows, snapshot = self._target
        if layer not in self.viewer.layers or len(layer.data) != n or self._prediction_snapshot(layer) != snapshot:
            show_warning(f"Results: the picks or predictions of '{layer.name}' changed while embedding; nothing was "
                         "written: run Embed & cluster again.")
            return
        features = layer.features.copy().reset_index(drop=True)
        for column, empty, dtype in (("tsne_x", np.nan, float), ("tsne_y", np.nan, float), ("cluster", -1, np.int64)):
            values = np.full(n, empty, dtype=dtype)
            values[rows] = result.picks[column].to_numpy(dtype=dtype)
            features[column] = pd.Series(values, dtype=dtype)
        had_hidden = bool(self.hidden_groups)
        hidden = sorted(g for g in self.hidden_groups if not g.startswith(f"{UNKNOWN_CLASS} U"))  # old cluster ids
        layer.metadata[_HIDDEN_KEY] = hidden
        layer.metadata["embedding"] = {"method": result.embedding.method, "perplexity": result.embedding.perplexity,
                                       "clusters": result.embedding.cluster_sizes, "polarity": result.polarity,
                                       "voxel_size": result.voxel_size}
        self.result, self._result_layer = result, layer
        layer.features = features
        layer.feature_defaults = pick_feature_defaults(features)  # hand-added points: no map, no cluster
        if self._layer is layer:
            self.refresh()
            if had_hidden:
                self._apply_visibility()
        text = f"{result.summary()}; polarity {result.polarity}; {result.embedding.seconds:.0f} s"
        show_info(f"Results: {text}")

    # --- averages -----------------------------------------------------------------------------
    def _show_selected_average(self) -> None:
        group = self.selected_group
        averages = self._averages()
        self.average_box.setVisible(bool(averages))
        self.add_average_button.setEnabled(group in averages)
        if group is None or group not in averages:
            for view in self.average_views:
                view.clear()
            if group is None:
                self.average_label.setText("Select a row to see its average.")
            else:
                self.average_label.setText(f"{self._label(group)}: no average (Embed & cluster makes them).")
            return
        avg, n = averages[group]
        lo, hi = _limits(avg)
        for view, plane in zip(self.average_views, central_slices(avg)):
            view.setPixmap(_gray_pixmap(plane, lo, hi, _PREVIEW_PX))
        size = avg.shape[0] * self.result.voxel_size / 10.0
        self.average_label.setText(f"{self._label(group)}: unaligned average of {n} picks, box {avg.shape[0]}³ "
                                   f"({size:g} nm) — a first look, not a structure.")

    def add_average_layer(self, group: str | None = None):
        """Add the average of ``group`` (default: the selected row) as an Image layer; returns it."""
        from napari.utils.notifications import show_warning

        from ..layers import ANGSTROM

        group = self.selected_group if group is None else group
        averages = self._averages()
        if group not in averages:
            show_warning("Results: select a class or cluster with an average (run Embed & cluster first).")
            return None
        avg, n = averages[group]
        vs = float(self.result.voxel_size)
        return self.viewer.add_image(avg, name=f"average {group}", scale=(vs, vs, vs), units=ANGSTROM,
                                     colormap="gray", contrast_limits=_limits(avg),
                                     metadata={"average_of": group, "count": int(n), "voxel_size": (vs, vs, vs)})

    # --- export -------------------------------------------------------------------------------
    def _layer_voxel_size(self, layer) -> float | None:
        vs = (layer.metadata or {}).get("voxel_size") or tuple(layer.scale[-3:])
        vs = np.asarray(vs, dtype=float)[-3:]
        return float(vs[0]) if np.allclose(vs, vs[0]) and vs[0] > 0 else None

    def save_picks(self, path, only_selected: bool | None = None) -> Path | None:
        """Write the picks layer to ``path`` (``.star``/``.csv``; ``.star`` if no suffix) with every column.

        ``only_selected`` (default: the checkbox) keeps only the active picks of the selected row.
        Candidates below the Pick widget's live threshold are not written; rejected picks are,
        marked ``rejected``. Returns the path written, or None (the reason was shown).
        """
        from napari.utils.notifications import show_info, show_warning

        from ..io import write_picks
        from ..layers import above_threshold
        from ..picks import from_points

        layer = self._layer
        if layer is None or len(layer.data) == 0:
            show_warning("Results: there are no picks to save (choose a picks layer).")
            return None
        only = self.only_selected.isChecked() if only_selected is None else bool(only_selected)
        group = self.selected_group
        if only and group is None:
            show_warning("Results: select a class or cluster row to save only its picks.")
            return None
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(".star")
        try:
            self._recompute()
            picks = from_points(layer.data, layer.features)
            keep = above_threshold(layer.features, layer.metadata.get("score_threshold"))
            if only:
                keep &= self._active & (self._groups.astype(str) == group)
            out = write_picks(path, picks[keep].reset_index(drop=True), voxel_size=self._layer_voxel_size(layer))
        except Exception as exc:  # noqa: BLE001 - PicksError: one clear message; others with traceback
            report_error(exc)
            return None
        what = f"the {int(keep.sum())} picks of {self._label(group)}" if only else f"{int(keep.sum())} picks"
        show_info(f"Results: saved {what} to {out}")
        return out

    def save_averages(self, folder) -> list[Path]:
        """Write every average as ``average_<group>.mrc`` into ``folder`` (voxel size in the header)."""
        from napari.utils.notifications import show_info, show_warning

        from ..embed import write_averages
        from ..errors import CryoOpensetError

        averages = self._averages()
        if not averages:
            show_warning("Results: there are no averages yet: run Embed & cluster on this picks layer.")
            return []
        folder = Path(folder)
        try:
            if not folder.is_dir():
                raise CryoOpensetError(f"'{folder}': the folder does not exist")
            written = write_averages(folder, averages, self.result.voxel_size, group_order(list(averages)))
        except Exception as exc:  # noqa: BLE001 - one clear message (user input) or with its traceback
            report_error(exc)
            return []
        show_info(f"Results: saved {len(written)} averages to {folder}")
        return written

    def _choose_picks_path(self) -> None:
        name = f"{self._layer.name}.star" if self._layer is not None else "picks.star"
        path, _ = QFileDialog.getSaveFileName(self, "Save picks", name, "STAR (*.star);;CSV (*.csv);;All files (*)")
        if path:
            self.save_picks(path)

    def _choose_averages_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save averages into a folder")
        if folder:
            self.save_averages(folder)
