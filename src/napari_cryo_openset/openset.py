"""Open-set decisions: unknown scores, threshold calibration, the unknown call (metrics: :mod:`.metrics`).

Conventions (ALGORITHMS.md §§ 4–5)
----------------------------------
- An **unknown score** is a float per sample, *higher = more likely unknown* (e.g.
  ``1 − max softmax`` or the Euclidean distance to the nearest class centre). A sample is
  called unknown when its score is **strictly greater** than the threshold τ.
- τ is calibrated on **source** validation data only (never with target labels): see
  :func:`calibrate_threshold`.
- Class names are strings; the unknown label is :data:`napari_cryo_openset.picks.UNKNOWN_CLASS`
  (``"unknown"``).

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
    "calibrate_threshold",
    "centre_distances",
    "decide",
    "finite_vector",
    "nearest_centre",
    "softmax_unknown_score",
]

#: Element budget of one (rows, K, d) block in :func:`centre_distances`.
_DISTANCE_BLOCK = 1 << 22
CALIBRATION_RULES = ("youden", "quantile")


# ----------------------------------------------------------------------------- validation
def finite_vector(values: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
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
    known = finite_vector(known_scores, "known_scores")
    unknown = None
    if unknown_scores is not None:
        unknown = finite_vector(unknown_scores, "unknown_scores", allow_empty=True)
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
    scores = finite_vector(unknown_scores, "unknown_scores", allow_empty=True)
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
