"""A compact table of class counts (class name on its palette colour, number of picks)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

#: Rows shown before the table scrolls.
VISIBLE_ROWS = 8


class CountsTable(QTableWidget):
    """Class → picks, in :func:`napari_cryo_openset.picks.class_counts` order, coloured by the palette."""

    def __init__(self) -> None:
        super().__init__(0, 2)
        self.setHorizontalHeaderLabels(["class", "picks"])
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.verticalHeader().setDefaultSectionSize(20)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self._fit_height(0)

    def fill(self, names, class_names=()) -> dict[str, int]:
        """Show the counts of ``names`` (colours in the order of the model's ``class_names``); return them."""
        from ..palette import class_colors
        from ..picks import class_counts

        counts = class_counts(names)
        colors = class_colors(list(counts), list(class_names) or None)
        self.setRowCount(len(counts))
        for i, (name, count) in enumerate(counts.items()):
            item = QTableWidgetItem(str(name))
            color = QColor(colors.get(str(name), "#ffffff"))
            item.setBackground(color)
            item.setForeground(QColor("#000000") if color.lightness() > 110 else QColor("#ffffff"))
            self.setItem(i, 0, item)
            count_item = QTableWidgetItem(str(int(count)))
            count_item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
            self.setItem(i, 1, count_item)
        self._fit_height(len(counts))
        return counts

    def _fit_height(self, rows: int) -> None:
        """Show every class row (up to :data:`VISIBLE_ROWS`, then scroll), however little room the dock has."""
        header = self.horizontalHeader().sizeHint().height()
        rows_px = self.verticalHeader().defaultSectionSize() * max(1, min(rows, VISIBLE_ROWS))
        self.setFixedHeight(header + rows_px + 2 * self.frameWidth() + 2)
