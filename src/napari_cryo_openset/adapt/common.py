"""What both adaptation methods share: parameters, source/target data, open-set calibration.

Data conventions: every box is canonical (protein positive, per-box zero mean, unit variance,
:func:`napari_cryo_openset.extract.normalise_subtomograms`), ``(N, 1, B, B, B)`` float32.

Source validation split: the *same* stratified, seeded hold-out the source model was trained
with (its ``validation_fraction`` and ``seed`` are in the bundle's provenance), so the open-set
threshold is calibrated on source boxes the model never trained on — and never on target labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checkpoint import ModelBundle
from ..errors import ParameterError
from ..params import DEFAULT_LEARNING_RATE, METHODS, AdaptParams  # noqa: F401 (re-exported)
from ..picks import UNKNOWN_CLASS

MIN_TARGET_PICKS = 16


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
    if list(data.class_names) != list(bundle.class_names):
        raise ParameterError(
            f"the source set's classes ({', '.join(data.class_names)}) are not the model's "
            f"({', '.join(bundle.class_names)}): use the set the model was trained on"
        )
    if int(data.box) != int(bundle.box_size):
        raise ParameterError(f"the source set has {data.box}³ boxes but the model expects {bundle.box_size}³")
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


def check_target(n_target: int, batch_size: int) -> int:
    """The batch size to use for ``n_target`` target boxes (refuse too few picks)."""
    if n_target == 0:
        raise ParameterError("there are no target picks to adapt to (pick particles first; rejected picks are left out)")
    if n_target < MIN_TARGET_PICKS:
        raise ParameterError(f"only {n_target} target picks: adaptation needs at least {MIN_TARGET_PICKS} "
                             "(pick more particles or lower the picking threshold)")
    return min(batch_size, n_target)


def start_run(params: AdaptParams, n_target: int):
    """Device, batch size and seeded random sources of an adaptation run, in one fixed order.

    Chooses the device and CPU threads, checks the number of target picks, seeds torch's
    global generator and returns ``(device, batch, rng, gen)``: a numpy generator (batch
    sampling) and a torch generator (augmentation), both from ``params.seed``.
    """
    from ..device import choose_device, set_cpu_threads

    device = choose_device(params.device)
    set_cpu_threads(params.threads)
    batch = check_target(n_target, params.batch_size)
    torch.manual_seed(params.seed)
    return device, batch, np.random.default_rng(params.seed), torch.Generator().manual_seed(params.seed)


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


def histogram_entropy(pred: np.ndarray, n_classes: int) -> float:
    """Entropy (nats) of the predicted-class histogram."""
    counts = np.bincount(np.asarray(pred, dtype=np.int64), minlength=n_classes).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iterations: int = 200) -> float:
    """Temperature scaling (Guo et al. 2017) on held-out *source* logits: T minimising the NLL."""
    if len(labels) < 2:
        return 1.0
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=iterations)
    lf = logits.detach().float()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lf / log_t.exp(), labels)
        loss.backward()
        return loss

    try:
        opt.step(closure)
    except RuntimeError:
        return 1.0
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and 0.05 < t < 20 else 1.0


def calibrate_open_set(scores_known: np.ndarray, scores_unknown: np.ndarray, params: AdaptParams):
    """The unknown threshold from source-validation scores (no target labels)."""
    from ..openset import calibrate_threshold

    rule = params.threshold_rule
    if rule == "auto":
        rule = "youden" if len(scores_unknown) else "quantile"
    if rule == "youden" and not len(scores_unknown):
        raise ParameterError("threshold_rule 'youden' needs source unknowns (decoys) in the simulated set")
    return calibrate_threshold(scores_known, scores_unknown if rule == "youden" else None,
                               quantile=params.threshold_quantile, rule=rule)


@torch.no_grad()
def adapt_batchnorm(encoder: torch.nn.Module, boxes: torch.Tensor, device: torch.device, batch_size: int = 64) -> bool:
    """AdaBN (Li et al. 2016): set every BatchNorm's running statistics to those of ``boxes``.

    The statistics are the exact average over all boxes (momentum None during the pass); the
    layers' momentum is restored afterwards. Returns False if the encoder has no BatchNorm
    (e.g. the 3D-ADA reference encoder), True otherwise.
    """
    from ..models import prepare_batch

    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was = encoder.training
    encoder.train()
    try:
        for s in range(0, len(boxes), batch_size):
            chunk = boxes[s:s + batch_size]
            if len(chunk) > 1:
                encoder(prepare_batch(chunk, device))
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        encoder.train(was)
    return True
