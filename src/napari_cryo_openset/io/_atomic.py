"""Atomic file output: write to a temporary name beside the target, then rename.

A reader never sees a half-written file and a failed write leaves no partial output: either the
old file (if any) or the complete new one is at ``path``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it to ``path`` on success.

    The temporary name keeps the target's suffix (so libraries that look at the extension
    behave) and starts with a dot (hidden). On any exception it is removed and the exception
    propagates.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.part{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
