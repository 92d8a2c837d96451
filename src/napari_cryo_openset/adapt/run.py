"""Entry points: adapt a model to boxes, or to a tomogram's picks (used by CLI, widget, benchmarks)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..boxes import PickBoxes, cache_if_small, take_rows
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
    n = len(target)
    if n <= max_picks:
        return target
    rows = np.sort(np.random.default_rng([int(seed), n]).choice(n, int(max_picks), replace=False))
    return take_rows(target, rows)


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
