"""Peak finding on the (decimated) DoG response and exact minimum-distance suppression.

1. :func:`local_maxima`: samples equal to the maximum of the cube around them
   (``scipy.ndimage.maximum_filter``), with the cube inscribed in the min-distance sphere, so
   every sample it removes has a higher response closer than the minimum distance;
2. :func:`refine`: sub-sample position and height by a parabola through the two neighbours
   on each axis (the response is smooth on the scale of σ1, several samples);
3. :func:`suppress`: greedy non-maximum suppression on candidates sorted best-first, with a
   KD-tree (``scipy.spatial.cKDTree.query_pairs``): a candidate is dropped iff a *kept* better
   one lies closer than ``min_distance`` (Euclidean, Å). Exact, O(N log N + pairs).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree


def local_maxima(
    response: np.ndarray,
    core: tuple[slice, slice, slice],
    half_width: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``response`` whose sample lies in ``core``.

    ``response`` must extend at least ``half_width + 1`` samples beyond ``core`` on every side
    (the tile halo guarantees it). Returns (M, 3) integer sample indices into ``response`` and
    their (M,) values.
    """
    ext = tuple(
        slice(core[a].start - half_width[a] - 1, core[a].stop + half_width[a] + 1) for a in range(3)
    )
    sub = response[ext]
    size = tuple(2 * h + 1 for h in half_width)
    peak = sub == ndimage.maximum_filter(sub, size=size, mode="nearest")
    inner = tuple(slice(half_width[a] + 1, sub.shape[a] - half_width[a] - 1) for a in range(3))
    idx = np.argwhere(peak[inner])
    idx += np.array([core[a].start for a in range(3)])
    return idx, response[idx[:, 0], idx[:, 1], idx[:, 2]]


def cube_maxima(response: np.ndarray, idx: np.ndarray, half_width: tuple[int, int, int]) -> np.ndarray:
    """For peaks at sample indices ``idx``: is each the maximum of the cube of ``half_width``?

    ``response`` must extend ``half_width`` beyond every index (the tile halo guarantees it).
    """
    if len(idx) == 0:
        return np.zeros(0, dtype=bool)
    lo = idx.min(axis=0) - np.asarray(half_width)
    hi = idx.max(axis=0) + np.asarray(half_width) + 1
    sub = response[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    big = ndimage.maximum_filter(sub, size=tuple(2 * h + 1 for h in half_width), mode="nearest")
    rel = idx - lo
    return response[idx[:, 0], idx[:, 1], idx[:, 2]] >= big[rel[:, 0], rel[:, 1], rel[:, 2]]


def refine(response: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parabolic sub-sample refinement of peaks at integer sample indices ``idx`` (M, 3).

    Returns (M, 3) float offsets in samples (each in [−0.5, 0.5]) and the interpolated peak
    heights (float64). Needs the ±1 neighbours of every index inside ``response``.
    """
    f0 = response[idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float64)
    offset = np.zeros(idx.shape, dtype=np.float64)
    height = f0.copy()
    for a in range(3):
        lo = idx.copy()
        lo[:, a] -= 1
        hi = idx.copy()
        hi[:, a] += 1
        fm = response[lo[:, 0], lo[:, 1], lo[:, 2]].astype(np.float64)
        fp = response[hi[:, 0], hi[:, 1], hi[:, 2]].astype(np.float64)
        curv = fm - 2.0 * f0 + fp
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(curv < 0, 0.5 * (fm - fp) / curv, 0.0)
        d = np.clip(d, -0.5, 0.5)
        offset[:, a] = d
        height += 0.25 * (fp - fm) * d
    return offset, height


def order_best_first(coords: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices sorting candidates by score (descending), ties by Z, Y, X (ascending)."""
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.lexsort((coords[:, 2], coords[:, 1], coords[:, 0], -scores))


def suppress(points: np.ndarray, min_distance: float) -> np.ndarray:
    """Greedy suppression; ``points`` (N, 3) sorted best-first, in Å. Returns a keep mask.

    Kept points are at least ``min_distance`` apart (a pair at exactly that distance is kept).
    """
    n = len(points)
    keep = np.ones(n, dtype=bool)
    if n < 2 or min_distance <= 0:
        return keep
    tree = cKDTree(points)
    pairs = tree.query_pairs(r=float(np.nextafter(min_distance, 0.0)), output_type="ndarray")
    if len(pairs) == 0:
        return keep
    # query_pairs returns i < j, i.e. i is the better one of the pair.
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    starts = np.searchsorted(pairs[:, 0], np.arange(n + 1))
    for i in np.unique(pairs[:, 0]):  # ascending = best first; keep[i] is final here
        if keep[i]:
            keep[pairs[starts[i] : starts[i + 1], 1]] = False
    return keep



def suppress_sized(points: np.ndarray, diameters: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """Greedy suppression with a size per point; ``points`` (N, 3) in Å, sorted best-first.

    Two points i, j overlap when closer than ``factor × (d_i + d_j) / 2`` (``diameters`` in Å):
    at 1.0 when their spheres overlap; two touching spheres of any sizes
    (centres (d_i + d_j)/2 apart) are both kept, while a small response inside a large
    particle (at most its radius from the centre) is not. A point is dropped iff a *kept*
    better one overlaps it. Returns a keep mask.
    """
    n = len(points)
    keep = np.ones(n, dtype=bool)
    diameters = np.asarray(diameters, dtype=np.float64)
    if n < 2 or factor <= 0 or not np.any(diameters > 0):
        return keep
    tree = cKDTree(points)
    pairs = tree.query_pairs(r=float(np.nextafter(factor * diameters.max(), 0.0)), output_type="ndarray")
    if len(pairs) == 0:
        return keep
    d = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
    pairs = pairs[d < factor * 0.5 * (diameters[pairs[:, 0]] + diameters[pairs[:, 1]])]
    if len(pairs) == 0:
        return keep
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    starts = np.searchsorted(pairs[:, 0], np.arange(n + 1))
    for i in np.unique(pairs[:, 0]):
        if keep[i]:
            keep[pairs[starts[i] : starts[i + 1], 1]] = False
    return keep
