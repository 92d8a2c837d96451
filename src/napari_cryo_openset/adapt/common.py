"""Adaptation parameters and the constants both methods share (no torch import).

The data (:mod:`.source`), the shared optimisation loop (:mod:`.loop`) and the open-set
calibration (:mod:`.calibrate`) live in their own modules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .._lazy import lazy_exports
from ..errors import ParameterError, known_fields

METHODS = ("ada", "mluda")
#: Adam learning rates by method (None in :class:`AdaptParams` picks these): 3D-ADA uses the
#: reference's 1e-5; MLUDA fine-tunes the whole network with a supervised loss and needs more.
DEFAULT_LEARNING_RATE = {"ada": 1e-5, "mluda": 1e-4}
MIN_TARGET_PICKS = 16


@dataclass(frozen=True)
class AdaptParams:
    """Adaptation settings (CLI ``adapt``, the Adapt & predict widget, benchmarks).

    General
        ``method`` (``ada`` or ``mluda``), ``iterations`` (optimisation rounds), ``batch_size``
        (source and target boxes per round each), ``learning_rate`` (None = by method, see
        :data:`DEFAULT_LEARNING_RATE`), ``seed``, ``device``,
        ``threads``, ``amp``, ``eval_every`` (rounds between diagnostics on all target picks).
    3D-ADA
        ``k`` — target-encoder steps per discriminator step; ``discriminator_hidden``;
        ``collapse_fraction`` — stop (and restore the last healthy weights) when the entropy
        of the predicted-class histogram on the target falls below this fraction of the
        source-only model's (a label-free collapse guard); ``aligned_d_acc`` and
        ``aligned_patience`` — stop when the discriminator stays at chance (0 = never).
    MLUDA (see :mod:`.mluda` for the geometry and why)
        ``m1`` (intra-class radius), ``m2`` (min. centre separation, > 2·m1), ``m3`` (min.
        distance of unknowns to any centre, > m1), ``lambda1`` (margin losses), ``lambda2``
        (CORAL, < λ1), ``gamma`` (centre update rate), ``unknown_margin`` (False drops L_c: the
        JDDA-like baseline).
    Open set
        ``threshold_rule``: ``auto`` (Youden's J between source-validation known and
        source-validation unknown (decoy) scores when the source has decoys, else the
        ``threshold_quantile`` of the known scores), ``youden`` or ``quantile``.
    """

    method: str = "ada"
    iterations: int = 300
    batch_size: int = 32
    learning_rate: float | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    amp: bool = True
    eval_every: int = 25
    augment: bool = True
    # 3D-ADA
    k: int = 1
    discriminator_hidden: int = 500
    collapse_fraction: float = 0.4
    aligned_d_acc: float = 0.55
    aligned_patience: int = 2
    # MLUDA
    m1: float = 0.35
    m2: float = 1.0
    m3: float = 0.8
    lambda1: float = 1.0
    lambda2: float = 0.5
    gamma: float = 0.5
    unknown_margin: bool = True
    # open set
    threshold_rule: str = "auto"
    threshold_quantile: float = 0.95

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name, lo in (("iterations", 1), ("batch_size", 4), ("seed", 0), ("eval_every", 1), ("k", 1),
                         ("discriminator_hidden", 8), ("aligned_patience", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not float(v).is_integer() or int(v) < lo:
                raise ParameterError(f"{name} must be a whole number ≥ {lo}, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATE[self.method])
        for name in ("learning_rate", "m1", "m2", "m3"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ParameterError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("lambda1", "lambda2", "gamma", "collapse_fraction"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise ParameterError(f"{name} must be ≥ 0, got {getattr(self, name)!r}")
        if self.gamma > 1:
            raise ParameterError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if self.m2 <= 2 * self.m1:
            raise ParameterError(f"m2 ({self.m2}) must exceed 2·m1 ({2 * self.m1}): classes of radius m1 must not overlap")
        if self.m3 <= self.m1:
            raise ParameterError(f"m3 ({self.m3}) must exceed m1 ({self.m1}): unknowns must lie outside the class radius")
        if self.threshold_rule not in ("auto", "youden", "quantile"):
            raise ParameterError(f"threshold_rule must be auto, youden or quantile, got {self.threshold_rule!r}")
        if not 0 < self.threshold_quantile <= 1:
            raise ParameterError(f"threshold_quantile must be in (0, 1], got {self.threshold_quantile!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AdaptParams:
        return cls(**known_fields(cls, data))


# load_source, re-exported without loading torch here: the CLI imports it from this module
__getattr__, __dir__ = lazy_exports(globals(), {"load_source": "source"})
