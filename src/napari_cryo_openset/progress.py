"""Progress events yielded by every long job (simulation, picking, training, adaptation).

Long jobs are generators: they ``yield Progress(...)`` at least once per batch/tile and
``return`` their result. The napari widgets run them in a ``thread_worker`` (progress bar,
Cancel = ``worker.quit()`` at the next yield); the CLI drives them with :func:`run_with_tqdm`.
"""

from __future__ import annotations

import sys
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


def run_with_tqdm(gen: Generator[Any, Any, T], desc: str = "", disable: bool | None = None) -> T:
    """Drive a job generator with a tqdm bar on stderr (one bar per stage)."""
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def show(event) -> None:
        stage = getattr(event, "stage", desc) or desc
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=getattr(event, "total", None) or None, desc=stage,
                                     file=sys.stderr, disable=disable, leave=True)
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
