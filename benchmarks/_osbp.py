"""OSBP-style open-set baseline for ``bench_openset.py`` (Saito et al., ECCV 2018), benchmark-only.

Open Set Back-Propagation trains a K+1-way classifier (the +1 is ``unknown``) and makes the
feature extractor and the classifier play a game on the *target* boxes:

- the classifier is trained to put probability ``t`` = 0.5 on ``unknown`` for every target box,
  ``L_adv = −t·log p_unk − (1 − t)·log(1 − p_unk)``;
- the encoder, through a gradient-reversal layer, *maximises* the same loss, i.e. pushes each
  target box either towards the known classes (p_unk → 0) or towards unknown (p_unk → 1).

Adjustments to our setting ("style"): the source already contains labelled unknowns (decoys and
the "other" structures), so the source term is the cross-entropy over all K+1 outputs rather
than over the K known ones; Adam (lr 1e-4, the MLUDA rate) instead of SGD; the same augmentation,
batch sampler and domain-specific BatchNorm statistics as MLUDA, so the rows differ only in the
loss. Decision: the arg-max of the K+1 softmax (no threshold to calibrate); unknown score =
p_unk (its AUROC column).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from napari_cryo_openset.adapt.loop import adapt_batchnorm, check_target
from napari_cryo_openset.adapt.source import BatchSampler
from napari_cryo_openset.adapt.result import encode
from napari_cryo_openset.models import prepare_batch
from napari_cryo_openset.train import augment_batch


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def adapt_osbp(bundle, source, target: torch.Tensor, iterations: int = 200, batch_size: int = 32,
               learning_rate: float = 1e-4, t: float = 0.5, seed: int = 0):
    """Fine-tune a copy of ``bundle.model`` with OSBP; predictions on ``target`` (N, 1, B, B, B)."""
    if source.unknown_label is None:
        raise ValueError("OSBP needs a K+1 model (a source set with 'unknown' samples)")
    device = torch.device("cpu")
    batch = check_target(len(target), batch_size)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(bundle.model).to(device)
    unk = source.unknown_label
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    sampler_s = BatchSampler(source.train_idx, batch, rng)
    sampler_t = BatchSampler(np.arange(len(target)), batch, rng)
    model.train()
    for _ in range(iterations):
        idx = sampler_s()
        xs = prepare_batch(augment_batch(source.x[torch.from_numpy(idx)], gen, False, 1), device)
        xt = prepare_batch(augment_batch(target[torch.from_numpy(sampler_t())], gen, False, 1), device)
        ce = F.cross_entropy(model.classify(model.embed(xs)), source.y[torch.from_numpy(idx)])
        p_unk = F.softmax(model.classify(_GradReverse.apply(model.embed(xt))), dim=1)[:, unk].clamp(1e-6, 1 - 1e-6)
        adv = -(t * torch.log(p_unk) + (1 - t) * torch.log(1 - p_unk)).mean()
        opt.zero_grad(set_to_none=True)
        (ce + adv).backward()
        opt.step()
    adapt_batchnorm(model.encoder, target, device)  # target statistics for target predictions
    model.eval()
    with torch.no_grad():
        prob = F.softmax(model.head(encode(model.encoder, target, device)), dim=1).numpy()
    names = np.asarray(bundle.class_names, dtype=object)
    return SimpleNamespace(class_name=names[prob.argmax(1)], unknown_score=prob[:, unk], probabilities=prob)
