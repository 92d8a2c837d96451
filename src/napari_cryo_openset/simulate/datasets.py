"""Labelled simulated subtomogram sets: their parameters, classes and file (one ``.npz``).

Simulating a set is :mod:`.generate`'s job (:func:`generate_subtomograms`, :func:`generate_dataset`,
re-exported here).

**Classes and labels.** ``class_names`` = the *sorted* template names, then ``empty`` (if any
empty boxes are made and ``empty_label='empty'``), then ``unknown`` (if any decoys are made)
— so the known classes keep the indices of their sorted names and the open-set label
``unknown`` (ARCHITECTURE.md § 3) is always last. Decoys (procedural pseudo-proteins,
:mod:`.decoys`) are labelled ``unknown``. Empty boxes (noise through the same chain, with the
noise level a random known particle would have) are their own class ``empty`` by default —
useful to recognise junk picks — or folded into ``unknown`` with ``empty_label='unknown'``.

**Subtomograms** are reconstructions of the full chain of :mod:`.imaging` (or the
approximate 3D mode), ``box³`` voxels (Z, Y, X), the particle's centre of mass on voxel
``box // 2`` (± the small random shift), in the raw-reconstruction convention (**protein
dark**), each normalised to zero mean and unit variance. Networks take protein bright
(``picking.polarity.CANONICAL_POLARITY``): multiply by −1 (``polarity='dark'`` → canonical).

**Randomness.** Sample ``i`` of a set is a pure function of ``(seed, i)`` — its class, template,
rotation (uniform on SO(3)), shift, defocus, SNR, neighbours, background and noise — so the
result does not depend on the batch size. The same seed gives identical arrays on the CPU with
the same thread count; with another thread count FFT vectorisation can change the last float32
bits (differences ~1e-7).

**File format** (``.npz``, read with ``allow_pickle=False``; written atomically):
``subtomograms`` float16 (N, box, box, box), ``labels`` int64 (N,), ``class_names`` (K,) str,
``condition`` (JSON of the :class:`~.condition.ImagingCondition`), ``params`` (JSON of the
:class:`DatasetParams` plus template names/sources), ``seed``, ``voxel_size`` (Å), ``box``,
``polarity`` (``dark``), ``normalisation``, ``format_version``, and per sample ``template``
(the structure imaged; ``''`` for empty boxes), ``defocus`` (µm), ``snr``, ``rotations``
(N, 3, 3; acting on z y x) and ``shifts`` (N, 3; voxels z y x).
"""


from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .._lazy import lazy_exports
from ..errors import CryoOpensetError, ParameterError, known_fields
from ..io import atomic_path
from ..picks import UNKNOWN_CLASS
from .condition import ImagingCondition
from .templates import RESERVED_NAMES

EMPTY_CLASS = "empty"
FORMAT_VERSION = 1
POLARITY = "dark"
NORMALISATION = "per-box zero mean, unit variance"
MODES = ("full", "approximate")

# simulating a set: re-exported (the CLI imports generate_dataset from here)
__getattr__, __dir__ = lazy_exports(globals(), {"generate_dataset": "generate", "generate_subtomograms": "generate"})


@dataclass(frozen=True)
class DatasetParams:
    """What to simulate (the templates are given separately).

    Attributes
    ----------
    box
        Subtomogram edge in voxels (≥ 16).
    per_class
        Subtomograms per known template (≥ 1).
    decoys
        Subtomograms of the ``unknown`` class (procedural decoys).
    empty
        Empty (noise-only) subtomograms.
    condition
        The imaging condition (its ``voxel_size`` is the templates' voxel size).
    seed
        Everything random derives from it.
    decoy_structures
        Distinct decoy structures in the pool the ``unknown`` samples are drawn from.
    empty_label
        ``empty`` (own class) or ``unknown``.
    max_shift
        Particle centre shift, uniform in ±max_shift voxels per axis.
    neighbours
        Mean number (Poisson, at most 4) of neighbouring particles touching the box edges.
    background
        Standard deviation of a smooth crowding background (units of protein density; 0 = off).
    mode
        ``full`` (tilt series + CTF + noise + WBP) or ``approximate`` (3D shortcut).
    batch_size
        Subtomograms simulated per batched call (memory ~ 3 MB × batch for box 32).
    """

    box: int = 32
    per_class: int = 100
    decoys: int = 0
    empty: int = 0
    condition: ImagingCondition = field(default_factory=ImagingCondition)
    seed: int = 0
    decoy_structures: int = 16
    empty_label: str = EMPTY_CLASS
    max_shift: float = 1.0
    neighbours: float = 0.0
    background: float = 0.0
    mode: str = "full"
    batch_size: int = 64

    def __post_init__(self) -> None:
        def integer(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (isinstance(v, float) and v.is_integer()):
                raise ParameterError(f"{name} must be a whole number, got {v!r}")
            if int(v) < lo:
                raise ParameterError(f"{name} must be at least {lo}, got {int(v)}")
            object.__setattr__(self, name, int(v))

        integer("box", 16)
        integer("per_class", 1)
        integer("decoys", 0)
        integer("empty", 0)
        integer("seed", 0)
        integer("decoy_structures", 1)
        integer("batch_size", 1)
        if not isinstance(self.condition, ImagingCondition):
            if isinstance(self.condition, dict):
                object.__setattr__(self, "condition", ImagingCondition.from_dict(self.condition))
            else:
                raise ParameterError(f"condition must be an ImagingCondition, got {type(self.condition).__name__}")
        if self.empty_label not in (EMPTY_CLASS, UNKNOWN_CLASS):
            raise ParameterError(f"empty_label must be '{EMPTY_CLASS}' or '{UNKNOWN_CLASS}', got {self.empty_label!r}")
        if self.mode not in MODES:
            raise ParameterError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("max_shift", "neighbours", "background"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise ParameterError(f"{name} must be ≥ 0, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)

    @property
    def voxel_size(self) -> float:
        return self.condition.voxel_size

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["condition"] = self.condition.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> DatasetParams:
        return cls(**known_fields(cls, data))


def class_names_for(template_names: Sequence[str], decoys: int, empty: int, empty_label: str = EMPTY_CLASS) -> list[str]:
    """Sorted known names, then ``empty`` (if it is its own class and used), then ``unknown``."""
    names = sorted(template_names)
    for n in names:
        if n.lower() in RESERVED_NAMES:
            raise ParameterError(f"template name '{n}' is reserved for the {n.lower()} class; rename the template")
    if len(set(names)) != len(names):
        raise ParameterError("template names must be unique")
    if empty > 0 and empty_label == EMPTY_CLASS:
        names.append(EMPTY_CLASS)
    if decoys > 0 or (empty > 0 and empty_label == UNKNOWN_CLASS):
        names.append(UNKNOWN_CLASS)
    return names


# --------------------------------------------------------------------------------------------
# a labelled set in memory and on disk
# --------------------------------------------------------------------------------------------


@dataclass
class SimulatedSet:
    """A labelled set of subtomograms (see the module docstring for the conventions)."""

    subtomograms: np.ndarray  # (N, B, B, B) float16 or float32
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    condition: ImagingCondition
    params: DatasetParams
    seed: int
    template: np.ndarray  # (N,) str
    defocus: np.ndarray
    snr: np.ndarray
    rotations: np.ndarray
    shifts: np.ndarray
    templates: list[dict] = field(default_factory=list)
    polarity: str = POLARITY

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def box(self) -> int:
        return int(self.subtomograms.shape[-1])

    @property
    def voxel_size(self) -> float:
        return self.condition.voxel_size

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}


def write_dataset(data: SimulatedSet, path: str | os.PathLike) -> Path:
    """Write a set to ``path`` (``.npz`` layout, any file name) atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CryoOpensetError(f"output '{path}': the folder '{path.parent}' does not exist")
    params = data.params.to_dict()
    params["templates"] = data.templates
    arrays = {
        "subtomograms": data.subtomograms.astype(np.float16, copy=False),
        "labels": data.labels.astype(np.int64),
        "class_names": np.array(data.class_names, dtype=str),
        "condition": np.array(data.condition.to_json()),
        "params": np.array(json.dumps(params, sort_keys=True)),
        "seed": np.array(int(data.seed), dtype=np.int64),
        "voxel_size": np.array(float(data.voxel_size)),
        "box": np.array(int(data.box), dtype=np.int64),
        "polarity": np.array(data.polarity),
        "normalisation": np.array(NORMALISATION),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "template": np.asarray(data.template, dtype=str),
        "defocus": data.defocus.astype(np.float32),
        "snr": data.snr.astype(np.float32),
        "rotations": data.rotations.astype(np.float32),
        "shifts": data.shifts.astype(np.float32),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_dataset(path: str | os.PathLike) -> SimulatedSet:
    """Read a set written by :func:`write_dataset` (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise CryoOpensetError(f"simulated set '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format_version"])
            if version != FORMAT_VERSION:
                raise _VersionMismatch(version)
            params_dict = json.loads(str(z["params"]))
            templates = params_dict.pop("templates", [])
            return SimulatedSet(
                subtomograms=z["subtomograms"],
                labels=z["labels"],
                class_names=[str(c) for c in z["class_names"]],
                condition=ImagingCondition.from_json(str(z["condition"])),
                params=DatasetParams.from_dict(params_dict),
                seed=int(z["seed"]),
                template=z["template"],
                defocus=z["defocus"],
                snr=z["snr"],
                rotations=z["rotations"],
                shifts=z["shifts"],
                templates=templates,
                polarity=str(z["polarity"]),
            )
    except _VersionMismatch as exc:
        raise CryoOpensetError(f"simulated set '{path}' has format version {exc.args[0]}; this version reads "
                               f"{FORMAT_VERSION}: simulate it again with this version") from None
    except (OSError, ValueError, KeyError) as exc:
        raise CryoOpensetError(f"simulated set '{path}' is not readable ({type(exc).__name__}: {exc})") from None


class _VersionMismatch(Exception):
    """Internal: a set written by another format version (kept apart from read errors)."""
