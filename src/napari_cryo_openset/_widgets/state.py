"""What the dock widgets of one viewer share: the current source model and the latest adapted one.

A small evented object per viewer (psygnal signals, no Qt). The Model widget *publishes* the
model it trained (with the :class:`~napari_cryo_openset.simulate.SimulatedSet` it learned, kept
in memory) or loaded (no set: a bundle file does not hold one); Adapt & predict publishes the
model it adapted, and every new unknown threshold as a new bundle. Other widgets connect::

    state = viewer_state(viewer)
    follow(state.source_changed, widget, widget.on_source)   # on_source(published)
    state.publish_source(bundle, data=simulated_set, origin="trained in the Model widget")

The two kinds of change have separate signals, so a new adapted model never re-sets the source
model of the Adapt & predict widget. A published bundle is never changed afterwards: whoever
needs another threshold publishes another bundle
(:func:`napari_cryo_openset.predictions.with_threshold`).

The state is held weakly by its viewer: it goes when the viewer goes.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from psygnal import Signal


@dataclass(frozen=True)
class Published:
    """A model one widget made or loaded, for the others: the bundle, the set it learned, where from."""

    bundle: Any  # napari_cryo_openset.checkpoint.ModelBundle
    data: Any = None  # the SimulatedSet it was trained on, in memory; None if unknown (loaded from a file)
    origin: str = ""  # for people: "trained in the Model widget", "loaded from model.pt", …


class ViewerState:
    """The models the widgets of one viewer share; each change is a signal with the new :class:`Published`."""

    source_changed = Signal(object)  # Published: the source model (trained or loaded)
    adapted_changed = Signal(object)  # Published: the model the current predictions came from

    def __init__(self) -> None:
        self.source: Published | None = None
        self.adapted: Published | None = None

    def publish_source(self, bundle, data=None, origin: str = "") -> Published:
        """Make ``bundle`` (trained on ``data``, if known) the current source model."""
        self.source = Published(bundle, data, str(origin))
        self.source_changed.emit(self.source)
        return self.source

    def publish_adapted(self, bundle, origin: str = "") -> Published:
        """Make ``bundle`` the latest adapted model (the one the current predictions came from)."""
        self.adapted = Published(bundle, None, str(origin))
        self.adapted_changed.emit(self.adapted)
        return self.adapted


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def viewer_state(viewer) -> ViewerState:
    """The :class:`ViewerState` shared by the widgets of ``viewer`` (made on first use)."""
    state = _STATES.get(viewer)
    if state is None:
        state = _STATES[viewer] = ViewerState()
    return state


def follow(signal, widget, slot) -> None:
    """Connect ``slot`` (a method of the Qt ``widget``) to ``signal`` until the widget is destroyed.

    psygnal holds the method weakly; a widget whose Qt side is deleted (dock closed) while Python
    still holds it is disconnected then, so it is never called half-gone.
    """
    signal.connect(slot)
    widget.destroyed.connect(lambda *_: signal.disconnect(slot, missing_ok=True))
