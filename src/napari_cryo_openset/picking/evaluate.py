"""Compare picks with ground truth: one-to-one matching within a distance, precision/recall/F1."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def match_picks(predicted, truth, tolerance: float, voxel_size=1.0) -> dict:
    """Match predicted picks to true positions one-to-one, closest pairs first.

    Parameters
    ----------
    predicted, truth
        Picks tables (``z``, ``y``, ``x`` columns) or (N, 3) Z Y X arrays, in voxels.
    tolerance
        Largest distance of a match, in the units of ``coordinates × voxel_size`` (Å when the
        voxel size in Å is given; voxels with the default 1). ``benchmarks/bench_picking.py`` uses a fraction of the
        particle diameter: a pick further off would cut a box around another particle.
    voxel_size
        Å, one number or (Z, Y, X).

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``mean_distance`` (of matches)
        and ``pairs`` ((K, 2) indices into predicted, truth).

    Greedy matching by increasing distance is optimal for well-separated particles (closer
    than the tolerance to at most one true position), which is how benchmarks are built.
    """
    p = _coords(predicted) * np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    t = _coords(truth) * np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    pairs = np.zeros((0, 2), dtype=np.int64)
    dists = np.zeros(0)
    if len(p) and len(t):
        sdm = cKDTree(p).sparse_distance_matrix(cKDTree(t), tolerance, output_type="ndarray")
        if len(sdm):
            order = np.lexsort((sdm["j"], sdm["i"], sdm["v"]))
            used_p, used_t, chosen = set(), set(), []
            for k in order:
                i, j = int(sdm["i"][k]), int(sdm["j"][k])
                if i not in used_p and j not in used_t:
                    used_p.add(i)
                    used_t.add(j)
                    chosen.append(k)
            pairs = np.stack([sdm["i"][chosen], sdm["j"][chosen]], axis=1).astype(np.int64)
            dists = sdm["v"][chosen]
    tp = len(pairs)
    fp, fn = len(p) - tp, len(t) - tp
    precision = tp / len(p) if len(p) else (1.0 if not len(t) else 0.0)
    recall = tp / len(t) if len(t) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_distance": float(dists.mean()) if tp else float("nan"),
        "pairs": pairs,
    }


def _coords(x) -> np.ndarray:
    if hasattr(x, "columns"):
        return x[["z", "y", "x"]].to_numpy(dtype=np.float64)
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(-1, 3) if arr.size else np.zeros((0, 3))
