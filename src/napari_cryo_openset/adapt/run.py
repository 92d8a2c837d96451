"""Entry points: adapt a model to boxes, or to a tomogram's picks (used by CLI, widget, benchmarks)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..checkpoint import ModelBundle
from ..errors import ParameterError, PicksError
from ..picks import validate_picks
from ..progress import Progress
from .common import AdaptParams, is_adapted
from .source import SourceData, load_source
from .result import AdaptResult


def adapt_boxes(bundle: ModelBundle, source, target: torch.Tensor | np.ndarray, params: AdaptParams | None = None,
                ) -> Generator[Progress, None, AdaptResult]:
    """Adapt ``bundle`` to canonical target boxes (N, B, B, B) or (N, 1, B, B, B).

    ``source``: the model's simulated set (:class:`SimulatedSet`, its path, or a prepared
    :class:`SourceData`).
    """
    from .ada import adapt_ada
    from .mluda import adapt_mluda

    params = params or AdaptParams()
    if is_adapted(bundle):
        raise ParameterError("this model is already adapted; adapt the source model instead")
    src = source if isinstance(source, SourceData) else load_source(source, bundle)
    target = torch.as_tensor(np.asarray(target, dtype=np.float32)) if isinstance(target, np.ndarray) else target
    if target.ndim == 4:
        target = target[:, None]
    if target.ndim != 5 or tuple(target.shape[-3:]) != (bundle.box_size,) * 3:
        raise ParameterError(f"target boxes must be (N, {bundle.box_size}, {bundle.box_size}, {bundle.box_size}), "
                             f"got {tuple(target.shape)}")
    run = adapt_ada if params.method == "ada" else adapt_mluda
    return (yield from run(bundle, src, target.float(), params))


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
    """Extract the active picks (accepted + unreviewed), adapt, and predict every active pick."""
    from ..predict import extract_pick_boxes, fill_predictions

    params = params or AdaptParams()
    picks = validate_picks(picks.copy())
    active = (picks["curation"] != "rejected").to_numpy()
    if not active.any():
        raise PicksError("there are no picks to adapt to (all rejected, or none picked)")
    src = source if isinstance(source, SourceData) else load_source(source, bundle)
    yield Progress("extract", 0, int(active.sum()), f"{int(active.sum())} target boxes")
    boxes, polarity, resampled = extract_pick_boxes(bundle, tomogram, picks.loc[active], polarity, allow_resampling)
    yield Progress("extract", int(active.sum()), int(active.sum()), f"polarity {polarity}")
    result = yield from adapt_boxes(bundle, src, boxes, params)
    prov = result.bundle.provenance.setdefault("adaptation", {})
    prov["target_tomogram"] = str(getattr(tomogram, "path", "") or "")
    prov["polarity"] = polarity
    return TomogramAdaptation(result=result, picks=fill_predictions(picks, active, result.predictions),
                              polarity=polarity, resampled=resampled)
