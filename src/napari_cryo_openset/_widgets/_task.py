"""One background task at a time, with a progress bar, a status line and a Cancel button.

A task is a core *generator* that yields :class:`~napari_cryo_openset.progress.Progress`-like
events (``step``, ``total``, ``message``) and returns its result. It runs in a napari
``thread_worker``; Cancel calls ``worker.quit()``, which takes effect at the next ``yield``.
Starting a new task cancels the running one, and results of a superseded or cancelled task are
discarded (a stale result never overwrites a newer one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


def report_error(exc: BaseException) -> None:
    """Show a user-input problem as one clear message; anything else with its traceback."""
    from napari.utils.notifications import ErrorNotification, notification_manager, show_error

    from ..errors import CryoOpensetError

    if isinstance(exc, CryoOpensetError):
        show_error(str(exc))
    else:
        notification_manager.dispatch(ErrorNotification(exc))


class TaskRunner(QWidget):
    """Progress bar + status + Cancel for one background job at a time."""

    started = Signal()
    finished = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._token = 0
        self._worker = None
        self._t0 = 0.0
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.progress_bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)

    @property
    def running(self) -> bool:
        return self._worker is not None

    @property
    def worker(self):
        return self._worker

    def start(
        self,
        generator_factory: Callable[..., Generator[Any, Any, Any]],
        *args,
        on_result: Callable[[Any], None],
        on_progress: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        label: str = "Working",
        **kwargs,
    ):
        """Run ``generator_factory(*args, **kwargs)`` in a thread; return the worker."""
        from napari.qt.threading import create_worker

        self.cancel()
        self._token += 1
        token = self._token
        # errors are handled below (one clear message), not re-raised in the Qt event loop
        worker = create_worker(generator_factory, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        self._worker = worker
        self._t0 = time.perf_counter()
        self._label = label
        self.progress_bar.setRange(0, 0)  # busy until the first event
        self.status.setText(f"{label}…")
        self.cancel_button.setEnabled(True)

        def _yielded(event):
            if token != self._token:
                return
            total = int(getattr(event, "total", 0) or 0)
            step = int(getattr(event, "step", 0) or 0)
            if total > 0:
                self.progress_bar.setRange(0, total)
                self.progress_bar.setValue(min(step, total))
            message = getattr(event, "message", "") or ""
            self.status.setText(f"{label}: {message}" if message else f"{label}…")
            if on_progress is not None:
                on_progress(event)

        def _returned(result):
            if token != self._token:
                return  # superseded: discard
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1)
            self.status.setText(f"{label}: done in {time.perf_counter() - self._t0:.1f} s")
            on_result(result)

        def _errored(exc):
            if token != self._token:
                return
            self.status.setText(f"{label} failed: {exc}")
            if on_error is not None:
                on_error(exc)
            else:
                report_error(exc)

        def _finished():
            if token == self._token:
                self._worker = None
                self.cancel_button.setEnabled(False)
                if self.progress_bar.maximum() == 0:
                    self.progress_bar.setRange(0, 1)
                self.finished.emit()

        worker.yielded.connect(_yielded)
        worker.returned.connect(_returned)
        worker.errored.connect(_errored)
        worker.finished.connect(_finished)
        self.started.emit()
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running task to stop at its next yield; its result will be discarded."""
        worker = self._worker
        if worker is None:
            return
        self._token += 1  # anything still coming from it is stale
        worker.quit()
        self._worker = None
        self.cancel_button.setEnabled(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status.setText(f"{getattr(self, '_label', 'Task')}: cancelled")
        self.finished.emit()
