"""SIGTERM handled like SIGINT: an exception unwinds the command, so its cleanup runs.

A batch system stops a job with SIGTERM. Python's default would end the process at once and
leave hidden ``.NAME.*.part`` files behind; instead :func:`terminate_as_exception` raises
:class:`Terminated` in the main thread, which unwinds through every ``finally`` and the atomic
writers (they remove their temporaries on any ``BaseException``), and the CLI exits 143.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: Exit status of a command stopped by SIGINT / SIGTERM (128 + the signal number, as shells report).
EXIT_SIGINT = 128 + int(signal.SIGINT)
EXIT_SIGTERM = 128 + int(signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM arrived. Like ``KeyboardInterrupt``, not an ``Exception``: no ``except Exception`` swallows it."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; restored afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
