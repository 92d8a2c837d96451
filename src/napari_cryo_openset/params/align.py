"""Parameters of subtomogram alignment and averaging (torch-free; :mod:`napari_cryo_openset.align`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ParameterError
from ._spec import check_fields, param

#: Scores of the rotational/translational search: ``wedge`` = the constrained cross-correlation
#: (the rotated reference gets each box's missing wedge, normalised over the shared support);
#: ``cc`` = the plain normalised cross-correlation (the benchmark's and the tests' baseline).
SCORES = ("wedge", "cc")
#: How the gold-standard half-sets are drawn: by index parity (0, 2, 4… / 1, 3, 5…) or seeded.
SPLITS = ("parity", "random")


@dataclass(frozen=True)
class AlignParams:
    """Settings of :func:`napari_cryo_openset.align.align_group` (and ``resembles``).

    The search: a uniform SO(3) grid at ``angular_step`` (super-Fibonacci) on boxes Fourier-cropped
    to ``global_box``, then ``refine_levels`` local grids, each a third of the previous step, within
    the previous step, at the box size the current resolution needs. ``iterations`` rounds, the
    first ``global_iterations`` of them global; the reference is low-passed to the current FSC
    resolution (``initial_lowpass`` at the start).
    """

    iterations: int = param(4, low=1, help="alignment rounds (align → average → FSC → low-pass)")
    global_iterations: int = param(1, low=0, help="rounds that start with the global SO(3) search (the others refine locally)")
    angular_step: float = param(15.0, low=3.0, high=60.0, unit="°", help="step of the global rotational grid")
    candidates: int = param(3, low=1, high=10, help="best global-grid rotations per box kept for the first local level")
    refine_levels: int = param(2, low=0, high=4, help="local refinement levels (each step / 3, within the previous step)")
    max_shift: float | None = param(None, low=0, unit="Å",
                                    help="largest translation searched (default: a quarter of the box)")
    initial_lowpass: float | None = param(None, low=0, low_open=True, unit="Å",
                                          help="low-pass of the starting reference (default: 4 voxels or 40 Å, the larger)")
    score: str = param("wedge", choices=SCORES, help="wedge: constrained CC over the shared support; cc: plain CC")
    symmetry: str = param("C1", help="point-group symmetry of the average: C1 (none) or Cn about Z")
    split: str = param("parity", choices=SPLITS, help="how the two gold-standard half-sets are drawn")
    mask_radius: float = param(0.9, low=0.2, high=1.0, help="soft spherical mask radius, fraction of half the box")
    global_box: int = param(16, low=8, help="box edge (voxels) of the global search (Fourier-cropped, lossless below its Nyquist)")
    wedge_eps: float = param(0.5, low=0, low_open=True,
                             help="regulariser of the wedge-weighted average Σ F·W / (Σ W + eps), in boxes")
    seed: int = param(0, help="seed of the random half-set split and of the grid offset")
    device: str = param("auto", help="where it runs: auto (cuda → mps → cpu), cpu, cuda, cuda:N or mps")
    threads: int | None = param(None, low=1, help="CPU threads for torch (default: the usable CPUs, at most 16)")

    def __post_init__(self) -> None:
        check_fields(self)
        symmetry_order(self.symmetry)

    def to_dict(self) -> dict:
        return asdict(self)


def symmetry_order(symmetry: str) -> int:
    """``n`` of a ``Cn`` symmetry string (``C1`` → 1); other groups are refused by name."""
    text = str(symmetry).strip().upper()
    if len(text) >= 2 and text[0] == "C" and text[1:].isdigit() and int(text[1:]) >= 1:
        return int(text[1:])
    raise ParameterError(f"symmetry must be C1 (none) or Cn about Z (C2, C3, …), got {symmetry!r}")


__all__ = ["SCORES", "SPLITS", "AlignParams", "symmetry_order"]
