"""Curate widget: review picks one by one, accept or reject them, undo.

- Steps through the picks of a Points layer, ordered by score (or unknown score, or file order).
- Centres the view on the current pick (slice and camera) and shows its XY, XZ and YZ slices, cut
  from the *raw* tomogram the picks were made in (never the DoG preview), with grey levels from
  the box itself, the protein dark whatever the tomogram's polarity, an optional light low-pass
  and a circle at the pick's diameter (:mod:`napari_cryo_openset.thumbnails`); above them the
  pick's predicted class, confidence and unknown score.
- Keys on the picks layer: **A** accept, **R** reject, **N** next, **B** back, **U** undo.
- Rejected picks are hidden (``shown``) and marked ``rejected`` — never deleted. Adding,
  deleting or moving points with napari's own tools keeps the features table consistent (new
  points come in ``unreviewed``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..layers import DIAMETER_KEY, SCORE_THRESHOLD_KEY
from .._viewer import go_to_pick
from ._choice import PICKS, LayerCombo, is_tomogram_layer, to_image_voxels
from ._layout import form
from ._views import circled, gray_pixmap, ortho_slices, slice_views  # noqa: F401 (ortho_slices re-exported)

ORDERS = {
    "score (high → low)": ("score", False),
    "unknown score (high → low)": ("unknown_score", False),
    "file order": (None, True),
}
_VIEW_PX = 160  # each thumbnail, pixels: large enough to judge a pick


@dataclass
class _Change:
    index: int
    curation: str
    shown: bool


class CurateWidget(QWidget):
    """Review picks one by one (dock widget)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._layer = None
        self._order: np.ndarray = np.zeros(0, dtype=int)
        self._pos = 0
        self._undo: list[_Change] = []

        self.layer_combo = LayerCombo(napari_viewer, PICKS, "The picks to review")
        self.order_combo = QComboBox()
        self.order_combo.addItems(list(ORDERS))
        self.prev_button = QPushButton("◀ Back (B)")
        self.next_button = QPushButton("Next (N) ▶")
        self.accept_button = QPushButton("Accept (A)")
        self.reject_button = QPushButton("Reject (R)")
        self.undo_button = QPushButton("Undo (U)")
        self.info = QLabel("No picks layer")
        self.info.setWordWrap(True)
        self.call = QLabel("")  # the pick's predicted class, confidence, unknown score
        self.call.setWordWrap(True)
        self.lowpass = QCheckBox("Light low-pass (σ 1 voxel)")
        self.lowpass.setToolTip("Smooth the slices a little (Gaussian, σ = 1 voxel) to see the particle in the noise")
        self.polarity = QComboBox()
        self.polarity.addItems(["dark", "bright"])
        self.polarity.setToolTip("Is protein dark (raw reconstruction) or bright (inverted) in this tomogram? "
                                 "The slices always show protein dark. Taken from the picking run when known.")
        self.progress_label = QLabel("")
        grid, self.views = slice_views(_VIEW_PX)

        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        decide = QHBoxLayout()
        decide.addWidget(self.accept_button)
        decide.addWidget(self.reject_button)
        decide.addWidget(self.undo_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form([("Picks layer", self.layer_combo), ("Order", self.order_combo),
                               ("Protein is", self.polarity)]))
        layout.addLayout(nav)
        layout.addLayout(decide)
        layout.addWidget(self.call)
        layout.addLayout(grid)
        layout.addWidget(self.lowpass)
        layout.addWidget(self.info)
        layout.addWidget(self.progress_label)
        layout.addStretch(1)

        self.prev_button.clicked.connect(self.previous)
        self.next_button.clicked.connect(self.next)
        self.accept_button.clicked.connect(lambda: self.decide("accepted"))
        self.reject_button.clicked.connect(lambda: self.decide("rejected"))
        self.undo_button.clicked.connect(self.undo)
        self.lowpass.toggled.connect(lambda _: self._update_view())
        self.polarity.currentTextChanged.connect(lambda _: self._update_view())
        self.layer_combo.layer_changed.connect(self._on_layer_chosen)
        self.order_combo.currentTextChanged.connect(lambda _: self._reorder(keep_current=True))
        self._on_layer_chosen(self.layer_combo.layer())

    # --- layer bookkeeping ----------------------------------------------------------------
    @property
    def layer(self):
        """The picks layer under review (None if there is none)."""
        return self._layer

    def _on_layer_chosen(self, layer) -> None:
        if layer is self._layer:
            return
        if self._layer is not None:
            self._layer.events.data.disconnect(self._on_data_changed)
        self._layer = layer
        self._undo.clear()
        if layer is None:
            self._order = np.zeros(0, dtype=int)
            self._update_view()
            return
        _ensure_curation(layer)
        polarity = _known_polarity(layer)
        if polarity is not None:
            self.polarity.setCurrentText(polarity)
        layer.events.data.connect(self._on_data_changed)
        for key, func in (
            ("a", lambda ly: self.decide("accepted")),
            ("r", lambda ly: self.decide("rejected")),
            ("n", lambda ly: self.next()),
            ("b", lambda ly: self.previous()),
            ("u", lambda ly: self.undo()),
        ):
            layer.bind_key(key, func, overwrite=True)
        self._reorder(keep_current=False)

    def _on_data_changed(self, event=None) -> None:
        """Points added, deleted or moved with napari's tools: keep the table consistent."""
        if self._layer is None:
            return
        action = str(getattr(event, "action", ""))
        if action.endswith(("adding", "removing", "changing")):
            return  # wait for the completed event
        if action.endswith("added"):
            _reset_added(self._layer, getattr(event, "data_indices", ()))
        _ensure_curation(self._layer)
        self._undo = [c for c in self._undo if c.index < len(self._layer.data)]
        self._reorder(keep_current=True)

    def refresh(self) -> None:
        """Order the picks again (e.g. after the Pick threshold moved), staying on the current one."""
        self._reorder(keep_current=True)

    def _reorder(self, keep_current: bool) -> None:
        layer = self._layer
        if layer is None:
            return
        current = self.current_index if keep_current else None
        column, file_order = ORDERS[self.order_combo.currentText()]
        from ..layers import above_threshold

        n = len(layer.data)
        if file_order or column not in layer.features.columns:
            order = np.arange(n)
        else:
            values = np.nan_to_num(layer.features[column].to_numpy(dtype=float), nan=-np.inf)
            order = np.argsort(-values, kind="stable")
        # candidates below the Pick widget's live threshold are not up for review
        keep = above_threshold(layer.features, layer.metadata.get(SCORE_THRESHOLD_KEY))
        order = order[keep[order]]
        self._order = order
        self._pos = 0
        if current is not None and current in order:
            self._pos = int(np.flatnonzero(order == current)[0])
        self._update_view()

    # --- navigation and decisions ---------------------------------------------------------
    @property
    def current_index(self) -> int | None:
        if self._layer is None or len(self._order) == 0:
            return None
        return int(self._order[min(self._pos, len(self._order) - 1)])

    def next(self) -> None:
        if len(self._order):
            self._pos = min(self._pos + 1, len(self._order) - 1)
            self._update_view()

    def previous(self) -> None:
        if len(self._order):
            self._pos = max(self._pos - 1, 0)
            self._update_view()

    def decide(self, state: str) -> None:
        """Mark the current pick ``accepted`` or ``rejected`` and move to the next one."""
        i = self.current_index
        if i is None:
            return
        layer = self._layer
        self._undo.append(_Change(i, str(layer.features.loc[i, "curation"]), bool(layer.shown[i])))
        layer.features.loc[i, "curation"] = state
        shown = layer.shown.copy()
        shown[i] = state != "rejected"
        layer.shown = shown
        self.next() if self._pos < len(self._order) - 1 else self._update_view()

    def undo(self) -> None:
        """Revert the last accept/reject and go back to that pick."""
        if not self._undo or self._layer is None:
            return
        change = self._undo.pop()
        layer = self._layer
        layer.features.loc[change.index, "curation"] = change.curation
        shown = layer.shown.copy()
        shown[change.index] = change.shown
        layer.shown = shown
        hits = np.flatnonzero(self._order == change.index)
        if hits.size:
            self._pos = int(hits[0])
        self._update_view()

    # --- display --------------------------------------------------------------------------
    def _image_for(self, layer):
        """The raw tomogram the picks belong to: the one they were picked in, else the newest one at
        the same voxel size (never a DoG preview or an average)."""
        source = layer.metadata.get("source_image") if isinstance(layer.metadata, dict) else None
        images = [ly for ly in self.viewer.layers if is_tomogram_layer(ly) and np.allclose(ly.scale, layer.scale)]
        named = [ly for ly in images if ly.name == source]
        return (named or images or [None])[-1]

    def _update_view(self) -> None:
        layer = self._layer
        i = self.current_index
        if layer is None or i is None:
            self.info.setText("No picks to review" if layer is not None else "No picks layer")
            self.progress_label.setText("")
            self.call.setText("")
            for view in self.views:
                view.clear()
            return
        feats = layer.features
        curation = feats["curation"].astype(str)
        reviewed = int((curation != "unreviewed").sum())
        self.progress_label.setText(
            f"{reviewed} / {len(curation)} reviewed · {int((curation == 'accepted').sum())} accepted · "
            f"{int((curation == 'rejected').sum())} rejected"
        )
        parts = [f"Pick {self._pos + 1} of {len(self._order)} (#{i})", f"state: {curation.iloc[i]}"]
        if "score" in feats.columns and np.isfinite(float(feats["score"].iloc[i])):
            parts.append(f"score: {float(feats['score'].iloc[i]):.3g}")
        self.info.setText(" · ".join(parts))
        self.call.setText(_call_text(feats, i))
        go_to_pick(self.viewer, layer, i)
        image = self._image_for(layer)
        if image is None:
            return
        from ..thumbnails import particle_view

        diameter = layer.metadata.get(DIAMETER_KEY) if isinstance(layer.metadata, dict) else None
        if "diameter" in feats.columns and np.isfinite(float(feats["diameter"].iloc[i])):
            diameter = float(feats["diameter"].iloc[i])
        voxel = float(np.mean(image.scale[-3:]))
        zyx = to_image_voxels(layer, image, np.asarray(layer.data[i], dtype=float))
        data = image.data[0] if getattr(image, "multiscale", False) else image.data
        view = particle_view(data, zyx, diameter / voxel if diameter else 16.0, self.polarity.currentText(),
                             self.lowpass.isChecked())
        lo, hi = view.limits
        for label, plane in zip(self.views, view.planes):
            label.setPixmap(circled(gray_pixmap(plane, lo, hi, _VIEW_PX, smooth=False), view.radius / plane.shape[0]))


def _call_text(feats, i: int) -> str:
    """The predicted class (or cluster), confidence and unknown score of pick ``i`` (rich text)."""
    from ..layers import pick_groups

    if "class_name" not in feats.columns or str(feats["class_name"].iloc[i]) in ("", "nan"):
        return "not classified yet (Model ▸ Predict, or Adapt)"
    group = str(pick_groups(feats.iloc[[i]])[0])
    parts = [f"<b>{group}</b>"]
    for column, label in (("confidence", "confidence"), ("unknown_score", "unknown score")):
        if column in feats.columns and np.isfinite(float(feats[column].iloc[i])):
            parts.append(f"{label} {float(feats[column].iloc[i]):.3g}")
    return " · ".join(parts)


def _known_polarity(layer) -> str | None:
    """The polarity the picks were made or classified with, if the layer records it."""
    meta = layer.metadata if isinstance(layer.metadata, dict) else {}
    for key in ("prediction", "picking"):
        entry = meta.get(key)
        if isinstance(entry, dict):
            polarity = entry.get("polarity") or (entry.get("params") or {}).get("polarity")
            if polarity in ("dark", "bright"):
                return polarity
    return None


def _reset_added(layer, indices) -> None:
    """napari copies the selected point's features into new points; a new pick starts fresh."""
    from ..layers import pick_feature_defaults

    feats = layer.features
    n = len(feats)
    rows = [i % n for i in indices if -n <= i < n]
    if not rows:
        return
    for column, value in pick_feature_defaults(feats).items():
        feats.loc[rows, column] = value
    layer.features = feats


def _ensure_curation(layer) -> None:
    """Give every point a curation state (new points: ``unreviewed``) and set defaults."""
    feats = layer.features
    if "curation" not in feats.columns:
        feats["curation"] = "unreviewed"
    feats["curation"] = feats["curation"].astype(object).where(feats["curation"].notna(), "unreviewed")
    feats.loc[~feats["curation"].isin(("accepted", "rejected", "unreviewed")), "curation"] = "unreviewed"
    layer.features = feats
    defaults = layer.feature_defaults
    if "curation" in defaults.columns:
        defaults["curation"] = "unreviewed"
        if "score" in defaults.columns:
            defaults["score"] = np.nan
        layer.feature_defaults = defaults
