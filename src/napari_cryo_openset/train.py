"""Source training: a 3D CNN learns the simulated (source) classes. A generator.

:func:`train_source` yields :class:`~napari_cryo_openset.progress.Progress` events (stage
``train``; metrics ``epoch``, ``loss``, ``train_acc``, and at epoch ends ``val_loss``,
``val_acc``, ``lr``) and returns a :class:`TrainResult` holding the best model (by source
validation accuracy). Stop iterating to cancel — the generator is left at a batch boundary and
nothing is written.

Honest protocol: the validation split is a stratified, seeded hold-out of the *source* set
(same condition); early stopping and the checkpoint choice use it only. No target data here.

Augmentations respect the missing wedge. With the tilt axis along Y, the wedge lives in the
(kx, kz) plane and is symmetric under kx → −kx, ky → −ky and kz → −kz, so a box may be turned
by 180° about Z, Y or X (two axis flips each; the group D2, proper rotations only) without
moving the wedge. A 90° turn about Z would swap X and Y and move the wedge to the (ky, kz)
plane, so it is not used. Mirror flips (one axis) keep the wedge too but change a molecule's
handedness: off by default (``mirror=True`` to allow). Shifts of ±``max_shift`` voxels
(circular) are added.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .device import autocast, choose_device, describe, set_cpu_threads
from .errors import ParameterError
from .extract import normalise_subtomograms
from .models import Classifier3D, build_model, forward_batches, prepare_batch, to_device
from .params import TrainParams
from .progress import Progress


class TrainingDiverged(ParameterError):
    """The loss became NaN/inf before any epoch finished (nothing worth keeping)."""


@dataclass
class TrainResult:
    """A trained source model and what happened."""

    model: Classifier3D
    class_names: list[str]
    box: int
    voxel_size: float
    params: TrainParams
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    val_accuracy: float = float("nan")
    val_indices: np.ndarray | None = None
    stopped: str = "completed"
    seconds: float = 0.0
    device: str = "cpu"
    source: dict = field(default_factory=dict)
    data: object = None  # the SimulatedSet trained on (kept in memory for adaptation; not saved)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def source_boxes(subtomograms: np.ndarray, polarity: str) -> torch.Tensor:
    """Stored boxes → canonical float32 tensor (N, 1, B, B, B) (protein positive, normalised)."""
    return torch.from_numpy(normalise_subtomograms(np.asarray(subtomograms), polarity))[:, None]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split → (train indices, validation indices), each sorted.

    Every class with at least 2 samples puts at least one in each part.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(fraction * len(idx)))
        n_val = min(max(n_val, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def check_training_set(labels: np.ndarray, class_names: Sequence[str], source: str = "training set") -> None:
    """Refuse sets a classifier cannot learn from, with a message naming the problem."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ParameterError(f"{source} is empty: simulate some subtomograms first")
    if len(class_names) < 2:
        raise ParameterError(f"{source} has a single class ({', '.join(class_names)}); a classifier needs at least 2 "
                             "(add templates, or empty/decoy samples)")
    present = np.unique(labels)
    if len(present) < 2:
        raise ParameterError(f"{source} holds samples of a single class ({class_names[int(present[0])]}); "
                             "a classifier needs at least 2")
    if present.min() < 0 or present.max() >= len(class_names):
        raise ParameterError(f"{source} has labels outside 0…{len(class_names) - 1}")


_D2 = ((), (3, 4), (2, 4), (2, 3))  # identity and 180° turns about Z, Y, X (dims of (N,1,Z,Y,X))


def augment_batch(x: torch.Tensor, generator: torch.Generator, mirror: bool = False, max_shift: int = 0) -> torch.Tensor:
    """Wedge-preserving augmentation of (N, 1, Z, Y, X) boxes (see the module docstring)."""
    n = x.shape[0]
    out = x.clone()
    choice = torch.randint(0, len(_D2), (n,), generator=generator)
    for g, dims in enumerate(_D2[1:], start=1):
        sel = (choice == g).nonzero().flatten()
        if len(sel):
            out[sel] = torch.flip(x[sel], dims)
    if mirror:
        sel = (torch.rand(n, generator=generator) < 0.5).nonzero().flatten()
        if len(sel):
            out[sel] = torch.flip(out[sel], (4,))
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (n, 3), generator=generator)
        for i in (shifts != 0).any(dim=1).nonzero().flatten().tolist():
            out[i] = torch.roll(out[i], tuple(shifts[i].tolist()), dims=(1, 2, 3))
    return out


# --------------------------------------------------------------------------------------------
# evaluation helpers (also used by prediction and adaptation)
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def infer(model: Classifier3D, boxes: torch.Tensor | np.ndarray, device: torch.device | str = "cpu",
          batch_size: int = 256, amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and embeddings (N, d) of canonical boxes, in eval mode, on the CPU (float32)."""
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if isinstance(boxes, np.ndarray):
        boxes = torch.from_numpy(boxes)
    if boxes.ndim == 4:
        boxes = boxes[:, None]
    out = forward_batches(model, boxes, device, _logits_and_embedding, batch_size, amp)
    if not out:
        return torch.zeros(0, model.head.out_features), torch.zeros(0, model.encoder.out_dim)
    return out[0], out[1]


def _logits_and_embedding(model: Classifier3D, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = model.embed(xb)
    return model.classify(h), h


def _evaluate(model, x, y, device, batch_size, amp) -> tuple[float, float]:
    logits, _ = infer(model, x, device, batch_size=max(batch_size, 128), amp=amp)
    yt = torch.as_tensor(y)
    loss = float(F.cross_entropy(logits, yt)) if len(yt) else float("nan")
    acc = float((logits.argmax(1) == yt).float().mean()) if len(yt) else float("nan")
    return loss, acc


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


def train_source(data, params: TrainParams | None = None) -> Generator[Progress, None, TrainResult]:
    """Train a classifier on a simulated set. A generator: yields progress, returns the result.

    Parameters
    ----------
    data
        A :class:`~napari_cryo_openset.simulate.SimulatedSet` or the path of one (``simulate``
        output). Its class order (sorted known names, ``empty``, ``unknown``) is the model's.
    params
        :class:`TrainParams` (defaults if None).
    """
    from .simulate.datasets import SimulatedSet, load_dataset

    params = params or TrainParams()
    if not isinstance(data, SimulatedSet):
        data = load_dataset(data)
    labels = np.asarray(data.labels, dtype=np.int64)
    check_training_set(labels, data.class_names, "the simulated set")
    device = choose_device(params.device)
    threads = set_cpu_threads(params.threads)
    torch.manual_seed(params.seed)
    gen = torch.Generator().manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)

    yield Progress("train", 0, 1, "preparing subtomograms")
    x_all = source_boxes(data.subtomograms, data.polarity)
    train_idx, val_idx = stratified_split(labels, params.validation_fraction, params.seed)
    if len(train_idx) < 2:
        raise ParameterError(f"the simulated set has {len(labels)} subtomograms: too few to train (need ≥ 4)")
    x_tr, y_tr = x_all[train_idx], torch.from_numpy(labels[train_idx])
    x_va, y_va = x_all[val_idx], torch.from_numpy(labels[val_idx])

    net = params.network(data.box, len(data.class_names))
    model = to_device(build_model(net), device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    steps_per_epoch = max(1, len(train_idx) // params.batch_size)
    total = params.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=total, eta_min=0.05 * params.learning_rate)
    use_amp = params.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported()) if use_amp else None

    history: list[dict] = []
    best_acc, best_loss, best_epoch, best_state = -1.0, float("inf"), 0, None
    stopped = "completed"
    t0 = time.perf_counter()
    step = 0
    yield Progress("train", 0, total, f"{len(train_idx)} train / {len(val_idx)} validation subtomograms on {describe(device)}")
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(len(train_idx)))
        run_loss, run_correct, run_n = 0.0, 0, 0
        diverged = False
        for b in range(steps_per_epoch):
            sel = order[b * params.batch_size:(b + 1) * params.batch_size]
            xb = x_tr[sel]
            if params.augment:
                xb = augment_batch(xb, gen, params.mirror, params.max_shift)
            xb = prepare_batch(xb, device)
            yb = y_tr[sel].to(device)
            with autocast(device, use_amp):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=params.label_smoothing)
            if not torch.isfinite(loss):
                diverged = True
                break
            optimiser.zero_grad(set_to_none=True)
            if scaler is not None and scaler.is_enabled():
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
            else:
                loss.backward()
                optimiser.step()
            scheduler.step()
            step += 1
            n = len(sel)
            run_loss += float(loss.detach()) * n
            run_correct += int((logits.argmax(1) == yb).sum())
            run_n += n
            rate = run_n / max(time.perf_counter() - t0, 1e-9) if epoch == 1 else None
            yield Progress("train", step, total, f"epoch {epoch}/{params.epochs}",
                           {"epoch": epoch, "step": step, "loss": float(loss.detach()),
                            **({"samples_per_s": rate} if rate else {})})
        if not diverged:
            val_loss, val_acc = _evaluate(model, x_va, y_va, device, params.batch_size, params.amp)
            # the last step of the epoch can leave non-finite weights (or BatchNorm statistics)
            # behind a finite loss: never keep such an epoch as the best one
            diverged = len(val_idx) > 0 and not math.isfinite(val_loss)
        if diverged:
            if best_state is None:
                raise TrainingDiverged(
                    f"training diverged: the loss became NaN/inf in epoch {epoch} before any epoch finished; "
                    f"lower the learning rate (now {params.learning_rate:g}) or check the simulated set"
                )
            stopped = f"stopped: the loss became NaN/inf in epoch {epoch}; kept the weights of epoch {best_epoch}"
            break
        record = {
            "epoch": epoch, "loss": run_loss / max(run_n, 1), "train_acc": run_correct / max(run_n, 1),
            "val_loss": val_loss, "val_acc": val_acc, "lr": float(scheduler.get_last_lr()[0]),
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        better = val_acc > best_acc or (val_acc == best_acc and val_loss < best_loss)
        if better or best_state is None:
            best_acc, best_loss, best_epoch = val_acc, val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        yield Progress("train", step, total,
                       f"epoch {epoch}/{params.epochs}: loss {record['loss']:.3f}, val acc {val_acc:.3f}",
                       dict(record))
        if params.patience and epoch - best_epoch >= params.patience:
            stopped = f"early stop at epoch {epoch}: no better validation accuracy since epoch {best_epoch}"
            break

    model.load_state_dict(best_state)
    model.eval()
    model = model.to("cpu").to(memory_format=torch.contiguous_format)
    return TrainResult(
        model=model, class_names=list(data.class_names), box=int(data.box), voxel_size=float(data.voxel_size),
        params=params, history=history, best_epoch=best_epoch, val_accuracy=float(best_acc),
        val_indices=val_idx, stopped=stopped, seconds=time.perf_counter() - t0,
        device=f"{describe(device)}" if device.type != "cpu" else f"cpu ({threads} threads)",
        source={"dataset": data.params.to_dict(), "seed": int(data.seed), "polarity": data.polarity,
                "templates": list(data.templates), "counts": data.counts()},
        data=data,
    )


def simulate_and_train(templates, dataset_params, params: TrainParams | None = None,
                       device: str | torch.device = "cpu") -> Generator[Progress, None, TrainResult]:
    """Simulate a labelled set (stage ``simulate``) then train on it (stage ``train``).

    ``templates``: a list of :class:`~napari_cryo_openset.simulate.Template`;
    ``dataset_params``: :class:`~napari_cryo_openset.simulate.DatasetParams`. The simulation
    runs on ``device`` (the simulator is fast on CPU); training uses ``params.device``.
    """
    data = yield from simulate_isolated(templates, dataset_params, device)
    return (yield from train_source(data, params))


def simulate_isolated(templates, dataset_params, device: str | torch.device = "cpu"):
    """The isolated-box source set (stage ``simulate``), its ``info`` saying how it was made."""
    from .simulate.generate import generate_subtomograms

    t0 = time.perf_counter()
    data = yield from generate_subtomograms(templates, dataset_params, device)
    data.info.update(source_kind="isolated", seconds=round(time.perf_counter() - t0, 3), counts=data.counts())
    return data


def simulate_scenes_and_train(templates, dataset_params, picking, params: TrainParams | None = None, *,
                              polarity: str = "dark", slab=None, density: float | None = None,
                              pick_density: float | None = None, shape=None, device: str | torch.device = "cpu",
                              ) -> Generator[Progress, None, TrainResult]:
    """Simulate a source set the way the target is picked (stage ``scenes``:
    :func:`~napari_cryo_openset.simulate.scene_source.generate_scene_source` with the target's
    ``picking`` parameters, ``slab`` in scene voxels, ``density``/``pick_density`` per µm³), then
    train on it (stage ``train``). The set's ``info`` says how it was made."""
    from .simulate.scene_source import generate_scene_source

    data = yield from generate_scene_source(templates, dataset_params, picking, polarity=polarity, slab=slab,
                                            density=density, pick_density=pick_density, shape=shape, device=device)
    return (yield from train_source(data, params))
