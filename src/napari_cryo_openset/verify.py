"""Template verification: every pick's call checked against the known templates (core, no Qt).

The network alone is a weak judge of "is this one of my structures?" on a crowded tomogram: its
embedding distances and softmax were learnt on simulated boxes, and after adaptation the
unknown score barely separates known from unknown particles (``benchmarks/bench_run.py``:
AUROC ≈ 0.5 for the adapted centre distance). What biologists trust — template matching — is
the missing half. This stage combines the two:

1. **A template bank.** Every known template, at ``n_rotations`` orientations drawn uniformly on
   SO(3) (seeded), passed through the run's imaging model (the resolved condition at the working
   voxel size: CTF at the mean defocus, the tilt range's missing wedge, weighted back-projection;
   no noise), brought to the canonical polarity (protein positive), binned by ``bin`` and
   normalised inside a spherical mask. ``bin`` defaults to the smallest factor that keeps the
   binned box at most :data:`MAX_BANK_EDGE` voxels (24³ boxes: no binning). Measured on grid
   cell A (seed 1, told) of ``benchmarks/bench_run.py``: binning the 24³ boxes by 2 (the
   earlier default) drops the closed-set accuracy of the known picks from 0.83 to 0.70 and
   HOS from 0.66 to 0.59 — the structures of 120–190 Å are 3–5 binned voxels across.
2. **Correlations.** Each pick box (canonical, the run's working box) is correlated with every
   bank entry (normalised cross-correlation inside the mask, Z Y X centre offsets of
   ±``shift`` binned voxels); a pick's correlation with a template is the best over rotations
   and offsets: an (N, K) matrix.
3. **Fusion.** The posterior over the known classes is ``softmax(log p + c / T)``: the
   network's probabilities ``p`` (renormalised over the known classes) times a correlation
   likelihood ``exp(c / T)``. The temperature ``T`` is fitted on the **source** validation
   boxes (maximum likelihood of their true classes), never on the target.
4. **Unknown score.** ``z(−c_class)`` (rule ``correlation``, default): the (negated)
   correlation with the chosen class, standardised by the source validation boxes of the known
   classes; rule ``entropy+correlation`` adds the standardised entropy of the fused posterior,
   ``z(H(q))`` (the earlier default: on the end-to-end grid the entropy adds little beyond the
   correlation and rejects confidently fused known picks — ``benchmarks/bench_run.py`` scores
   both rules on the same cells, row "MLUDA + templates, H+c score"). The threshold is calibrated on the
   source validation boxes (known classes vs. decoys, Youden's J:
   :func:`~napari_cryo_openset.openset.calibrate_threshold`; a floor that never rejects more
   than 20 % of the source knowns was tried and made HOS far worse on the grid — 0.06 instead
   of 0.61 on cell A, seed 0 — because it calls almost nothing unknown), then moved to the target without
   labels by the rule ``anchor`` (default): target picks correlate less with noise-free templates
   than simulated boxes do, so every target score sits higher; the threshold is raised by the
   shift between the target's and the source knowns' scores at the confident end (their
   :data:`ANCHOR_QUANTILE` quantiles — the most template-like quarter of the picks are taken to be
   known particles, which holds while unknowns are fewer than about half of the picks; it is
   never lowered). The other rules are those of
   :func:`~napari_cryo_openset.adapt.transfer.transfer_threshold` (``source``, ``mixture``, ``auto``).

A pick the network calls ``empty`` (no particle) stays ``empty``. ``benchmarks/bench_run.py``
measures the verified calls next to the network's own (rows "… + templates").
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .picks import UNKNOWN_CLASS
from .progress import Progress

EMPTY_CLASS = "empty"
#: Temperatures tried when fitting the fusion on the source validation boxes.
TEMPERATURES = (0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)
#: Quantile of the unknown scores at which target and source knowns are anchored (rule ``anchor``).
ANCHOR_QUANTILE = 0.25
#: Unknown scores (:class:`Standardiser`): the correlation alone (default) or with the fused posterior's entropy.
SCORE_RULES = ("correlation", "entropy+correlation")
#: Rules that move the source threshold to the target (``anchor`` or a transfer_threshold rule).
THRESHOLD_RULES = ("anchor", "source", "mixture", "auto")
#: The bank is binned to at most this box edge (voxels); memory ≈ K · R · edge³ · 4 bytes
#: (16 templates × 300 rotations at 32³: 630 MB).
MAX_BANK_EDGE = 32
#: Bank references correlated per matrix product (bounds memory: rows × references × 4 bytes).
ROWS_PER_BATCH = 256


def _masked_unit(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, b, b, b) → (N, b³): zero mean and unit norm inside ``mask`` (zero outside)."""
    x = x * mask
    x = x - (x.sum(dim=(1, 2, 3), keepdim=True) / mask.sum()) * mask
    x = x.reshape(len(x), -1)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _bin(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.avg_pool3d(x[:, None], factor)[:, 0] if factor > 1 else x


class TemplateBank:
    """Known templates × rotations, imaged like the run's source set (see the module docstring).

    ``templates``: :class:`~napari_cryo_openset.simulate.Template` at the working voxel size;
    ``condition``: the :class:`~napari_cryo_openset.params.ImagingCondition` simulated (its
    voxel size the working one); ``box``: the working box edge (voxels); ``bin_``: binning of
    the bank and the boxes (None: the smallest that keeps the edge ≤ :data:`MAX_BANK_EDGE`).
    """

    def __init__(self, templates: Sequence, condition, box: int, *, n_rotations: int = 300, bin_: int | None = None,
                 shift: int = 1, seed: int = 0, device: str | torch.device = "cpu"):
        from .extract import normalise_subtomograms
        from .simulate.imaging import image_volumes
        from .simulate.placement import random_rotations, rotate_into_boxes

        t0 = time.perf_counter()
        self.class_names = [str(t.name) for t in templates]
        if bin_ is None:
            bin_ = -(-int(box) // MAX_BANK_EDGE)
        self.box, self.bin, self.shift = int(box), max(1, int(bin_)), max(0, int(shift))
        self.n_rotations = int(n_rotations)
        self.device = torch.device(device)
        b = self.box // self.bin
        r = np.arange(b) - (b - 1) / 2.0
        zz, yy, xx = np.meshgrid(r, r, r, indexing="ij")
        self.mask = torch.from_numpy((np.sqrt(zz**2 + yy**2 + xx**2) <= b / 2.0 - 0.5).astype(np.float32))
        rng = np.random.default_rng([int(seed), 0x7E3])
        size = self.box + 8  # room for the CTF's ringing before the box is cut
        defocus = float(np.mean(condition.defocus_range))
        bank, labels = [], []
        for k, tpl in enumerate(templates):
            rotations = random_rotations(rng, self.n_rotations)
            for a in range(0, self.n_rotations, 64):
                vol = rotate_into_boxes(tpl.density, rotations[a:a + 64], None, (size,) * 3)
                n = len(vol)
                imaged = image_volumes(vol, condition, defocus=[defocus] * n, snr=[1e6] * n,
                                       noise_seeds=list(range(n)), recon_shape=(self.box,) * 3)
                canon = torch.from_numpy(normalise_subtomograms(imaged.numpy(), "dark"))
                bank.append(_masked_unit(_bin(canon, self.bin), self.mask))
                labels.append(np.full(n, k))
        self.bank = torch.cat(bank).to(self.device)  # (K·R, b³)
        self.labels = torch.from_numpy(np.concatenate(labels)).to(self.device)
        self.mask = self.mask.to(self.device)
        self.seconds = time.perf_counter() - t0

    def correlations(self, boxes) -> np.ndarray:
        """(N, K) best normalised cross-correlation of each canonical box with each template.

        ``boxes``: (N, B, B, B) or (N, 1, B, B, B) — an array, a tensor, or a lazy
        :class:`~napari_cryo_openset.boxes.PickBoxes` whose boxes are cut :data:`ROWS_PER_BATCH`
        at a time (memory bounded by a batch, not by N).
        """
        from .boxes import PickBoxes

        x = boxes if isinstance(boxes, PickBoxes) else torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
        shape = tuple(x.shape)
        box_shape = shape[2:] if len(shape) == 5 else shape[1:]
        if box_shape != (self.box,) * 3:
            from .errors import ParameterError

            raise ParameterError(f"template verification: boxes of {tuple(box_shape)} voxels, the bank is "
                                 f"{self.box}³")
        k = len(self.class_names)
        out = np.empty((len(x), k), dtype=np.float32)
        offsets = list(itertools.product(range(-self.shift, self.shift + 1), repeat=3))
        with torch.no_grad():
            for a in range(0, len(x), ROWS_PER_BATCH):
                xb = x[a:a + ROWS_PER_BATCH]
                xb = _bin((xb[:, 0] if xb.ndim == 5 else xb).to(self.device), self.bin)
                best = torch.full((len(xb), k), -2.0, device=self.device)
                for dz, dy, dx in offsets:
                    v = _masked_unit(torch.roll(xb, shifts=(dz, dy, dx), dims=(1, 2, 3)), self.mask)
                    cc = v @ self.bank.T  # (n, K·R)
                    per = torch.full((len(cc), k), -2.0, device=self.device).scatter_reduce(
                        1, self.labels.expand(len(cc), -1), cc, reduce="amax", include_self=True)
                    best = torch.maximum(best, per)
                out[a:a + len(xb)] = best.cpu().numpy()
        return out


def known_probabilities(probabilities: np.ndarray, class_names: Sequence[str], known: Sequence[str]) -> np.ndarray:
    """The network's probabilities of the ``known`` classes (columns in that order), renormalised."""
    idx = [list(class_names).index(k) for k in known]
    p = np.asarray(probabilities, dtype=np.float64)[:, idx]
    return p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)


def fuse(p_known: np.ndarray, correlations: np.ndarray, temperature: float) -> np.ndarray:
    """Posterior over the known classes: ``softmax(log p + c / T)`` (rows sum to 1)."""
    logit = np.log(np.clip(p_known, 1e-6, None)) + np.asarray(correlations, np.float64) / float(temperature)
    logit -= logit.max(axis=1, keepdims=True)
    q = np.exp(logit)
    return q / q.sum(axis=1, keepdims=True)


def fit_temperature(p_known: np.ndarray, correlations: np.ndarray, labels: np.ndarray,
                    temperatures: Sequence[float] = TEMPERATURES) -> tuple[float, dict]:
    """The ``T`` of :func:`fuse` maximising the mean log-likelihood of the true ``labels``
    (column indices) on source boxes; returns (T, {T: mean log-likelihood})."""
    labels = np.asarray(labels, dtype=int)
    rows = np.arange(len(labels))
    ll = {float(t): float(np.mean(np.log(np.clip(fuse(p_known, correlations, t)[rows, labels], 1e-12, None))))
          for t in temperatures}
    return max(ll, key=ll.get), ll


def _entropy(q: np.ndarray) -> np.ndarray:
    return -(q * np.log(np.clip(q, 1e-12, None))).sum(axis=1)


@dataclass
class Standardiser:
    """Standardises the parts of the unknown score by the source known boxes.

    ``rule`` (:data:`SCORE_RULES`): ``correlation`` — z(−c_class) alone; ``entropy+correlation``
    — z(H(q)) + z(−c_class).
    """

    entropy: tuple[float, float]
    correlation: tuple[float, float]
    rule: str = "correlation"

    @classmethod
    def fit(cls, q: np.ndarray, c_class: np.ndarray, rule: str = "correlation") -> Standardiser:
        if rule not in SCORE_RULES:
            raise ValueError(f"unknown score rule {rule!r} (one of {', '.join(SCORE_RULES)})")
        h = _entropy(q)
        return cls((float(h.mean()), float(h.std() or 1.0)), (float(c_class.mean()), float(c_class.std() or 1.0)),
                   rule)

    def score(self, q: np.ndarray, c_class: np.ndarray) -> np.ndarray:
        out = (self.correlation[0] - c_class) / self.correlation[1]
        if self.rule == "entropy+correlation":
            out = out + (_entropy(q) - self.entropy[0]) / self.entropy[1]
        return out

    def to_dict(self) -> dict:
        return {"rule": self.rule, "entropy_mean_sd": list(self.entropy), "correlation_mean_sd": list(self.correlation)}


@dataclass
class Evidence:
    """What a verification decided from (kept in memory so that another rule can re-decide at no cost).

    Source validation boxes (known classes and decoys): ``q_src`` fused posteriors, ``c_class_src``
    correlation with the chosen class, ``is_known`` / ``is_decoy``; the target picks: ``q``,
    ``c_class``, ``empty`` (the network called the pick ``empty``); ``known`` the class names.
    """

    known: list
    q_src: np.ndarray
    c_class_src: np.ndarray
    is_known: np.ndarray
    is_decoy: np.ndarray
    q: np.ndarray
    c_class: np.ndarray
    empty: np.ndarray


@dataclass
class Verification:
    """The verified calls of the target picks (rows of the active picks) and how they were made."""

    class_name: np.ndarray  # str: known class, unknown or empty
    closed_class: np.ndarray  # str: the fused posterior's known class (before unknown/empty calls)
    confidence: np.ndarray  # fused posterior of the chosen class (0..1)
    unknown_score: np.ndarray  # z(−c) [+ z(H)]; higher = more likely unknown
    template_correlation: np.ndarray  # best correlation with the chosen class's template
    threshold: float
    report: dict = field(default_factory=dict)
    source_threshold: float = float("nan")  # the threshold calibrated on the source, before the transfer rule
    bank: TemplateBank | None = None  # the bank used (kept for a second model's verification; not saved)
    evidence: Evidence | None = None  # what it decided from (:func:`decide` re-decides with another rule; not saved)

    @property
    def is_unknown(self) -> np.ndarray:
        return self.class_name == UNKNOWN_CLASS

    def calls_at(self, threshold: float) -> np.ndarray:
        """The calls at another unknown threshold (``empty`` stays ``empty``)."""
        cls = self.closed_class.astype(object)
        cls[self.unknown_score > threshold] = UNKNOWN_CLASS
        cls[self.class_name == EMPTY_CLASS] = EMPTY_CLASS
        return cls.astype(str)


def verify_calls(bundle, bank: TemplateBank, target_boxes, source_boxes, source_names: Sequence[str], *,
                 transfer_rule: str = "anchor", score_rule: str = "correlation", seed: int = 0, device: str = "cpu"
                 ) -> Generator[Progress, None, Verification]:
    """Verify the network's calls on ``target_boxes`` with the template ``bank`` (a generator).

    ``bundle``: the model whose probabilities are fused (the adapted one in ``run``);
    ``source_boxes`` (canonical) and ``source_names`` (their true class names, ``unknown`` for
    decoys, ``empty``): the source **validation** boxes — they fit the temperature, standardise
    the score and calibrate the threshold; ``score_rule`` (:data:`SCORE_RULES`) the unknown score;
    ``transfer_rule`` (:data:`THRESHOLD_RULES`) moves the threshold to the target. No target
    label is used.
    """
    from .predict import classify_boxes

    t0 = time.perf_counter()
    known = list(bank.class_names)
    names = np.asarray(source_names).astype(str)
    is_known = np.isin(names, known)
    is_decoy = names == UNKNOWN_CLASS
    keep = is_known | is_decoy
    src = np.asarray(source_boxes)[keep]
    names, is_known, is_decoy = names[keep], is_known[keep], is_decoy[keep]
    yield Progress("verify", 0, 3, f"correlating {len(src)} source boxes with {len(known)} templates × "
                                   f"{bank.n_rotations} rotations")
    c_src = bank.correlations(src)
    p_src = known_probabilities(classify_boxes(bundle, src, device).probabilities, bundle.class_names, known)
    labels = np.array([known.index(n) if n in known else -1 for n in names])
    temperature, likelihood = fit_temperature(p_src[is_known], c_src[is_known], labels[is_known])
    q_src = fuse(p_src, c_src, temperature)
    chosen_src = q_src.argmax(axis=1)

    yield Progress("verify", 1, 3, f"correlating {len(target_boxes)} picks with the templates")
    c_tgt = bank.correlations(target_boxes)
    pred = classify_boxes(bundle, target_boxes, device)
    q = fuse(known_probabilities(pred.probabilities, bundle.class_names, known), c_tgt, temperature)
    evidence = Evidence(known=known, q_src=q_src, c_class_src=c_src[np.arange(len(c_src)), chosen_src],
                        is_known=is_known, is_decoy=is_decoy, q=q,
                        c_class=c_tgt[np.arange(len(c_tgt)), q.argmax(axis=1)],
                        empty=np.asarray(pred.class_name).astype(str) == EMPTY_CLASS)
    ver = decide(evidence, score_rule, transfer_rule, seed=seed)
    source_acc = float(np.mean(chosen_src[is_known] == labels[is_known])) if is_known.any() else float("nan")
    ver.report = {
        "templates": known, "rotations": bank.n_rotations, "bin": bank.bin, "shift_voxels": bank.shift,
        "temperature": temperature, "log_likelihood_by_temperature": likelihood,
        "source_boxes": int(len(src)), "source_known_accuracy": source_acc, **ver.report,
        "bank_seconds": round(bank.seconds, 3), "seconds": round(time.perf_counter() - t0, 3),
    }
    ver.bank = bank
    n_unknown = int(np.sum(ver.class_name == UNKNOWN_CLASS))
    yield Progress("verify", 3, 3, f"template verification: T {temperature:g}, source accuracy {source_acc:.2f}, "
                                   f"{n_unknown} of {len(ver.class_name)} picks unknown")
    return ver


def decide(evidence: Evidence, score_rule: str = "correlation", transfer_rule: str = "anchor", seed: int = 0
           ) -> Verification:
    """The verified calls from ``evidence`` under a score rule (:data:`SCORE_RULES`) and a threshold
    rule (:data:`THRESHOLD_RULES`): standardise on the source knowns, calibrate on the source
    (Youden's J, knowns vs decoys), move the threshold to the target, call. No target label."""
    from .adapt.transfer import transfer_threshold
    from .openset import calibrate_threshold

    e = evidence
    std = Standardiser.fit(e.q_src[e.is_known], e.c_class_src[e.is_known], score_rule)
    s_src = std.score(e.q_src, e.c_class_src)
    cal = calibrate_threshold(s_src[e.is_known], s_src[e.is_decoy] if e.is_decoy.any() else None)
    source_threshold = float(cal.threshold)
    chosen = e.q.argmax(axis=1)
    score = std.score(e.q, e.c_class)
    shift = float(np.quantile(score, ANCHOR_QUANTILE) - np.quantile(s_src[e.is_known], ANCHOR_QUANTILE))
    anchored = float(source_threshold + max(0.0, shift))
    if transfer_rule == "anchor":
        threshold = anchored
        transfer = {"rule": "anchor", "source_threshold": source_threshold, "threshold": anchored,
                    "anchor_shift": shift, "why": f"source threshold + the target's score shift at the "
                                                  f"{ANCHOR_QUANTILE:g} quantile ({shift:+.3f})",
                    "expected_unknown_fraction": None}
    else:
        threshold, transfer = transfer_threshold(source_threshold, score, transfer_rule, seed=seed)
        transfer["anchored_threshold"] = anchored
    cls = np.asarray(e.known, dtype=object)[chosen]
    cls[score > threshold] = UNKNOWN_CLASS
    cls[e.empty] = EMPTY_CLASS
    report = {
        "score_rule": score_rule, "youden_threshold": source_threshold,
        "source_known_rejection": float(np.mean(s_src[e.is_known] > source_threshold)),
        "source_threshold": source_threshold, "threshold": float(threshold), "transfer": transfer,
        "standardiser": std.to_dict(),
        "called_unknown_fraction": float(np.mean(cls == UNKNOWN_CLASS)) if len(cls) else None,
    }
    return Verification(class_name=cls.astype(str), closed_class=np.asarray(e.known)[chosen],
                        confidence=e.q[np.arange(len(e.q)), chosen].astype(np.float64),
                        unknown_score=score.astype(np.float64), template_correlation=e.c_class.astype(np.float64),
                        threshold=float(threshold), report=report, source_threshold=source_threshold,
                        evidence=evidence)
