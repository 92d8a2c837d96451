"""Layout pieces the dock widgets share: a vertical scroll area, the theme's plot colours and a live
two-axis plot."""

from __future__ import annotations

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QFormLayout, QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

REDRAW_MS = 200  # ≤ 5 plot redraws per second


class VerticalScrollArea(QScrollArea):
    """Scrolls vertically only, and is always as wide as its content (under the live style)."""

    def _with_content_width(self, hint, content_hint):
        hint.setWidth(content_hint.width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth())
        return hint

    def minimumSizeHint(self):
        content = self.widget()
        hint = super().minimumSizeHint()
        return hint if content is None else self._with_content_width(hint, content.minimumSizeHint())

    def sizeHint(self):
        content = self.widget()
        hint = super().sizeHint()
        return hint if content is None else self._with_content_width(hint, content.sizeHint())


def form(rows, parent: QWidget | None = None) -> QFormLayout:
    """A form of ``(label, field)`` rows (a row without a label: just the widget), on ``parent`` if given."""
    layout = QFormLayout(parent) if parent is not None else QFormLayout()
    for row in rows:
        layout.addRow(*row) if isinstance(row, tuple) else layout.addRow(row)
    return layout


def scroll_into(widget: QWidget, content: QWidget) -> VerticalScrollArea:
    """Make ``content`` the whole of ``widget``, inside a frameless vertical scroll area."""
    scroll = VerticalScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(content)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return scroll


class Throttle(QTimer):
    """Calls ``slot`` at most every :data:`REDRAW_MS` however often :meth:`request` is called.

    A burst of requests gives one call at the end of the interval (the last state is drawn);
    ``stop()`` then a direct call draws at once (at the end of a run).
    """

    def __init__(self, parent: QWidget, slot) -> None:
        super().__init__(parent)
        self.setSingleShot(True)
        self.setInterval(REDRAW_MS)
        self.timeout.connect(slot)

    def request(self) -> None:
        if not self.isActive():
            self.start()


def theme_colors(viewer) -> tuple[str, str]:
    """The viewer theme's background and text colours (hex), for plots drawn in a dock."""
    bg, fg = "#23242b", "#f0f1f2"
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        bg, fg = theme.background.as_hex(), theme.text.as_hex()
    except Exception:  # noqa: BLE001 - a plot colour is not worth failing for
        pass
    return bg, fg


def live_plot(viewer, xlabel: str):
    """A small matplotlib canvas in the viewer's theme: a left axis (losses) and a right 0–1 axis.

    Returns ``(figure, canvas, ax, ax2, fg)``; ``fg`` is the theme's text colour.
    """
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    bg, fg = theme_colors(viewer)
    figure = Figure(figsize=(3.2, 1.9), dpi=90, facecolor=bg, layout="constrained")
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(140)
    canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    ax = figure.add_subplot(111)
    ax2 = ax.twinx()
    for a in (ax, ax2):
        a.set_facecolor(bg)
        a.tick_params(colors=fg, labelsize=7)
        for spine in a.spines.values():
            spine.set_color(fg)
    ax.set_xlabel(xlabel, color=fg, fontsize=7)
    ax2.set_ylim(0, 1.02)
    return figure, canvas, ax, ax2, fg
