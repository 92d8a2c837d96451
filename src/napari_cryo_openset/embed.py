"""The picks seen by the network: a t-SNE map, clusters of unknowns, and group averages (core, no Qt).

- **Map**: t-SNE (openTSNE: exact or Annoy neighbours, FFT-accelerated gradients, PCA
  initialisation, so a seed gives the same map) of the feature vectors of the classified picks
  (the encoder's embedding, one row per active pick). Perplexity is capped at (N − 1) / 3 for
  small sets; below :data:`MIN_TSNE_PICKS` picks the map is the first two principal components.
  The optimisation runs in chunks and yields a :class:`~napari_cryo_openset.progress.Progress`
  between them, so a widget can cancel it. Above :data:`MAX_TSNE_FIT` (20,000) picks the map is
  fitted on a seeded subset of that many and the others are placed into it (openTSNE
  ``transform``).
- **Clusters of unknowns**: HDBSCAN (scikit-learn) on the L2-normalised features of the picks
  called ``unknown`` — in feature space, not on the 2-D map, whose distances t-SNE distorts.
  Clusters are numbered 0, 1, … by decreasing size; ``-1`` = not unknown, or unknown but in no
  cluster (noise). Each cluster is a *candidate* novel structure for the user to inspect.
  Above :data:`MAX_CLUSTER_FIT` (20,000) unknowns HDBSCAN runs on a seeded subset and the others
  take their nearest neighbour's cluster.
- **Averages**: the mean of the canonical boxes (protein bright, per-box normalised; see
  :func:`napari_cryo_openset.extract.normalise_subtomograms`) of each group — a known class or an
  unknown cluster. They are **unaligned** (boxes are summed in the tomogram's frame, so the
  missing wedge stays where it is and orientations blur into a rotational average): a first look
  at size and shape, and a reference to start a RELION/Warp refinement from, not a structure.
  They are running sums over boxes cut batch by batch (at most 2,000 per group by default).
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ParameterError
from .params import EmbedParams
from .progress import Progress

#: Fewer picks than this get a PCA map instead of t-SNE.
MIN_TSNE_PICKS = 8
#: Early-exaggeration rounds of the t-SNE optimisation (the rest run without exaggeration).
EARLY_EXAGGERATION_ITERATIONS = 250
#: The t-SNE map is fitted on at most this many picks (a seeded subset); the rest are placed into it.
MAX_TSNE_FIT = 20_000
#: HDBSCAN clusters at most this many unknowns (a seeded subset); the rest join their nearest neighbour's cluster.
MAX_CLUSTER_FIT = 20_000
#: Picks placed on the map (or given a cluster) per call, after the fit.
TRANSFORM_CHUNK = 10_000
#: Boxes cut and summed per step of the averages.
AVERAGE_BATCH = 256


@dataclass
class Embedding:
    """A 2-D map of N picks and the clusters of the unknown ones (rows in the order given)."""

    xy: np.ndarray  # (N, 2)
    cluster: np.ndarray  # (N,) int64, -1 = none
    method: str  # "t-SNE", "PCA" or "none"
    perplexity: float | None
    seconds: float

    @property
    def cluster_sizes(self) -> dict[int, int]:
        ids, counts = np.unique(self.cluster[self.cluster >= 0], return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}

    def summary(self) -> str:
        sizes = self.cluster_sizes
        clusters = ", ".join(f"U{i} {n}" for i, n in sizes.items()) or "none"
        return f"{self.method} map of {len(self.xy)} picks; clusters of unknowns: {clusters}"


def _check_features(features) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ParameterError(f"features must be a 2-D array (picks × dimensions), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ParameterError("features contain NaN or infinite values (was the model trained to completion?)")
    return x


def _pca(x: np.ndarray) -> np.ndarray:
    if len(x) < 2:
        return np.zeros((len(x), 2))
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    # a fixed sign per axis (largest |loading| positive) so the map does not flip between runs
    signs = np.sign(xy[np.abs(xy).argmax(axis=0), [0, 1]])
    return xy * np.where(signs == 0, 1.0, signs)


def tsne_map(features, params: EmbedParams | None = None) -> Generator[Progress, None, tuple[np.ndarray, str, float | None]]:
    """2-D map of ``features`` (N, d); returns ``(xy, method, perplexity)``.

    Up to :data:`MAX_TSNE_FIT` picks the map is fitted on all of them. More picks: it is fitted
    on a seeded random subset of :data:`MAX_TSNE_FIT` and the other picks are placed into it with
    openTSNE's ``transform`` (each new point optimised against the fixed map, in chunks of
    :data:`TRANSFORM_CHUNK`), so time and memory grow with the subset, not with N.
    """
    params = params or EmbedParams()
    x = _check_features(features)
    n = len(x)
    total = EARLY_EXAGGERATION_ITERATIONS + params.iterations
    if n < MIN_TSNE_PICKS:
        yield Progress("embed", total, total, f"{n} picks: PCA map (t-SNE needs ≥ {MIN_TSNE_PICKS})")
        return _pca(x), ("PCA" if n else "none"), None
    fit_rows = _fit_subset(n, MAX_TSNE_FIT, params.seed)
    emb, perplexity = yield from _fit_tsne(x[fit_rows], params, n)
    xy = np.empty((n, 2), dtype=np.float64)
    xy[fit_rows] = np.asarray(emb, dtype=np.float64)
    rest = np.setdiff1d(np.arange(n), fit_rows)
    for start in range(0, len(rest), TRANSFORM_CHUNK):
        rows = rest[start:start + TRANSFORM_CHUNK]
        xy[rows] = np.asarray(emb.transform(x[rows]), dtype=np.float64)
        yield Progress("embed", total, total, f"t-SNE: {start + len(rows)}/{len(rest)} more picks placed on the map")
    return xy, "t-SNE", perplexity


def _fit_subset(n: int, limit: int, seed: int) -> np.ndarray:
    """All rows when ``n ≤ limit``, else a seeded random ``limit`` of them (sorted)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng([int(seed), n]).choice(n, int(limit), replace=False))


def _fit_tsne(x: np.ndarray, params: EmbedParams, n_all: int):
    """openTSNE fit of ``x`` (PCA initialisation, early exaggeration, chunks with progress)."""
    from openTSNE import TSNEEmbedding
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.initialization import rescale

    from .device import cpu_count

    n = len(x)
    threads = params.threads or cpu_count()
    perplexity = float(min(params.perplexity, (n - 1) / 3.0))
    total = EARLY_EXAGGERATION_ITERATIONS + params.iterations
    subset = f" (fitted on {n}, the rest placed into it)" if n < n_all else ""
    yield Progress("embed", 0, total, f"t-SNE of {n_all} picks{subset} (perplexity {perplexity:.3g})")
    affinities = PerplexityBasedNN(x, perplexity=perplexity, n_jobs=threads, random_state=params.seed)
    init = rescale(_pca(x))
    emb = TSNEEmbedding(init, affinities, n_jobs=threads, random_state=params.seed,
                        negative_gradient_method="auto")
    done = 0
    for phase_iters, exaggeration, momentum in ((EARLY_EXAGGERATION_ITERATIONS, 12.0, 0.5),
                                                (params.iterations, 1.0, 0.8)):
        left = phase_iters
        while left > 0:
            step = min(params.chunk, left)
            emb.optimize(step, inplace=True, exaggeration=exaggeration, momentum=momentum)
            left -= step
            done += step
            yield Progress("embed", done, total, "t-SNE")
    return emb, perplexity


def cluster_unknowns(features, is_unknown, min_cluster_size: int = 5, seed: int = 0) -> np.ndarray:
    """Cluster ids (N,) of the unknown picks (HDBSCAN on L2-normalised features); -1 elsewhere.

    More than :data:`MAX_CLUSTER_FIT` unknowns: HDBSCAN runs on a seeded random subset of that
    many, and every other unknown takes the cluster (or noise) of its nearest neighbour in the
    subset.
    """
    x = _check_features(features)
    unknown = np.asarray(is_unknown, dtype=bool)
    if unknown.shape != (len(x),):
        raise ParameterError(f"is_unknown must have one value per pick ({len(x)}), got {unknown.shape}")
    out = np.full(len(x), -1, dtype=np.int64)
    idx = np.flatnonzero(unknown)
    if len(idx) < min_cluster_size:
        return out
    from sklearn.cluster import HDBSCAN

    u = x[idx] / np.maximum(np.linalg.norm(x[idx], axis=1, keepdims=True), 1e-12)
    fit = _fit_subset(len(idx), MAX_CLUSTER_FIT, seed)
    labels = HDBSCAN(min_cluster_size=int(min_cluster_size), copy=True).fit_predict(u[fit])
    if len(fit) < len(idx):
        labels = _nearest_labels(u, fit, labels)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.lexsort((ids, -counts))]  # by decreasing size, ties by first label
    renumber = {int(old): new for new, old in enumerate(order)}
    out[idx] = [renumber.get(int(label), -1) for label in labels]
    return out


def _nearest_labels(u: np.ndarray, fit: np.ndarray, fit_labels: np.ndarray) -> np.ndarray:
    """Labels of all rows of ``u``: the fitted rows keep theirs, the others take their nearest fitted row's."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.empty(len(u), dtype=np.int64)
    labels[fit] = fit_labels
    rest = np.setdiff1d(np.arange(len(u)), fit)
    nn = NearestNeighbors(n_neighbors=1).fit(u[fit])
    for start in range(0, len(rest), TRANSFORM_CHUNK):
        rows = rest[start:start + TRANSFORM_CHUNK]
        labels[rows] = fit_labels[nn.kneighbors(u[rows], return_distance=False)[:, 0]]
    return labels


def embed_predictions(features, is_unknown, params: EmbedParams | None = None) -> Generator[Progress, None, Embedding]:
    """The map and the clusters of unknowns for classified picks (rows of ``features``)."""
    params = params or EmbedParams()
    t0 = time.perf_counter()
    xy, method, perplexity = yield from tsne_map(features, params)
    cluster = cluster_unknowns(features, is_unknown, params.min_cluster_size, params.seed)
    return Embedding(xy=xy, cluster=cluster, method=method, perplexity=perplexity,
                     seconds=time.perf_counter() - t0)


def fill_embedding(picks: pd.DataFrame, active_mask, embedding: Embedding) -> pd.DataFrame:
    """A copy of ``picks`` with ``tsne_x``, ``tsne_y`` and ``cluster`` set for the active rows."""
    from .picks import validate_picks

    active_mask = np.asarray(active_mask, dtype=bool)
    if int(active_mask.sum()) != len(embedding.xy):
        raise ParameterError(f"the embedding has {len(embedding.xy)} rows but {int(active_mask.sum())} picks are active")
    out = picks.copy()
    out["tsne_x"] = np.nan
    out["tsne_y"] = np.nan
    out["cluster"] = -1
    out.loc[active_mask, "tsne_x"] = embedding.xy[:, 0]
    out.loc[active_mask, "tsne_y"] = embedding.xy[:, 1]
    out.loc[active_mask, "cluster"] = embedding.cluster
    return validate_picks(out)


def group_names(class_name, cluster) -> np.ndarray:
    """The group of each pick: its class, or ``unknown U<k>`` for an unknown in cluster k."""
    from .picks import UNKNOWN_CLASS

    names = np.asarray(class_name, dtype=object).astype(str)
    cluster = np.asarray(cluster, dtype=np.int64)
    return np.array([f"{UNKNOWN_CLASS} U{c}" if n == UNKNOWN_CLASS and c >= 0 else n
                     for n, c in zip(names, cluster)], dtype=object)


def group_averages(boxes, groups, max_per_group: int | None = None, seed: int = 0) -> dict[str, tuple[np.ndarray, int]]:
    """Unaligned average box of each group: ``{group: (average (B, B, B), number averaged)}``.

    ``boxes`` (N, B, B, B) canonical subtomograms (Z, Y, X): an array, a tensor, or a lazy
    :class:`~napari_cryo_openset.boxes.PickBoxes` (N, 1, B, B, B) whose boxes are cut here;
    ``groups`` (N,) names (e.g. from :func:`group_names`; empty names are skipped).
    ``max_per_group`` caps the boxes averaged (a seeded random subset) to bound time for large
    classes. The boxes are summed in float64 running sums, :data:`AVERAGE_BATCH` boxes at a
    time, so memory does not grow with N.
    """
    groups = np.asarray(groups, dtype=object).astype(str)
    shape = tuple(boxes.shape)
    if not (len(shape) == 4 or (len(shape) == 5 and shape[1] == 1)) or shape[0] != len(groups):
        raise ParameterError(f"boxes must be (N, B, B, B) with one group name each; got {shape} and "
                             f"{len(groups)} names")
    chosen = _average_members(groups, max_per_group, seed)
    if not chosen:
        return {}
    names = sorted(chosen)
    member = np.full(len(groups), -1, dtype=np.int64)
    for k, name in enumerate(names):
        member[chosen[name]] = k
    rows = np.flatnonzero(member >= 0)
    sums = np.zeros((len(names),) + shape[-3:], dtype=np.float64)
    for start in range(0, len(rows), AVERAGE_BATCH):
        batch = rows[start:start + AVERAGE_BATCH]
        x = _box_batch(boxes, batch)
        for k in np.unique(member[batch]):
            sums[k] += x[member[batch] == k].sum(axis=0, dtype=np.float64)
    return {name: ((sums[k] / len(chosen[name])).astype(np.float32), len(chosen[name]))
            for k, name in enumerate(names)}


def _average_members(groups: np.ndarray, max_per_group: int | None, seed: int) -> dict[str, np.ndarray]:
    """The rows averaged per group (all, or a seeded random ``max_per_group`` of them)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in sorted(set(groups) - {""}):
        idx = np.flatnonzero(groups == name)
        if max_per_group is not None and len(idx) > max_per_group:
            idx = np.sort(rng.choice(idx, max_per_group, replace=False))
        out[name] = idx
    return out


def _box_batch(boxes, rows: np.ndarray) -> np.ndarray:
    """(len(rows), B, B, B) numpy boxes of an array, a tensor or a :class:`PickBoxes`."""
    if isinstance(boxes, np.ndarray):
        x = boxes[rows]
    else:
        import torch

        x = boxes[torch.from_numpy(rows)] if isinstance(boxes, torch.Tensor) else boxes[rows]
        x = x.numpy()
    return x[:, 0] if x.ndim == 5 else x


@dataclass
class PicksEmbedding:
    """The picks table with ``tsne_x``, ``tsne_y`` and ``cluster`` set, the map, and the averages."""

    picks: pd.DataFrame
    embedding: Embedding
    averages: dict  # group name → (unaligned average box (B, B, B) float32, number of boxes)
    voxel_size: float  # Å, of the averages (the model's)
    polarity: str
    active_index: np.ndarray  # rows of ``picks`` that were embedded (active and classified)

    def summary(self) -> str:
        return self.embedding.summary()


def embed_picks(bundle, tomogram, picks: pd.DataFrame, polarity: str = "dark", params: EmbedParams | None = None,
                device: str = "auto", max_per_average: int | None = 2000,
                ) -> Generator[Progress, None, PicksEmbedding]:
    """Map, cluster and average the classified picks of ``tomogram`` with ``bundle``'s encoder.

    The picks must carry predictions (``class_name``; e.g. from ``predict`` or ``adapt``): the
    active ones (not rejected) with a class are embedded. Their classes and ``is_unknown``
    flags are taken from the table as they are (so a threshold the user moved is respected);
    the network only supplies the feature vectors. Boxes are extracted as for prediction
    (same box, voxel size and normalisation), batch by batch: once for the features, and again
    for the (at most ``max_per_average`` per group) boxes averaged; averages are unaligned (see
    the module doc). Large sets: see :func:`tsne_map` and :func:`cluster_unknowns` for the
    limits above which the map and the clusters are fitted on a subset.
    """
    from .errors import PicksError
    from .picks import UNKNOWN_CLASS, validate_picks
    from .predict import classify_boxes, pick_boxes

    params = params or EmbedParams()
    picks = validate_picks(picks.copy())
    if "class_name" not in picks.columns:
        raise PicksError("the picks have no predictions yet (run Predict or Adapt first)")
    names = picks["class_name"].fillna("").astype(str)
    mask = ((picks["curation"] != "rejected") & (names != "")).to_numpy()
    if not mask.any():
        raise PicksError("there are no classified picks to embed (run Predict or Adapt first; rejected picks "
                         "are left out)")
    n = int(mask.sum())
    yield Progress("extract", 0, n, f"{n} classified picks")
    boxes, polarity, _ = pick_boxes(bundle, tomogram, picks.loc[mask], polarity)
    yield Progress("extract", n, n, f"polarity {polarity}")
    features = classify_boxes(bundle, boxes, device).features
    chosen = names[mask].to_numpy()
    if "is_unknown" in picks.columns:
        is_unknown = picks.loc[mask, "is_unknown"].fillna(False).astype(bool).to_numpy() | (chosen == UNKNOWN_CLASS)
    else:
        is_unknown = chosen == UNKNOWN_CLASS
    embedding = yield from embed_predictions(features, is_unknown, params)
    out = fill_embedding(picks, mask, embedding)
    groups = group_names(np.where(is_unknown, UNKNOWN_CLASS, chosen), embedding.cluster)
    averages = group_averages(boxes, groups, max_per_average, params.seed)
    return PicksEmbedding(picks=out, embedding=embedding, averages=averages, voxel_size=float(bundle.voxel_size),
                          polarity=polarity, active_index=np.flatnonzero(mask))


def group_stem(group: str) -> str:
    """A group name with only letters, digits, ``.``, ``_`` and ``-`` (``unknown U0`` → ``unknown_U0``): file and folder names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(group)).strip("._") or "no_class"


def average_file_name(group: str) -> str:
    """``average_<group>.mrc`` with only letters, digits, ``.``, ``_`` and ``-`` (``unknown U0`` → ``average_unknown_U0.mrc``)."""
    return f"average_{group_stem(group)}.mrc"


def write_averages(folder, averages: dict, voxel_size: float, order=None) -> list[Path]:
    """Write each average of ``{group: (box, n)}`` as ``folder/average_<group>.mrc`` (atomic, voxel size in Å).

    ``order``: the groups in the order to write (default: sorted); two groups whose safe names
    collide get ``_2``, ``_3``, … Returns the paths written.
    """
    from .io import write_tomogram

    written: list[Path] = []
    used: set[str] = set()
    for group in (order if order is not None else sorted(averages)):
        avg, n = averages[group]
        name = average_file_name(group)
        stem, k = name[:-4], 2
        while name in used:
            name, k = f"{stem}_{k}.mrc", k + 1
        used.add(name)
        written.append(write_tomogram(Path(folder) / name, avg, float(voxel_size),
                                      label=f"napari-cryo-openset unaligned average of {n}: {group}"))
    return written
