"""The optimisation loop both adaptation methods run; each plugs its own round into it.

:func:`run_rounds` owns what 3D-ADA and MLUDA share: the device, the seeded random sources
(:func:`start_run`), the augmented source and target batches (:class:`Batches`), the
running averages between checks, the history, the stop rules and the progress events. A
method is a :class:`Rounds`: one optimisation round (:meth:`Rounds.step`), its diagnostics
on all target picks (:meth:`Rounds.check`), a snapshot of its weights, and its stop rules.

Why a snapshot: a NaN/inf loss, or a check the method judges unhealthy (3D-ADA's collapse
guard), stops the run and restores the weights of the last healthy check — never a state
half-way between checks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..device import describe
from ..errors import ParameterError
from ..progress import Progress
from .common import MIN_TARGET_PICKS, AdaptParams
from .source import BatchSampler, SourceData


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


def histogram_entropy(pred: np.ndarray, n_classes: int) -> float:
    """Entropy (nats) of the predicted-class histogram."""
    counts = np.bincount(np.asarray(pred, dtype=np.int64), minlength=n_classes).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


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


class Batches:
    """Seeded batches of source-training and target boxes, augmented (CPU tensors).

    Both samplers draw from the run's numpy generator and the augmentation from its torch
    generator, so a method must draw in a fixed order (source, then target) to be repeatable.
    """

    def __init__(self, source: SourceData, target: torch.Tensor, batch: int, rng: np.random.Generator,
                 gen: torch.Generator, augment: bool) -> None:
        self._source, self._target = source, target
        self._source_indices = BatchSampler(source.train_idx, batch, rng)
        self._target_indices = BatchSampler(np.arange(len(target)), batch, rng)
        self._gen, self._augment = gen, augment

    def _boxes(self, x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        from ..train import augment_batch

        xb = x[torch.from_numpy(idx)]
        return augment_batch(xb, self._gen, False, 1) if self._augment else xb

    def source(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of source-training boxes and their labels."""
        idx = self._source_indices()
        return self._boxes(self._source.x, idx), self._source.y[torch.from_numpy(idx)]

    def target(self) -> torch.Tensor:
        """A batch of target boxes."""
        return self._boxes(self._target, self._target_indices())


class LabelledTargets:
    """Target picks the user labelled (:mod:`.refine`): their boxes and class indices, in seeded batches.

    ``labels`` index ``class_names`` (the model's); a label ``unknown`` on a model without an
    ``unknown`` output is −1 (no cross-entropy target; MLUDA still pushes it out of every class
    radius). Batches of at most ``batch`` labelled boxes (all of them when there are fewer) are
    drawn from their own seeded generators, so the run's other random draws — and with them a
    run without labels — are exactly as before.
    """

    def __init__(self, boxes: torch.Tensor, labels, class_names, seed: int, batch: int = 16,
                 augment: bool = True) -> None:
        self.x = torch.as_tensor(boxes, dtype=torch.float32)
        if self.x.ndim == 4:
            self.x = self.x[:, None]
        self.y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if len(self.x) != len(self.y) or not len(self.y):
            raise ParameterError(f"labelled targets: {len(self.x)} boxes for {len(self.y)} labels (need ≥ 1 of each, "
                                 "one per box)")
        self.class_names = list(class_names)
        from ..picks import UNKNOWN_CLASS

        self.unknown_label = self.class_names.index(UNKNOWN_CLASS) if UNKNOWN_CLASS in self.class_names else -1
        self._sampler = BatchSampler(np.arange(len(self.y)), min(int(batch), len(self.y)),
                                     np.random.default_rng([int(seed), 7919]))
        self._gen = torch.Generator().manual_seed(int(seed) + 7919)
        self._augment = augment

    def __len__(self) -> int:
        return len(self.y)

    def is_unknown(self, y: torch.Tensor) -> torch.Tensor:
        """Which of the labels ``y`` say ``unknown``."""
        return (y == self.unknown_label) | (y < 0)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of labelled boxes (augmented like the source ones) and their class indices."""
        from ..train import augment_batch

        idx = torch.from_numpy(self._sampler())
        xb = self.x[idx]
        return (augment_batch(xb, self._gen, False, 1) if self._augment else xb), self.y[idx]


class Rounds:
    """What a method plugs into :func:`run_rounds` (override :meth:`step`, :meth:`check`…)."""

    def step(self, batches: Batches) -> dict[str, float] | None:
        """One optimisation round: its losses (floats), or None when one became NaN/inf."""
        raise NotImplementedError

    def check(self) -> dict:
        """Diagnostics on all target picks (``entropy``, ``histogram``…) for the history."""
        raise NotImplementedError

    def snapshot(self):
        """The state to come back to if a later round goes wrong."""
        raise NotImplementedError

    def restore(self, state) -> None:
        raise NotImplementedError

    def unhealthy(self, record: dict) -> str | None:
        """Why the check ``record`` is unhealthy (stop and restore the last healthy state)."""
        return None

    def converged(self, record: dict) -> str | None:
        """Why the run can stop after the healthy check ``record`` (keeping its weights)."""
        return None

    def message(self, metrics: dict) -> str:
        """What the progress message of a round shows after ``round i/n:``."""
        return ""


@dataclass
class RoundsOutcome:
    """How :func:`run_rounds` ended: the method, its history, the stop reason, timing."""

    rounds: Rounds
    device: torch.device
    history: list = field(default_factory=list)
    stopped: str = "completed"
    restored: bool = False  # the last healthy weights were restored (NaN/inf or unhealthy check)
    t0: float = 0.0


def run_rounds(title: str, source: SourceData, target: torch.Tensor, params: AdaptParams,
               make_rounds: Callable[[torch.device, int], Rounds]) -> Generator[Progress, None, RoundsOutcome]:
    """Run ``params.iterations`` rounds of the method ``make_rounds(device, batch)`` builds.

    ``title`` names the method in the first progress message (``3D-ADA on N picks, …``).

    Every ``eval_every`` rounds (and at the last) the running averages of the round losses and
    :meth:`Rounds.check` go into the history; a healthy check becomes the state to restore.
    """
    t0 = time.perf_counter()
    device, batch, rng, gen = start_run(params, len(target))
    total = params.iterations
    yield Progress("adapt", 0, total, f"{title} on {len(target)} picks, {describe(device)}")
    rounds = make_rounds(device, batch)
    healthy = rounds.snapshot()
    batches = Batches(source, target, batch, rng, gen, params.augment)
    outcome = RoundsOutcome(rounds=rounds, device=device, t0=t0)
    sums: dict[str, float] = {}
    n = 0
    for it in range(1, total + 1):
        losses = rounds.step(batches)
        if losses is None or not all(math.isfinite(v) for v in losses.values()):
            rounds.restore(healthy)
            outcome.stopped = f"stopped at round {it}: a loss became NaN/inf; restored the last good weights"
            outcome.restored = True
            break
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        metrics = {"iteration": it, **losses}
        if it % params.eval_every == 0 or it == total:
            record = {"iteration": it, **{k: v / max(n, 1) for k, v in sums.items()}, **rounds.check(),
                      "seconds": time.perf_counter() - t0}
            outcome.history.append(record)
            metrics.update(record)
            sums, n = {}, 0
            reason = rounds.unhealthy(record)
            if reason:
                rounds.restore(healthy)
                outcome.stopped = f"stopped at round {it}: {reason}; restored the last healthy weights"
                outcome.restored = True
                yield Progress("adapt", it, total, outcome.stopped, metrics)
                break
            healthy = rounds.snapshot()
            reason = rounds.converged(record)
            if reason:
                outcome.stopped = f"stopped at round {it}: {reason}"
                yield Progress("adapt", it, total, outcome.stopped, metrics)
                break
        yield Progress("adapt", it, total, f"round {it}/{total}: {rounds.message(metrics)}", metrics)
    return outcome
