"""Atomic output: write to temporary names beside the targets, then rename.

A reader never sees a half-written file and a failed write leaves no partial output: either the
old output (if any) or the complete new one is at the target.

- :func:`atomic_path` — one file.
- :func:`atomic_paths` — several files committed together (``adapt -o A.pt --predictions P.star``):
  nothing is renamed until every one is written.
- :func:`atomic_dir` — a whole folder of results (``run -o OUTDIR``): written into a hidden
  folder beside OUTDIR and swapped in at the end; an earlier OUTDIR stays intact until then.

Temporary names start with a dot (hidden) and contain ``.part``; an ``OSError`` while writing
becomes an :class:`~napari_cryo_openset.errors.OutputError` naming the *user's* path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import OutputError

#: ``.NAME.1a2b3c4d.part.EXT`` (files) and ``.NAME.1a2b3c4d.part`` (folders).
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.[0-9a-f]{8}\.(?:part|old)(?P<suffix>\.[^./]+)?$")


def _token() -> str:
    return uuid.uuid4().hex[:8]


def temporary_file_name(path: Path) -> Path:
    """The hidden temporary name of ``path`` (same folder, same suffix)."""
    return path.with_name(f".{path.stem}.{_token()}.part{path.suffix}")


def temporary_dir_name(path: Path, kind: str = "part") -> Path:
    """A hidden sibling of folder ``path``: ``.NAME.TOKEN.part`` (new set) or ``.old`` (backup)."""
    return path.with_name(f".{path.name}.{_token()}.{kind}")


def user_path(path: str | os.PathLike) -> str:
    """``path`` with each hidden temporary component replaced by the name it stands for."""
    parts = []
    for part in Path(path).parts:
        while (m := _TEMP_NAME.match(part)) is not None:  # a temporary of a temporary, too
            part = m.group("stem") + (m.group("suffix") or "")
        parts.append(part)
    return str(Path(*parts)) if parts else str(path)


def os_reason(exc: OSError) -> str:
    """What went wrong, in words (``No space left on device``), without the file name."""
    return exc.strerror or str(exc) or type(exc).__name__


def _remove(path: Path) -> None:
    """Remove a file or folder, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the block (a few renames must not be cut in half).

    A signal that arrives meanwhile is delivered when the block ends. Only the main thread
    of a POSIX process can do this; elsewhere the block runs as is.
    """
    can = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if not can:
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it to ``path`` on success.

    The temporary name keeps the target's suffix (so libraries that look at the extension
    behave) and starts with a dot (hidden). On any exception (an interrupt too) it is removed
    and the exception propagates; an ``OSError`` becomes an ``OutputError`` naming ``path``.
    """
    path = Path(path)
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporary paths for several outputs, renamed to ``paths`` only once all are written.

    If anything fails before the renames, every temporary is removed and no target changes.
    The renames themselves run with signals held back.
    """
    targets = [Path(p) for p in paths]
    temps = [temporary_file_name(p) for p in targets]
    try:
        yield temps
        with deferred_signals():
            for tmp, target in zip(temps, targets):
                os.replace(tmp, target)
    except BaseException as exc:
        with deferred_signals():  # a second Ctrl-C must not cut the clean-up short
            for tmp in temps:
                _remove(tmp)
        if isinstance(exc, (OutputError, OSError)):
            raise _named(exc, temps, targets) from None
        raise


def _named(exc: BaseException, temps: Sequence[Path], targets: Sequence[Path]) -> BaseException:
    """``exc`` naming the user's target rather than its temporary name (OSError → OutputError)."""
    if isinstance(exc, OutputError):
        return OutputError(_moved(exc.path, temps, targets), exc.reason)
    if isinstance(exc, OSError):
        name = _moved(str(exc.filename), temps, targets) if exc.filename is not None else str(targets[0])
        return OutputError(name, os_reason(exc))
    return exc


def _moved(name: str, temps: Sequence[Path], targets: Sequence[Path]) -> str:
    """``name`` (a temporary, or a file inside a temporary folder) as the user's path."""
    for tmp, target in zip(temps, targets):
        if name == str(tmp) or name.startswith(str(tmp) + os.sep):
            name = str(target) + name[len(str(tmp)):]
            break
    return user_path(name)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a new hidden folder beside ``path``; swap it in as ``path`` when the block ends.

    An existing non-empty ``path`` is refused (``OutputError``) unless ``overwrite``; with it,
    the old folder is kept intact until the new one is complete, then replaced in two renames
    (old → hidden backup, new → ``path``; the backup is removed, or put back if the second
    rename fails). On any exception the new folder is removed and ``path`` is untouched.
    """
    target = Path(path).absolute()
    refuse_existing(target, overwrite)
    tmp = temporary_dir_name(target)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise OutputError(target, os_reason(exc)) from None
    try:
        yield tmp
        swap_in(tmp, target, overwrite)
    except BaseException as exc:
        with deferred_signals():
            _remove(tmp)
        if isinstance(exc, (OutputError, OSError)):
            raise _named(exc, [tmp], [target]) from None
        raise


def refuse_existing(target: Path, overwrite: bool) -> None:
    """An existing non-empty folder may be replaced only with ``overwrite``."""
    if target.exists() and not target.is_dir():
        raise OutputError(target, "it is a file; give a folder for the outputs")
    if not overwrite and target.is_dir() and any(target.iterdir()):
        raise OutputError(target, "the folder exists and is not empty; choose a new folder, or pass --overwrite "
                                  "to replace its contents (the old files stay until the new set is complete)")


def swap_in(new: Path, target: Path, overwrite: bool) -> None:
    """Put folder ``new`` at ``target``; an old ``target`` goes only once ``new`` is in place."""
    with deferred_signals():
        refuse_existing(target, overwrite)  # again: another process may have written it meanwhile
        if not target.exists():
            os.rename(new, target)
            return
        backup = temporary_dir_name(target, "old")
        os.rename(target, backup)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(backup, target)
            raise
        _remove(backup)
