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
        self.add_button.setToolTip("An image layer of the selected row's average, at the model's voxel size, "
                                   "centred on the group's most central pick (to compare it with the particle)")
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


def average_translate(centre_world, box: int, voxel_size: float) -> tuple[float, float, float]:
    """The ``translate`` (Å, Z Y X) that puts the centre of a ``box``³ average of ``voxel_size`` Å at
    ``centre_world`` (Å): napari draws voxel i at translate + i · scale."""
    import numpy as np

    return tuple(float(c) - (box - 1) / 2.0 * float(voxel_size) for c in np.asarray(centre_world, dtype=float)[-3:])


def add_average_layer(viewer, group: str, average, count: int, voxel_size: float, centre_world=None):
    """Add ``average`` (a (B, B, B) box of ``group``, ``voxel_size`` Å) as a grey Image layer; return it.

    ``centre_world`` (Å, Z Y X): where its centre goes — one of the group's picks, so the average
    sits on a particle it was made from, at its own voxel size (None: the origin). Its metadata
    marks it as an average, so no widget offers it as a tomogram to work on.
    """
    from ...layers import ANGSTROM, AVERAGE_OF_KEY

    vs = float(voxel_size)
    translate = average_translate(centre_world, average.shape[0], vs) if centre_world is not None else (0.0,) * 3
    return viewer.add_image(average, name=f"average {group}", scale=(vs, vs, vs), translate=translate, units=ANGSTROM,
                            colormap="gray", contrast_limits=limits(average), projection_mode="none",
                            metadata={AVERAGE_OF_KEY: group, "count": int(count), "voxel_size": (vs, vs, vs),
                                      "centre": None if centre_world is None else [float(c) for c in centre_world]})
