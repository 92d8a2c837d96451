"""Score thresholds for DoG picks (all on the polarity-corrected DoG response).

- ``aitom`` (Pei et al. 2016, AITom): T = m + t·(M − m)/20 with M the strongest and m the
  weakest peak of the response, t = 3 by default. m depends on which weak peaks a detector
  reports, so it is defined here as the weakest response maximum of its whole min-distance
  cube (half-width = min_distance, rounded up to whole response samples), inside the allowed
  region (border, mask), whatever its sign — the peak set of
  ``skimage.feature.peak_local_max(min_distance=...)`` and of AITom's distance filter, so the
  reference implementation in the benchmark applies the same rule to (nearly) the same set.
  Our own detector uses a smaller cube and finds more weak peaks, which would lower m and T and
  let noise peaks through (``benchmarks/bench_picking.py`` compares both against the
  reference). One outlier (a gold bead) moves M and so T: prefer ``robust`` on real data.
- ``robust``: T = median + k · 1.4826 · MAD of the response (a regular, tiling-independent
  sample of it). 1.4826·MAD is the standard deviation for Gaussian noise, so k is "noise SDs".
- ``topn``: T = the N-th best candidate's score (N = ``max_picks``).
- ``value``: T given by the user.

A pick is a candidate with score ≥ T; ``max_picks`` caps any method (best first).
"""

from __future__ import annotations

import numpy as np

#: 1.4826 · MAD estimates the standard deviation of Gaussian data.
MAD_TO_SIGMA = 1.4826


def aitom_threshold(peak_min: float, peak_max: float, level: float = 3.0) -> float:
    """AITom: ``m + level · (M − m) / 20`` (NaN when there is no peak)."""
    return float(peak_min + level * (peak_max - peak_min) / 20.0)


def robust_stats(sample: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826·MAD) of a response sample (float64)."""
    sample = np.asarray(sample, dtype=np.float64)
    if sample.size == 0:
        return 0.0, 0.0
    med = float(np.median(sample))
    return med, MAD_TO_SIGMA * float(np.median(np.abs(sample - med)))


def robust_threshold(median: float, sigma: float, k: float) -> float:
    """``median + k · sigma`` (sigma = 1.4826·MAD)."""
    return float(median + k * sigma)


def topn_threshold(scores_desc: np.ndarray, n: int) -> float:
    """Score of the ``n``-th best candidate (scores sorted descending); −inf if fewer."""
    if n < 1:
        return float("inf")
    if len(scores_desc) < n:
        return float("-inf")
    return float(scores_desc[n - 1])


def select(scores_desc: np.ndarray, threshold: float, max_picks: int | None = None) -> int:
    """How many of the best-first ``scores_desc`` pass ``threshold`` (capped by ``max_picks``)."""
    if not np.isfinite(threshold) and threshold > 0 or np.isnan(threshold):
        return 0
    n = int(np.count_nonzero(np.asarray(scores_desc) >= threshold))
    return n if max_picks is None else min(n, int(max_picks))
