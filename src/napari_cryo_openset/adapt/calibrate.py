"""The open-set rule's numbers, from source-validation data only (never target labels).

:func:`calibrate_open_set` picks the unknown threshold on source-validation scores of known
and decoy (``unknown``) boxes; :func:`fit_temperature` scales the logits so the softmax
confidence is calibrated on the same held-out boxes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ParameterError
from .common import AdaptParams


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iterations: int = 200) -> float:
    """Temperature scaling (Guo et al. 2017) on held-out *source* logits: T minimising the NLL."""
    if len(labels) < 2:
        return 1.0
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=iterations)
    lf = logits.detach().float()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lf / log_t.exp(), labels)
        loss.backward()
        return loss

    try:
        opt.step(closure)
    except RuntimeError:
        return 1.0
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and 0.05 < t < 20 else 1.0


def calibrate_open_set(scores_known: np.ndarray, scores_unknown: np.ndarray, params: AdaptParams):
    """The unknown threshold from source-validation scores (no target labels)."""
    from ..openset import calibrate_threshold

    rule = params.threshold_rule
    if rule == "auto":
        rule = "youden" if len(scores_unknown) else "quantile"
    if rule == "youden" and not len(scores_unknown):
        raise ParameterError("threshold_rule 'youden' needs source unknowns (decoys) in the simulated set")
    return calibrate_threshold(scores_known, scores_unknown if rule == "youden" else None,
                               quantile=params.threshold_quantile, rule=rule)
