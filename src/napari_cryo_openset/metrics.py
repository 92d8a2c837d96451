"""Open-set and closed-set metrics of classified samples: OS/OS*/UNK/HOS/AUROC, accuracy, F1.

Conventions (ALGORITHMS.md § 5)
-------------------------------
- In the open-set metrics every true *and* predicted name outside the known class list counts
  as ``"unknown"`` (:data:`napari_cryo_openset.picks.UNKNOWN_CLASS`).
- Metric order of labels: the known classes sorted, then ``"unknown"``. Confusion matrices
  have rows = true, columns = predicted.
- Undefined metrics (e.g. UNK without any true unknown) are ``nan``, never an error.

Numpy only: no torch, Qt or napari here. Array-likes are accepted everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ParameterError
from .openset import finite_vector
from .picks import UNKNOWN_CLASS

__all__ = [
    "ClosedSetMetrics",
    "OpenSetMetrics",
    "auroc",
    "closed_set_metrics",
    "open_set_metrics",
]


def _names(values: Any, name: str) -> list[str]:
    """Class names as a list of ``str`` (1-D input)."""
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise ParameterError(f"{name}: expected a 1-D sequence of class names, got shape {arr.shape}")
    return [str(v) for v in arr]


def _paired_names(true_names: Any, pred_names: Any) -> tuple[list[str], list[str]]:
    """True and predicted names as lists of ``str``, one of each per sample (at least one)."""
    true = _names(true_names, "true_names")
    pred = _names(pred_names, "pred_names")
    if len(true) != len(pred):
        raise ParameterError(f"pred_names: length {len(pred)} does not match true_names ({len(true)})")
    if not true:
        raise ParameterError("true_names: expected at least one sample, got none")
    return true, pred


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive).

    Mann–Whitney U with average ranks for ties: ``(R₊ − n₊(n₊+1)/2) / (n₊ n₋)``.
    ``nan`` when either group is empty.
    """
    y = np.asarray(labels).astype(bool).reshape(-1)
    s = finite_vector(scores, "scores", allow_empty=True)
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
    true, pred = _paired_names(true_names, pred_names)
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
        s = finite_vector(unknown_scores, "unknown_scores")
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
    true, pred = _paired_names(true_names, pred_names)
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
