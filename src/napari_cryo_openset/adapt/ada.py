"""3D-ADA (Lin et al. 2019): adversarial discriminative domain adaptation (ADDA) for subtomograms.

Stage 1 is source training (:mod:`napari_cryo_openset.train`): encoder F_s + classifier C.
Stage 2 (:func:`adapt_ada`) — unlike the public reference code:

- F_t is an **independent copy** of F_s (deep copy; the reference's Chainer ``copy()`` shared
  the arrays, so its source encoder moved too). F_s stays frozen **in eval mode** (no dropout,
  fixed BatchNorm statistics); C is frozen.
- Alternating updates, ``k`` target steps per discriminator step:
  D step: minimise ``−log(1 − D(F_s x_s)) − log D(F_t x_t)`` (source 0, target 1);
  F_t step: minimise ``−log(1 − D(F_t x_t))`` (inverted labels: make target look like source),
  with D's output **recomputed** after the D step. Adam (lr ``learning_rate`` = 1e-5 as in the
  reference, β = (0.5, 0.999)) for both.
- F_t starts with **target BatchNorm statistics** (AdaBN, Li et al. 2016: running means and
  variances recomputed on all target picks) — an addition to the paper, whose encoder has no
  BatchNorm; on the defocus-shift benchmark it is most of the gain (see the README tables,
  where "AdaBN only" is its own row). F_t then trains in train mode (batch statistics), and
  its running statistics are **recomputed exactly on all target picks** at every check and at
  the end: the exponential moving average that train mode leaves behind follows the last few
  augmented batches and, measured on the benchmark (0.1 → 0.1, seed 0), swings target accuracy
  between 0.48 and 0.59 from one check to the next, against 0.58–0.64 with exact statistics.
  Predictions are ``C(F_t(x_t))`` in eval mode.
- Diagnostics every ``eval_every`` rounds (yielded as progress metrics): discriminator accuracy
  (healthy ≈ 0.5–0.7), losses, and the predicted-class histogram of all target picks.
- **Collapse guard without target labels**: if the entropy of that histogram falls below
  ``collapse_fraction`` × the source-only model's, the run stops and the last healthy weights
  are restored (reported). Iterations are bounded. A NaN/inf loss stops the run and restores
  the last good weights (reported).
- **Label-free stop rule**: ADDA's goal is a discriminator at chance. When D's accuracy,
  averaged between checks, is ≤ ``aligned_d_acc`` (0.55) for ``aligned_patience`` (2) checks in
  a row, the domains are aligned and the run stops: on our benchmarks further adversarial
  rounds against a chance-level D only added noise to F_t and lowered target accuracy on the first
  (40 boxes per class) benchmark. On the current grid the pytorch-adapt ADDA peer, which has no
  such stop and steps F_t only while D is strong, does better in 5 of 6 cells (README): this rule
  is the first thing to revisit.

Open set: the unknown score of a pick is the Euclidean distance of F_t(x) to the nearest known
class centre (centres = class means of F_s features of the source training split); the
threshold is calibrated on the source validation split (F_s features; known vs. decoy
``unknown`` samples, :func:`.common.calibrate_open_set`). The class is C's arg-max (``unknown``
if that is the decoy output or the distance exceeds the threshold); the confidence is the
temperature-scaled softmax (T fitted on source validation logits).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Generator

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import ModelBundle
from ..device import autocast, describe
from ..models import DomainDiscriminator, prepare_batch, to_device
from ..progress import Progress
from ..train import augment_batch
from .common import (
    AdaptParams,
    BatchSampler,
    SourceData,
    adapt_batchnorm,
    histogram_entropy,
    start_run,
)
from .result import AdaptResult, encode, finish_open_set


def adapt_ada(bundle: ModelBundle, source: SourceData, target: torch.Tensor, params: AdaptParams,
              ) -> Generator[Progress, None, AdaptResult]:
    """Adapt ``bundle``'s encoder to ``target`` boxes (N, 1, B, B, B) with 3D-ADA."""
    t0 = time.perf_counter()
    device, batch, rng, gen = start_run(params, len(target))

    model = copy.deepcopy(bundle.model)
    source_encoder = to_device(copy.deepcopy(bundle.model.encoder), device).eval()
    for p in source_encoder.parameters():
        p.requires_grad_(False)
    head = to_device(model.head, device).eval()
    for p in head.parameters():
        p.requires_grad_(False)
    target_encoder = to_device(model.encoder, device)  # independent copy (deepcopy above)
    disc = to_device(DomainDiscriminator(source_encoder.out_dim, params.discriminator_hidden), device)
    opt_d = torch.optim.Adam(disc.parameters(), lr=params.learning_rate, betas=(0.5, 0.999))
    opt_t = torch.optim.Adam(target_encoder.parameters(), lr=params.learning_rate, betas=(0.5, 0.999))
    use_amp = params.amp and device.type == "cuda"
    n_classes = len(bundle.class_names)

    yield Progress("adapt", 0, params.iterations, f"3D-ADA on {len(target)} picks, {describe(device)}")
    with torch.no_grad():
        base_pred = head(encode(source_encoder, target, device).to(device)).argmax(1).cpu().numpy()
    base_entropy = histogram_entropy(base_pred, n_classes)
    adabn = adapt_batchnorm(target_encoder, target, device)
    healthy = copy.deepcopy(target_encoder.state_dict())
    healthy_d = copy.deepcopy(disc.state_dict())  # D too: a NaN step poisons it as well
    src_sampler = BatchSampler(source.train_idx, batch, rng)
    tgt_sampler = BatchSampler(np.arange(len(target)), batch, rng)
    history: list[dict] = []
    stopped = "completed"
    ones = torch.ones(batch, device=device)
    zeros = torch.zeros(batch, device=device)

    def batch_of(x, idx):
        xb = x[torch.from_numpy(idx)]
        if params.augment:
            xb = augment_batch(xb, gen, False, 1)
        return prepare_batch(xb, device)

    window = {"loss_d": 0.0, "loss_t": 0.0, "d_acc": 0.0, "n": 0}
    aligned = 0
    for it in range(1, params.iterations + 1):
        xs = batch_of(source.x, src_sampler())
        xt = batch_of(target, tgt_sampler())
        nb_s, nb_t = len(xs), len(xt)
        # --- discriminator step
        with torch.no_grad(), autocast(device, use_amp):
            hs = source_encoder(xs)
            ht = target_encoder(xt)
        with autocast(device, use_amp):
            ds, dt = disc(hs.float()), disc(ht.float())
            loss_d = F.binary_cross_entropy_with_logits(ds.float(), zeros[:nb_s]) + \
                F.binary_cross_entropy_with_logits(dt.float(), ones[:nb_t])
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d_acc = 0.5 * (float((ds < 0).float().mean()) + float((dt > 0).float().mean()))
        # --- target encoder steps (inverted labels, D recomputed)
        for j in range(params.k):
            xt_j = xt if j == 0 else batch_of(target, tgt_sampler())
            with autocast(device, use_amp):
                loss_t = F.binary_cross_entropy_with_logits(disc(target_encoder(xt_j).float()).float(),
                                                            zeros[:len(xt_j)])
            opt_t.zero_grad(set_to_none=True)
            loss_t.backward()
            opt_t.step()
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_t)):
            target_encoder.load_state_dict(healthy)
            disc.load_state_dict(healthy_d)
            stopped = f"stopped at round {it}: a loss became NaN/inf; restored the last good weights"
            break
        window["loss_d"] += float(loss_d.detach())
        window["loss_t"] += float(loss_t.detach())
        window["d_acc"] += d_acc
        window["n"] += 1
        metrics = {"iteration": it, "loss_d": float(loss_d.detach()), "loss_t": float(loss_t.detach()), "d_acc": d_acc}
        if it % params.eval_every == 0 or it == params.iterations:
            adapt_batchnorm(target_encoder, target, device)  # exact target statistics, not the EMA
            h = encode(target_encoder, target, device)
            with torch.no_grad():
                pred = head(h.to(device)).argmax(1).cpu().numpy()
            ent = histogram_entropy(pred, n_classes)
            n = max(window["n"], 1)
            record = {"iteration": it, "loss_d": window["loss_d"] / n, "loss_t": window["loss_t"] / n,
                      "d_acc": window["d_acc"] / n, "entropy": ent, "entropy_source_only": base_entropy,
                      "histogram": np.bincount(pred, minlength=n_classes).tolist(),
                      "seconds": time.perf_counter() - t0}
            history.append(record)
            metrics.update(record)
            window = {"loss_d": 0.0, "loss_t": 0.0, "d_acc": 0.0, "n": 0}
            if base_entropy > 0 and ent < params.collapse_fraction * base_entropy:
                target_encoder.load_state_dict(healthy)
                disc.load_state_dict(healthy_d)
                stopped = (f"stopped at round {it}: predictions collapsed (class-histogram entropy {ent:.2f} < "
                           f"{params.collapse_fraction:g} × {base_entropy:.2f} of the source-only model); "
                           "restored the last healthy weights")
                yield Progress("adapt", it, params.iterations, stopped, metrics)
                break
            healthy = copy.deepcopy(target_encoder.state_dict())
            healthy_d = copy.deepcopy(disc.state_dict())
            aligned = aligned + 1 if record["d_acc"] <= params.aligned_d_acc else 0
            if params.aligned_patience and aligned >= params.aligned_patience:
                stopped = (f"stopped at round {it}: domains aligned (discriminator accuracy ≤ {params.aligned_d_acc:g} "
                           f"for {aligned} checks in a row)")
                yield Progress("adapt", it, params.iterations, stopped, metrics)
                break
        yield Progress("adapt", it, params.iterations,
                       f"round {it}/{params.iterations}: D acc {metrics['d_acc']:.2f}", metrics)

    if stopped == "completed" or "aligned" in stopped:
        adapt_batchnorm(target_encoder, target, device)  # the restored weights already carry exact ones
    target_encoder.eval()
    model.encoder = target_encoder
    model.head = head
    result = yield from finish_open_set(
        bundle, model, source, target, params, device,
        reference_encoder=source_encoder, discriminator=disc, history=history, stopped=stopped, t0=t0,
        classify="argmax", extra={"adabn": adabn},
    )
    return result

