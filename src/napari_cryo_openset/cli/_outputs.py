"""Output checks made *before* the work: the folder exists and is writable, the path is not a
folder (or is one, for ``run -o OUTDIR``), and the disk has roughly the space the output needs.

Each failure is a :class:`~napari_cryo_openset.errors.CryoOpensetError` naming the option and
the user's path (one line, exit 2), so a command does not compute for minutes and then fail to write.
Space needs are estimates (:func:`bundle_bytes`, :func:`simulated_set_bytes`, :data:`RUN_BYTES`);
below the estimate the command is refused, below twice the estimate it warns.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import CryoOpensetError

MB = 1024**2
#: A picks or predictions table: generous for a hundred thousand rows.
TABLE_BYTES = 16 * MB
#: A ``run`` folder: two model bundles, two tables, the maps, a few averages (estimate).
RUN_BYTES = 96 * MB
#: Names a ``run`` writes into OUTDIR; ``--overwrite`` replaces only a folder made of these.
RUN_NAMES = frozenset({"picks.star", "predictions.star", "model.pt", "adapted.pt", "report.json",
                       "embedding.png", "spectrum.png", "averages"})


def _say(line: str) -> None:
    from ._args import say

    say(line)


def writable_folder(folder: Path, option: str, target: Path) -> None:
    """``folder`` (where ``target`` goes) must exist and be writable."""
    if not folder.is_dir():
        raise CryoOpensetError(f"{option} '{target}': the folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CryoOpensetError(f"{option} '{target}': the folder '{folder}' is not writable")


def check_space(target: Path, need: int, option: str, command: str) -> None:
    """Refuse when the disk of ``target`` has less free space than ``need`` bytes; warn below 2×."""
    folder = target.parent if not target.is_dir() else target
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell: the write itself will say
    if free < need:
        raise CryoOpensetError(f"{option} '{target}': only {free / MB:,.1f} MB free on its disk; the output needs "
                               f"about {need / MB:,.1f} MB")
    if free < 2 * need:
        _say(f"{command}: warning: {free / MB:,.1f} MB free on the disk of '{target}'; the output needs about "
             f"{need / MB:,.1f} MB")


def output_file(path: str, suffixes: tuple[str, ...], what: str, example: str, option: str = "-o", *,
                need: int = TABLE_BYTES, command: str = "") -> Path:
    """``option`` must name a file with one of ``suffixes`` (None: any) in an existing, writable
    folder with about ``need`` bytes free."""
    out = Path(path)
    if out.is_dir():
        raise CryoOpensetError(f"{option} '{out}' is a folder; give a file name such as {example}")
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise CryoOpensetError(f"{option} '{out}': unknown extension '{out.suffix}'; {what} must end in "
                               f"{' or '.join(suffixes)} (e.g. {example})")
    if not out.parent.is_dir():
        raise CryoOpensetError(f"{option} '{out}': the folder '{out.parent}' does not exist")
    writable_folder(out.parent, option, out)
    check_space(out, need, option, command or option)
    return out


def output_dir(path: str, *, overwrite: bool = False, need: int = RUN_BYTES, command: str = "run") -> Path:
    """``-o OUTDIR``: a new folder (or an empty one) beside which a hidden one can be written;
    an existing run's folder only with ``overwrite``; never a folder of other files."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CryoOpensetError(f"-o '{out}' is a file; give a folder for the run's outputs")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise CryoOpensetError(f"-o '{out}': the folder '{out.parent}' does not exist")
    writable_folder(parent, "-o", out)
    if out.is_dir():
        _check_replaceable(out, overwrite)
    check_space(out.absolute(), need, "-o", command)
    return out


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """A non-empty OUTDIR is refused without ``overwrite``; with it, only if it holds a run's files."""
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return
    if not overwrite:
        shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
        raise CryoOpensetError(f"-o '{out}' already holds {len(names)} file(s) ({shown}); choose a new folder, or "
                               "pass --overwrite to replace them (the old set is kept until the new one is complete)")
    foreign = [n for n in names if n not in RUN_NAMES]
    if foreign:
        raise CryoOpensetError(f"-o '{out}' holds files a run does not write ({', '.join(foreign[:4])}); "
                               "--overwrite replaces only a run's folder: choose a new folder or move them")


def bundle_bytes(width: int = 16, embedding_dim: int = 64, num_classes: int = 16, architecture: str = "fast") -> int:
    """Rough size of a model bundle file (float32 weights + history), in bytes."""
    if architecture != "fast":
        return 64 * MB
    weights = 27 * (width + 30 * width * width) + 4 * width * embedding_dim + embedding_dim * num_classes
    return 4 * weights * 2 + 4 * MB  # ×2: Adam-free, but a source encoder may ride along


def simulated_set_bytes(n_boxes: int, box: int) -> int:
    """Rough size of a simulated ``.npz`` (float16 boxes + per-box metadata), in bytes."""
    return n_boxes * (2 * box**3 + 64) + MB
