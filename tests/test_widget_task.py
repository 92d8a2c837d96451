"""TaskRunner: Cancel says "Cancelling…" until the worker's thread has ended, and a new job never
overlaps the old one (it waits for the old thread to end)."""

from __future__ import annotations

import time

import pytest

from napari_cryo_openset._widgets._task import TaskRunner
from napari_cryo_openset.progress import Progress

pytestmark = pytest.mark.gui


def _slow(log, name, steps=50, pause=0.05, others=()):
    """A job that yields slowly; logs when it starts (and whether any of ``others`` still runs) and each step."""
    log.append((name, "start", [w.is_running for w in others]))
    for i in range(steps):
        time.sleep(pause)
        log.append((name, "step", time.perf_counter()))
        yield Progress("slow", i + 1, steps, f"step {i + 1}")
    return name


def test_cancel_says_cancelling_until_the_thread_has_ended(qtbot):
    runner = TaskRunner()
    qtbot.addWidget(runner)
    log, results = [], []
    worker = runner.start(_slow, log, "a", pause=0.3, on_result=results.append, label="Slow")
    qtbot.waitUntil(lambda: "step 1" in runner.status.text(), timeout=10_000)
    finished = []
    runner.finished.connect(lambda: finished.append(runner.status.text()))

    with qtbot.waitSignal(worker.finished, timeout=10_000):
        runner.cancel()
        # the thread runs on to its next yield: not cancelled yet
        assert worker.is_running and runner.running
        assert runner.status.text() == "Slow: Cancelling…" and not runner.cancel_button.isEnabled()
        assert finished == []
    qtbot.waitUntil(lambda: bool(finished), timeout=5_000)
    assert not worker.is_running and not runner.running
    assert runner.status.text() == "Slow: cancelled" and finished == ["Slow: cancelled"]
    assert results == []  # the cancelled job's result is discarded


def test_a_new_job_waits_for_the_old_thread(qtbot):
    runner = TaskRunner()
    qtbot.addWidget(runner)
    log, results = [], []
    first = runner.start(_slow, log, "a", pause=0.2, on_result=results.append, label="First")
    qtbot.waitUntil(lambda: "step 1" in runner.status.text(), timeout=10_000)
    second = runner.start(_slow, log, "b", steps=2, pause=0.01, others=(first,), on_result=results.append,
                          label="Second")
    assert runner.status.text() == "First: Cancelling…" and not second.is_running  # it waits its turn
    assert runner.worker is second and runner.running
    qtbot.waitUntil(lambda: results == ["b"], timeout=10_000)
    qtbot.waitUntil(lambda: not runner.running, timeout=5_000)

    start_b = next(entry for entry in log if entry[:2] == ("b", "start"))
    assert start_b[2] == [False]  # the first job's thread had ended when the second started
    steps_a = [t for name, kind, t in log if name == "a" and kind == "step"]
    steps_b = [t for name, kind, t in log if name == "b" and kind == "step"]
    assert max(steps_a) < min(steps_b) and len(steps_a) < 50
    assert runner.status.text().startswith("Second: done in") and results == ["b"]


def test_cancel_drops_a_job_that_waits(qtbot):
    runner = TaskRunner()
    qtbot.addWidget(runner)
    log, results = [], []
    first = runner.start(_slow, log, "a", pause=0.2, on_result=results.append, label="First")
    qtbot.waitUntil(lambda: "step 1" in runner.status.text(), timeout=10_000)
    runner.start(_slow, log, "b", steps=2, pause=0.01, on_result=results.append, label="Second")
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.cancel()
    assert not first.is_running and runner.status.text() == "First: cancelled"
    qtbot.wait(200)
    assert results == [] and not any(name == "b" for name, *_ in log)
