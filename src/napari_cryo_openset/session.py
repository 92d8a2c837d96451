"""A saved session: the work on one tomogram in one JSON file and the files it names (no Qt, no napari).

``NAME.cosession.json`` holds the tomogram's path, the picks layer's name, diameter and voxel
size, the unknown threshold, the hidden groups and the model's class list; the folder
``NAME.cosession_files/`` beside it holds the picks with every feature and their curation
(``picks.csv``) and the models (``model.pt``: the source model; ``adapted.pt``: the adapted one,
with the threshold in use). Every file is written to a temporary name and renamed, the JSON last,
so a session interrupted while saving keeps the previous one whole.

Opening refuses, with one message and without touching anything, a file that is not JSON, a
session of a newer format, or one whose files are missing; a tomogram that moved is reported
(``tomogram_found``) while the rest is restored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CryoOpensetError

SUFFIX = ".cosession.json"
#: The format this version writes; it reads this one and older.
FORMAT_VERSION = 1
PICKS_FILE, MODEL_FILE, ADAPTED_FILE = "picks.csv", "model.pt", "adapted.pt"


class SessionError(CryoOpensetError):
    """A session file that cannot be read (one message: which file, what was expected)."""


@dataclass
class Session:
    """What a session restores."""

    picks: Any  # pandas DataFrame: the picks table, every feature and the curation
    picks_name: str = "picks"
    voxel_size: tuple[float, float, float] | None = None  # Å, Z Y X
    diameter: float | None = None  # Å
    tomogram_path: str | None = None
    tomogram_found: bool = False  # the tomogram is still where the session says
    model: Any = None  # ModelBundle: the source model
    adapted: Any = None  # ModelBundle: the adapted model (threshold in use)
    threshold: float | None = None  # the unknown threshold in use
    hidden_groups: list[str] = field(default_factory=list)
    model_classes: list[str] | None = None
    metadata: dict = field(default_factory=dict)  # the rest of the layer's JSON-able metadata


def session_path(path) -> Path:
    """``path`` with the session suffix (``.cosession.json``) unless it has it."""
    path = Path(path)
    return path if path.name.endswith(SUFFIX) else path.with_name(path.name.removesuffix(".json") + SUFFIX)


def files_dir(path) -> Path:
    """The folder of a session's files: ``NAME.cosession_files`` beside ``NAME.cosession.json``."""
    path = session_path(path)
    return path.with_name(path.name[: -len(".json")] + "_files")


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return None


def save_session(path, session: Session) -> Path:
    """Write ``session`` to ``path`` (``.cosession.json`` added) and its files folder; return the JSON's path."""
    from .checkpoint import save_bundle
    from .io import atomic_path, write_picks

    path = session_path(path)
    if not path.parent.is_dir():
        raise SessionError(f"session '{path}': the folder '{path.parent}' does not exist")
    folder = files_dir(path)
    folder.mkdir(exist_ok=True)
    write_picks(folder / PICKS_FILE, session.picks, voxel_size=session.voxel_size)
    files = {"picks": PICKS_FILE}
    for key, name, bundle in (("model", MODEL_FILE, session.model), ("adapted", ADAPTED_FILE, session.adapted)):
        if bundle is not None:
            save_bundle(bundle, folder / name)
            files[key] = name
    meta = {k: v for k, v in (session.metadata or {}).items() if _jsonable(v) is not None}
    doc = {
        "format": "napari-cryo-openset session", "version": FORMAT_VERSION,
        "tomogram": str(Path(session.tomogram_path).resolve()) if session.tomogram_path else None,
        "picks_name": session.picks_name,
        "voxel_size": list(session.voxel_size) if session.voxel_size is not None else None,
        "diameter": session.diameter, "threshold": session.threshold,
        "hidden_groups": sorted(str(g) for g in session.hidden_groups),
        "model_classes": list(session.model_classes) if session.model_classes is not None else None,
        "files": {k: f"{folder.name}/{v}" for k, v in files.items()}, "metadata": meta,
    }
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2) + "\n")
    return path


def read_session(path) -> Session:
    """Read a session written by :func:`save_session` (see the module for what is refused)."""
    from .checkpoint import load_bundle
    from .io import read_picks

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SessionError(f"session '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionError(f"session '{path}' is not a readable session file ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != "napari-cryo-openset session":
        raise SessionError(f"session '{path}' is not a napari-cryo-openset session (no 'format' entry)")
    version = doc.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SessionError(f"session '{path}' has format version {version!r}; this version of napari-cryo-openset "
                           f"reads up to {FORMAT_VERSION}: update the plugin to open it")
    files = doc.get("files") or {}
    base = path.parent

    def named(key):
        name = files.get(key)
        if not name:
            return None
        file = base / name
        if not file.is_file():
            raise SessionError(f"session '{path}': its file '{file}' ({key}) is missing")
        return file

    picks_file = named("picks")
    if picks_file is None:
        raise SessionError(f"session '{path}' names no picks file")
    try:
        picks = read_picks(picks_file)
        model = load_bundle(named("model")) if files.get("model") else None
        adapted = load_bundle(named("adapted")) if files.get("adapted") else None
    except SessionError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one message about it
        raise SessionError(f"session '{path}': {exc}") from None
    tomogram = doc.get("tomogram")
    vs = doc.get("voxel_size")
    return Session(picks=picks, picks_name=str(doc.get("picks_name") or "picks"),
                   voxel_size=tuple(float(v) for v in vs) if vs else None, diameter=doc.get("diameter"),
                   tomogram_path=tomogram, tomogram_found=bool(tomogram) and os.path.isfile(tomogram),
                   model=model, adapted=adapted, threshold=doc.get("threshold"),
                   hidden_groups=[str(g) for g in doc.get("hidden_groups") or []],
                   model_classes=doc.get("model_classes"), metadata=dict(doc.get("metadata") or {}))
