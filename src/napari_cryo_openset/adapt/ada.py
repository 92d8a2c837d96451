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
  BatchNorm; on the defocus-shift benchmark it is most of the gain (``benchmarks/bench_adaptation.py``
  reports "AdaBN only" as its own row). F_t then trains in train mode (batch statistics), and
  its running statistics are **recomputed exactly on all target picks** at every check and at
  the end: the exponential moving average that train mode leaves behind follows the last few
  augmented batches, so target accuracy measured with it swings from one check to the next,
  while exact statistics hold it steady.
  Predictions are ``C(F_t(x_t))`` in eval mode.
- Diagnostics every ``eval_every`` rounds (yielded as progress metrics): discriminator accuracy
  (near chance when the domains are aligned), losses, and the predicted-class histogram of all target picks.
- **Collapse guard without target labels**: if the entropy of that histogram falls below
  ``collapse_fraction`` × the source-only model's, the run stops and the last healthy weights
  are restored (reported). Iterations are bounded. A NaN/inf loss stops the run and restores
  the last good weights (reported).
- **Label-free stop rule**: ADDA's goal is a discriminator at chance. When D's accuracy,
  averaged between checks, is ≤ ``aligned_d_acc`` for ``aligned_patience`` checks in a row, the
  domains are aligned and the run stops: on our benchmarks further adversarial rounds against a
  chance-level D only added noise to F_t and lowered target accuracy. The pytorch-adapt ADDA
  peer in ``benchmarks/bench_adaptation.py``, which has no such stop and steps F_t only while D
  is strong, does better on most of its grid: this rule is the first thing to revisit.
- The rounds run in :func:`.loop.run_rounds` (batches, history, stop rules, restoring the last
  healthy weights); :class:`AdaRounds` is this method's part.

Open set: the unknown score of a pick is the Euclidean distance of F_t(x) to the nearest known
class centre (centres = class means of F_s features of the source training split); the
threshold is calibrated on the source validation split (F_s features; known vs. decoy
``unknown`` samples, :func:`.calibrate.calibrate_open_set`). The class is C's arg-max (``unknown``
if that is the decoy output or the distance exceeds the threshold); the confidence is the
temperature-scaled softmax (T fitted on source validation logits).
"""

from __future__ import annotations

import copy
from collections.abc import Generator

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import ModelBundle
from ..device import autocast
from ..models import DomainDiscriminator, prepare_batch, to_device
from ..progress import Progress
from .common import AdaptParams
from .loop import Batches, LabelledTargets, Rounds, adapt_batchnorm, histogram_entropy, run_rounds
from .result import AdaptResult, encode, finish_open_set
from .source import SourceData


class AdaRounds(Rounds):
    """3D-ADA's round: a discriminator step, then ``k`` target-encoder steps (inverted labels)."""

    def __init__(self, bundle: ModelBundle, target: torch.Tensor, params: AdaptParams, device: torch.device,
                 batch: int, labelled: LabelledTargets | None = None) -> None:
        self.params, self.target, self.device = params, target, device
        self.labelled = labelled
        self.model = copy.deepcopy(bundle.model)
        self.source_encoder = to_device(copy.deepcopy(bundle.model.encoder), device).eval()
        for p in self.source_encoder.parameters():
            p.requires_grad_(False)
        self.head = to_device(self.model.head, device).eval()
        for p in self.head.parameters():
            p.requires_grad_(False)
        self.target_encoder = to_device(self.model.encoder, device)  # independent copy (deepcopy above)
        self.disc = to_device(DomainDiscriminator(self.source_encoder.out_dim, params.discriminator_hidden), device)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=params.learning_rate, betas=(0.5, 0.999))
        self.opt_t = torch.optim.Adam(self.target_encoder.parameters(), lr=params.learning_rate, betas=(0.5, 0.999))
        self.use_amp = params.amp and device.type == "cuda"
        self.n_classes = len(bundle.class_names)
        with torch.no_grad():
            base_pred = self.head(encode(self.source_encoder, target, device).to(device)).argmax(1).cpu().numpy()
        self.base_entropy = histogram_entropy(base_pred, self.n_classes)
        self.adabn = adapt_batchnorm(self.target_encoder, target, device)
        self.ones = torch.ones(batch, device=device)
        self.zeros = torch.zeros(batch, device=device)
        self.aligned = 0

    def step(self, batches: Batches) -> dict[str, float]:
        device, use_amp, disc, target_encoder = self.device, self.use_amp, self.disc, self.target_encoder
        xs = prepare_batch(batches.source()[0], device)
        xt = prepare_batch(batches.target(), device)
        nb_s, nb_t = len(xs), len(xt)
        # --- discriminator step
        with torch.no_grad(), autocast(device, use_amp):
            hs = self.source_encoder(xs)
            ht = target_encoder(xt)
        with autocast(device, use_amp):
            ds, dt = disc(hs.float()), disc(ht.float())
            loss_d = F.binary_cross_entropy_with_logits(ds.float(), self.zeros[:nb_s]) + \
                F.binary_cross_entropy_with_logits(dt.float(), self.ones[:nb_t])
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        d_acc = 0.5 * (float((ds < 0).float().mean()) + float((dt > 0).float().mean()))
        # --- target encoder steps (inverted labels, D recomputed); the curated picks' cross-entropy
        # through the frozen classifier rides on the first (refinement, :mod:`.refine`)
        labelled = self.labelled.batch() if self.labelled is not None else None
        ce_l = None
        for j in range(self.params.k):
            xt_j = xt if j == 0 else prepare_batch(batches.target(), device)
            n_j = len(xt_j)
            x_in = xt_j if labelled is None or j else torch.cat([xt_j, prepare_batch(labelled[0], device)])
            with autocast(device, use_amp):
                h_j = target_encoder(x_in).float()
                loss_t = F.binary_cross_entropy_with_logits(disc(h_j[:n_j]).float(), self.zeros[:n_j])
                loss = loss_t
                if labelled is not None and j == 0:
                    y_l = labelled[1].to(device)
                    has_ce = y_l >= 0
                    if bool(has_ce.any()):
                        ce_l = F.cross_entropy(self.head(h_j[n_j:][has_ce]).float(), y_l[has_ce])
                        loss = loss_t + self.params.label_weight * ce_l
            self.opt_t.zero_grad(set_to_none=True)
            loss.backward()  # a NaN/inf shows in the returned losses: run_rounds restores the last good weights
            self.opt_t.step()
        out = {"loss_d": float(loss_d.detach()), "loss_t": float(loss_t.detach()), "d_acc": d_acc}
        if ce_l is not None:
            out["labelled_ce"] = float(ce_l.detach())
        return out

    def check(self) -> dict:
        adapt_batchnorm(self.target_encoder, self.target, self.device)  # exact target statistics, not the EMA
        h = encode(self.target_encoder, self.target, self.device)
        with torch.no_grad():
            pred = self.head(h.to(self.device)).argmax(1).cpu().numpy()
        return {"entropy": histogram_entropy(pred, self.n_classes), "entropy_source_only": self.base_entropy,
                "histogram": np.bincount(pred, minlength=self.n_classes).tolist()}

    def snapshot(self):
        # D too: a NaN step poisons it as well
        return copy.deepcopy(self.target_encoder.state_dict()), copy.deepcopy(self.disc.state_dict())

    def restore(self, state) -> None:
        self.target_encoder.load_state_dict(state[0])
        self.disc.load_state_dict(state[1])

    def unhealthy(self, record: dict) -> str | None:
        ent, base, fraction = record["entropy"], self.base_entropy, self.params.collapse_fraction
        if base > 0 and ent < fraction * base:
            return (f"predictions collapsed (class-histogram entropy {ent:.2f} < {fraction:g} × {base:.2f} "
                    "of the source-only model)")
        return None

    def converged(self, record: dict) -> str | None:
        p = self.params
        self.aligned = self.aligned + 1 if record["d_acc"] <= p.aligned_d_acc else 0
        if p.aligned_patience and self.aligned >= p.aligned_patience:
            return f"domains aligned (discriminator accuracy ≤ {p.aligned_d_acc:g} for {self.aligned} checks in a row)"
        return None

    def message(self, metrics: dict) -> str:
        return f"D acc {metrics['d_acc']:.2f}"


def adapt_ada(bundle: ModelBundle, source: SourceData, target: torch.Tensor, params: AdaptParams,
              predict_on=None, labelled: LabelledTargets | None = None) -> Generator[Progress, None, AdaptResult]:
    """Adapt ``bundle``'s encoder to ``target`` boxes (N, 1, B, B, B) with 3D-ADA.

    ``predict_on``: the boxes the result predicts (default ``target``; e.g. every pick when
    ``target`` is a subset of them). ``labelled``: the user's curated target picks (:mod:`.refine`),
    whose cross-entropy through the frozen classifier joins the target-encoder step (``label_weight``).
    """
    run = yield from run_rounds("3D-ADA", source, target, params,
                                lambda device, batch: AdaRounds(bundle, target, params, device, batch, labelled))
    ada = run.rounds
    if not run.restored:
        adapt_batchnorm(ada.target_encoder, target, run.device)  # the restored weights already carry exact ones
    ada.target_encoder.eval()
    ada.model.encoder = ada.target_encoder
    ada.model.head = ada.head
    result = yield from finish_open_set(
        bundle, ada.model, source, target, params, run.device,
        reference_encoder=ada.source_encoder, discriminator=ada.disc, history=run.history, stopped=run.stopped,
        t0=run.t0, classify="argmax", extra={"adabn": ada.adabn}, predict_on=predict_on,
    )
    return result
