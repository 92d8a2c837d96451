"""The review queue: which picks the user should look at next, most instructive first (no Qt, no torch).

A decision teaches the model most where the model is least sure, so the queue ranks the
classified picks by **uncertainty** and then spreads the head of the queue over the predicted
classes. For every candidate pick *i* (active — not rejected —, classified, without a curated
label):

1. **Margin to the unknown threshold**, in robust units: ``m_i = |s_i − τ| / σ`` with ``s_i``
   the pick's ``unknown_score``, τ the model's unknown threshold and σ = 1.4826 · MAD of the
   scores of all classified active picks (a robust standard deviation; 1 if the scores do not
   vary). ``u_margin = exp(−m_i)``: 1 on the threshold, 0.37 one σ away.
2. **Normalised entropy** of the pick's class probabilities ``p`` (C classes):
   ``u_entropy = −Σ p log p / log C`` in 0…1. Without probabilities (a picks table read from a
   file holds only ``confidence``), ``u_entropy = 1 − confidence`` (least-confidence sampling).
3. **Uncertainty** ``u = (u_margin + u_entropy) / 2``.
4. **Rare groups up-weighted**: picks in small clusters of the t-SNE map (``cluster`` ≥ 0, the
   groups of unknowns of :mod:`napari_cryo_openset.embed`) get ``priority = u · (1 + r)`` with
   ``r = 1 − min(1, n_cluster / median cluster size)`` (0 … 1: a cluster at or above the median
   size gets none); every other pick ``priority = u``.
5. **Diversity across classes** (mode ``queue``): the candidates are grouped by predicted class
   (``unknown`` is a group); each group is sorted by priority; the queue then takes the best pick
   of every group in turn (round-robin), the groups in order of their best priority, so the first
   *k* picks cover min(k, number of groups) classes. Ties break by row (stable, deterministic).

Modes: ``queue`` (the rule above), ``unknowns`` (only picks called ``unknown``, by priority),
``class`` (only the picks of one predicted class, by priority). Rejected picks and picks that
already carry a curated label are skipped (``include_curated=True`` keeps the labelled ones, e.g.
to revisit them). The result is a table, one row per queued pick in queue order, with the pick's
``row`` (0-based position in the picks table — napari's point index) and the terms above, so a
widget can show *why* a pick is next.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .curation import is_curated
from .errors import ParameterError, PicksError
from .picks import UNKNOWN_CLASS

REVIEW_MODES = ("queue", "unknowns", "class")
#: 1.4826 · MAD estimates the standard deviation of normally distributed scores.
MAD_TO_SD = 1.4826


def robust_scale(values: np.ndarray) -> float:
    """1.4826 · median absolute deviation of ``values`` (finite ones); 1.0 when they do not vary."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return 1.0
    mad = float(np.median(np.abs(v - np.median(v)))) * MAD_TO_SD
    return mad if mad > 0 else 1.0


def normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of each row of ``probabilities`` (N, C) divided by log C (0 … 1; 0 for C = 1)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    if p.ndim != 2:
        raise ParameterError(f"probabilities must be an (N, C) array, got shape {p.shape}")
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    c = p.shape[1]
    if c < 2:
        return np.zeros(len(p))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return h / np.log(c)


def review_priorities(picks: pd.DataFrame, threshold: float, probabilities: np.ndarray | None = None,
                      include_curated: bool = False) -> pd.DataFrame:
    """The queue's terms for every candidate pick (steps 1–4 of the module's rule), in row order.

    ``threshold``: the model's unknown threshold τ (``bundle.openset['threshold']``), in the units
    of ``unknown_score``. ``probabilities``: class probabilities, (N, C) for all N picks or
    (n_active, C) for the active (not rejected) picks in table order; None uses ``confidence``.
    Returns columns ``row``, ``class_name``, ``unknown_score``, ``margin`` (m, robust units),
    ``u_margin``, ``u_entropy``, ``rarity``, ``priority``.
    """
    for col in ("class_name", "unknown_score"):
        if col not in picks.columns:
            raise PicksError(f"the picks have no '{col}' column: classify them first (predict or adapt)")
    if not np.isfinite(float(threshold)):
        raise ParameterError(f"threshold must be a finite unknown score, got {threshold}")
    n = len(picks)
    names = picks["class_name"].astype(object).where(picks["class_name"].notna(), "").astype(str).to_numpy()
    score = pd.to_numeric(picks["unknown_score"], errors="coerce").to_numpy(np.float64)
    active = (picks["curation"].astype(str) != "rejected").to_numpy()
    classified = active & (names != "") & np.isfinite(score)
    candidate = classified & (include_curated | ~is_curated(picks))

    sigma = robust_scale(score[classified])
    margin = np.abs(score - float(threshold)) / sigma
    u_margin = np.exp(-margin)
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.ndim != 2 or len(probs) not in (n, int(active.sum())):
            raise ParameterError(f"probabilities must have one row per pick ({n}) or per active pick "
                                 f"({int(active.sum())}), got shape {probs.shape}")
        if len(probs) != n:
            full = np.full((n, probs.shape[1]), 1.0 / probs.shape[1])
            full[active] = probs
            probs = full
        u_entropy = normalised_entropy(probs)
    elif "confidence" in picks.columns:
        conf = pd.to_numeric(picks["confidence"], errors="coerce").to_numpy(np.float64)
        u_entropy = np.clip(1.0 - np.nan_to_num(conf, nan=0.0), 0.0, 1.0)
    else:
        u_entropy = np.zeros(n)
    uncertainty = 0.5 * (u_margin + u_entropy)

    rarity = np.zeros(n)
    if "cluster" in picks.columns:
        cluster = pd.to_numeric(picks["cluster"], errors="coerce").fillna(-1).to_numpy(np.int64)
        in_cluster = classified & (cluster >= 0)
        if in_cluster.any():
            ids, sizes = np.unique(cluster[in_cluster], return_counts=True)
            size_of = dict(zip(ids.tolist(), sizes.tolist()))
            median = float(np.median(sizes))
            rows = np.flatnonzero(in_cluster)
            rarity[rows] = 1.0 - np.minimum(1.0, np.array([size_of[c] for c in cluster[rows]]) / median)
    priority = uncertainty * (1.0 + rarity)

    rows = np.flatnonzero(candidate)
    return pd.DataFrame({"row": rows, "class_name": names[rows], "unknown_score": score[rows],
                         "margin": margin[rows], "u_margin": u_margin[rows], "u_entropy": u_entropy[rows],
                         "rarity": rarity[rows], "priority": priority[rows]})


def review_queue(picks: pd.DataFrame, threshold: float, mode: str = "queue", class_name: str | None = None,
                 probabilities: np.ndarray | None = None, include_curated: bool = False) -> pd.DataFrame:
    """The picks to review, in order (see the module docstring for the rule and the modes).

    ``mode``: ``queue`` (uncertainty, round-robin over predicted classes), ``unknowns`` or
    ``class`` (needs ``class_name``). Returns the :func:`review_priorities` table in queue order
    (a fresh 0…n−1 index) with a ``rank`` column (1 = first); ``result["row"]`` are the pick
    positions. An empty table when nothing is left to review.
    """
    if mode not in REVIEW_MODES:
        raise ParameterError(f"mode must be one of {', '.join(REVIEW_MODES)}, got {mode!r}")
    table = review_priorities(picks, threshold, probabilities, include_curated)
    by_priority = table.sort_values(["priority", "row"], ascending=[False, True], kind="mergesort")
    if mode == "unknowns":
        out = by_priority[by_priority["class_name"] == UNKNOWN_CLASS]
    elif mode == "class":
        if not class_name:
            raise ParameterError("mode 'class' needs class_name (the predicted class to review)")
        known = set(pd.Series(picks.get("class_name", pd.Series(dtype=str))).astype(str))
        if class_name not in known:
            raise ParameterError(f"no pick is predicted '{class_name}' (classes: "
                                 f"{', '.join(sorted(c for c in known if c)) or 'none'})")
        out = by_priority[by_priority["class_name"] == class_name]
    else:
        out = _round_robin(by_priority)
    out = out.reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def _round_robin(by_priority: pd.DataFrame) -> pd.DataFrame:
    """Interleave the groups of predicted classes: the best of each group, then the second best, …"""
    if not len(by_priority):
        return by_priority
    groups = [g for _, g in by_priority.groupby("class_name", sort=False)]  # in order of their best pick
    order: list[int] = []
    depth = max(len(g) for g in groups)
    positions = [g.index.to_numpy() for g in groups]
    for k in range(depth):
        for pos in positions:
            if k < len(pos):
                order.append(int(pos[k]))
    return by_priority.loc[order]
