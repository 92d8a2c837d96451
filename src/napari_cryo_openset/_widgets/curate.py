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

#: The order that asks for the picks a decision teaches most (:mod:`napari_cryo_openset.review`).
REVIEW_ORDER = "__review__"
ORDERS = {
    "score (high → low)": ("score", False),
    "review queue (most useful first)": (REVIEW_ORDER, False),
    "unknown score (high → low)": ("unknown_score", False),
    "file order": (None, True),
}
_VIEW_PX = 160  # each thumbnail, pixels: large enough to judge a pick


@dataclass
class _Change:
    index: int
    curation: str
    shown: bool
    curated_class: str = ""  # the pick's curated label before the change


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
        self.label_combo = QComboBox()
        self.label_combo.setToolTip("Your class for the current pick: a class of the model, or unknown. Number keys "
                                    "1–9 set the first nine classes, 0 sets unknown; the predicted class stays beside it")
        self.label_button = QPushButton("Label (1–9, 0 = unknown)")
        self.clear_label_button = QPushButton("Clear label")
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
        relabel = QHBoxLayout()
        relabel.addWidget(self.label_combo, 1)
        relabel.addWidget(self.label_button)
        relabel.addWidget(self.clear_label_button)
        layout.addLayout(relabel)
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
        self.label_button.clicked.connect(lambda: self.relabel(self.label_combo.currentText()))
        self.clear_label_button.clicked.connect(lambda: self.relabel(None))
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
        for digit in range(10):
            layer.bind_key(str(digit), lambda ly, d=digit: self._label_key(d), overwrite=True)
        self._fill_labels()
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
        if column == REVIEW_ORDER:
            order = self._review_order()
        elif file_order or column not in layer.features.columns:
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

    def _review_order(self) -> np.ndarray:
        """The review queue (:func:`napari_cryo_openset.review.review_queue`: uncertain picks first,
        round-robin over the predicted classes), then the picks it leaves out (curated, rejected, or
        not classified yet) in score order."""
        from ..picks import from_points
        from ..review import review_queue

        layer = self._layer
        n = len(layer.data)
        score = np.nan_to_num(layer.features["score"].to_numpy(dtype=float), nan=-np.inf) \
            if "score" in layer.features.columns else np.zeros(n)
        by_score = np.argsort(-score, kind="stable")
        if "unknown_score" not in layer.features.columns or not n:
            return by_score
        from ..errors import CryoOpensetError

        threshold = self._threshold()
        try:
            queue = review_queue(from_points(layer.data, layer.features), threshold)["row"].to_numpy(dtype=int)
        except CryoOpensetError:  # no classified picks to queue yet: the score order
            return by_score
        rest = by_score[~np.isin(by_score, queue)]
        return np.concatenate([queue, rest]).astype(int)

    def _threshold(self) -> float:
        """The unknown threshold of the calls under review (the adapted or source model in use;
        else the median unknown score)."""
        from .state import viewer_state

        state = viewer_state(self.viewer)
        for entry in (state.adapted, state.source):
            bundle = getattr(entry, "bundle", None)
            thr = (getattr(bundle, "openset", None) or {}).get("threshold") if bundle is not None else None
            if thr is not None and np.isfinite(thr):
                return float(thr)
        values = self._layer.features["unknown_score"].to_numpy(dtype=float)
        return float(np.nanmedian(values)) if np.isfinite(values).any() else 0.0

    # --- labels ---------------------------------------------------------------------------
    def class_choices(self) -> list[str]:
        """The labels a pick can get: the model's classes (from the layer) and ``unknown``."""
        from ..curation import allowed_labels
        from ..layers import MODEL_CLASSES_KEY

        meta = self._layer.metadata if self._layer is not None and isinstance(self._layer.metadata, dict) else {}
        classes = meta.get(MODEL_CLASSES_KEY)
        if not classes and self._layer is not None and "class_name" in self._layer.features.columns:
            classes = sorted(c for c in set(self._layer.features["class_name"].astype(str)) if c and c != "nan")
        return allowed_labels([c for c in (classes or []) if c != "unknown"])

    def _fill_labels(self) -> None:
        choices = self.class_choices() if self._layer is not None else []
        if choices != [self.label_combo.itemText(k) for k in range(self.label_combo.count())]:
            current = self.label_combo.currentText()
            self.label_combo.clear()
            self.label_combo.addItems(choices)
            if current in choices:
                self.label_combo.setCurrentText(current)
        for w in (self.label_combo, self.label_button, self.clear_label_button):
            w.setEnabled(len(choices) > 1)

    def _label_key(self, digit: int) -> None:
        """Number keys: 1–9 label the current pick with the first nine classes, 0 with ``unknown``."""
        from ..picks import UNKNOWN_CLASS

        choices = [c for c in self.class_choices() if c != UNKNOWN_CLASS]
        if digit == 0:
            self.relabel(UNKNOWN_CLASS)
        elif digit <= len(choices):
            self.relabel(choices[digit - 1])

    def relabel(self, class_name: str | None) -> None:
        """Give the current pick your class (``None``: clear it) and move on; undo covers it.

        The label goes into the ``curated_class`` feature (STAR ``cosCuratedClassName``) beside the
        predicted ``class_name``, and the pick becomes ``accepted``
        (:func:`napari_cryo_openset.curation.set_curated_class`: a name the model lacks or a
        rejected pick is refused with one message).
        """
        from ..curation import CURATED_COLUMN, set_curated_class
        from ..errors import CryoOpensetError
        from ..picks import from_points
        from ._task import report_error

        i = self.current_index
        if i is None:
            return
        layer = self._layer
        feats = layer.features
        try:
            table = set_curated_class(from_points(layer.data, feats), [i], class_name, self.class_choices())
        except CryoOpensetError as exc:
            report_error(exc)
            self.info.setText(str(exc))
            return
        self._undo.append(self._change(i))
        feats = feats.copy()
        feats[CURATED_COLUMN] = table[CURATED_COLUMN].to_numpy()
        feats["curation"] = table["curation"].to_numpy()
        layer.features = feats
        self.next() if self._pos < len(self._order) - 1 else self._update_view()

    def _change(self, i: int) -> _Change:
        """What undo needs to give pick ``i`` back: its curation, visibility and curated label."""
        from ..curation import CURATED_COLUMN

        feats = self._layer.features
        old = str(feats.loc[i, CURATED_COLUMN]) if CURATED_COLUMN in feats.columns else ""
        return _Change(i, str(feats.loc[i, "curation"]), bool(self._layer.shown[i]), "" if old in ("nan", "None") else old)

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
        from ..curation import CURATED_COLUMN

        layer, feats = self._layer, self._layer.features
        self._undo.append(self._change(i))
        layer.features.loc[i, "curation"] = state
        if state == "rejected" and CURATED_COLUMN in feats.columns:
            layer.features.loc[i, CURATED_COLUMN] = ""  # a rejected pick carries no label (undo gives it back)
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
        from ..curation import CURATED_COLUMN

        if CURATED_COLUMN in layer.features.columns:
            layer.features.loc[change.index, CURATED_COLUMN] = change.curated_class
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
        self._fill_labels()  # the model's classes may have come since (Predict, Adapt)
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
    label = str(feats["curated_class"].iloc[i]) if "curated_class" in feats.columns else ""
    if label not in ("", "nan", "None"):
        parts.append(f"your label <b>{label}</b>")
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
