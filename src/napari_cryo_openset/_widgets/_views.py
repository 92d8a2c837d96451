"""Small grey views of a volume for the docks: orthogonal slices through a point, as pixmaps.

The Curate widget shows the XY, XZ and YZ slices through the current pick; the Results widget
the central slices of each average (a thumbnail per table row, a preview of the selected one).
Volumes are (Z, Y, X), coordinates in voxels.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap

#: Titles of the three views, in the order :func:`ortho_slices` returns them.
VIEW_TITLES = ("XY", "XZ", "YZ")


def ortho_slices(volume: np.ndarray, centre_zyx, half: int) -> list[np.ndarray]:
    """XY, XZ and YZ slices (2·half+1 square, edge-padded) through ``centre_zyx`` (voxels)."""
    c = np.round(np.asarray(centre_zyx, dtype=float)).astype(int)
    shape = np.asarray(volume.shape)
    lo = c - half
    hi = c + half + 1
    src_lo = np.clip(lo, 0, shape)
    src_hi = np.clip(hi, 0, shape)
    size = 2 * half + 1
    box = np.zeros((size, size, size), dtype=np.float32)
    if np.all(src_hi > src_lo):
        block = np.asarray(volume[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))], dtype=np.float32)
        pad = [(int(a - lo_), int(hi_ - b)) for a, b, lo_, hi_ in zip(src_lo, src_hi, lo, hi)]
        box = np.pad(block, pad, mode="edge" if block.size else "constant")
    return [box[half], box[:, half, :], box[:, :, half]]


def circled(pixmap: QPixmap, radius_fraction: float, color: str = "#ffd700") -> QPixmap:
    """``pixmap`` with a circle at its centre, ``radius_fraction`` of its width across as radius."""
    from qtpy.QtCore import QPointF
    from qtpy.QtGui import QColor, QPainter, QPen

    out = QPixmap(pixmap)
    painter = QPainter(out)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    pen = QPen(QColor(color))
    pen.setWidthF(1.5)
    painter.setPen(pen)
    r = float(radius_fraction) * out.width()
    painter.drawEllipse(QPointF(out.width() / 2.0, out.height() / 2.0), r, r)
    painter.end()
    return out


def central_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The XY, XZ and YZ slices through the centre of a (Z, Y, X) box."""
    v = np.asarray(volume, dtype=np.float32)
    cz, cy, cx = (s // 2 for s in v.shape)
    return [v[cz], v[:, cy, :], v[:, :, cx]]


def limits(volume: np.ndarray) -> tuple[float, float]:
    """Grey levels for a small volume: its 1st and 99.5th percentiles."""
    lo, hi = np.percentile(np.asarray(volume, dtype=np.float32), (1.0, 99.5))
    return float(lo), float(hi)


def gray_pixmap(image: np.ndarray, lo: float, hi: float, height: int, smooth: bool = True) -> QPixmap:
    """A 2-D array as a grey pixmap ``height`` pixels high (``lo`` black, ``hi`` white).

    ``smooth`` off keeps voxels as blocks (for judging a pick, not for a pretty average).
    """
    scaled = np.clip((image - lo) / ((hi - lo) or 1.0) * 255.0, 0, 255).astype(np.uint8)
    scaled = np.ascontiguousarray(scaled)
    h, w = scaled.shape
    qimg = QImage(scaled.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    mode = Qt.TransformationMode.SmoothTransformation if smooth else Qt.TransformationMode.FastTransformation
    return QPixmap.fromImage(qimg).scaledToHeight(height, mode)


def thumbnail(volume: np.ndarray, height: int) -> QPixmap:
    """XY | XZ | YZ central slices of a box side by side (a thin grey line between them)."""
    slices = central_slices(volume)
    lo, hi = limits(volume)
    rows = max(s.shape[0] for s in slices)
    padded = [np.pad(s, ((0, rows - s.shape[0]), (0, 0)), constant_values=lo) for s in slices]
    gap = np.full((rows, 1), lo + 0.4 * (hi - lo), dtype=np.float32)
    return gray_pixmap(np.hstack([padded[0], gap, padded[1], gap, padded[2]]), lo, hi, height)


def slice_views(size: int):
    """Three black square labels titled XY, XZ, YZ in a grid: ``(grid layout, [labels])``."""
    from qtpy.QtWidgets import QGridLayout, QLabel

    views = [QLabel() for _ in VIEW_TITLES]
    grid = QGridLayout()
    for col, (title, view) in enumerate(zip(VIEW_TITLES, views)):
        view.setFixedSize(size, size)
        view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        view.setStyleSheet("background: black;")
        grid.addWidget(QLabel(title), 0, col, alignment=Qt.AlignmentFlag.AlignCenter)
        grid.addWidget(view, 1, col)
    return grid, views
