"""Source training: wedge-preserving augmentation, split, set checks, learning, determinism,
cancel and divergence."""

from __future__ import annotations

import dataclasses
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import napari_cryo_openset.train as train_mod
from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.progress import Progress, run_to_completion
from napari_cryo_openset.train import (
    TrainingDiverged,
    TrainParams,
    augment_batch,
    check_training_set,
    infer,
    source_boxes,
    stratified_split,
    train_source,
)

BOX = 24
#: Small, fast settings: ~0.1 s per epoch on 2 CPU threads for 96 boxes of 24³.
#: One thread: other jobs share the CPUs and 2-thread kernels then spin (3–10× slower).
FAST = dict(batch_size=16, width=8, embedding_dim=32, device="cpu", validation_fraction=0.25, learning_rate=3e-3,
            threads=1)


@pytest.fixture(scope="module")
def trained(easy_model):
    """The conftest ``easy_model``: 6 epochs on ``easy_set`` with :data:`FAST` settings."""
    return easy_model


def subset(data, mask):
    mask = np.asarray(mask)
    return dataclasses.replace(
        data, subtomograms=data.subtomograms[mask], labels=data.labels[mask], template=data.template[mask],
        defocus=data.defocus[mask], snr=data.snr[mask], rotations=data.rotations[mask], shifts=data.shifts[mask])


# ------------------------------------------------------------------------- augmentation
def wedge_region(box: int, max_tilt: float = 60.0) -> torch.Tensor:
    """Missing wedge for tilts about Y in ±max_tilt: |kz| > |kx|·tan(max_tilt) (kx–kz plane)."""
    k = torch.fft.fftfreq(box)
    kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
    return kz.abs() > kx.abs() * math.tan(math.radians(max_tilt)) + 1e-6


def wedged_boxes(n: int, box: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, box, box, box, generator=g, dtype=torch.float64)
    f = torch.fft.fftn(x, dim=(2, 3, 4))
    f[:, :, wedge_region(box)] = 0
    return torch.fft.ifftn(f, dim=(2, 3, 4)).real


def wedge_energy_fraction(x: torch.Tensor) -> torch.Tensor:
    """Per box: Fourier power inside the wedge region / total power."""
    p = torch.fft.fftn(x, dim=(2, 3, 4)).abs() ** 2
    return p[:, :, wedge_region(x.shape[-1])].sum(dim=(1, 2)) / p.sum(dim=(1, 2, 3, 4))


@pytest.mark.parametrize("box", [24, 25])
@pytest.mark.parametrize("mirror", [False, True])
def test_augmentation_keeps_the_missing_wedge(box, mirror):
    x = wedged_boxes(32, box)
    assert wedge_energy_fraction(x).max() < 1e-20  # the wedge really is empty
    out = augment_batch(x, torch.Generator().manual_seed(1), mirror=mirror, max_shift=2)
    assert out.shape == x.shape
    # augmentation did something for most boxes ...
    changed = (out - x).flatten(1).abs().amax(1) > 1e-9
    assert changed.sum() >= 16
    # ... and every augmented box still has an empty wedge
    assert wedge_energy_fraction(out).max() < 1e-20
    # power spectrum is only permuted (no interpolation, no loss of signal)
    assert torch.allclose((out**2).sum(dim=(1, 2, 3, 4)), (x**2).sum(dim=(1, 2, 3, 4)))


def test_a_90_degree_turn_about_z_would_move_the_wedge():
    """Shows the test above is meaningful: swapping X and Y fills the (kx, kz) wedge."""
    x = wedged_boxes(4, 24)
    turned = torch.rot90(x, 1, dims=(3, 4))  # Y–X plane: a 90° rotation about Z
    assert wedge_energy_fraction(turned).min() > 0.05


def test_augmentation_is_seeded():
    x = torch.randn(16, 1, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    a = augment_batch(x, torch.Generator().manual_seed(7), mirror=True, max_shift=1)
    b = augment_batch(x, torch.Generator().manual_seed(7), mirror=True, max_shift=1)
    c = augment_batch(x, torch.Generator().manual_seed(8), mirror=True, max_shift=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(x, torch.randn(16, 1, 12, 12, 12, generator=torch.Generator().manual_seed(0)))  # input kept


def test_augmentation_uses_proper_rotations_only_without_mirror():
    """Without ``mirror`` a chiral box is never mirrored: each output is one of the 4 D2 turns."""
    x = torch.randn(64, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, torch.Generator().manual_seed(0), mirror=False, max_shift=0)
    turns = [(), (3, 4), (2, 4), (2, 3)]
    seen = set()
    for i in range(len(x)):
        xi = x[i:i + 1]  # (1, 1, Z, Y, X): the dims of `turns` apply
        hits = [k for k, dims in enumerate(turns) if torch.equal(out[i:i + 1], torch.flip(xi, dims) if dims else xi)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert seen == {0, 1, 2, 3}


# -------------------------------------------------------------------------------- split
def test_stratified_split_keeps_every_class_in_both_parts():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 2 + [3] * 40)
    tr, va = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(tr, va)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(labels)))
    for c in range(4):
        assert (labels[tr] == c).any() and (labels[va] == c).any()
    assert (labels[va] == 3).sum() == 8
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    tr2, va2 = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    _, va3 = stratified_split(labels, 0.2, seed=4)
    assert not np.array_equal(va, va3)


# ------------------------------------------------------------------------------ checks
def test_check_training_set_messages():
    with pytest.raises(ParameterError, match="is empty"):
        check_training_set(np.zeros(0, np.int64), ["a", "b"], "my set")
    with pytest.raises(ParameterError, match=r"single class \(a\).*at least 2"):
        check_training_set(np.zeros(5, np.int64), ["a"], "my set")
    with pytest.raises(ParameterError, match=r"my set holds samples of a single class \(b\)"):
        check_training_set(np.ones(5, np.int64), ["a", "b"], "my set")
    with pytest.raises(ParameterError, match="outside"):
        check_training_set(np.array([0, 1, 2]), ["a", "b"], "my set")
    check_training_set(np.array([0, 1, 1]), ["a", "b"])


def test_train_source_refuses_empty_and_single_class_sets(easy_set):
    empty = subset(easy_set, np.zeros(len(easy_set), bool))
    with pytest.raises(ParameterError, match="empty"):
        run_to_completion(train_source(empty, TrainParams(epochs=1, **FAST)))
    one = subset(easy_set, easy_set.labels == 1)
    with pytest.raises(ParameterError, match=f"single class \\({easy_set.class_names[1]}\\)"):
        run_to_completion(train_source(one, TrainParams(epochs=1, **FAST)))


@pytest.mark.parametrize("kw, word", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 1}, "batch_size"), ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"), ({"validation_fraction": 0.9}, "validation_fraction"),
    ({"label_smoothing": 1.0}, "label_smoothing"), ({"seed": -1}, "seed"), ({"epochs": 2.5}, "epochs"),
])
def test_train_params_validation(kw, word):
    with pytest.raises(ParameterError, match=word):
        TrainParams(**kw)


def test_train_params_round_trip():
    p = TrainParams(epochs=3, seed=5, architecture="ada-reference", threads=2)
    assert TrainParams.from_dict({**p.to_dict(), "future_option": 1}) == p
    net = p.network(40, 4)
    assert (net.box, net.num_classes, net.architecture, net.embedding_dim) == (40, 4, "ada-reference", 500)


# ---------------------------------------------------------------------------- learning
def test_a_class_is_recovered(trained, easy_set):
    """Two templates + empty at SNR 5 are learnt to ≥ 0.8 validation accuracy in 6 epochs."""
    r = trained
    assert r.class_names == ["2cg9", "3j9i", "empty"]
    assert r.val_accuracy >= 0.8
    assert r.stopped == "completed"
    assert len(r.history) == 6 and r.history[r.best_epoch - 1]["val_acc"] == r.val_accuracy
    for key in ("epoch", "loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"):
        assert key in r.history[0]
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    # the returned model is on the CPU, in eval mode, and reproduces the reported accuracy
    assert not r.model.training
    assert all(p.device.type == "cpu" for p in r.model.parameters())
    x = source_boxes(easy_set.subtomograms[r.val_indices], easy_set.polarity)
    logits, feats = infer(r.model, x)
    acc = float((logits.argmax(1).numpy() == easy_set.labels[r.val_indices]).mean())
    assert acc == pytest.approx(r.val_accuracy)
    assert feats.shape == (len(x), 32)
    # every class (not only one) is recognised on the validation split
    pred = logits.argmax(1).numpy()
    truth = easy_set.labels[r.val_indices]
    for c in range(3):
        assert (pred[truth == c] == c).mean() >= 0.5
    assert r.box == BOX and r.voxel_size == 10.0
    assert r.source["counts"] == {"2cg9": 32, "3j9i": 32, "empty": 32}


def test_source_boxes_are_canonical(easy_set):
    x = source_boxes(easy_set.subtomograms[:4], "dark")
    assert x.shape == (4, 1, BOX, BOX, BOX) and x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(1, 2, 3, 4)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(x.std(dim=(1, 2, 3, 4), unbiased=False), torch.ones(4), atol=1e-4)
    # dark data → protein positive: the negated raw box
    raw = torch.from_numpy(easy_set.subtomograms[:4].astype(np.float32))
    assert torch.corrcoef(torch.stack([x[0].flatten(), raw[0].flatten()]))[0, 1] < -0.99


@pytest.fixture(scope="module")
def two_runs(easy_set, tmp_path_factory):
    """The same 2-epoch training twice (seed 11), with its progress events, run in an empty folder."""
    folder = tmp_path_factory.mktemp("cwd")
    here = os.getcwd()
    os.chdir(folder)
    try:
        runs = []
        for _ in range(2):
            events = []
            result = run_to_completion(train_source(easy_set, TrainParams(epochs=2, seed=11, **FAST)), events.append)
            runs.append((result, events))
    finally:
        os.chdir(here)
    return runs, folder


def test_same_seed_gives_identical_training(two_runs, trained):
    (a, _), (b, _) = two_runs[0]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert np.array_equal(a.val_indices, b.val_indices)
    # another seed (the `trained` fixture: seed 0) gives other weights and another split
    assert not torch.equal(trained.model.state_dict()["head.weight"], sa["head.weight"])
    assert not np.array_equal(trained.val_indices, a.val_indices)


def test_progress_reports_epochs_and_nothing_is_written(two_runs):
    (result, events), _ = two_runs[0]
    folder = two_runs[1]
    assert list(folder.iterdir()) == []
    assert all(isinstance(e, Progress) and e.stage == "train" for e in events)
    epoch_ends = [e for e in events if e.metrics and "val_acc" in e.metrics]
    assert [e.metrics["epoch"] for e in epoch_ends] == [1, 2]
    steps = [e.step for e in events]
    assert steps == sorted(steps) and events[-1].step == events[-1].total
    assert result.history == [e.metrics for e in epoch_ends]


def test_cancel_is_stopping_the_generator(easy_set, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gen = train_source(easy_set, TrainParams(epochs=5, seed=0, **FAST))
    events = []
    for event in gen:
        events.append(event)
        if len(events) == 4:
            break
    gen.close()  # what a cancelled worker does; must not raise
    assert any(e.metrics and "loss" in e.metrics for e in events)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StopIteration):
        next(gen)


# ------------------------------------------------------------------------------- NaN
def nan_loss_from(monkeypatch, first_bad_step: int):
    """Make the training loss NaN from training step ``first_bad_step`` (0-based) on."""
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def fake(logits, target, *args, **kwargs):
        loss = real(logits, target, *args, **kwargs)
        if "label_smoothing" in kwargs:  # the training step (validation calls it without)
            calls["n"] += 1
            if calls["n"] > first_bad_step:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_mod, "F", SimpleNamespace(cross_entropy=fake))
    return calls


def test_nan_in_the_first_epoch_is_a_clear_error(easy_set, monkeypatch):
    nan_loss_from(monkeypatch, 2)
    with pytest.raises(TrainingDiverged, match=r"diverged.*NaN/inf in epoch 1.*lower the learning rate") as info:
        run_to_completion(train_source(easy_set, TrainParams(epochs=3, seed=0, **FAST)))
    assert isinstance(info.value, ParameterError)


def test_nan_after_good_epochs_keeps_the_best_weights(easy_set, monkeypatch):
    params = TrainParams(epochs=5, seed=0, **FAST)
    n_train = len(stratified_split(easy_set.labels, params.validation_fraction, params.seed)[0])
    steps_per_epoch = n_train // params.batch_size
    nan_loss_from(monkeypatch, 2 * steps_per_epoch + 1)  # one good step into epoch 3, then NaN
    snapshots = []
    real_deepcopy = train_mod.copy.deepcopy

    def spy(obj):
        snapshots.append(real_deepcopy(obj))
        return snapshots[-1]

    monkeypatch.setattr(train_mod, "copy", SimpleNamespace(deepcopy=spy))
    result = run_to_completion(train_source(easy_set, params))
    assert "NaN" in result.stopped and "epoch 3" in result.stopped
    assert f"epoch {result.best_epoch}" in result.stopped
    assert len(result.history) == 2 and result.best_epoch in (1, 2)
    assert snapshots, "no best state was kept"
    state = result.model.state_dict()
    for k, v in snapshots[-1].items():
        assert torch.equal(state[k], v), k
        if v.is_floating_point():
            assert torch.isfinite(v).all()


def test_huge_learning_rate_is_a_clear_error(easy_set):
    """A learning rate of 1e6 blows the weights up to NaN within epoch 1: refused, not returned.

    (The last step of an epoch can leave NaN weights behind a finite loss; such an epoch must
    not become the "best" one.)
    """
    with pytest.raises(TrainingDiverged, match=r"epoch 1 .*lower the learning rate \(now 1e\+06\)"):
        run_to_completion(train_source(easy_set, TrainParams(epochs=2, seed=0, **{**FAST, "learning_rate": 1e6})))
