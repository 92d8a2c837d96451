"""The workflow panel: one dock with the steps Pick · Curate · Model · Adapt · Results.

Each step is one of the existing dock widgets, in its own tab and scroll area, so the step in
front is never squeezed by the others. Above the tabs: *Save session…* / *Open session…*
(:mod:`napari_cryo_openset.session`, autosaved after every finished step once saved), the legend
of the picks' colours (:class:`~napari_cryo_openset._widgets.legend.Legend`), a hover line for
the pick under the mouse and a message line (what a step did, what the plugin changed on the
display: :func:`~napari_cryo_openset._widgets._tell.tell`). On every step: what it still needs
from the steps before ("No model yet: train one in Model, or Load…") and the warnings of
:mod:`napari_cryo_openset.workflow` (a near-chance model, mostly empty/unknown calls, a tiny
particle). In 3-D, tomograms are rendered so their protein stands out (minimum projection for
dark protein).

The plugin's menu items for the single widgets open this panel at their step
(:func:`open_step`): there is one panel per viewer, moved to the dock of the item chosen.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QTabWidget, QVBoxLayout, QWidget

from ._layout import VerticalScrollArea

#: The steps, in order (tab titles).
STEPS = ("Pick", "Curate", "Model", "Adapt", "Results")
#: The hover line while no pick is under the mouse.
HOVER_HINT = "Hover a pick to see its class, confidence and unknown score."
#: The dock title of the panel when opened on its own.
PANEL_NAME = "Cryo-ET workflow"

_NEEDS_STYLE = "QLabel { color: #ffcc66; padding: 2px; }"
_WARNING_STYLE = "QLabel { color: #ff8c69; padding: 2px; font-weight: bold; }"
_PANELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # viewer → its WorkflowPanel


def _scrolled(widget: QWidget) -> VerticalScrollArea:
    from qtpy.QtCore import Qt

    scroll = VerticalScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(widget)
    return scroll


class WorkflowPanel(QWidget):
    """Pick · Curate · Model · Adapt · Results in one dock (tabs), with a legend and what each step needs."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from .adapt import AdaptWidget
        from .curate import CurateWidget
        from .legend import Legend
        from .model import ModelWidget
        from .pick import PickWidget
        from .results import ResultsWidget
        from .state import follow, viewer_state

        viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)  # napari may hand a public proxy
        self.viewer = viewer
        self.state = viewer_state(viewer)
        self.pick = PickWidget(viewer)
        self.curate = CurateWidget(viewer)
        self.model = ModelWidget(viewer)
        self.adapt = AdaptWidget(viewer)
        self.results = ResultsWidget(viewer)
        self.steps = dict(zip(STEPS, (self.pick, self.curate, self.model, self.adapt, self.results)))

        self.legend = Legend(viewer)
        self.hover = QLabel(HOVER_HINT)  # the pick under the mouse: class, confidence, unknown score, …
        self.hover.setStyleSheet("QLabel { color: #8a8d94; }")
        self.hover.setWordWrap(True)
        self.hover.setToolTip("The pick under the mouse (picks layer of the legend)")
        self.message = QLabel("")  # what a finished step did, what the plugin changed on the display
        self.message.setWordWrap(True)
        self.message.setVisible(False)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.needs_labels: dict[str, QLabel] = {}  # what a step still needs
        self.warning_labels: dict[str, QLabel] = {}  # what a user should look at twice
        for name, widget in self.steps.items():
            page = QWidget()
            layout = QVBoxLayout(page)
            layout.setContentsMargins(0, 2, 0, 0)
            self.needs_labels[name] = needs = _note_label(_NEEDS_STYLE)
            layout.addWidget(needs)
            self.warning_labels[name] = warning = _note_label(_WARNING_STYLE)
            layout.addWidget(warning)
            # Model, Adapt and Results scroll themselves; Pick and Curate get a scroll area here
            layout.addWidget(widget if hasattr(widget, "scroll") else _scrolled(widget), 1)
            self.tabs.addTab(page, name)

        self.save_session_button = QPushButton("Save session…")
        self.save_session_button.setToolTip("Picks (every feature, the curation), models, threshold and hidden "
                                            "groups in one .cosession.json file and the folder beside it")
        self.open_session_button = QPushButton("Open session…")
        self.open_session_button.setToolTip("Restore a saved session: tomogram, picks, models, threshold, hidden groups")
        session_row = QHBoxLayout()
        session_row.addWidget(self.save_session_button)
        session_row.addWidget(self.open_session_button)
        self.save_session_button.clicked.connect(self._choose_session_to_save)
        self.open_session_button.clicked.connect(self._choose_session_to_open)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 2)
        outer.addLayout(session_row)
        outer.addWidget(self.legend)
        outer.addWidget(self.hover)
        outer.addWidget(self.message)
        outer.addWidget(self.tabs, 1)

        self.tabs.currentChanged.connect(self._on_step_changed)
        self.legend.changed.connect(self.update_needs)  # predictions, threshold, clusters, hidden groups
        self.pick.diameter.valueChanged.connect(self.update_needs)
        self.pick.image_combo.layer_changed.connect(self.update_needs)
        viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        self.session_file: Path | None = None  # the session saved or opened last: autosaved after each step
        for runner in (self.pick.task, self.model.runner, self.adapt.runner, self.results.runner):
            runner.finished.connect(self.autosave)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.update_needs)
        _PANELS.setdefault(viewer, self)
        if _on_mouse_move not in viewer.mouse_move_callbacks:
            viewer.mouse_move_callbacks.append(_on_mouse_move)
        self.destroyed.connect(lambda *_: _disconnect_layers(viewer, self.update_needs))
        self.destroyed.connect(lambda *_: _disconnect(viewer.dims.events.ndisplay, self._on_ndisplay))
        follow(self.state.source_changed, self, self._on_model)
        follow(self.state.adapted_changed, self, self._on_model)
        self.update_needs()

    # --- steps ----------------------------------------------------------------------------------
    @property
    def step(self) -> str:
        """The step in front."""
        return STEPS[self.tabs.currentIndex()]

    def set_step(self, name: str) -> QWidget:
        """Bring step ``name`` (one of :data:`STEPS`) to the front; return its widget."""
        if name not in self.steps:
            raise ValueError(f"no step {name!r}: expected one of {', '.join(STEPS)}")
        self.tabs.setCurrentIndex(STEPS.index(name))
        return self.steps[name]

    def _on_step_changed(self, _index=None) -> None:
        """A step comes to the front: it sees what the others changed meanwhile (e.g. the Pick
        threshold moved since Curate last ordered its picks), then what it needs."""
        if self.step == "Curate":
            self.curate.refresh()
        self.legend.refresh()

    def page(self, name: str) -> QWidget:
        """The tab page of step ``name``."""
        return self.tabs.widget(STEPS.index(name))

    def show_hover(self, position, view_direction=None, dims_displayed=None) -> str:
        """Describe the pick at world ``position`` (of the legend's picks layer) in the hover line."""
        from ..layers import DIAMETER_KEY, pick_summary

        layer = self.legend.layer
        text = ""
        if layer is not None and layer.visible and len(layer.data):
            index = layer.get_value(position, view_direction=view_direction, dims_displayed=dims_displayed,
                                    world=True)
            if index is not None and 0 <= int(index) < len(layer.data) and bool(layer.shown[int(index)]):
                meta = layer.metadata if isinstance(layer.metadata, dict) else {}
                text = pick_summary(layer.features, int(index), meta.get(DIAMETER_KEY))
        shown = text or HOVER_HINT
        if shown != self.hover.text():
            self.hover.setText(shown)
            self.hover.setStyleSheet("" if text else "QLabel { color: #8a8d94; }")
        return text

    def say(self, text: str) -> None:
        """Show ``text`` in the panel's message line (not a notification over the canvas)."""
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def _on_ndisplay(self, event=None) -> None:
        """In 3-D, tomograms are rendered so their protein stands out (dark protein: minimum
        projection; bright: maximum), and the panel says so."""
        from ._choice import is_tomogram_layer

        if self.viewer.dims.ndisplay != 3:
            return
        changed = []
        for layer in self.viewer.layers:
            if not is_tomogram_layer(layer):
                continue
            polarity = tomogram_polarity(self.viewer, layer)
            rendering = "minip" if polarity == "dark" else "mip"
            if layer.rendering != rendering:
                layer.rendering = rendering
                changed.append(f"'{layer.name}' ({polarity} protein) rendered as "
                               f"{'minimum' if rendering == 'minip' else 'maximum'} intensity projection")
        if changed:
            self.say("3-D: " + "; ".join(changed) + " (layer controls ▸ rendering to change it).")

    # --- session ----------------------------------------------------------------------------
    def _session_layer(self):
        from ._choice import is_picks_layer

        active = self.viewer.layers.selection.active
        return active if is_picks_layer(active) else self.legend.layer

    def save_session(self, path):
        """Save the picks layer (the active one, else the legend's), its tomogram's path, the models,
        threshold and hidden groups as a session at ``path``; return the JSON's path (None: refused)."""
        from ..errors import CryoOpensetError
        from ..layers import DIAMETER_KEY, HIDDEN_GROUPS_KEY, MODEL_CLASSES_KEY
        from ..picks import from_points
        from ..session import Session, save_session
        from ._task import report_error

        layer = self._session_layer()
        if layer is None:
            report_error(CryoOpensetError("Session: there are no picks to save (pick particles, or open picks)."))
            return None
        meta = layer.metadata if isinstance(layer.metadata, dict) else {}
        image = self.curate._image_for(layer)
        tomogram = (image.metadata or {}).get("path") if image is not None else None
        adapted = self.state.adapted.bundle if self.state.adapted is not None else None
        source = self.state.source.bundle if self.state.source is not None else None
        session = Session(
            picks=from_points(np.asarray(layer.data), layer.features), picks_name=layer.name,
            voxel_size=tuple(float(v) for v in layer.scale[-3:]), diameter=meta.get(DIAMETER_KEY),
            tomogram_path=tomogram, model=source, adapted=adapted,
            threshold=(adapted.openset.get("threshold") if adapted is not None else None),
            hidden_groups=list(meta.get(HIDDEN_GROUPS_KEY, ())), model_classes=meta.get(MODEL_CLASSES_KEY),
            metadata={k: v for k, v in meta.items() if k not in (HIDDEN_GROUPS_KEY, MODEL_CLASSES_KEY)})
        try:
            written = save_session(path, session)
        except (CryoOpensetError, OSError) as exc:
            report_error(exc if isinstance(exc, CryoOpensetError) else CryoOpensetError(f"Session: {exc}"))
            return None
        self.session_file = written
        self.say(f"Session saved: {written} (saved again after every finished step)")
        return written

    def autosave(self) -> Path | None:
        """Save the session again (after a step finished) if one was saved or opened; a crash then loses at
        most the running step. Written atomically: an interrupted save keeps the previous session."""
        if self.session_file is None:
            return None
        return self.save_session(self.session_file)

    def open_session(self, path, ask_tomogram=None):
        """Restore the session at ``path``: its tomogram (``ask_tomogram()`` → a path, when it moved),
        the picks as a new layer with every feature, the models, threshold and hidden groups.
        Returns the picks layer (None: refused with one message, nothing changed)."""
        from ..errors import CryoOpensetError
        from ..io import read_tomogram
        from ..layers import (HIDDEN_GROUPS_KEY, MODEL_CLASSES_KEY, SCORE_THRESHOLD_KEY, picks_layer, tomogram_layer,
                              visible_picks_mask)
        from ..picks import to_points
        from ..session import read_session
        from ._task import report_error

        try:
            session = read_session(path)
            tomo_path = session.tomogram_path if session.tomogram_found else None
            notes = []
            if tomo_path is None and session.tomogram_path:
                tomo_path = (ask_tomogram or self._ask_tomogram)(session.tomogram_path) or None
                if tomo_path is None:
                    notes.append(f"the tomogram is no longer at {session.tomogram_path}: open it with File ▸ Open")
            tomo = read_tomogram(tomo_path) if tomo_path else None
        except CryoOpensetError as exc:
            report_error(exc)
            return None
        if tomo is not None and not any((ly.metadata or {}).get("path") == str(tomo.path) for ly in self.viewer.layers
                                        if isinstance(ly.metadata, dict)):
            data, kwargs, _ = tomogram_layer(tomo)
            image = self.viewer.add_image(data, **kwargs)
            session.metadata["source_image"] = image.name
        meta = {**session.metadata, HIDDEN_GROUPS_KEY: session.hidden_groups}
        if session.model_classes is not None:
            meta[MODEL_CLASSES_KEY] = session.model_classes
        data, kwargs, _ = picks_layer(session.picks, voxel_size=session.voxel_size, name=session.picks_name,
                                      diameter=session.diameter, metadata=meta)
        _, features = to_points(session.picks)
        kwargs["shown"] = visible_picks_mask(features, meta.get(SCORE_THRESHOLD_KEY), session.hidden_groups)
        layer = self.viewer.add_points(data, **kwargs)
        origin = f"session {Path(path).name}"
        if session.model is not None:
            self.state.publish_source(session.model, origin=origin)
        if session.adapted is not None:
            self.state.publish_adapted(session.adapted, origin=origin)
        restored = [f"{len(layer.data)} picks"] + (["source model"] if session.model is not None else []) \
            + ([f"adapted model (threshold {session.threshold:.4g})"] if session.adapted is not None
               and session.threshold is not None else []) \
            + ([f"hidden: {', '.join(session.hidden_groups)}"] if session.hidden_groups else [])
        self.say(f"Session {Path(path).name} opened: {'; '.join(restored)}." + "".join(f" Note: {n}." for n in notes))
        self.viewer.layers.selection.active = layer
        self.session_file = Path(path)
        return layer

    def _ask_tomogram(self, old_path: str) -> str:
        from qtpy.QtWidgets import QFileDialog

        return QFileDialog.getOpenFileName(self, f"Where is the tomogram now? (was {old_path})", "",
                                           "Tomograms (*.mrc *.rec *.map *.st);;All files (*)")[0]

    def _choose_session_to_save(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path = QFileDialog.getSaveFileName(self, "Save session", "work.cosession.json",
                                           "Session (*.cosession.json)")[0]
        if path:
            self.save_session(path)

    def _choose_session_to_open(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path = QFileDialog.getOpenFileName(self, "Open session", "", "Session (*.cosession.json);;All files (*)")[0]
        if path:
            self.open_session(path)

    def _on_model(self, *_):
        self.update_needs()

    def update_needs(self, *_) -> None:
        """Show, on every step, what it still needs (nothing: the line is hidden)."""
        from .. import workflow

        facts = self.facts()
        for name, label in self.needs_labels.items():
            text = workflow.needs(name, facts)
            label.setText(text)
            label.setVisible(bool(text))
            warn = workflow.warnings(name, facts)
            self.warning_labels[name].setText("\n".join(f"⚠ {line}" for line in warn.splitlines()))
            self.warning_labels[name].setVisible(bool(warn))

    def facts(self):
        """What the steps need to know now (:class:`~napari_cryo_openset.workflow.Facts`)."""
        image = self.pick.image_layer()
        voxel = float(np.mean(image.scale[-3:])) if image is not None else None
        return facts_of(self.viewer, self.state, self.legend.layer, float(self.pick.diameter.value()), voxel)


def facts_of(viewer, state, legend_layer=None, diameter=None, voxel_size=None):
    """The :class:`~napari_cryo_openset.workflow.Facts` of ``viewer``, its shared models, the picks
    layer the legend shows and the Pick step's diameter and voxel size (Å)."""
    from ..layers import PREDICTION_KEY, SCORE_THRESHOLD_KEY, pick_groups, visible_picks_mask
    from ..workflow import Facts
    from ._choice import is_picks_layer, is_tomogram_layer

    picks = [ly for ly in viewer.layers if is_picks_layer(ly)]
    predicted = [ly for ly in picks if "class_name" in ly.features.columns
                 and (ly.features["class_name"].astype(str) != "").any()]
    val_accuracy, num_classes = None, 0
    if state.source is not None and hasattr(state.source.bundle, "class_names"):
        bundle = state.source.bundle
        num_classes = len(bundle.class_names)
        acc = ((getattr(bundle, "provenance", None) or {}).get("training") or {}).get("val_accuracy")
        val_accuracy = float(acc) if isinstance(acc, (int, float)) else None
    classified, unknown, empty, by = 0, 0.0, 0.0, ""
    if legend_layer is not None and legend_layer in predicted:
        feats = legend_layer.features
        active = visible_picks_mask(feats, legend_layer.metadata.get(SCORE_THRESHOLD_KEY))
        groups = pick_groups(feats).astype(str)[active]
        groups = groups[groups != ""]
        classified = int(groups.size)
        if classified:
            unknown = float(np.mean([g.startswith("unknown") for g in groups]))
            empty = float(np.mean(groups == "empty"))
        meta = legend_layer.metadata.get(PREDICTION_KEY) or {}
        by = str(meta.get("method") or "source") if isinstance(meta, dict) else ""
    return Facts(tomograms=sum(is_tomogram_layer(ly) for ly in viewer.layers), picks=len(picks),
                 predicted=len(predicted), model=state.source is not None, adapted=state.adapted is not None,
                 val_accuracy=val_accuracy, num_classes=num_classes, classified=classified,
                 unknown_fraction=unknown, empty_fraction=empty, predicted_by=by, diameter=diameter,
                 voxel_size=voxel_size)


def _on_mouse_move(viewer, event) -> None:
    """The viewer's mouse-move callback: the panel's hover line follows the pick under the mouse."""
    panel = _PANELS.get(viewer)
    if panel is None:
        return
    try:
        panel.show_hover(event.position, getattr(event, "view_direction", None),
                         list(getattr(event, "dims_displayed", []) or []) or None)
    except RuntimeError:  # the panel's Qt side is gone
        pass


def tomogram_polarity(viewer, image) -> str:
    """Is protein ``dark`` or ``bright`` in ``image``: as its picks were made or classified, else its
    header says, else ``dark`` (a raw reconstruction)."""
    from ._choice import is_picks_layer

    for layer in viewer.layers:
        meta = layer.metadata if is_picks_layer(layer) and isinstance(layer.metadata, dict) else {}
        if meta.get("source_image") not in (None, image.name):
            continue
        for key in ("prediction", "picking"):
            entry = meta.get(key)
            if isinstance(entry, dict) and entry.get("polarity") in ("dark", "bright"):
                return entry["polarity"]
    header = (image.metadata or {}).get("header") if isinstance(image.metadata, dict) else None
    polarity = (header or {}).get("polarity") if isinstance(header, dict) else None
    return polarity if polarity in ("dark", "bright") else "dark"


def _disconnect(event, slot) -> None:
    try:
        event.disconnect(slot)
    except Exception:  # noqa: BLE001 - the viewer may be gone already
        pass


def _disconnect_layers(viewer, slot) -> None:
    if _on_mouse_move in viewer.mouse_move_callbacks:
        viewer.mouse_move_callbacks.remove(_on_mouse_move)
    for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
        try:
            event.disconnect(slot)
        except Exception:  # noqa: BLE001 - the viewer may be gone already
            pass


def panel_for(viewer, create: bool = True) -> WorkflowPanel | None:
    """The viewer's workflow panel (made on first use unless ``create`` is False)."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    panel = _PANELS.get(viewer)
    if panel is None and create:
        panel = _PANELS[viewer] = WorkflowPanel(viewer)
    return panel


def _note_label(style: str) -> QLabel:
    """A hidden, word-wrapped line of the panel (what a step needs, or a warning) in ``style``."""
    label = QLabel("")
    label.setWordWrap(True)
    label.setStyleSheet(style)
    label.setVisible(False)
    return label


def is_docked(panel: QWidget) -> bool:
    """Is ``panel`` inside a dock widget of its viewer's window?"""
    from qtpy.QtWidgets import QDockWidget

    parent = panel.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent is not None


def _undock(viewer, panel: QWidget) -> None:
    """Take ``panel`` out of its dock (kept alive) so the menu item's dock can hold it."""
    from qtpy.QtWidgets import QDockWidget

    parent = panel.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    if parent is not None:
        viewer.window.remove_dock_widget(parent)
        panel.setParent(None)


def open_step(viewer, step: str) -> WorkflowPanel:
    """The viewer's one panel at ``step``, out of any dock, for napari to dock (menu items)."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    panel = panel_for(viewer)
    _undock(viewer, panel)
    panel.set_step(step)
    return panel


def dock_panel(viewer, step: str = "Pick") -> WorkflowPanel:
    """Dock the viewer's panel on the right at ``step`` (the demo, scripts, tests); return it."""
    panel = open_step(viewer, step)
    viewer.window.add_dock_widget(panel, name=PANEL_NAME, area="right")
    return panel


# The menu items (napari.yaml). napari instantiates a QWidget subclass with ``napari_viewer``
# (a plain function would be called without it), so each item is a subclass whose ``__new__``
# hands back the viewer's one panel, opened at its step (``__init__`` is then not run again).
class _Step(WorkflowPanel):
    step_name: str | None = None  # None: the panel at the step it shows

    def __new__(cls, napari_viewer):
        panel = panel_for(napari_viewer)
        return open_step(napari_viewer, cls.step_name or panel.step)

    def __init__(self, napari_viewer) -> None:  # noqa: D107 - never runs: __new__ returns the panel
        pass


class workflow_panel(_Step):  # noqa: N801 - named as a command
    """The workflow panel, at the step it shows."""


class pick_step(_Step):  # noqa: N801
    step_name = "Pick"


class curate_step(_Step):  # noqa: N801
    step_name = "Curate"


class model_step(_Step):  # noqa: N801
    step_name = "Model"


class adapt_step(_Step):  # noqa: N801
    step_name = "Adapt"


class results_step(_Step):  # noqa: N801
    step_name = "Results"
