"""The Dataset dock: the tomograms of a ``batch`` output with their class counts; one click opens one.

Thin: the table comes from :func:`napari_cryo_openset.batch.read_batch_output` (Qt-free); opening a
row adds its tomogram (memory-mapped) and its ``predictions.star`` as a picks layer coloured by
the one palette (the model's class list from the tomogram's ``report.json``).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QLabel, QPushButton, QTableWidget,
                            QTableWidgetItem, QVBoxLayout, QWidget)

#: Columns before the per-class counts.
FIXED_COLUMNS = ("tomogram", "status", "picks")


class DatasetDock(QWidget):
    """Choose a batch output folder; the table lists its tomograms; *Open* (or a double click) opens one."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.folder: Path | None = None
        self.rows = None  # the pandas table of read_batch_output
        self.choose_button = QPushButton("Batch output…")
        self.choose_button.setToolTip("A folder written by `napari-cryo-openset batch` (it holds batch_report.json)")
        self.choose_button.clicked.connect(self._choose)
        self.open_button = QPushButton("Open tomogram")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(lambda: self.open_row(self.table.currentRow()))
        self.table = QTableWidget(0, len(FIXED_COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.open_row(row))
        self.table.itemSelectionChanged.connect(
            lambda: self.open_button.setEnabled(self._openable(self.table.currentRow())))
        self.message = QLabel("Choose the output folder of a batch run.")
        self.message.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.choose_button)
        top.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table)
        layout.addWidget(self.message)

    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Batch output folder")
        if folder:
            self.load(folder)

    def load(self, folder) -> bool:
        """Show the tomograms of the batch output ``folder``; False (one message) when it is not one."""
        from ..batch import read_batch_output
        from ..errors import CryoOpensetError
        from ._task import report_error

        try:
            rows = read_batch_output(folder)
        except CryoOpensetError as exc:
            report_error(exc)
            self.message.setText(str(exc))
            return False
        self.folder, self.rows = Path(folder), rows
        classes = sorted({c for counts in rows["class_counts"] for c in counts}, key=lambda c: (c in ("unknown", "empty"), c))
        headers = [*FIXED_COLUMNS, *classes]
        self.table.clear()
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows.itertuples(index=False)):
            values = [row.tomogram, row.status, str(row.picks)]
            values += [str(row.class_counts.get(c, 0)) for c in classes]
            for j, value in enumerate(values):
                item = QTableWidgetItem(value)
                if j == 1 and row.error:
                    item.setToolTip(row.error)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        done = int((rows["folder"] != "").sum())
        failed = [f"{r.tomogram}: {r.error}" for r in rows.itertuples(index=False) if r.error]
        self.message.setText(f"{Path(folder).name}: {len(rows)} tomograms, {done} with predictions"
                             + (f", {len(rows) - done} without (failed or not run)" if done < len(rows) else "")
                             + ". Double-click one to open it." + "".join(f"\n{f}" for f in failed))
        return True

    def _openable(self, row: int) -> bool:
        return self.rows is not None and 0 <= row < len(self.rows) and bool(self.rows.iloc[row]["folder"])

    def open_row(self, row: int):
        """Open row ``row``'s tomogram (when it is a file) and its predictions; return the picks layer."""
        from ..errors import CryoOpensetError
        from ..io import read_picks, read_tomogram
        from ..layers import MODEL_CLASSES_KEY, picks_layer, tomogram_layer
        from ._task import report_error

        if not self._openable(row):
            self.message.setText("This tomogram has no predictions (see its status).")
            return None
        r = self.rows.iloc[row]
        image_name = None
        try:
            if r["tomogram_path"]:
                tomo = read_tomogram(r["tomogram_path"])
                existing = [ly for ly in self.viewer.layers if isinstance(ly.metadata, dict)
                            and ly.metadata.get("path") == str(tomo.path)]
                if existing:
                    image_name = existing[0].name
                else:
                    data, kwargs, _ = tomogram_layer(tomo, name=r["tomogram"])
                    image_name = self.viewer.add_image(data, **kwargs).name
            shape = tuple(int(n) for n in r["shape"]) if r["shape"] else None
            vs = float(r["voxel_size"]) if r["voxel_size"] else None
            picks = read_picks(Path(r["folder"]) / "predictions.star", tomogram_shape=shape, voxel_size=vs)
        except CryoOpensetError as exc:
            report_error(exc)
            self.message.setText(str(exc))
            return None
        meta = {"path": str(Path(r["folder"]) / "predictions.star")}
        for ly in self.viewer.layers:  # opened before: select it, do not add it twice
            if isinstance(ly.metadata, dict) and ly.metadata.get("path") == meta["path"]:
                self.viewer.layers.selection.active = ly
                self.message.setText(f"{r['tomogram']}: already open ({ly.name}).")
                return ly
        if r["model_classes"]:
            meta[MODEL_CLASSES_KEY] = list(r["model_classes"])
        if image_name:
            meta["source_image"] = image_name
        data, kwargs, _ = picks_layer(picks, voxel_size=vs, name=f"{r['tomogram']} predictions", metadata=meta)
        layer = self.viewer.add_points(data, **kwargs)
        self.viewer.layers.selection.active = layer
        self.message.setText(f"{r['tomogram']}: {len(picks)} picks"
                             + ("" if image_name else " (its tomogram is not a file here: open it yourself)") + ".")
        return layer
