"""The average of the selected Results row: three central slices, what it is, and "Add as layer"."""

from __future__ import annotations

from qtpy.QtWidgets import QGroupBox, QLabel, QPushButton, QVBoxLayout

from .._views import central_slices, gray_pixmap, limits, slice_views

PREVIEW_PX = 92  # one slice of the selected row's average


class AveragePreview(QGroupBox):
    """XY | XZ | YZ of one group's unaligned average; hidden while there are no averages."""

    def __init__(self) -> None:
        super().__init__("Average of the selected row")
        grid, self.views = slice_views(PREVIEW_PX)
        self.label = QLabel("Select a row to see its average.")
        self.label.setWordWrap(True)
        self.add_button = QPushButton("Add average as layer")
        self.add_button.setToolTip("An image layer of the selected row's average, at the model's voxel size")
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.label)
        layout.addWidget(self.add_button)
        self.setVisible(False)  # no empty views: shown when there are averages

    def show_average(self, group: str | None, label: str, averages: dict, voxel_size: float | None) -> None:
        """Show the average of ``group`` (called ``label``) from ``averages`` (``{group: (box, n)}``, Å/voxel)."""
        self.setVisible(bool(averages))
        self.add_button.setEnabled(group in averages)
        if group is None or group not in averages:
            for view in self.views:
                view.clear()
            self.label.setText("Select a row to see its average." if group is None
                               else f"{label}: no average (Embed & cluster makes them).")
            return
        avg, n = averages[group]
        lo, hi = limits(avg)
        for view, plane in zip(self.views, central_slices(avg)):
            view.setPixmap(gray_pixmap(plane, lo, hi, PREVIEW_PX))
        size = avg.shape[0] * float(voxel_size) / 10.0
        self.label.setText(f"{label}: unaligned average of {n} picks, box {avg.shape[0]}³ ({size:g} nm) — a first "
                           "look, not a structure.")


def add_average_layer(viewer, group: str, average, count: int, voxel_size: float):
    """Add ``average`` (a (B, B, B) box of ``group``, ``voxel_size`` Å) as a grey Image layer; return it.

    Its metadata marks it as an average, so no widget offers it as a tomogram to work on.
    """
    from ...layers import ANGSTROM, AVERAGE_OF_KEY

    vs = float(voxel_size)
    return viewer.add_image(average, name=f"average {group}", scale=(vs, vs, vs), units=ANGSTROM, colormap="gray",
                            contrast_limits=limits(average),
                            metadata={AVERAGE_OF_KEY: group, "count": int(count), "voxel_size": (vs, vs, vs)})
