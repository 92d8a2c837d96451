"""The labelled source set an adaptation runs against, and seeded batches of indices.

Every box is canonical (protein positive, per-box zero mean, unit variance,
:func:`napari_cryo_openset.extract.normalise_subtomograms`), ``(N, 1, B, B, B)`` float32.

Source validation split: the *same* stratified, seeded hold-out the source model was trained
with (its ``validation_fraction`` and ``seed`` are in the bundle's provenance), so the open-set
threshold is calibrated on source boxes the model never trained on — and never on target labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..checkpoint import ModelBundle
from ..errors import ParameterError
from .common import source_mismatch
from ..picks import UNKNOWN_CLASS


@dataclass
class SourceData:
    """The labelled source (simulated) set, canonical, with the model's train/validation split."""

    x: torch.Tensor  # (N, 1, B, B, B)
    y: torch.Tensor  # (N,)
    class_names: list[str]
    train_idx: np.ndarray
    val_idx: np.ndarray
    description: dict = field(default_factory=dict)

    @property
    def unknown_label(self) -> int | None:
        return self.class_names.index(UNKNOWN_CLASS) if UNKNOWN_CLASS in self.class_names else None

    @property
    def known_labels(self) -> list[int]:
        return [i for i, c in enumerate(self.class_names) if c != UNKNOWN_CLASS]

    def split_known_unknown(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = self.unknown_label
        y = self.y.numpy()[idx]
        if u is None:
            return idx, idx[:0]
        return idx[y != u], idx[y == u]


def load_source(source, bundle: ModelBundle) -> SourceData:
    """The source set of a bundle: a :class:`SimulatedSet` or its path (checked against the model)."""
    from ..simulate.datasets import SimulatedSet, load_dataset
    from ..train import source_boxes, stratified_split

    if source is None:
        raise ParameterError(
            "adaptation needs the model's source data (the simulated set it was trained on): pass --source SOURCE "
            "(the output of 'napari-cryo-openset simulate'), or simulate and train in the Model widget first"
        )
    data = source if isinstance(source, SimulatedSet) else load_dataset(source)
    why = source_mismatch(bundle, data)
    if why:
        raise ParameterError(f"{why}: use the set the model was trained on")
    if len(data) < 8:
        raise ParameterError(f"the source set has {len(data)} subtomograms: too few to adapt with")
    training = bundle.provenance.get("training", {}) if isinstance(bundle.provenance, dict) else {}
    fraction = float(training.get("validation_fraction", 0.15))
    seed = int(training.get("seed", bundle.provenance.get("seed", 0) or 0))
    labels = np.asarray(data.labels, dtype=np.int64)
    train_idx, val_idx = stratified_split(labels, fraction, seed)
    return SourceData(x=source_boxes(data.subtomograms, data.polarity), y=torch.from_numpy(labels),
                      class_names=list(data.class_names), train_idx=train_idx, val_idx=val_idx,
                      description={"n": len(data), "counts": data.counts(), "seed": int(data.seed),
                                   "condition": data.condition.to_dict()})


class BatchSampler:
    """Endless seeded random batches of indices (reshuffled each pass)."""

    def __init__(self, indices: np.ndarray, batch_size: int, rng: np.random.Generator) -> None:
        self.indices = np.asarray(indices)
        self.batch_size = int(batch_size)
        self.rng = rng
        self._order = np.empty(0, dtype=np.int64)
        self._pos = 0

    def __call__(self) -> np.ndarray:
        if len(self.indices) == 0:
            return self.indices
        if self._pos + self.batch_size > len(self._order):
            self._order = self.indices[self.rng.permutation(len(self.indices))]
            self._pos = 0
        out = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return out
