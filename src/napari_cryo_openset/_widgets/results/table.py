"""The Results table: one row per class and cluster, with its colour, count, average and a checkbox.

Unticking a row asks to hide that group's picks (``visibility_changed``); the dock writes it
into the layer. Selecting a row selects a group (for its average and for saving only its picks).
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ...palette import group_color
from .._views import thumbnail
from .groups import PicksGroups

THUMB_PX = 24  # one slice of a table thumbnail
MAX_ROWS = 10  # rows shown without scrolling


def _swatch(color: str, size: int = 12) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(color))
    return pixmap


class GroupTable(QTableWidget):
    """Classes and clusters of the picks layer (``visibility_changed(group, visible)`` on a tick)."""

    visibility_changed = Signal(str, bool)

    def __init__(self) -> None:
        super().__init__(0, 3)
        self.setHorizontalHeaderLabels(["class / cluster", "picks", "average"])
        self.horizontalHeaderItem(2).setToolTip("Unaligned average: XY | XZ | YZ central slices")
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setDefaultSectionSize(THUMB_PX + 4)
        self.setToolTip("Untick a row to hide its picks (they are kept, and saved)")
        self._groups: list[str] = []
        self.fit_height()
        self.itemChanged.connect(self._on_item_changed)

    def in_box(self):
        """The table in a "Classes and clusters" box with a **Show all** button: ``(box, button)``."""
        button = QPushButton("Show all")
        button.setToolTip("Show the picks of every class and cluster (rejected picks stay hidden)")
        box = QGroupBox("Classes and clusters")
        layout = QVBoxLayout(box)
        layout.addWidget(self)
        layout.addWidget(button)
        return box, button

    @property
    def groups(self) -> list[str]:
        """The groups of the rows, top to bottom."""
        return list(self._groups)

    def fill(self, view: PicksGroups, averages: dict) -> None:
        """One row per group of ``view`` (thumbnails from ``averages``); the selected group stays selected."""
        selected = self.selected_group
        self._groups = list(view.order)
        fg = self.palette().color(self.foregroundRole())
        self.blockSignals(True)
        self.clearSelection()
        self.setRowCount(len(self._groups))
        for i, group in enumerate(self._groups):
            hidden = group in view.hidden
            item = QTableWidgetItem(view.label(group))
            item.setData(Qt.ItemDataRole.UserRole, group)
            item.setData(Qt.ItemDataRole.DecorationRole, _swatch(group_color(group, view.palette)))
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if hidden else Qt.CheckState.Checked)
            item.setForeground(QColor("#808080") if hidden else fg)
            item.setToolTip(f"{view.describe(group)}: untick to hide its picks")
            self.setItem(i, 0, item)
            count = QTableWidgetItem(str(view.count(group)))
            count.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
            count.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            self.setItem(i, 1, count)
            thumb = QTableWidgetItem("")
            thumb.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            if group in averages:
                avg, n = averages[group]
                thumb.setData(Qt.ItemDataRole.DecorationRole, thumbnail(avg, THUMB_PX))
                thumb.setToolTip(f"Unaligned average of {n} picks (XY | XZ | YZ)")
            self.setItem(i, 2, thumb)
        self.blockSignals(False)
        self.fit_height()
        if selected in self._groups:
            self.selectRow(self._groups.index(selected))
        else:
            self.itemSelectionChanged.emit()  # the selection was cleared

    @property
    def selected_group(self) -> str | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() is not None else []
        if not rows:
            return None
        item = self.item(rows[0].row(), 0)
        return None if item is None else str(item.data(Qt.ItemDataRole.UserRole))

    def select_group(self, group: str) -> None:
        """Select the row of ``group`` (e.g. ``"unknown U0"``)."""
        if group in self._groups:
            self.selectRow(self._groups.index(group))

    def fit_height(self) -> None:
        """Show every row (up to :data:`MAX_ROWS`, then scroll), however little room the dock has."""
        header = self.horizontalHeader().sizeHint().height()
        rows_px = self.verticalHeader().defaultSectionSize() * max(1, min(self.rowCount(), MAX_ROWS))
        self.setFixedHeight(header + rows_px + 2 * self.frameWidth() + 2)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.fit_height()  # the header's height is known once styled

    def _on_item_changed(self, item) -> None:
        if item.column() == 0:
            self.visibility_changed.emit(str(item.data(Qt.ItemDataRole.UserRole)),
                                         item.checkState() == Qt.CheckState.Checked)
