"""Prediction: classify every active pick of a tomogram with a model bundle. A generator.

:func:`predict_picks` extracts a box at every *active* pick (accepted and unreviewed; rejected
picks keep their row and get no prediction), brings it to the canonical polarity and
normalisation, runs the network in batches and fills the prediction columns of the picks
table: ``class_name``, ``confidence`` (probability of the chosen class, 0..1),
``unknown_score`` (higher = more likely unknown) and ``is_unknown``.

Unknown scores (``bundle.openset["method"]``):

``softmax`` (closed-set models)
    ``1 − max softmax``; a pick is ``unknown`` when the network's arg-max is its ``unknown``
    output (trained on decoys), or when the score exceeds ``openset["threshold"]`` if one is set.
``centre`` (adapted models, :mod:`napari_cryo_openset.adapt`)
    Euclidean distance of the pick's embedding (L2-normalised first if
    ``openset["normalize"]``) to the nearest class centre (``openset["centres"]``, rows for
    ``openset["centre_classes"]``); ``unknown`` above ``openset["threshold"]`` (or when the
    arg-max is the ``unknown`` output), else the class by ``openset["assign"]``: ``argmax`` of
    the classifier or the ``nearest`` centre's. Confidences use the softmax at
    ``openset["temperature"]`` (fitted on source validation logits).

Tomograms at another voxel size than the model's are resampled box by box at extraction
(:func:`~napari_cryo_openset.extract.extract_subtomograms`); this is reported.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .checkpoint import ModelBundle, check_compatible
from .device import choose_device, describe, set_cpu_threads
from .errors import ParameterError, PicksError
from .boxes import PickBoxes, iter_batches
from .extract import SubtomogramSet
from .models import to_device
from .params import PredictParams
from .picks import UNKNOWN_CLASS, class_counts, validate_picks
from .progress import Progress
from .train import infer


@dataclass
class Predictions:
    """Network outputs for a set of boxes (rows in the order of the boxes)."""

    class_name: np.ndarray  # str
    confidence: np.ndarray
    unknown_score: np.ndarray
    is_unknown: np.ndarray
    probabilities: np.ndarray  # (N, C)
    features: np.ndarray  # (N, d)
    threshold: float | None = None


@dataclass
class PredictionResult:
    """The picks table with prediction columns, and what was done."""

    picks: pd.DataFrame
    polarity: str
    resampled: bool
    counts: dict = field(default_factory=dict)  # active picks per class, in display order (picks.class_counts)
    seconds: float = 0.0
    features: np.ndarray | None = None  # (n_active, d), rows of the active picks
    active_index: np.ndarray | None = None

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return f"{sum(self.counts.values())} picks classified ({parts}); polarity {self.polarity}"


def score_outputs(bundle: ModelBundle, logits: torch.Tensor, features: torch.Tensor,
                  threshold: float | None = None) -> Predictions:
    """Class, confidence and unknown score from network outputs, by the bundle's open-set rule."""
    from .openset import nearest_centre

    names = np.asarray(bundle.class_names, dtype=object)
    temperature = float(bundle.openset.get("temperature") or 1.0)
    probs = torch.softmax(logits.float() / temperature, dim=1).numpy()
    feats = features.float().numpy()
    method = bundle.openset.get("method", "softmax")
    thr = bundle.openset.get("threshold") if threshold is None else threshold
    thr = None if thr is None else float(thr)
    n = len(probs)
    arg = probs.argmax(axis=1) if n else np.zeros(0, dtype=int)
    if method == "centre":
        centres = bundle.openset.get("centres")
        if centres is None:
            raise ParameterError("the model's open-set rule 'centre' has no class centres")
        centres = centres.numpy() if isinstance(centres, torch.Tensor) else np.asarray(centres)
        centre_classes = list(bundle.openset.get("centre_classes") or bundle.known_classes)
        metric_feats = feats
        if bundle.openset.get("normalize"):
            metric_feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        dist, idx = nearest_centre(metric_feats, centres) if n else (np.zeros(0), np.zeros(0, dtype=int))
        if bundle.openset.get("assign", "nearest") == "argmax":
            cls = names[arg] if n else np.zeros(0, dtype=object)
            col = arg
        else:
            cls = np.asarray(centre_classes, dtype=object)[idx]
            col = np.array([bundle.class_names.index(c) for c in centre_classes])[idx]
        confidence = probs[np.arange(n), col] if n else np.zeros(0)
        score = np.asarray(dist, dtype=np.float64)
        unknown = cls == UNKNOWN_CLASS
        if thr is not None:
            unknown = unknown | (score > thr)
    else:
        cls = names[arg] if n else np.zeros(0, dtype=object)
        confidence = probs.max(axis=1) if n else np.zeros(0)
        score = 1.0 - confidence
        unknown = cls == UNKNOWN_CLASS
        if thr is not None:
            unknown = unknown | (score > thr)
    cls = np.where(unknown, UNKNOWN_CLASS, cls).astype(object)
    return Predictions(class_name=cls, confidence=np.asarray(confidence, dtype=np.float64),
                       unknown_score=np.asarray(score, dtype=np.float64), is_unknown=np.asarray(unknown, bool),
                       probabilities=probs, features=feats, threshold=thr)


def classify_boxes(bundle: ModelBundle, boxes: np.ndarray | torch.Tensor, device: str | torch.device = "auto",
                   batch_size: int = 128, threshold: float | None = None) -> Predictions:
    """Classify canonical (normalised, protein-positive) boxes ``(N, B, B, B)``."""
    dev = choose_device(device) if not isinstance(device, torch.device) else device
    model = to_device(bundle.model, dev)
    try:
        logits, feats = infer(model, boxes, dev, batch_size=batch_size)
    finally:
        bundle.model = model.to("cpu").to(memory_format=torch.contiguous_format)
    return score_outputs(bundle, logits, feats, threshold)


def guess_polarity_at_picks(raw_boxes) -> tuple[str, float]:
    """``dark``/``bright`` from raw boxes on particles: is the centre darker than the rim?

    ``raw_boxes``: (N, B, B, B) raw voxel values (Z, Y, X), or an iterable of such batches
    (the statistics are accumulated batch by batch). Returns the guess and the contrast
    (centre − rim mean, averaged over the boxes, in units of the SD of all their voxels).
    """
    if isinstance(raw_boxes, np.ndarray) or hasattr(raw_boxes, "shape"):
        raw_boxes = [raw_boxes]
    stats = _PolarityStats()
    for batch in raw_boxes:
        stats.add(np.asarray(batch))
    return stats.guess()


class _PolarityStats:
    """Running sums for :func:`guess_polarity_at_picks` (float64)."""

    def __init__(self) -> None:
        self.n_boxes = 0
        self.diff = self.total = self.squares = 0.0
        self.n_voxels = 0
        self.masks: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, boxes: np.ndarray) -> None:
        if not len(boxes):
            return
        b = boxes.shape[-1]
        if self.masks is None:
            zz, yy, xx = np.mgrid[:b, :b, :b] - b // 2
            r = np.sqrt(zz**2 + yy**2 + xx**2).ravel()
            self.masks = (r <= b / 6, r >= b / 2.6)
        centre, rim = self.masks
        x = boxes.reshape(len(boxes), -1).astype(np.float64)
        self.diff += float((x[:, centre].mean(1) - x[:, rim].mean(1)).sum())
        self.total += float(x.sum())
        self.squares += float(np.square(x).sum())
        self.n_boxes += len(x)
        self.n_voxels += x.size

    def guess(self) -> tuple[str, float]:
        if not self.n_boxes:
            return "dark", 0.0
        mean = self.total / self.n_voxels
        sd = float(np.sqrt(max(self.squares / self.n_voxels - mean * mean, 0.0))) or 1.0
        contrast = float(self.diff / self.n_boxes / sd)
        return ("bright" if contrast > 0 else "dark"), contrast


#: ``polarity='auto'`` is guessed from at most this many picks (evenly spaced in the table).
MAX_POLARITY_PICKS = 20_000


def predict_picks(bundle: ModelBundle, tomogram, picks: pd.DataFrame, params: PredictParams | None = None,
                  ) -> Generator[Progress, None, PredictionResult]:
    """Classify the active picks of ``tomogram`` (a :class:`~napari_cryo_openset.io.Tomogram`).

    Yields :class:`Progress` per batch; returns a :class:`PredictionResult` whose ``picks`` is a
    copy of ``picks`` with the prediction columns filled (rejected picks: empty class, NaN).
    Boxes are cut, classified and dropped batch by batch (``params.batch_size`` boxes of
    ``bundle.box_size``³ at a time): memory grows with the picks only by the per-pick outputs
    (class probabilities and a ``d``-wide float32 feature vector per pick).
    """
    params = params or PredictParams()
    t0 = time.perf_counter()
    picks = validate_picks(picks.copy())
    active_mask = (picks["curation"] != "rejected").to_numpy()
    if not active_mask.any():
        raise PicksError("there are no picks to classify (all rejected, or none picked)")
    device = choose_device(params.device)
    set_cpu_threads(params.threads)
    n_active = int(active_mask.sum())
    yield Progress("extract", 0, n_active, f"{n_active} boxes of {bundle.box_size}³")
    boxes, polarity, resample = pick_boxes(bundle, tomogram, picks.loc[active_mask], params.polarity,
                                           params.allow_resampling)
    yield Progress("extract", n_active, n_active, f"polarity {polarity}")
    pred = yield from predict_boxes(bundle, boxes, device, params.batch_size, params.threshold)
    out = fill_predictions(picks, active_mask, pred)
    return PredictionResult(picks=out, polarity=polarity, resampled=resample, counts=class_counts(pred.class_name),
                            seconds=time.perf_counter() - t0, features=pred.features,
                            active_index=np.flatnonzero(active_mask))


def predict_boxes(bundle: ModelBundle, boxes, device: torch.device, batch_size: int = 128,
                  threshold: float | None = None) -> Generator[Progress, None, Predictions]:
    """:class:`Predictions` of canonical boxes ``(N, 1, B, B, B)`` (a tensor or a lazy
    :class:`~napari_cryo_openset.boxes.PickBoxes`), ``batch_size`` boxes per network call; N ≥ 1."""
    model = to_device(bundle.model, device)
    n = len(boxes)
    outputs = PredictionBuffer(n)
    try:
        for start, xb in iter_batches(boxes, batch_size):
            z, h = infer(model, xb, device, batch_size=batch_size)
            outputs.put(start, score_outputs(bundle, z, h, threshold))
            done = start + len(xb)
            yield Progress("predict", done, n, f"{done}/{n} picks on {describe(device)}")
    finally:
        bundle.model = model.to("cpu").to(memory_format=torch.contiguous_format)
    return outputs.result()


class PredictionBuffer:
    """:class:`Predictions` of N boxes filled batch by batch (no list of batches to concatenate)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self.parts: Predictions | None = None
        self.threshold = None

    def put(self, start: int, pred: Predictions) -> None:
        """Store the predictions of rows ``start … start + len(pred) − 1``."""
        if self.parts is None:
            self.parts = Predictions(
                class_name=np.empty(self.n, dtype=object), confidence=np.empty(self.n, dtype=np.float64),
                unknown_score=np.empty(self.n, dtype=np.float64), is_unknown=np.empty(self.n, dtype=bool),
                probabilities=np.empty((self.n, pred.probabilities.shape[1]), dtype=np.float32),
                features=np.empty((self.n, pred.features.shape[1]), dtype=np.float32))
        rows = slice(start, start + len(pred.class_name))
        for name in ("class_name", "confidence", "unknown_score", "is_unknown", "probabilities", "features"):
            getattr(self.parts, name)[rows] = getattr(pred, name)
        self.threshold = pred.threshold

    def result(self) -> Predictions:
        if self.parts is None:
            raise ValueError("no predictions were stored")  # internal misuse: n == 0 is refused earlier
        self.parts.threshold = self.threshold
        return self.parts


def pick_boxes(bundle: ModelBundle, tomogram, picks: pd.DataFrame, polarity: str = "dark",
               allow_resampling: bool = True) -> tuple[PickBoxes, str, bool]:
    """Canonical boxes at ``picks`` for ``bundle``'s box and voxel size, cut on demand.

    Returns (a lazy ``(N, 1, B, B, B)`` :class:`~napari_cryo_openset.boxes.PickBoxes`, the
    polarity used — ``auto`` resolved on at most :data:`MAX_POLARITY_PICKS` of the picks —,
    resampled?).
    """
    voxel_size = getattr(tomogram, "voxel_size", None)
    resample = check_compatible(bundle, voxel_size=voxel_size, allow_resampling=allow_resampling,
                                source=f"tomogram '{getattr(tomogram, 'path', 'tomogram')}'")
    coords = picks[["z", "y", "x"]].to_numpy(np.float64)
    raw = SubtomogramSet(tomogram, coords, bundle.box_size, voxel_size=voxel_size,
                         target_voxel_size=bundle.voxel_size if resample else None, normalise=False)
    if polarity == "auto":
        polarity = _guess_polarity(raw)
    return PickBoxes(raw.normalised(polarity)), polarity, resample


def _guess_polarity(raw: SubtomogramSet, batch_size: int = 256) -> str:
    rows = np.arange(len(raw))
    if len(rows) > MAX_POLARITY_PICKS:
        rows = np.unique(np.linspace(0, len(rows) - 1, MAX_POLARITY_PICKS).round().astype(np.int64))
    subset = raw.subset(rows)
    guess, _ = guess_polarity_at_picks(boxes for _, boxes in subset.batches(batch_size))
    return guess


def extract_pick_boxes(bundle: ModelBundle, tomogram, picks: pd.DataFrame, polarity: str = "dark",
                       allow_resampling: bool = True) -> tuple[torch.Tensor, str, bool]:
    """Canonical boxes (N, B, B, B) at ``picks``, all in memory (see :func:`pick_boxes` for many picks).

    Returns (boxes, polarity used — ``auto`` resolved at the picks —, resampled?).
    """
    boxes, polarity, resample = pick_boxes(bundle, tomogram, picks, polarity, allow_resampling)
    return boxes.materialise()[:, 0], polarity, resample


def fill_predictions(picks: pd.DataFrame, active_mask: np.ndarray, pred: Predictions) -> pd.DataFrame:
    """A copy of ``picks`` with the prediction columns set for the active rows (others cleared)."""
    out = picks.copy()
    out["class_name"] = ""
    out["confidence"] = np.nan
    out["unknown_score"] = np.nan
    out["is_unknown"] = False
    out.loc[active_mask, "class_name"] = pred.class_name
    out.loc[active_mask, "confidence"] = pred.confidence
    out.loc[active_mask, "unknown_score"] = pred.unknown_score
    out.loc[active_mask, "is_unknown"] = pred.is_unknown
    return validate_picks(out)
