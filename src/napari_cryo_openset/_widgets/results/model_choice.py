"""Results: which model supplies the picks' feature vectors — the adapted one, else the source
one, else one loaded here; the latest one published for the viewer wins."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox, QLabel, QPushButton, QVBoxLayout

from .._choice import ask_bundle_path, load_bundle_or_report
from ..state import follow, viewer_state

_NO_MODEL = ("No model: train one in the Model widget, adapt it in Adapt & predict, or Load model… "
             "(the one that made the predictions).")


class ModelChoice(QGroupBox):
    """The model's description and **Load model…**; ``changed`` after every new model."""

    changed = Signal()

    def __init__(self, viewer) -> None:
        super().__init__("Model")
        self.bundle = None
        self.origin = ""
        self.label = QLabel(_NO_MODEL)
        self.label.setWordWrap(True)
        self.load_button = QPushButton("Load model…")
        self.load_button.setToolTip("A model bundle (.pt): the one that made the predictions of the picks")
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addWidget(self.load_button)
        self.load_button.clicked.connect(self._choose)
        state = viewer_state(viewer)
        follow(state.source_changed, self, self._source_published)
        follow(state.adapted_changed, self, self._adapted_published)
        if state.adapted is not None:
            self._adapted_published(state.adapted)
        elif state.source is not None:
            self._source_published(state.source)

    def _source_published(self, published) -> None:
        if published.bundle is not None:
            self.use(published.bundle, published.origin or "from the Model widget")

    def _adapted_published(self, published) -> None:
        if published.bundle is not None:
            self.use(published.bundle, published.origin or "adapted in Adapt & predict")

    def use(self, bundle, origin: str) -> None:
        """Embed with ``bundle`` from now on (``origin`` says where it came from)."""
        self.bundle, self.origin = bundle, origin
        self.label.setText(_NO_MODEL if bundle is None else f"Model ({origin}): {bundle.describe()}.")
        self.changed.emit()

    def load(self, path):
        """Use the model bundle at ``path``; on failure, say why and keep the current model."""
        from napari.utils.notifications import show_info

        bundle = load_bundle_or_report(path)
        if bundle is not None:
            self.use(bundle, f"loaded from {Path(path).name}")
            show_info(f"Results: loaded model {Path(path).name}")
        return bundle

    def _choose(self) -> None:
        path = ask_bundle_path(self, "Load model")
        if path:
            self.load(path)
