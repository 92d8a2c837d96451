"""MLUDA (Zeng et al. 2021): margin losses + CORAL for open-set adaptation of subtomograms.

Loss per round, on one source batch (labelled, with decoy ``unknown`` samples) and one target
batch (unlabelled picks), each forwarded on its own, so BatchNorm normalises each domain with
its own statistics (domain-specific BatchNorm; at the end the source statistics serve the
centres and the threshold, the target statistics the predictions — AdaBN)::

    L = CE(source) + λ1 · (L_d + L_c) + λ2 · CORAL(source, target)

Geometry — all metric terms live on **L2-normalised features** φ = h/‖h‖ (unit sphere), so
the margins have fixed units (chord distances, 0…2) whatever the encoder's feature scale:

- L_d = pull: mean max(0, ‖φ − c_y‖² − m1²) over *known* source samples (``empty`` is a known
  class), centres fixed in this term; **plus** separation: mean over class pairs of
  max(0, m2² − ‖μ_i − μ_j‖²) on the *batch class means* μ (differentiable — with the
  non-gradient centres of eq. 3–4 this term would give the encoder no gradient).
- L_c: mean max(0, m3² − min_j ‖φ − c_j‖²) over the **source samples labelled ``unknown``**:
  the simulator's procedural decoys (and any extra templates the user marked "other", which
  are simulated into the same class). Target picks never feed L_c (no labels), nor do empty
  boxes (a known class).
- CORAL: ‖Cov(√d·φ_s) − Cov(√d·φ_t)‖²_F / (4d²), source batch vs. target batch; the √d makes
  each coordinate unit-scale so the term is O(1) like the others.
- Centres c_j: initialised as class means of the source model's features, updated after every
  round by eq. 3–4 with rate γ (no gradient).

Margins and weights (not published by the paper; ours): m1 = 0.35 (class radius), m2 = 1.0
(centre separation; the paper's "m1 > m2" is a typo — classes of radius m1 only stay apart if
m2 > 2·m1), m3 = 0.8 (unknowns outside every class radius with room to spare: m1 < m3 < m2),
λ1 = 1, λ2 = 0.5 (λ2 < λ1 as in the paper), γ = 0.5. They are checked in
:class:`~.common.AdaptParams`.

Open set: unknown score = distance of φ to the nearest centre (recomputed on the source
training split after adaptation); threshold calibrated on source validation known vs. decoys;
the class is the nearest centre's (:mod:`.result`).

The rounds run in :func:`.loop.run_rounds`; :class:`MludaRounds` is this method's part.

Setting λ1 = 0 gives Deep CORAL; λ2 = 0 gives margin/centre-loss fine-tuning on the source
only — the baselines of ``benchmarks/bench_adaptation.py`` use exactly this code.
"""

from __future__ import annotations

import copy
from collections.abc import Generator

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import ModelBundle
from ..device import autocast
from ..models import prepare_batch, to_device
from ..progress import Progress
from .common import AdaptParams
from .losses import (
    batch_class_means,
    centre_pull_loss,
    centre_separation_loss,
    coral_loss,
    unknown_margin_loss,
    update_centres,
)
from .loop import Batches, LabelledTargets, Rounds, adapt_batchnorm, histogram_entropy, run_rounds
from .result import AdaptResult, encode, finish_open_set
from .source import SourceData


#: Temperature of the prototype cross-entropy on curated picks (squared chord distances, 0 … 4).
PROTOTYPE_TEMPERATURE = 0.1


class MludaRounds(Rounds):
    """MLUDA's round: one source and one target batch, the loss above, then the centre update."""

    def __init__(self, bundle: ModelBundle, source: SourceData, target: torch.Tensor, params: AdaptParams,
                 device: torch.device, labelled: LabelledTargets | None = None) -> None:
        self.params, self.target, self.device = params, target, device
        self.labelled = labelled
        self.use_amp = params.amp and device.type == "cuda"
        self.model = model = to_device(copy.deepcopy(bundle.model), device)
        self.known = known = source.known_labels
        self.unknown_label = source.unknown_label
        k_index = {c: i for i, c in enumerate(known)}  # class label → centre row
        remap = torch.full((len(source.class_names),), -1, dtype=torch.long)
        for c, i in k_index.items():
            remap[c] = i
        self.remap = remap.to(device)
        tr_known, _ = source.split_known_unknown(source.train_idx)
        phi = F.normalize(encode(model.encoder, source.x[torch.from_numpy(tr_known)], device), dim=1)
        y_known = source.y[torch.from_numpy(tr_known)]
        centres = torch.stack([phi[y_known == c].mean(0) if bool((y_known == c).any()) else torch.zeros(phi.shape[1])
                               for c in known]).to(device)
        self.centres = F.normalize(centres, dim=1)
        self.sqrt_d = float(phi.shape[1]) ** 0.5
        self.optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
        self.n_classes = len(source.class_names)
        model.train()

    def step(self, batches: Batches) -> dict[str, float] | None:
        p, device, model, centres = self.params, self.device, self.model, self.centres
        xs, ys = batches.source()
        ys = ys.to(device)
        xt = batches.target()
        xl, yl = self.labelled.batch() if self.labelled is not None else (None, None)
        n_t = len(xt)
        with autocast(device, self.use_amp):
            h_s = model.embed(prepare_batch(xs, device)).float()
            # the labelled picks are target picks: one forward with the target batch (target BatchNorm statistics)
            h_t = model.embed(prepare_batch(xt if xl is None else torch.cat([xt, xl]), device)).float()
            logits = model.classify(h_s).float()
        h_t, h_l = h_t[:n_t], h_t[n_t:]
        phi_s, phi_t = F.normalize(h_s, dim=1), F.normalize(h_t, dim=1)
        ce = F.cross_entropy(logits, ys)
        yk = self.remap[ys]
        is_known = yk >= 0
        zero = phi_s.sum() * 0.0
        pull = centre_pull_loss(phi_s[is_known], yk[is_known], centres, p.m1) if bool(is_known.any()) else zero
        means, present = batch_class_means(phi_s[is_known], yk[is_known], len(self.known))
        sep = centre_separation_loss(means[present], p.m2) if int(present.sum()) > 1 else zero
        unknown_label = self.unknown_label
        is_unk = ys == unknown_label if unknown_label is not None else torch.zeros_like(ys, dtype=torch.bool)
        unk = (unknown_margin_loss(phi_s[is_unk], centres, p.m3)
               if p.unknown_margin and bool(is_unk.any()) else zero)
        coral = coral_loss(self.sqrt_d * phi_s, self.sqrt_d * phi_t) if p.lambda2 > 0 else zero
        loss = ce + p.lambda1 * (pull + sep + unk) + p.lambda2 * coral
        labelled = self._labelled_loss(h_l, yl) if xl is not None else None
        if labelled is not None:
            loss = loss + p.label_weight * labelled[0]
        if not torch.isfinite(loss):
            return None
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        with torch.no_grad():
            update_centres(centres, phi_s[is_known].detach(), yk[is_known], p.gamma)
            self.centres = F.normalize(centres, dim=1)
        parts = {"loss": loss, "ce": ce, "pull": pull, "separation": sep, "unknown_margin": unk, "coral": coral}
        if labelled is not None:
            parts.update(labelled_ce=labelled[1], labelled_margin=labelled[2])
        return {k: float(v.detach()) for k, v in parts.items()}

    def _labelled_loss(self, h_l: torch.Tensor, y_l: torch.Tensor):
        """The curated picks' loss (refinement, :mod:`.refine`), on top of the label-free ones.

        MLUDA calls a pick by its nearest centre, so the labels are taught in that geometry:
        cross-entropy of the classifier (it gives the confidences) **plus** a prototype
        cross-entropy over the centres, logits −‖φ − c_j‖² / :data:`PROTOTYPE_TEMPERATURE` (the
        curated class becomes the nearest centre); then, weighted by λ1, known labels are pulled
        onto their centre (mean ‖φ − c_y‖², no margin: the calibrated threshold lies well inside
        m1) and ``unknown`` labels pushed beyond m3 from every centre (L_c on target features).

        Returns (the total, the two cross-entropies, the geometric terms)."""
        p, device = self.params, self.device
        y_l = y_l.to(device)
        phi_l = F.normalize(h_l, dim=1)
        zero = phi_l.sum() * 0.0
        has_ce = y_l >= 0
        ce = F.cross_entropy(self.model.classify(h_l[has_ce]).float(), y_l[has_ce]) if bool(has_ce.any()) else zero
        is_unk = self.labelled.is_unknown(y_l)
        yk = self.remap[y_l.clamp_min(0)]
        is_known = ~is_unk & (yk >= 0)
        pull = proto = zero
        if bool(is_known.any()):
            d2 = torch.cdist(phi_l[is_known], self.centres).pow(2)
            proto = F.cross_entropy(-d2 / PROTOTYPE_TEMPERATURE, yk[is_known])
            pull = d2.gather(1, yk[is_known][:, None]).mean()
        unk = (unknown_margin_loss(phi_l[is_unk], self.centres, p.m3)
               if p.unknown_margin and bool(is_unk.any()) else zero)
        margin = pull + unk
        return ce + proto + p.lambda1 * margin, ce + proto, margin

    def check(self) -> dict:
        p, n_classes, unknown_label = self.params, self.n_classes, self.unknown_label
        ht = F.normalize(encode(self.model.encoder, self.target, self.device), dim=1)
        d = torch.cdist(ht, self.centres.cpu())
        nearest = d.min(1)
        far = nearest.values > 0.5 * (p.m1 + p.m3)
        far_label = unknown_label if unknown_label is not None else n_classes
        pred = np.where(far.numpy(), far_label, np.asarray(self.known)[nearest.indices.numpy()])
        return {"target_unknown_fraction": float(far.float().mean()),
                "entropy": histogram_entropy(pred, n_classes + 1),
                "histogram": np.bincount(pred, minlength=n_classes + 1)[:n_classes].tolist()}  # far → unknown

    def snapshot(self):
        return copy.deepcopy(self.model.state_dict()), self.centres.clone()

    def restore(self, state) -> None:
        self.model.load_state_dict(state[0])
        self.centres = state[1]

    def message(self, metrics: dict) -> str:
        return f"loss {metrics['loss']:.3f}"


def adapt_mluda(bundle: ModelBundle, source: SourceData, target: torch.Tensor, params: AdaptParams,
                predict_on=None, labelled: LabelledTargets | None = None) -> Generator[Progress, None, AdaptResult]:
    """Fine-tune ``bundle``'s network on source + target boxes with the MLUDA loss.

    ``predict_on``: the boxes the result predicts (default ``target``; e.g. every pick when
    ``target`` is a subset of them). ``labelled``: the user's curated target picks
    (:mod:`.refine`), whose loss is added to every round (``label_weight``).
    """
    run = yield from run_rounds("MLUDA", source, target, params,
                                lambda device, batch: MludaRounds(bundle, source, target, params, device, labelled))
    model = run.rounds.model
    # domain-specific BatchNorm statistics: source features (centres, threshold) with source
    # statistics, target predictions with target statistics — as in training, where each
    # domain's batch is normalised by its own statistics
    source_encoder = copy.deepcopy(model.encoder)
    keep = source.train_idx[np.random.default_rng(params.seed).permutation(len(source.train_idx))[:2048]]
    adapt_batchnorm(source_encoder, source.x[torch.from_numpy(np.sort(keep))], run.device)
    adapt_batchnorm(model.encoder, target, run.device)
    model.eval()
    result = yield from finish_open_set(
        bundle, model, source, target, params, run.device, reference_encoder=source_encoder, history=run.history,
        stopped=run.stopped, t0=run.t0, classify="nearest", normalize=True, predict_on=predict_on,
    )
    return result
