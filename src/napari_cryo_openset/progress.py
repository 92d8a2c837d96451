"""Progress events yielded by every long job (simulation, picking, training, adaptation).

Long jobs are generators: they ``yield Progress(...)`` at least once per batch/tile and
``return`` their result. The napari widgets run them in a ``thread_worker`` (progress bar,
Cancel = ``worker.quit()`` at the next yield); the CLI drives them with :func:`run_with_tqdm`:
a tqdm bar on a terminal, and plain lines with the elapsed and remaining time (:class:`PlainLines`)
when stderr is a file or a pipe, so a log is never silent.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """One progress event: ``step`` of ``total`` in ``stage``, with optional metrics (losses…)."""

    stage: str
    step: int
    total: int
    message: str = ""
    metrics: dict | None = None


def run_to_completion(gen: Generator[Any, Any, T], on_progress: Callable[[Any], None] | None = None) -> T:
    """Drive a job generator to its end and return its result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)


#: Seconds between two plain progress lines (stderr not a terminal); the environment variable
#: ``NAPARI_CRYO_OPENSET_PROGRESS_INTERVAL`` overrides it.
PLAIN_INTERVAL = 10.0


def is_terminal(stream) -> bool:
    """Is ``stream`` an interactive terminal (where a tqdm bar can redraw itself)?"""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def plain_interval() -> float:
    """:data:`PLAIN_INTERVAL`, or the environment's ``NAPARI_CRYO_OPENSET_PROGRESS_INTERVAL`` (seconds)."""
    try:
        return max(0.0, float(os.environ.get("NAPARI_CRYO_OPENSET_PROGRESS_INTERVAL", PLAIN_INTERVAL)))
    except ValueError:
        return PLAIN_INTERVAL


def _clock_text(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class PlainLines:
    """Progress as plain lines on ``stream`` (a log file or pipe, where a bar would be lost).

    One line when a stage starts, then at most one every ``interval`` seconds, and one when it
    reaches its total: ``pick: 120/500 (24%), 00:35 elapsed, ~01:50 left — tile 3 of 12``.
    """

    def __init__(self, stream=None, interval: float | None = None, clock: Callable[[], float] = time.monotonic,
                 desc: str = "") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = plain_interval() if interval is None else float(interval)
        self.clock = clock
        self.desc = desc
        self._start: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._done: set[str] = set()

    def line(self, event) -> str:
        """The line for ``event`` (no side effects)."""
        stage = getattr(event, "stage", self.desc) or self.desc
        step, total = int(getattr(event, "step", 0) or 0), int(getattr(event, "total", 0) or 0)
        elapsed = self.clock() - self._start.get(stage, self.clock())
        text = f"{stage}: {step}/{total} ({100.0 * step / total:.0f}%)" if total else f"{stage}: {step}"
        text += f", {_clock_text(elapsed)} elapsed"
        if total and 0 < step < total:
            text += f", ~{_clock_text(elapsed * (total - step) / step)} left"
        message = getattr(event, "message", "")
        return f"{text} — {message}" if message else text

    def __call__(self, event) -> None:
        stage = getattr(event, "stage", self.desc) or self.desc
        now = self.clock()
        step, total = int(getattr(event, "step", 0) or 0), int(getattr(event, "total", 0) or 0)
        first = stage not in self._start
        if first:
            self._start[stage] = now
        finished = bool(total) and step >= total and stage not in self._done
        if first or finished or now - self._last.get(stage, now) >= self.interval:
            self._last[stage] = now
            if finished:
                self._done.add(stage)
            print(self.line(event), file=self.stream, flush=True)


def run_with_tqdm(gen: Generator[Any, Any, T], desc: str = "", disable: bool | None = None) -> T:
    """Drive a job generator with a tqdm bar on stderr (one bar per stage).

    ``disable``: True shows nothing; None (default) shows a bar on a terminal and plain periodic
    lines (:class:`PlainLines`) when stderr is not one; False always a bar.
    """
    if disable is None and not is_terminal(sys.stderr):
        return run_to_completion(gen, PlainLines(sys.stderr, desc=desc))
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def show(event) -> None:
        stage = getattr(event, "stage", desc) or desc
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=getattr(event, "total", None) or None, desc=stage,
                                     file=sys.stderr, disable=bool(disable), leave=True)
        total = getattr(event, "total", 0) or 0
        if total and bar.total != total:
            bar.total = total
        bar.n = getattr(event, "step", bar.n)
        message = getattr(event, "message", "")
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        return run_to_completion(gen, show)
    finally:
        for bar in bars.values():
            bar.close()
