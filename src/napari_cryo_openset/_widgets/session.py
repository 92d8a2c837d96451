"""What the dock widgets of one viewer share: the current source model, the set it learned, and
the latest adapted model.

A tiny registry with no Qt and no napari imports. The Model widget *publishes* the model it
trained (with the :class:`~napari_cryo_openset.simulate.SimulatedSet` it trained on, kept in
memory) or loaded (no source set: a bundle file does not hold one); other widgets — Adapt &
predict — *follow* it through a callback::

    session = session_for(viewer)
    session.connect(on_change)          # on_change(session) after every publish
    session.publish(bundle, source=data, origin="trained in the Model widget")

The Adapt & predict widget publishes the model it adapted with :meth:`Session.publish_adapted`;
widgets that use predictions (Results) follow it with ``connect(on_change, adapted=True)``. The
two kinds of change have separate listeners, so a new adapted model never re-sets the source
model of the Adapt & predict widget.

One :class:`Session` per viewer (held weakly: closing the viewer drops it). Callbacks run in
the thread that publishes (the widgets publish from the Qt main thread).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Session:
    """The current source model of a viewer's widgets, and who wants to hear of changes."""

    bundle: Any = None  # napari_cryo_openset.checkpoint.ModelBundle
    source: Any = None  # the SimulatedSet (or its path) the bundle was trained on; None if unknown
    origin: str = ""  # for people: where the model came from ("trained in the Model widget", a file name)
    version: int = 0  # bumped by every publish
    adapted: Any = None  # the ModelBundle Adapt & predict adapted to a tomogram last; None before
    adapted_origin: str = ""  # for people: how it was adapted ("MLUDA on picks")
    _callbacks: list = field(default_factory=list, repr=False)  # weak refs to bound methods, else callables
    _adapted_callbacks: list = field(default_factory=list, repr=False)

    def publish(self, bundle, source=None, origin: str = "") -> None:
        """Make ``bundle`` (and the ``source`` set it was trained on, if known) the current model."""
        self.bundle, self.source, self.origin = bundle, source, str(origin)
        self.version += 1
        for callback in self._live():
            callback(self)

    def publish_adapted(self, bundle, origin: str = "") -> None:
        """Make ``bundle`` the latest adapted model (the one the current predictions came from)."""
        self.adapted, self.adapted_origin = bundle, str(origin)
        self.version += 1
        for callback in self._live(adapted=True):
            callback(self)

    def connect(self, callback: Callable[[Session], None], adapted: bool = False) -> None:
        """Call ``callback(session)`` after each :meth:`publish` (``adapted``: each
        :meth:`publish_adapted`), once however often connected.

        Bound methods are held weakly: a widget that is gone is not kept alive or called.
        """
        if callback not in self._live(adapted):
            ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else callback
            (self._adapted_callbacks if adapted else self._callbacks).append(ref)

    def disconnect(self, callback: Callable[[Session], None]) -> None:
        """Stop calling ``callback`` (for either kind of change)."""
        self._callbacks = [c for c in self._callbacks if self._resolve(c) not in (None, callback)]
        self._adapted_callbacks = [c for c in self._adapted_callbacks if self._resolve(c) not in (None, callback)]

    @staticmethod
    def _resolve(ref):
        return ref() if isinstance(ref, weakref.WeakMethod) else ref

    def _live(self, adapted: bool = False) -> list[Callable[[Session], None]]:
        refs = self._adapted_callbacks if adapted else self._callbacks
        live = [self._resolve(c) for c in refs]
        kept = [c for c, f in zip(refs, live) if f is not None]
        if adapted:
            self._adapted_callbacks = kept
        else:
            self._callbacks = kept
        return [f for f in live if f is not None]


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BY_ID: dict[int, Session] = {}  # for owners that cannot be weakly referenced (kept for the process)


def session_for(viewer) -> Session:
    """The :class:`Session` shared by the widgets of ``viewer`` (created on first use)."""
    try:
        session = _SESSIONS.get(viewer)
        if session is None:
            session = _SESSIONS[viewer] = Session()
        return session
    except TypeError:  # not weak-referenceable (or unhashable)
        return _BY_ID.setdefault(id(viewer), Session())
