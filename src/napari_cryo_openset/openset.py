"""Open-set decisions and metrics: unknown scores, threshold calibration, OS/OS*/UNK/HOS/AUROC.

Conventions (ALGORITHMS.md §§ 4–5)
----------------------------------
- An **unknown score** is a float per sample, *higher = more likely unknown* (e.g.
  ``1 − max softmax`` or the Euclidean distance to the nearest class centre). A sample is
  called unknown when its score is **strictly greater** than the threshold τ.
- τ is calibrated on **source** validation data only (never with target labels): see
  :func:`calibrate_threshold`.
- Class names are strings; the unknown label is :data:`napari_cryo_openset.picks.UNKNOWN_CLASS`
  (``"unknown"``). In the open-set metrics every true *and* predicted name outside the known
  class list counts as ``"unknown"``.
- Metric order of labels: the known classes sorted, then ``"unknown"``. Confusion matrices
  have rows = true, columns = predicted.
- Undefined metrics (e.g. UNK without any true unknown) are ``nan``, never an error.

Numpy only: no torch, Qt or napari here. Array-likes are accepted everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ParameterError
from .picks import UNKNOWN_CLASS

__all__ = [
    "Calibration",
    "ClosedSetMetrics",
    "OpenSetMetrics",
    "auroc",
    "calibrate_threshold",
    "centre_distances",
    "closed_set_metrics",
    "decide",
    "nearest_centre",
    "open_set_metrics",
    "softmax_unknown_score",
]

#: Element budget of one (rows, K, d) block in :func:`centre_distances`.
_DISTANCE_BLOCK = 1 << 22
CALIBRATION_RULES = ("youden", "quantile")


# ----------------------------------------------------------------------------- validation
def _finite_vector(values: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """``values`` as a 1-D float64 array without NaN/inf, else :class:`ParameterError`."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ParameterError(f"{name}: expected a 1-D array of scores, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ParameterError(f"{name}: expected at least one score, got none")
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name}: contains NaN or infinite values")
    return arr


def _matrix(values: Any, name: str) -> np.ndarray:
    """``values`` as a finite 2-D float64 array, else :class:`ParameterError`."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ParameterError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name}: contains NaN or infinite values")
    return arr


def _names(values: Any, name: str) -> list[str]:
    """Class names as a list of ``str`` (1-D input)."""
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise ParameterError(f"{name}: expected a 1-D sequence of class names, got shape {arr.shape}")
    return [str(v) for v in arr]


# ----------------------------------------------------------------------------- scores
def softmax_unknown_score(probs: Any) -> np.ndarray:
    """Unknown score ``1 − max_k p_k`` of softmax probabilities.

    Parameters
    ----------
    probs : array-like, shape (N, K)
        Class probabilities per sample (rows sum to 1; not checked).

    Returns
    -------
    numpy.ndarray, shape (N,), float64
        ``1 − max`` per row, in [0, 1 − 1/K] for proper probabilities.
    """
    p = _matrix(probs, "probs")
    if p.shape[1] == 0:
        raise ParameterError(f"probs: expected at least one class column, got shape {p.shape}")
    return 1.0 - p.max(axis=1)


def centre_distances(features: Any, centres: Any) -> np.ndarray:
    """Euclidean distances of every feature vector to every centre.

    Parameters
    ----------
    features : array-like, shape (N, d)
        Embeddings (feature units).
    centres : array-like, shape (K, d)
        Class centres in the same space.

    Returns
    -------
    numpy.ndarray, shape (N, K), float64
        ``‖features[i] − centres[k]‖₂`` (computed exactly from differences, in row blocks).
    """
    f = _matrix(features, "features")
    c = _matrix(centres, "centres")
    if c.shape[0] == 0:
        raise ParameterError("centres: expected at least one centre, got none")
    if f.shape[1] != c.shape[1]:
        raise ParameterError(
            f"centres: feature dimension {c.shape[1]} does not match features ({f.shape[1]})"
        )
    out = np.empty((f.shape[0], c.shape[0]), dtype=np.float64)
    rows = max(1, _DISTANCE_BLOCK // max(1, c.shape[0] * c.shape[1]))
    for start in range(0, f.shape[0], rows):
        block = f[start : start + rows, None, :] - c[None, :, :]
        out[start : start + rows] = np.sqrt(np.einsum("nkd,nkd->nk", block, block))
    return out


def nearest_centre(features: Any, centres: Any) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, the nearest centre for every feature vector.

    Parameters
    ----------
    features : array-like, shape (N, d)
    centres : array-like, shape (K, d)

    Returns
    -------
    distance : numpy.ndarray, shape (N,), float64
        Euclidean distance to the nearest centre (use it as the unknown score).
    index : numpy.ndarray, shape (N,), int64
        Index of the nearest centre (the first one on exact ties).
    """
    dist = centre_distances(features, centres)
    index = np.argmin(dist, axis=1).astype(np.int64)
    return dist[np.arange(dist.shape[0]), index], index


# ----------------------------------------------------------------------------- threshold
@dataclass(frozen=True)
class Calibration:
    """A calibrated unknown-score threshold τ (unknown when ``score > threshold``).

    Attributes
    ----------
    threshold : float
        τ, in the units of the unknown score.
    rule : str
        ``"youden"`` or ``"quantile"`` (see :func:`calibrate_threshold`).
    details : dict
        Numbers behind the choice (counts, rates on the validation scores, J).
    """

    threshold: float
    rule: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-able dictionary."""
        return {"threshold": float(self.threshold), "rule": self.rule, "details": dict(self.details)}


def calibrate_threshold(
    known_scores: Any,
    unknown_scores: Any = None,
    *,
    quantile: float = 0.95,
    rule: str | None = None,
) -> Calibration:
    """Choose the unknown-score threshold τ from **source** validation scores only.

    Rules
    -----
    ``"quantile"``
        τ = the ``quantile`` quantile (linear interpolation) of the known validation scores,
        so that about a fraction ``1 − quantile`` of known samples is called unknown.
    ``"youden"``
        Needs source *unknown* validation scores (decoys). Every unique score of either set is a
        candidate τ; the one maximising Youden's J = TPR − FPR (equivalently the balanced
        accuracy (TPR + TNR)/2) is chosen, where TPR = fraction of unknown scores > τ and
        FPR = fraction of known scores > τ. Among equal J the **largest** τ wins (fewest known
        samples rejected). No quantile constraint is applied; ``details`` reports the
        known-rejection rate of the chosen τ and the quantile threshold for comparison.

    The default (``rule=None``) is ``"youden"`` when non-empty ``unknown_scores`` are given,
    else ``"quantile"``.

    Parameters
    ----------
    known_scores : array-like, shape (N,)
        Unknown scores of source validation samples of the known classes (should lie below τ).
    unknown_scores : array-like, shape (M,), optional
        Unknown scores of source validation unknowns (decoys; should lie above τ).
    quantile : float
        In (0, 1]; used by the ``"quantile"`` rule.
    rule : {"youden", "quantile"}, optional
        Force a rule.

    Returns
    -------
    Calibration
    """
    known = _finite_vector(known_scores, "known_scores")
    unknown = None
    if unknown_scores is not None:
        unknown = _finite_vector(unknown_scores, "unknown_scores", allow_empty=True)
        if unknown.size == 0:
            unknown = None
    if not (0.0 < float(quantile) <= 1.0):
        raise ParameterError(f"quantile: expected a value in (0, 1], got {quantile}")
    if rule is None:
        rule = "youden" if unknown is not None else "quantile"
    if rule not in CALIBRATION_RULES:
        raise ParameterError(f"rule: expected one of {', '.join(CALIBRATION_RULES)}, got {rule!r}")

    q_threshold = float(np.quantile(known, quantile))
    if rule == "quantile":
        details = {
            "quantile": float(quantile),
            "n_known": int(known.size),
            "known_rejected": float(np.mean(known > q_threshold)),
        }
        if unknown is not None:
            details["n_unknown"] = int(unknown.size)
            details["unknown_detected"] = float(np.mean(unknown > q_threshold))
        return Calibration(q_threshold, "quantile", details)

    if unknown is None:
        raise ParameterError("unknown_scores: the 'youden' rule needs source unknown validation scores")
    candidates = np.unique(np.concatenate([known, unknown]))
    # fraction of scores strictly above each candidate, via sorted search
    fpr = 1.0 - np.searchsorted(np.sort(known), candidates, side="right") / known.size
    tpr = 1.0 - np.searchsorted(np.sort(unknown), candidates, side="right") / unknown.size
    j = tpr - fpr
    best = int(np.flatnonzero(j == j.max())[-1])
    details = {
        "youden_j": float(j[best]),
        "balanced_accuracy": float((tpr[best] + 1.0 - fpr[best]) / 2.0),
        "known_rejected": float(fpr[best]),
        "unknown_detected": float(tpr[best]),
        "n_known": int(known.size),
        "n_unknown": int(unknown.size),
        "quantile": float(quantile),
        "quantile_threshold": q_threshold,
    }
    return Calibration(float(candidates[best]), "youden", details)


def decide(
    pred_index: Any, unknown_scores: Any, threshold: float, class_names: Sequence[str]
) -> np.ndarray:
    """Open-set decision: the predicted class name, or ``"unknown"`` above the threshold.

    Parameters
    ----------
    pred_index : array-like of int, shape (N,)
        Index into ``class_names`` of the closed-set prediction (argmax or nearest centre).
    unknown_scores : array-like, shape (N,)
        Unknown score per sample (higher = more unknown).
    threshold : float
        τ; a sample is unknown when ``score > threshold``.
    class_names : sequence of str, length K

    Returns
    -------
    numpy.ndarray of str (object dtype), shape (N,)
    """
    idx = np.asarray(pred_index)
    if idx.ndim != 1:
        raise ParameterError(f"pred_index: expected a 1-D array, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ParameterError(f"pred_index: expected integer class indices, got dtype {idx.dtype}")
    scores = _finite_vector(unknown_scores, "unknown_scores", allow_empty=True)
    if scores.shape != idx.shape:
        raise ParameterError(
            f"unknown_scores: length {scores.size} does not match pred_index ({idx.size})"
        )
    if not np.isfinite(float(threshold)):
        raise ParameterError(f"threshold: expected a finite number, got {threshold}")
    names = np.array([str(n) for n in class_names] + [UNKNOWN_CLASS], dtype=object)
    n_classes = names.size - 1
    if idx.size and (idx.min() < 0 or idx.max() >= n_classes):
        raise ParameterError(f"pred_index: values must lie in 0..{n_classes - 1}")
    out = names[idx.astype(np.int64)] if idx.size else np.empty(0, dtype=object)
    out[scores > float(threshold)] = UNKNOWN_CLASS
    return out


# ----------------------------------------------------------------------------- metrics
def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive).

    Mann–Whitney U with average ranks for ties: ``(R₊ − n₊(n₊+1)/2) / (n₊ n₋)``.
    ``nan`` when either group is empty.
    """
    y = np.asarray(labels).astype(bool).reshape(-1)
    s = _finite_vector(scores, "scores", allow_empty=True)
    if s.shape != y.shape:
        raise ParameterError(f"scores: length {s.size} does not match labels ({y.size})")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # average ranks (1-based) over runs of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    run_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _confusion(true: list[str], pred: list[str], labels: list[str]) -> np.ndarray:
    pos = {name: i for i, name in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    if true:
        np.add.at(cm, ([pos[t] for t in true], [pos[p] for p in pred]), 1)
    return cm


def _recalls(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


@dataclass(frozen=True)
class OpenSetMetrics:
    """Open-set scores (ALGORITHMS.md § 5). Fractions in [0, 1]; ``nan`` = undefined.

    Attributes
    ----------
    all : float
        Sample accuracy (ALL), unknowns included.
    os : float
        ``(K·OS* + UNK)/(K + 1)``; equals OS* when there is no true unknown.
    os_star : float
        Mean recall over the known classes present in the truth (OS*).
    unk : float
        Recall of the unknown class (UNK); ``nan`` without true unknowns.
    hos : float
        ``2·OS*·UNK/(OS* + UNK)`` (0 when both are 0); ``nan`` without true unknowns.
    auroc : float
        AUROC of the unknown score, true unknown vs true known; ``nan`` if no scores were given
        or only one group is present.
    per_class_recall : dict[str, float]
        Recall per label (``nan`` for labels absent from the truth).
    confusion : numpy.ndarray of int64, shape (K + 1, K + 1)
        Rows = true, columns = predicted, in ``labels`` order.
    labels : list[str]
        Known classes sorted, then ``"unknown"``.
    n : int
        Number of samples.
    """

    all: float
    os: float
    os_star: float
    unk: float
    hos: float
    auroc: float
    per_class_recall: dict
    confusion: np.ndarray
    labels: list
    n: int

    def to_dict(self) -> dict:
        """Plain floats, ints, lists and dicts (JSON-able; undefined values stay ``nan``)."""
        return {
            "all": float(self.all),
            "os": float(self.os),
            "os_star": float(self.os_star),
            "unk": float(self.unk),
            "hos": float(self.hos),
            "auroc": float(self.auroc),
            "per_class_recall": {k: float(v) for k, v in self.per_class_recall.items()},
            "confusion": self.confusion.tolist(),
            "labels": list(self.labels),
            "n": int(self.n),
        }


def open_set_metrics(
    true_names: Any,
    pred_names: Any,
    unknown_scores: Any = None,
    known_classes: Sequence[str] | None = None,
) -> OpenSetMetrics:
    """ALL, OS, OS*, UNK, HOS, AUROC and the confusion matrix of open-set predictions.

    Parameters
    ----------
    true_names, pred_names : array-like of str, shape (N,)
        True and predicted class names. Names outside ``known_classes`` (including
        ``"unknown"``) count as ``"unknown"`` on both sides.
    unknown_scores : array-like, shape (N,), optional
        Unknown score per sample, for the AUROC (true unknown = positive).
    known_classes : sequence of str, optional
        The K known classes; default: the sorted set of true names minus ``"unknown"``.

    Returns
    -------
    OpenSetMetrics

    Notes
    -----
    K in OS is the number of known classes that occur in the truth. If no known class occurs,
    OS* is ``nan`` and OS = UNK.
    """
    true = _names(true_names, "true_names")
    pred = _names(pred_names, "pred_names")
    if len(true) != len(pred):
        raise ParameterError(f"pred_names: length {len(pred)} does not match true_names ({len(true)})")
    if not true:
        raise ParameterError("true_names: expected at least one sample, got none")
    if known_classes is None:
        known = sorted(set(true) - {UNKNOWN_CLASS})
    else:
        known = sorted({str(c) for c in known_classes})
        if UNKNOWN_CLASS in known:
            raise ParameterError(f"known_classes: must not contain {UNKNOWN_CLASS!r}")
    known_set = set(known)
    true = [t if t in known_set else UNKNOWN_CLASS for t in true]
    pred = [p if p in known_set else UNKNOWN_CLASS for p in pred]
    labels = known + [UNKNOWN_CLASS]
    cm = _confusion(true, pred, labels)
    recall = _recalls(cm)

    known_recall = recall[:-1][cm[:-1].sum(axis=1) > 0]
    k = known_recall.size
    os_star = float(known_recall.mean()) if k else float("nan")
    unk = float(recall[-1])
    if np.isnan(unk):
        os_ = os_star
        hos = float("nan")
    else:
        os_ = unk if k == 0 else (k * os_star + unk) / (k + 1)
        if k == 0:
            hos = float("nan")
        elif os_star + unk == 0:
            hos = 0.0
        else:
            hos = 2.0 * os_star * unk / (os_star + unk)

    score = float("nan")
    if unknown_scores is not None:
        s = _finite_vector(unknown_scores, "unknown_scores")
        if s.size != len(true):
            raise ParameterError(
                f"unknown_scores: length {s.size} does not match true_names ({len(true)})"
            )
        score = auroc([t == UNKNOWN_CLASS for t in true], s)

    return OpenSetMetrics(
        all=float(np.trace(cm) / cm.sum()),
        os=float(os_),
        os_star=os_star,
        unk=unk,
        hos=float(hos),
        auroc=score,
        per_class_recall={name: float(r) for name, r in zip(labels, recall)},
        confusion=cm,
        labels=labels,
        n=len(true),
    )


@dataclass(frozen=True)
class ClosedSetMetrics:
    """Closed-set scores. Also readable as a mapping: ``m["accuracy"]``.

    Attributes
    ----------
    accuracy : float
        Sample accuracy.
    macro_f1 : float
        Mean F1 over the labels that occur in the truth or the predictions.
    per_class_f1 : dict[str, float]
        F1 per label (``nan`` for labels in neither).
    confusion : numpy.ndarray of int64, shape (L, L)
        Rows = true, columns = predicted, in ``labels`` order.
    labels : list[str]
    n : int
    """

    accuracy: float
    macro_f1: float
    per_class_f1: dict
    confusion: np.ndarray
    labels: list
    n: int

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> list[str]:
        return list(self.__dataclass_fields__)

    def to_dict(self) -> dict:
        """Plain floats, ints, lists and dicts (JSON-able)."""
        return {
            "accuracy": float(self.accuracy),
            "macro_f1": float(self.macro_f1),
            "per_class_f1": {k: float(v) for k, v in self.per_class_f1.items()},
            "confusion": self.confusion.tolist(),
            "labels": list(self.labels),
            "n": int(self.n),
        }


def closed_set_metrics(
    true_names: Any, pred_names: Any, class_names: Sequence[str] | None = None
) -> ClosedSetMetrics:
    """Accuracy, macro-F1 and confusion matrix of closed-set predictions.

    Parameters
    ----------
    true_names, pred_names : array-like of str, shape (N,)
    class_names : sequence of str, optional
        Label order of the confusion matrix (kept as given); default: sorted union of true and
        predicted names. Every name must be in it.

    Returns
    -------
    ClosedSetMetrics

    Notes
    -----
    F1 = 2·TP / (2·TP + FP + FN) per label; labels that occur neither in the truth nor in the
    predictions are left out of the macro average (their F1 is ``nan``).
    """
    true = _names(true_names, "true_names")
    pred = _names(pred_names, "pred_names")
    if len(true) != len(pred):
        raise ParameterError(f"pred_names: length {len(pred)} does not match true_names ({len(true)})")
    if not true:
        raise ParameterError("true_names: expected at least one sample, got none")
    if class_names is None:
        labels = sorted(set(true) | set(pred))
    else:
        labels = [str(c) for c in class_names]
        if len(set(labels)) != len(labels):
            raise ParameterError("class_names: contains duplicate names")
        missing = sorted((set(true) | set(pred)) - set(labels))
        if missing:
            raise ParameterError(f"class_names: does not contain {', '.join(map(repr, missing))}")
    cm = _confusion(true, pred, labels)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # = 2·TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), np.nan)
    return ClosedSetMetrics(
        accuracy=float(tp.sum() / cm.sum()),
        macro_f1=float(np.nanmean(f1)),
        per_class_f1={name: float(v) for name, v in zip(labels, f1)},
        confusion=cm,
        labels=labels,
        n=len(true),
    )
