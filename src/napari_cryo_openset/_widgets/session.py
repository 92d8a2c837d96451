"""What the dock widgets of one viewer share: the current source model and the set it learned.

A tiny registry with no Qt and no napari imports. The Model widget *publishes* the model it
trained (with the :class:`~napari_cryo_openset.simulate.SimulatedSet` it trained on, kept in
memory) or loaded (no source set: a bundle file does not hold one); other widgets — Adapt &
predict — *follow* it through a callback::

    session = session_for(viewer)
    session.connect(on_change)          # on_change(session) after every publish
    session.publish(bundle, source=data, origin="trained in the Model widget")

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
    _callbacks: list = field(default_factory=list, repr=False)  # weak refs to bound methods, else callables

    def publish(self, bundle, source=None, origin: str = "") -> None:
        """Make ``bundle`` (and the ``source`` set it was trained on, if known) the current model."""
        self.bundle, self.source, self.origin = bundle, source, str(origin)
        self.version += 1
        for callback in self._live():
            callback(self)

    def connect(self, callback: Callable[[Session], None]) -> None:
        """Call ``callback(session)`` after each :meth:`publish` (once, however often connected).

        Bound methods are held weakly: a widget that is gone is not kept alive or called.
        """
        if callback not in self._live():
            self._callbacks.append(weakref.WeakMethod(callback) if hasattr(callback, "__self__") else callback)

    def disconnect(self, callback: Callable[[Session], None]) -> None:
        self._callbacks = [c for c in self._callbacks if self._resolve(c) not in (None, callback)]

    @staticmethod
    def _resolve(ref):
        return ref() if isinstance(ref, weakref.WeakMethod) else ref

    def _live(self) -> list[Callable[[Session], None]]:
        live = [self._resolve(c) for c in self._callbacks]
        self._callbacks = [c for c, f in zip(self._callbacks, live) if f is not None]
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
