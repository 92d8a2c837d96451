"""Parameters of a whole run (``run``, the demo, benchmarks): the stages' own parameter sets, composed.

A run picks (:class:`~.picking.PickingParams`), simulates a source set
(:class:`~.simulation.DatasetParams` with its :class:`~.simulation.ImagingCondition`), trains
(:class:`~.learning.TrainParams`), adapts (:class:`~.learning.AdaptParams`) and maps
(:class:`~.learning.EmbedParams`). Each stage keeps its own defaults; the run only sets what it
decides for the user (the working box, voxel size and class counts of the source set, the length
of training and adaptation, one seed/device/thread count for every stage) — see
:meth:`RunParams.source_params`, :meth:`RunParams.train_params`, :meth:`RunParams.adapt_params`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..errors import ParameterError
from ._spec import check_fields, param
from .align import AlignParams
from .learning import AdaptParams, EmbedParams, TrainParams
from .picking import PickingParams
from .simulation import DatasetParams, ImagingCondition

#: How a run simulates its source set: ``scenes`` — whole crowded tomograms simulated at the target's
#: condition, picked with the target's picker and parameters, boxes extracted as the target's
#: (:mod:`napari_cryo_openset.simulate.scene_source`); ``isolated`` — one particle per box
#: (:mod:`napari_cryo_openset.simulate.generate`, the papers' protocol).
SOURCE_KINDS = ("scenes", "isolated")
#: Fields of the imaging condition a run can read from the tomogram when the user gives nothing.
ESTIMABLE = ("tilt_range", "snr")

#: Sizes of a run by preset: (boxes per class, training epochs, adaptation rounds).
FULL_SIZES = (300, 15, 300)
FAST_SIZES = (150, 10, 100)

#: Alignment of the groups by preset: the search (:class:`~.align.AlignParams` fields) and the boxes
#: aligned per group at most (a seeded subset of a larger group). Light on purpose: the stage must
#: fit ``--fast``'s few minutes on 2 CPU threads (timings in the README).
FULL_ALIGN = ({"angular_step": 20.0, "iterations": 2, "refine_levels": 1, "candidates": 2}, 150)
FAST_ALIGN = ({"angular_step": 30.0, "iterations": 1, "refine_levels": 1, "candidates": 1}, 60)


def _run_source() -> DatasetParams:
    """The source set of a run: crowded boxes, as DoG picks of a real tomogram look.

    Real tomograms are crowded, so the boxes get neighbouring particles at the box edges
    (Poisson mean 1), a smooth crowding background (0.05 of the protein density) and centre offsets
    up to ±2 voxels (as DoG picks land); ``benchmarks/bench_run.py`` compares them with isolated
    particles. Box, counts, voxel size and seed are set per run (:meth:`RunParams.source_params`).
    """
    return DatasetParams(neighbours=1.0, background=0.05, max_shift=2.0)


@dataclass(frozen=True)
class RunParams:
    """Settings of a whole run.

    ``picking`` — how the tomogram is picked (its ``diameter``, ``polarity`` and ``max_picks``
    are the run's); ``source`` — the simulated set: imaging condition (``source.condition``; its
    voxel size is replaced by the working one) and crowding; ``train``, ``adapt`` (its ``method``
    is the run's), ``embed`` — the later stages. ``fast`` — a quick first look
    (:data:`FAST_SIZES` instead of :data:`FULL_SIZES`); ``per_class``, ``epochs``,
    ``iterations`` override the preset; ``box`` (voxels; None = from the structures);
    ``seed``, ``device`` and ``threads`` apply to every stage.
    """

    picking: PickingParams
    source: DatasetParams = field(default_factory=_run_source)
    train: TrainParams = field(default_factory=TrainParams)
    adapt: AdaptParams = field(default_factory=lambda: AdaptParams(method="mluda"))
    embed: EmbedParams = field(default_factory=EmbedParams)
    seed: int = param(0, low=0, help="seed of everything random")
    device: str = param("auto", metavar="auto|cpu|cuda|mps",
                        help="where the networks run: auto (cuda → mps → cpu), cpu, cuda, cuda:N or mps")
    threads: int | None = param(None, low=1, help="CPU threads for torch (default: the CPUs this process may use, "
                                                  "at most 16)")
    fast: bool = param(False, help="a quick first look: {} simulated boxes per class, {} epochs, {} adaptation "
                                   "rounds (default {}, {}, {})".format(*FAST_SIZES, *FULL_SIZES))
    box: int | None = param(None, low=16, unit="voxels",
                            help="box edge in voxels (default: the largest structure + 20 %, 24–40, binning the "
                                 "tomogram when a structure needs more)")
    per_class: int | None = param(None, low=1, help=f"simulated boxes per template (default {FULL_SIZES[0]}; "
                                                    f"--fast {FAST_SIZES[0]})")
    epochs: int | None = param(None, low=1, help=f"source training epochs (default {FULL_SIZES[1]}; "
                                                 f"--fast {FAST_SIZES[1]})")
    iterations: int | None = param(None, low=1, help=f"adaptation rounds (default {FULL_SIZES[2]}; "
                                                     f"--fast {FAST_SIZES[2]})")
    source_kind: str = param("scenes", choices=SOURCE_KINDS, flag="--source",
                             help="scenes: simulate whole crowded tomograms and pick them as the target is picked; "
                                  "isolated: one simulated particle per box (the papers' protocol)")
    match_spectrum: bool = param(True, help="spectral matching: filter every simulated source box so that its radial "
                                            "power spectrum follows the target picks' (napari_cryo_openset.spectrum)")
    verify: bool = param(True, help="template verification: fuse the network's call of every pick with its correlation "
                                     "against the known templates imaged like the source, and call unknown by both "
                                     "(napari_cryo_openset.verify)")
    verify_rotations: int = param(300, low=12, help="rotations per template in the verification bank")
    verify_max_picks: int = param(20000, low=1, help="skip template verification (with a note) above this many active "
                                                   "picks: it costs about 20 ms per pick on 2 CPU cores")
    verify_threshold: str = param("anchor", choices=("anchor", "source", "mixture", "auto"),
                                  help="how the verified unknown threshold moves from the source to the target: "
                                       "anchor (the target's score shift at the confident end), or a "
                                       "threshold-transfer rule (source, mixture, auto)")
    verify_score: str = param("correlation", choices=("correlation", "entropy+correlation"),
                              help="the verified unknown score: correlation (with the chosen class's template, "
                                   "standardised on the source knowns) or entropy+correlation (plus the fused "
                                   "posterior's entropy)")
    align: bool = param(True, help="alignment: every predicted class (from its template) and every cluster of unknowns "
                                   "(reference-free) aligned and averaged, gold standard, and compared with the known "
                                   "structures (napari_cryo_openset.align.groups)")
    align_max_boxes: int | None = param(None, low=4, help=f"boxes aligned per group at most, a seeded subset of a "
                                                          f"larger group (default {FULL_ALIGN[1]}; --fast "
                                                          f"{FAST_ALIGN[1]})")
    resembles_threshold: float = param(0.5, low=0.0, high=1.0,
                                       help="an average 'resembles' a known structure when its best correlation "
                                            "with it is at least this")
    given: tuple[str, ...] | None = param(None, help="names of the imaging-condition fields the user gave (None: all "
                                                     "of source.condition is the user's); the others are read from "
                                                     "the tomogram where it tells (tilt range, SNR, slab)")

    def __post_init__(self) -> None:
        if not isinstance(self.picking, PickingParams):
            raise ParameterError(f"picking must be a PickingParams, got {type(self.picking).__name__}")
        self.picking.validate()
        for name, cls in (("source", DatasetParams), ("train", TrainParams), ("adapt", AdaptParams),
                          ("embed", EmbedParams)):
            if not isinstance(getattr(self, name), cls):
                raise ParameterError(f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        check_fields(self)
        if self.given is not None:
            given = tuple(str(g) for g in self.given)
            known = set(self.source.condition.__dataclass_fields__)
            bad = [g for g in given if g not in known]
            if bad:
                raise ParameterError(f"given must name imaging-condition fields ({', '.join(sorted(known))}), "
                                     f"got {', '.join(bad)}")
            object.__setattr__(self, "given", given)

    # the run's choices -----------------------------------------------------------------------

    @property
    def diameter(self) -> float:
        return self.picking.diameter

    @property
    def polarity(self) -> str:
        return self.picking.polarity

    @property
    def method(self) -> str:
        return self.adapt.method

    @property
    def n_per_class(self) -> int:
        return self.per_class or (FAST_SIZES if self.fast else FULL_SIZES)[0]

    @property
    def n_epochs(self) -> int:
        return self.epochs or (FAST_SIZES if self.fast else FULL_SIZES)[1]

    @property
    def n_iterations(self) -> int:
        return self.iterations or (FAST_SIZES if self.fast else FULL_SIZES)[2]

    def source_params(self, box: int, voxel_size: float, condition: ImagingCondition | None = None) -> DatasetParams:
        """The source set at the working ``box`` (voxels) and ``voxel_size`` (Å): ``n_per_class``
        boxes per template, as many procedural decoys (the source ``unknown`` class that feeds
        MLUDA's L_c and calibrates the unknown threshold) and half as many empty boxes.
        ``condition``: the resolved one (given values + the tomogram's estimates), default
        ``source.condition``."""
        n = self.n_per_class
        condition = (condition or self.source.condition).replace(voxel_size=voxel_size)
        return replace(self.source, box=box, per_class=n, decoys=n, empty=max(1, n // 2), condition=condition,
                       seed=self.seed)

    def train_params(self) -> TrainParams:
        return replace(self.train, epochs=self.n_epochs, seed=self.seed, device=self.device, threads=self.threads)

    def adapt_params(self) -> AdaptParams:
        return replace(self.adapt, iterations=self.n_iterations, seed=self.seed, device=self.device,
                       threads=self.threads)

    def embed_params(self) -> EmbedParams:
        return replace(self.embed, seed=self.seed, threads=self.embed.threads or self.threads)

    @property
    def n_align_boxes(self) -> int:
        return self.align_max_boxes or (FAST_ALIGN if self.fast else FULL_ALIGN)[1]

    def align_params(self) -> AlignParams:
        """The search of the ``align`` stage: the preset's (:data:`FULL_ALIGN`, :data:`FAST_ALIGN`), the run's
        seed, device and threads."""
        search = (FAST_ALIGN if self.fast else FULL_ALIGN)[0]
        return AlignParams(**search, seed=self.seed, device=self.device, threads=self.threads)

    def to_dict(self) -> dict:
        """The run's choices first (method, diameter, sizes …), then every stage's parameters."""
        return {
            "method": self.method, "diameter": self.diameter, "polarity": self.polarity,
            "max_picks": self.picking.max_picks, "seed": self.seed, "device": self.device, "threads": self.threads,
            "fast": self.fast, "box": self.box, "per_class": self.n_per_class, "epochs": self.n_epochs,
            "iterations": self.n_iterations, "source_kind": self.source_kind, "match_spectrum": self.match_spectrum,
            "verify": self.verify, "verify_rotations": self.verify_rotations,
            "verify_threshold": self.verify_threshold, "verify_score": self.verify_score,
            "verify_max_picks": self.verify_max_picks,
            "align": self.align, "align_max_boxes": self.n_align_boxes, "resembles_threshold": self.resembles_threshold,
            "align_search": self.align_params().to_dict() if self.align else None,
            "given": list(self.given) if self.given is not None else None,
            "picking": self.picking.to_dict(), "source": self.source.to_dict(), "train": self.train.to_dict(),
            "adapt": self.adapt.to_dict(), "embed": asdict(self.embed),
        }
