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
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._lazy import lazy_exports
from ..errors import CryoOpensetError, ParameterError
from ..io import atomic_path
from ..picks import UNKNOWN_CLASS
from ..params import EMPTY_CLASS, DatasetParams, ImagingCondition  # noqa: F401 (re-exported)
from .templates import RESERVED_NAMES

FORMAT_VERSION = 1
POLARITY = "dark"
NORMALISATION = "per-box zero mean, unit variance"

# simulating a set: re-exported (the CLI imports generate_dataset from here)
__getattr__, __dir__ = lazy_exports(globals(), {"generate_dataset": "generate", "generate_subtomograms": "generate"})


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
    info: dict = field(default_factory=dict)  # how the set was made (e.g. the scene source's log); not written

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
