"""Parameters of training, adaptation, prediction and the map (torch-free).

:class:`TrainParams` (source training, :mod:`napari_cryo_openset.train`), :class:`AdaptParams`
(3D-ADA / MLUDA, :mod:`napari_cryo_openset.adapt`), :class:`PredictParams`
(:mod:`napari_cryo_openset.predict`) and :class:`EmbedParams` (t-SNE map and clusters,
:mod:`napari_cryo_openset.embed`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ParameterError, known_fields
from ._spec import check_fields, param
from .picking import POLARITIES

#: Encoders of :mod:`napari_cryo_openset.models` (``fast`` default; the 3D-ADA paper's reference).
ARCHITECTURES = ("fast", "ada-reference")
NORMS = ("batch", "instance", "none")
#: Adaptation methods: 3D-ADA (adversarial, ADDA-style) and MLUDA (margin losses + CORAL, open set).
METHODS = ("ada", "mluda")
#: Adam learning rates by method (None in :class:`AdaptParams` picks these): 3D-ADA uses the
#: reference's 1e-5; MLUDA fine-tunes the whole network with a supervised loss and needs more.
DEFAULT_LEARNING_RATE = {"ada": 1e-5, "mluda": 1e-4}
#: Learning rates of a refinement with the user's labels (:mod:`napari_cryo_openset.adapt.refine`): ten
#: times the label-free ones — at those, a handful of curated picks is not learnt within the rounds.
DEFAULT_LABEL_LEARNING_RATE = {"ada": 1e-4, "mluda": 1e-3}
THRESHOLD_RULES = ("auto", "youden", "quantile")

_DEVICE_HELP = "where the network runs: auto (cuda → mps → cpu), cpu, cuda, cuda:N or mps"
_THREADS_HELP = "CPU threads for torch (default: the CPUs this process may use, at most 16)"


@dataclass(frozen=True)
class TrainParams:
    """Source-training settings (the ``train`` command, the Model widget, ``run`` and the tests).

    The learning rate follows a cosine schedule to 5 % over ``epochs``; ``augment``, ``mirror``
    and ``max_shift`` are the wedge-preserving augmentation of :mod:`napari_cryo_openset.train`;
    ``architecture`` … ``dropout`` build the network
    (:class:`~napari_cryo_openset.models.NetworkParams`); ``seed`` drives everything random
    (initial weights, split, batches, augmentation).
    """

    epochs: int = param(30, low=1, help="maximum passes over the training split")
    batch_size: int = param(64, low=2, help="subtomograms per step")
    learning_rate: float = param(2e-3, low=0, low_open=True, metavar="LR", help="AdamW learning rate (cosine schedule to 5%)")
    weight_decay: float = param(1e-4, low=0, help="AdamW weight decay")
    validation_fraction: float = param(0.15, low=0.05, high=0.5, metavar="F",
                                       help="stratified hold-out of the set for early stopping")
    patience: int = param(8, low=0, help="stop after N epochs without a better validation accuracy (0 = never)")
    augment: bool = param(True, help="wedge-preserving augmentation")
    mirror: bool = param(False, help="mirror augmentation (changes handedness)")
    max_shift: int = param(1, low=0, unit="voxels", help="random shifts of the augmentation")
    label_smoothing: float = param(0.05, low=0, high=1, high_open=True, help="cross-entropy label smoothing")
    architecture: str = param("fast", choices=ARCHITECTURES,
                              help="fast: the default encoder for 24³–40³ boxes; ada-reference: the 3D-ADA "
                                   "paper's encoder; boxes < 37³ are zero-padded to 37³")
    embedding_dim: int = param(64, low=2, high=4096, help="feature dimension")
    width: int = param(16, low=2, high=128, help="channels of the first convolution")
    norm: str = param("batch", choices=NORMS, help="normalisation layers")
    l2_normalize: bool = param(False, help="L2-normalise the features")
    dropout: float = param(0.1, low=0, high=1, high_open=True, help="dropout before the classifier")
    seed: int = param(0, low=0, help="seed of everything random: weights, split, batches, augmentation")
    device: str = param("auto", metavar="auto|cpu|cuda|mps", help=_DEVICE_HELP)
    threads: int | None = param(None, low=1, help=_THREADS_HELP)
    amp: bool = param(True, help="mixed precision on CUDA")

    def __post_init__(self) -> None:
        check_fields(self)

    def network(self, box: int, num_classes: int):
        """The :class:`~napari_cryo_openset.models.NetworkParams` of these settings."""
        from ..models import NetworkParams

        return NetworkParams(
            architecture=self.architecture, box=int(box), num_classes=int(num_classes),
            embedding_dim=self.embedding_dim, width=self.width, norm=self.norm,
            l2_normalize=self.l2_normalize, dropout=self.dropout,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainParams:
        return cls(**known_fields(cls, data))


@dataclass(frozen=True)
class AdaptParams:
    """Adaptation settings (the ``adapt`` command, the Adapt & predict widget, ``run``, benchmarks).

    3D-ADA: ``k`` target-encoder steps per discriminator step; ``collapse_fraction`` stops (and
    restores the last healthy weights) when the entropy of the predicted-class histogram on the
    target falls below this fraction of the source-only model's (a label-free collapse guard);
    ``aligned_d_acc`` / ``aligned_patience`` stop when the discriminator stays at chance.
    MLUDA (see :mod:`napari_cryo_openset.adapt.mluda` for the geometry): ``m1`` intra-class
    radius, ``m2`` minimum centre separation (> 2·m1), ``m3`` minimum distance of unknowns to any
    centre (> m1), ``lambda1`` margin losses, ``lambda2`` CORAL, ``gamma`` centre update rate,
    ``unknown_margin`` (False drops L_c: the JDDA-like baseline). Open set: ``threshold_rule``
    ``auto`` (Youden's J between source-validation known and decoy scores when the source has
    decoys, else the ``threshold_quantile`` of the known scores), ``youden`` or ``quantile``.
    Large pick sets: the rounds, the diagnostics and the target BatchNorm statistics use at most
    ``max_target_picks`` picks (a seeded random subset, the same for a seed; all of them when
    there are fewer); the predictions at the end cover every pick. ``label_weight`` weighs the
    curated picks' loss, and ``label_learning_rate``, ``label_iterations`` and ``label_batch_size``
    replace ``learning_rate``, ``iterations`` and ``batch_size``, in a refinement with the user's
    labels (:mod:`napari_cryo_openset.adapt.refine`).
    """

    method: str = param("ada", choices=METHODS,
                        help="ada: 3D-ADA (adversarial, ADDA-style); mluda: margin losses + CORAL (open set)")
    iterations: int = param(300, low=1, help="optimisation rounds (3D-ADA may stop earlier when the domains are "
                                             "aligned or predictions collapse)")
    batch_size: int = param(32, low=4, help="source and target boxes per round, each")
    learning_rate: float | None = param(None, low=0, low_open=True, metavar="LR",
                                        help="Adam learning rate (default by method: ada 1e-5, mluda 1e-4)")
    seed: int = param(0, low=0, help="seed of everything random")
    device: str = param("auto", metavar="auto|cpu|cuda|mps", help=_DEVICE_HELP)
    threads: int | None = param(None, low=1, help=_THREADS_HELP)
    amp: bool = param(True, help="mixed precision on CUDA")
    eval_every: int = param(25, low=1, help="rounds between diagnostics on all target picks")
    max_target_picks: int = param(10_000, low=16, help="target picks the adaptation learns from at most (a seeded "
                                                       "random subset of more; every pick is still predicted)")
    augment: bool = param(True, help="augment the source boxes")
    # 3D-ADA
    k: int = param(1, low=1, help="target-encoder steps per discriminator step")
    discriminator_hidden: int = param(500, low=8, help="hidden units of the domain discriminator")
    collapse_fraction: float = param(0.4, low=0, help="collapse guard (fraction of the source-only entropy)")
    aligned_d_acc: float = param(0.55, help="discriminator accuracy taken as chance")
    aligned_patience: int = param(2, low=0, help="diagnostics at chance before stopping (0 = never)")
    # MLUDA
    m1: float = param(0.35, low=0, low_open=True, help="intra-class radius")
    m2: float = param(1.0, low=0, low_open=True, help="minimum separation of class centres")
    m3: float = param(0.8, low=0, low_open=True, help="minimum distance of unknowns to any centre")
    lambda1: float = param(1.0, low=0, help="weight of the margin losses")
    lambda2: float = param(0.5, low=0, help="weight of CORAL")
    gamma: float = param(0.5, low=0, high=1, help="centre update rate")
    unknown_margin: bool = param(True, help="the unknown margin L_c (False: the JDDA-like baseline)")
    # refinement with the user's labels (adapt --labels, napari_cryo_openset.adapt.refine)
    label_weight: float = param(1.0, low=0, help="weight of the curated picks' loss (cross-entropy, and MLUDA's "
                                                 "margins on them) when refining with labels")
    label_learning_rate: float | None = param(None, low=0, low_open=True, metavar="LR",
                                              help="Adam learning rate of a refinement with labels (default by "
                                                   "method: ada 1e-4, mluda 1e-3: the few labels must be learnt "
                                                   "within the rounds)")
    label_iterations: int = param(100, low=1, help="optimisation rounds of a refinement with labels (replaces "
                                                   "iterations there: 100 rounds of 16 + 16 boxes take well under "
                                                   "a minute on 2 CPU threads)")
    label_batch_size: int = param(16, low=4, help="source and target boxes per round, each, of a refinement with "
                                                  "labels (replaces batch_size there)")
    # open set
    threshold_rule: str = param("auto", choices=THRESHOLD_RULES, help="calibration rule of the unknown threshold")
    threshold_quantile: float = param(0.95, low=0, high=1, low_open=True, help="quantile of the known scores")
    threshold_transfer: str = param("auto", choices=("auto", "source", "mixture", "adaptation"),
                                    help="check the source threshold on the target's scores (label-free): auto moves "
                                         "it to the target's score mixture when the source threshold calls far more "
                                         "picks unknown than the mixture expects; source keeps it; mixture always "
                                         "uses a trusted mixture")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATE[self.method])
        if self.label_learning_rate is None:
            object.__setattr__(self, "label_learning_rate", DEFAULT_LABEL_LEARNING_RATE[self.method])
        if self.m2 <= 2 * self.m1:
            raise ParameterError(f"m2 ({self.m2}) must exceed 2·m1 ({2 * self.m1}): classes of radius m1 must not overlap")
        if self.m3 <= self.m1:
            raise ParameterError(f"m3 ({self.m3}) must exceed m1 ({self.m1}): unknowns must lie outside the class radius")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AdaptParams:
        return cls(**known_fields(cls, data))


@dataclass(frozen=True)
class PredictParams:
    """Prediction settings (the ``predict`` command, the widgets, tests).

    ``polarity`` ``auto`` guesses from the picks (particle centres darker or brighter than their
    surroundings) and reports the guess; ``threshold`` overrides the bundle's unknown threshold;
    ``allow_resampling`` serves another tomogram voxel size by resampling the boxes (else refuse).
    """

    polarity: str = param("dark", choices=POLARITIES,
                          help="protein contrast in this tomogram (default dark; auto guesses from the picks "
                               "and reports the guess)")
    batch_size: int = param(128, low=1, help="boxes per network call")
    device: str = param("auto", metavar="auto|cpu|cuda|mps", help=_DEVICE_HELP)
    threads: int | None = param(None, low=1, help=_THREADS_HELP)
    threshold: float | None = param(None, low=0, metavar="T", help="unknown-score threshold above which a pick is 'unknown' "
                                                      "(default: the model's)")
    allow_resampling: bool = param(True, help="resampling of the boxes of a tomogram whose voxel size differs from "
                                              "the model's (refuse such a tomogram)")

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EmbedParams:
    """Settings of the map and the clusters (``run``, the Results widget, tests).

    ``perplexity`` is capped at (N − 1) / 3; ``iterations`` are the t-SNE rounds after the
    early-exaggeration ones; ``chunk`` rounds run between progress events (Cancel takes effect
    between chunks).
    """

    perplexity: float = param(30.0, low=0, low_open=True, help="t-SNE neighbourhood size")
    iterations: int = param(500, low=0, help="t-SNE rounds after the early exaggeration")
    seed: int = param(0, low=0, help="seed of the map")
    threads: int | None = param(None, low=1, help=_THREADS_HELP)
    min_cluster_size: int = param(5, low=2, help="the smallest group of unknown picks reported as a cluster")
    chunk: int = param(50, low=1, help="t-SNE rounds between progress events")

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EmbedParams:
        return cls(**known_fields(cls, data))
