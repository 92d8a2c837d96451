"""copick projects, through the ``copick`` library itself (core, no Qt).

A copick project is a config JSON (pickable objects, storage roots) over runs; each run has
tomograms per voxel spacing (OME-Zarr, array axes Z, Y, X) and picks per object, user and
session (JSON points). copick point locations are in Å, ``location = voxel index × voxel size``
(0-based, X = last array axis): copick's own RELION export takes ``shape / 2 × voxel size`` as
the tomogram centre (``copick.util.relion.copick_tomogram_center``), the same convention as ours
(:mod:`.relion5`).

- :func:`open_project` — the project (one clear error for a missing or invalid config).
- :func:`project_tomograms` — ``(run, voxel size, tomo type)`` of every tomogram; :func:`read_copick_tomogram`
  reads one as a :class:`~napari_cryo_openset.io.Tomogram` (in memory: OME-Zarr level 0).
- :func:`read_copick_picks` — a run's picks as one picks table, ``class_name`` = the object name.
- :func:`write_copick_picks` — our picks/classes back as copick points: one object per class name
  (created in the config when missing; ``unknown`` is its own object), score = the call's
  confidence (the DoG score when there is no call), user ``napari-cryo-openset``.

copick object names may not contain ``_`` or spaces (``copick.util.escape.sanitize_name`` turns
them into ``-``); the class name we wrote is kept in the object's metadata
(``{"napari-cryo-openset": {"class_name": …}}``) and read back from there.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PicksError
from ..picks import UNKNOWN_CLASS, validate_picks
from ._atomic import atomic_path

USER_ID = "napari-cryo-openset"
SESSION_ID = "0"
#: Object of picks without a class (DoG picks before prediction).
PICKS_OBJECT = "particle"
_META_KEY = "napari-cryo-openset"


def _copick():
    try:
        import copick
    except ImportError:  # pragma: no cover - a dependency; say how to get it
        raise PicksError("copick projects need the 'copick' package (pip install copick)") from None
    return copick


def open_project(config: str | os.PathLike):
    """The copick project of a config JSON (``copick.from_file``)."""
    path = Path(config)
    if not path.is_file():
        raise PicksError(f"copick config '{path}' does not exist or is not a file (expected a copick JSON config)")
    try:
        json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PicksError(f"copick config '{path}' is not JSON ({exc})") from None
    copick = _copick()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return copick.from_file(str(path))
    except Exception as exc:  # copick/pydantic raise many kinds of errors on a bad config
        line = str(exc).splitlines()[0] if str(exc) else ""
        raise PicksError(f"copick config '{path}' is not a valid copick project ({type(exc).__name__}: {line})") from None


def object_name(class_name: str) -> str:
    """The copick object name of a class name (``_``/spaces → ``-``, as copick requires)."""
    from copick.util.escape import sanitize_name

    return sanitize_name(str(class_name), suppress_warnings=True)


@dataclass(frozen=True)
class CopickTomogramRef:
    """One tomogram of a copick project: run name, voxel size (Å), tomogram type, shape (Z, Y, X)."""

    run: str
    voxel_size: float
    tomo_type: str
    shape: tuple[int, int, int] | None = None

    @property
    def name(self) -> str:
        return self.run


def project_tomograms(root, *, voxel_size: float | None = None, tomo_type: str | None = None,
                      ) -> list[CopickTomogramRef]:
    """One tomogram per run (the first of ``tomo_type`` at ``voxel_size`` — or the smallest voxel size), run order."""
    import zarr

    out = []
    for run in root.runs:
        spacings = sorted(run.voxel_spacings, key=lambda v: float(v.voxel_size))
        if voxel_size is not None:
            spacings = [v for v in spacings if math.isclose(float(v.voxel_size), float(voxel_size), rel_tol=1e-3)]
        for vs in spacings:
            tomos = [t for t in vs.tomograms if tomo_type is None or t.tomo_type == tomo_type]
            if tomos:
                t = tomos[0]
                try:
                    shape = tuple(int(n) for n in zarr.open(t.zarr(), mode="r")["0"].shape)
                except Exception:  # noqa: BLE001 - an unreadable tomogram is reported when it is read
                    shape = None
                out.append(CopickTomogramRef(run.name, float(vs.voxel_size), t.tomo_type, shape))
                break
    return out


def read_copick_tomogram(root, ref: CopickTomogramRef):
    """The tomogram ``ref`` as a :class:`~napari_cryo_openset.io.Tomogram` (level 0 of its OME-Zarr, in memory)."""
    from .tomogram import Tomogram
    from ..errors import TomogramError

    run = root.get_run(ref.run)
    vs = run.get_voxel_spacing(ref.voxel_size) if run is not None else None
    tomo = vs.get_tomogram(ref.tomo_type) if vs is not None else None
    if tomo is None:
        raise TomogramError(f"copick run '{ref.run}' has no '{ref.tomo_type}' tomogram at {ref.voxel_size:g} Å")
    try:
        data = np.asarray(tomo.numpy(), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - zarr/fsspec errors of a damaged store
        raise TomogramError(f"copick tomogram '{ref.run}/{ref.voxel_size:g}/{ref.tomo_type}' cannot be read "
                            f"({type(exc).__name__}: {exc})") from None
    if data.ndim != 3:
        raise TomogramError(f"copick tomogram '{ref.run}' is not 3-D (shape {data.shape})")
    return Tomogram(data, (float(ref.voxel_size),) * 3, path=None,
                    header={"copick": {"run": ref.run, "tomo_type": ref.tomo_type}})


def _class_of(root, name: str) -> str:
    obj = root.get_object(name)
    meta = (getattr(obj, "metadata", None) or {}) if obj is not None else {}
    return str((meta.get(_META_KEY) or {}).get("class_name", name))


def read_copick_picks(root, run_name: str, voxel_size: float, *, user_id: str | None = None,
                      session_id: str | None = None, objects=None) -> pd.DataFrame:
    """All picks of run ``run_name`` (optionally of one user/session/objects) as one picks table.

    Coordinates in voxels of ``voxel_size`` Å (location / voxel size; the transforms'
    translations are added, as copick's ``full_positions``); ``class_name`` = the class the object
    stands for; ``confidence`` = the point's score; ``copick_user``/``copick_session`` columns say
    where each pick came from.
    """
    run = root.get_run(run_name)
    if run is None:
        raise PicksError(f"copick project has no run '{run_name}'")
    frames = []
    for picks in run.get_picks(user_id=user_id, session_id=session_id):
        if objects is not None and picks.pickable_object_name not in objects:
            continue
        pos = picks.full_positions()
        if len(pos) == 0:
            continue
        zyx = np.asarray(pos, dtype=np.float64)[:, ::-1] / float(voxel_size)
        frames.append(pd.DataFrame({
            "z": zyx[:, 0], "y": zyx[:, 1], "x": zyx[:, 2], "score": np.nan,
            "class_name": _class_of(root, picks.pickable_object_name), "confidence": picks.scores(),
            "copick_user": str(picks.user_id), "copick_session": str(picks.session_id)}))
    if not frames:
        table = pd.DataFrame({"z": [], "y": [], "x": [], "score": []})
    else:
        table = pd.concat(frames, ignore_index=True)
    df = validate_picks(table, source=f"copick run '{run_name}'")
    df.attrs.update(source=f"copick:{run_name}", format="copick", voxel_size=(float(voxel_size),) * 3)
    return df


def write_copick_picks(root, run_name: str, picks: pd.DataFrame, voxel_size: float, *,
                       config_path: str | os.PathLike | None = None, user_id: str = USER_ID,
                       session_id: str = SESSION_ID, radius: float | None = None) -> dict[str, int]:
    """Write ``picks`` into run ``run_name`` as copick points, one picks file per class.

    Object names = class names (``unknown`` its own object; picks without a class go to
    :data:`PICKS_OBJECT`); objects missing from the project are created and, with
    ``config_path``, the config is saved (atomically). Earlier picks of the same user and session
    for those objects are replaced. ``radius`` Å of new objects (e.g. half the particle diameter).
    Returns ``{object name: points written}``.
    """
    df = validate_picks(picks, source=f"picks for copick run '{run_name}'")
    run = root.get_run(run_name)
    if run is None:
        run = root.new_run(run_name)
    classes = (df["class_name"].astype(str) if "class_name" in df.columns
               else pd.Series([PICKS_OBJECT] * len(df), index=df.index))
    counts: dict[str, int] = {}
    created = False
    used = sorted(set(classes.tolist()), key=lambda c: (c == UNKNOWN_CLASS, c))
    for label_name in used:
        name = object_name(label_name)
        if root.get_object(name) is None:
            root.new_object(name, is_particle=True, radius=radius,
                            color=(255, 0, 255, 255) if label_name == UNKNOWN_CLASS else None,
                            metadata={_META_KEY: {"class_name": label_name}})
            created = True
    if created and config_path is not None:
        save_config(root, config_path)
    score = (df["confidence"] if "confidence" in df.columns else df["score"]).astype(float)
    score = score.where(np.isfinite(score), 1.0).to_numpy(np.float64)
    xyz = df[["x", "y", "z"]].to_numpy(np.float64) * float(voxel_size)
    for label_name in used:
        rows = (classes == label_name).to_numpy()
        name = object_name(label_name)
        target = run.new_picks(object_name=name, session_id=session_id, user_id=user_id, exist_ok=True)
        target.from_numpy(xyz[rows], scores=score[rows])  # stores the picks file
        counts[name] = int(rows.sum())
    return counts


def save_config(root, config_path: str | os.PathLike) -> Path:
    """Save the project's config JSON (with new objects) atomically."""
    path = Path(config_path)
    with atomic_path(path) as tmp:
        root.save_config(str(tmp))
    return path


def new_project(config_path: str | os.PathLike, overlay_root: str | os.PathLike, *, name: str = "napari-cryo-openset",
                objects=()):
    """Create a file-system copick project (config JSON + overlay folder) and open it (``copick.ops.open.new_config``)."""
    from copick.ops.open import new_config

    Path(overlay_root).mkdir(parents=True, exist_ok=True)
    return new_config(str(config_path), str(Path(overlay_root).absolute()), proj_name=name,
                      pickable_objects=list(objects))
