"""Entry points: adapt a model to boxes, or to a tomogram's picks (used by CLI, widget, benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from ..boxes import PickBoxes, PooledBoxes, cache_if_small, take_rows
from ..checkpoint import ModelBundle
from ..errors import ParameterError, PicksError
from ..picks import validate_picks
from ..progress import Progress
from .common import AdaptParams, is_adapted
from .source import SourceData, load_source
from .result import AdaptResult


def adapt_boxes(bundle: ModelBundle, source, target: torch.Tensor | np.ndarray, params: AdaptParams | None = None,
                labelled=None) -> Generator[Progress, None, AdaptResult]:
    """Adapt ``bundle`` to canonical target boxes (N, B, B, B) or (N, 1, B, B, B).

    ``target``: a tensor or array, or a lazy :class:`~napari_cryo_openset.boxes.PickBoxes`
    (boxes cut from the tomogram on demand). The adaptation learns from at most
    ``params.max_target_picks`` of them (:func:`adaptation_subset`), held in memory when they
    take at most :data:`~napari_cryo_openset.boxes.CACHE_BYTES` (else cut again at every pass);
    the predictions of the result cover every box. ``source``: the model's simulated set
    (:class:`SimulatedSet`, its path, or a prepared :class:`SourceData`). ``labelled``: the user's
    curated target picks (a :class:`~.loop.LabelledTargets`; :mod:`.refine`), learnt from in every round.
    """
    from .ada import adapt_ada
    from .mluda import adapt_mluda

    params = params or AdaptParams()
    if is_adapted(bundle):
        raise ParameterError("this model is already adapted; adapt the source model instead")
    src = source if isinstance(source, SourceData) else load_source(source, bundle)
    if not isinstance(target, PickBoxes):
        target = torch.as_tensor(np.asarray(target, dtype=np.float32)) if isinstance(target, np.ndarray) else target
        if target.ndim == 4:
            target = target[:, None]
    if target.ndim != 5 or tuple(target.shape[-3:]) != (bundle.box_size,) * 3:
        raise ParameterError(f"target boxes must be (N, {bundle.box_size}, {bundle.box_size}, {bundle.box_size}), "
                             f"got {tuple(target.shape)}")
    learn_from = cache_if_small(adaptation_subset(target, params.max_target_picks, params.seed))
    predict_on = learn_from if len(learn_from) == len(target) else target
    run = adapt_ada if params.method == "ada" else adapt_mluda
    return (yield from run(bundle, src, learn_from.float(), params, predict_on=predict_on.float(), labelled=labelled))


def adaptation_subset(target, max_picks: int, seed: int = 0):
    """The target boxes an adaptation learns from: all of them, or ``max_picks`` of them.

    More than ``max_picks`` boxes: a seeded random subset (rows in their original order, drawn
    from its own generator so the run's other random draws do not change). A tensor gives a
    tensor, a lazy :class:`~napari_cryo_openset.boxes.PickBoxes` a lazy subset.
    """
    rows = subset_rows(len(target), max_picks, seed)
    return target if rows is None else take_rows(target, rows)


def subset_rows(n: int, max_picks: int, seed: int = 0) -> np.ndarray | None:
    """The sorted rows of :func:`adaptation_subset` among ``n`` boxes (None: all of them)."""
    if n <= max_picks:
        return None
    return np.sort(np.random.default_rng([int(seed), int(n)]).choice(int(n), int(max_picks), replace=False))


@dataclass
class TomogramAdaptation:
    """An adaptation to a tomogram: the result and the picks table with predictions."""

    result: AdaptResult
    picks: pd.DataFrame
    polarity: str
    resampled: bool


def adapt_to_tomogram(bundle: ModelBundle, source, tomogram, picks: pd.DataFrame, params: AdaptParams | None = None,
                      polarity: str = "dark", allow_resampling: bool = True,
                      ) -> Generator[Progress, None, TomogramAdaptation]:
    """Adapt to the active picks (accepted + unreviewed) and predict every active pick.

    The boxes are cut from the tomogram on demand (:func:`~napari_cryo_openset.predict.pick_boxes`),
    batch by batch; at most ``params.max_target_picks`` of them are learnt from, and a set of at
    most :data:`~napari_cryo_openset.boxes.CACHE_BYTES` is held in memory while it is (see
    :func:`adapt_boxes`).
    """
    from ..predict import fill_predictions, pick_boxes

    params = params or AdaptParams()
    picks = validate_picks(picks.copy())
    active = (picks["curation"] != "rejected").to_numpy()
    if not active.any():
        raise PicksError("there are no picks to adapt to (all rejected, or none picked)")
    src = source if isinstance(source, SourceData) else load_source(source, bundle)
    yield Progress("extract", 0, int(active.sum()), f"{int(active.sum())} target boxes")
    boxes, polarity, resampled = pick_boxes(bundle, tomogram, picks.loc[active], polarity, allow_resampling)
    yield Progress("extract", int(active.sum()), int(active.sum()), f"polarity {polarity}")
    result = yield from adapt_boxes(bundle, src, boxes, params)
    prov = result.bundle.provenance.setdefault("adaptation", {})
    prov["target_tomogram"] = str(getattr(tomogram, "path", "") or "")
    prov["polarity"] = polarity
    return TomogramAdaptation(result=result, picks=fill_predictions(picks, active, result.predictions),
                              polarity=polarity, resampled=resampled)


def adapt_to_tomograms(bundle: ModelBundle, source, picks: Mapping[str, tuple[pd.DataFrame, str]],
                       open_tomogram: Callable[[str], object], params: AdaptParams | None = None,
                       ) -> Generator[Progress, None, AdaptResult]:
    """One adaptation to the pooled active picks of several tomograms (``batch --joint``), label-free.

    ``picks``: tomogram name → (its picks table, the polarity to cut its boxes with: ``dark`` or
    ``bright``), in pool order; ``open_tomogram(name)``: its :class:`~napari_cryo_openset.io.Tomogram`.
    The pool (every active pick of every tomogram, in that order) is capped at
    ``params.max_target_picks`` by the seeded subset of :func:`adaptation_subset`; each tomogram's
    share of it is cut on demand from the memory-mapped file (a tomogram held in memory, e.g. a
    copick one, has its share cut now and is dropped). The result's predictions are of the boxes
    learnt from; :func:`apply_adaptation` predicts each tomogram. The bundle's provenance says
    ``adaptation.joint``: ``tomograms`` (names), ``pooled_picks`` and ``adaptation_picks``.
    """
    from ..predict import pick_boxes

    params = params or AdaptParams()
    if not picks:
        raise PicksError("there are no tomograms to adapt to jointly")
    src = source if isinstance(source, SourceData) else load_source(source, bundle)
    counts = {name: int((table["curation"] != "rejected").sum()) for name, (table, _) in picks.items()}
    total = sum(counts.values())
    if total == 0:
        raise PicksError("there are no picks to adapt to (all rejected, or none picked)")
    rows = subset_rows(total, params.max_target_picks, params.seed)
    rows = np.arange(total) if rows is None else rows
    parts, start = [], 0
    yield Progress("extract", 0, len(picks), f"{len(rows)} of {total} target boxes from {len(picks)} tomograms")
    for k, (name, (table, polarity)) in enumerate(picks.items()):
        mine = rows[(rows >= start) & (rows < start + counts[name])] - start
        start += counts[name]
        if not len(mine):
            continue
        tomogram = open_tomogram(name)
        active = table.loc[table["curation"] != "rejected"]
        boxes, _, _ = pick_boxes(bundle, tomogram, active.iloc[mine], polarity)
        parts.append(boxes if isinstance(getattr(tomogram, "data", None), np.memmap) else boxes.materialise())
        del tomogram
        yield Progress("extract", k + 1, len(picks), f"{name}: {len(mine)} boxes")
    result = yield from adapt_boxes(bundle, src, PooledBoxes(parts), params)
    prov = result.bundle.provenance.setdefault("adaptation", {})
    prov["joint"] = {"tomograms": list(picks), "pooled_picks": int(total), "adaptation_picks": int(len(rows))}
    prov["target_tomogram"] = "joint: " + ", ".join(picks)
    return result


def apply_adaptation(result: AdaptResult, tomogram, picks: pd.DataFrame, polarity: str = "dark",
                     device: str = "auto", allow_resampling: bool = True, batch_size: int = 128,
                     ) -> Generator[Progress, None, TomogramAdaptation]:
    """An adaptation made elsewhere (``result``: e.g. :func:`adapt_to_tomograms` on a group of
    tomograms) applied to ``tomogram``'s active picks: each is predicted with the adapted model and its
    open-set rule, boxes cut batch by batch. Returns a :class:`TomogramAdaptation` whose result holds
    ``result``'s diagnostics and this tomogram's predictions."""
    from ..device import choose_device
    from ..predict import fill_predictions, pick_boxes, predict_boxes

    picks = validate_picks(picks.copy())
    active = (picks["curation"] != "rejected").to_numpy()
    if not active.any():
        raise PicksError("there are no picks to classify (all rejected, or none picked)")
    yield Progress("extract", 0, int(active.sum()), f"{int(active.sum())} target boxes")
    boxes, polarity, resampled = pick_boxes(result.bundle, tomogram, picks.loc[active], polarity, allow_resampling)
    pred = yield from predict_boxes(result.bundle, boxes, choose_device(device), batch_size)
    return TomogramAdaptation(result=replace(result, predictions=pred), picks=fill_predictions(picks, active, pred),
                              polarity=polarity, resampled=resampled)
