"""One background task at a time, with a progress bar, a status line and a Cancel button.

A task is a core *generator* that yields :class:`~napari_cryo_openset.progress.Progress`-like
events (``step``, ``total``, ``message``) and returns its result. It runs in a napari
``thread_worker``; Cancel calls ``worker.quit()``, which takes effect at the generator's next
``yield`` — so the status says "Cancelling…" until the thread has really ended, and only then
"cancelled". A task started while another still runs cancels that one and waits for its thread
to end before it starts: two tasks never run at once (they would share the network and the
CPU threads). Results of a superseded or cancelled task are discarded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
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


@dataclass
class _Job:
    worker: Any  # napari GeneratorWorker, not started until its turn
    label: str
    on_result: Callable[[Any], None]
    on_progress: Callable[[Any], None] | None
    on_error: Callable[[BaseException], None] | None


class TaskRunner(QWidget):
    """Progress bar + status + Cancel for one background job at a time.

    ``started`` is emitted when :meth:`start` accepts a job, ``finished`` when no job runs any
    more (its thread has ended, and none waits to start).
    """

    started = Signal()
    finished = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._running: _Job | None = None  # the job whose thread runs
        self._waiting: _Job | None = None  # the job to start when that thread has ended
        self._cancelled = False  # the running job was asked to stop
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
        """A job runs, is being cancelled, or waits for its turn."""
        return self._running is not None or self._waiting is not None

    @property
    def worker(self):
        """The worker of the latest job accepted (None when nothing runs)."""
        job = self._waiting or self._running
        return None if job is None else job.worker

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
        """Run ``generator_factory(*args, **kwargs)`` in a thread; return its worker.

        If a job still runs, it is cancelled and this one starts when its thread has ended (a
        job that was waiting is dropped for this one).
        """
        from napari.qt.threading import create_worker

        # errors are handled below (one clear message), not re-raised in the Qt event loop
        worker = create_worker(generator_factory, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        job = _Job(worker, label, on_result, on_progress, on_error)
        worker.yielded.connect(lambda event: self._yielded(job, event))
        worker.returned.connect(lambda result: self._returned(job, result))
        worker.errored.connect(lambda exc: self._errored(job, exc))
        worker.finished.connect(lambda: self._finished(job))
        was_running = self.running
        self._waiting = job
        if self._running is not None:
            self._stop_running()
        else:
            self._launch()
        if not was_running:
            self.started.emit()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next yield (its result is discarded); drop a waiting one."""
        self._waiting = None
        self._stop_running()

    def _stop_running(self) -> None:
        job = self._running
        if job is None:
            return
        if not self._cancelled:
            self._cancelled = True
            job.worker.quit()
        self.cancel_button.setEnabled(False)
        self.progress_bar.setRange(0, 0)  # busy until the thread has ended
        self.status.setText(f"{job.label}: Cancelling…")

    # --- the worker's signals (main thread) -------------------------------------------------
    def _launch(self) -> None:
        job, self._waiting = self._waiting, None
        self._running, self._cancelled = job, False
        self._t0 = time.perf_counter()
        self.progress_bar.setRange(0, 0)  # busy until the first event
        self.status.setText(f"{job.label}…")
        self.cancel_button.setEnabled(True)
        job.worker.start()

    def _current(self, job: _Job) -> bool:
        return job is self._running and not self._cancelled

    def _yielded(self, job: _Job, event) -> None:
        if not self._current(job):
            return
        total = int(getattr(event, "total", 0) or 0)
        step = int(getattr(event, "step", 0) or 0)
        if total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(min(step, total))
        message = getattr(event, "message", "") or ""
        self.status.setText(f"{job.label}: {message}" if message else f"{job.label}…")
        if job.on_progress is not None:
            job.on_progress(event)

    def _returned(self, job: _Job, result) -> None:
        if not self._current(job):
            return  # cancelled or superseded: discard
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        self.status.setText(f"{job.label}: done in {time.perf_counter() - self._t0:.1f} s")
        job.on_result(result)

    def _errored(self, job: _Job, exc: BaseException) -> None:
        if not self._current(job):
            return
        self.status.setText(f"{job.label} failed: {exc}")
        (job.on_error or report_error)(exc)

    def _finished(self, job: _Job) -> None:
        if job is not self._running:
            return  # a waiting job that was dropped never ran
        cancelled = self._cancelled
        self._running, self._cancelled = None, False
        self.cancel_button.setEnabled(False)
        if self._waiting is not None:
            self._launch()
            return
        if cancelled:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.status.setText(f"{job.label}: cancelled")
        elif self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
        self.finished.emit()
