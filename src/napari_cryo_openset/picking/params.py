"""Parameters of a DoG picking run, and the geometry derived from them for one tomogram.

:class:`PickingParams` is the one object that describes a picking run; the CLI, the napari Pick
widget and the tests all build one. Lengths given by the user are in Å (``diameter``,
``min_distance``, ``border``) except ``sigma1`` (voxels, as in AITom). :func:`derive_geometry`
turns them into per-axis voxel quantities (Z, Y, X) for a given voxel size.

Defaults and their reasons
--------------------------
- σ1 = particle radius in voxels (AITom: "σ1 should be roughly equal to the radius in pixels"),
  σ2 = K·σ1 with K = 1.1 (Pei et al. 2016). Both overridable.
- ``min_distance`` = 0.8 × diameter: two picks closer than that would be the same particle;
  touching particles (centres one diameter apart) are still both found.
- ``border`` = diameter / 2: a pick whose centre is closer than a radius to a face of the
  volume is dropped (its box would be mostly outside the tomogram).
- Threshold: ``robust`` (median + ``k_mad`` × 1.4826 × MAD of the DoG response, k = 4), which
  does not depend on a single strongest peak; the AITom rule, top-N and an explicit value are
  offered. k = 4 is the one value that holds across the blob phantoms of
  ``benchmarks/bench_picking.py`` (low to high SNR, sparse to crowded): a lower k lets noise
  peaks through in large sparse volumes, a higher one loses particles at low SNR. It assumes
  particles are a minority of the voxels (see :mod:`.core` for the crowded case).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..device import cpu_count
from ..errors import ParameterError
from .polarity import POLARITIES

THRESHOLD_METHODS = ("aitom", "robust", "topn", "value")

#: Gaussians are treated as zero beyond this many σ (scipy's ``gaussian_filter`` default).
GAUSS_TRUNCATE = 4.0
#: Largest decimation of the band-passed response (see :mod:`.dog`).
MAX_BIN = 4


@dataclass(frozen=True)
class PickingParams:
    """One DoG picking run.

    Attributes
    ----------
    diameter
        Particle diameter in Å (> 0).
    polarity
        ``dark`` (protein darker than background: raw reconstructions), ``bright`` (inverted
        tomograms) or ``auto`` (guessed from the volume; the guess is reported).
    threshold_method
        ``robust`` (default): median + ``k_mad`` · 1.4826 · MAD of the DoG response;
        ``aitom``: m + ``aitom_level`` · (M − m) / 20 with m, M the weakest/strongest DoG peak;
        ``topn``: the ``max_picks`` best peaks; ``value``: the explicit ``threshold``.
    threshold
        The score threshold for ``value`` (DoG response units, see :mod:`.core`).
    max_picks
        Number of picks for ``topn``; for the other methods an optional cap (best first).
    k_mad
        Robust threshold factor (in robust standard deviations of the DoG response), default 4.
    aitom_level
        ``t`` of the AITom rule T = m + t (M − m) / 20 (Pei et al. used t = 3).
    min_distance
        Minimum distance between two picks in Å; default 0.8 × ``diameter``. 0 disables the
        suppression (peaks are still local maxima).
    k
        σ2 / σ1 (> 1), default 1.1.
    sigma1
        σ1 in voxels (same on every axis); default the particle radius in voxels per axis.
    border
        Picks closer than this (Å) to a face of the volume are dropped; default ``diameter``/2.
    memory_budget_mb
        Working memory target for one tile (MB); larger volumes are processed in tiles.
    workers
        FFT threads; default: the CPUs this process may use.
    """

    diameter: float
    polarity: str = "dark"
    threshold_method: str = "robust"
    threshold: float | None = None
    max_picks: int | None = None
    k_mad: float = 4.0
    aitom_level: float = 3.0
    min_distance: float | None = None
    k: float = 1.1
    sigma1: float | None = None
    border: float | None = None
    memory_budget_mb: float = 1024.0
    workers: int | None = None

    def validate(self) -> PickingParams:
        """Check every value; raise :class:`ParameterError` naming the first bad one."""
        if not _finite_number(self.diameter) or self.diameter <= 0:
            raise ParameterError(f"diameter must be a positive number of Å, got {self.diameter!r}")
        if self.polarity not in POLARITIES:
            raise ParameterError(
                f"polarity must be one of {', '.join(POLARITIES)}, got {self.polarity!r}"
            )
        if self.threshold_method not in THRESHOLD_METHODS:
            raise ParameterError(
                f"threshold_method must be one of {', '.join(THRESHOLD_METHODS)}, "
                f"got {self.threshold_method!r}"
            )
        if self.threshold_method == "value" and not _finite_number(self.threshold):
            raise ParameterError(
                f"threshold_method 'value' needs a finite threshold, got {self.threshold!r}"
            )
        if self.threshold is not None and not _finite_number(self.threshold):
            raise ParameterError(f"threshold must be a finite number, got {self.threshold!r}")
        if self.max_picks is not None and (
            isinstance(self.max_picks, bool) or int(self.max_picks) != self.max_picks or self.max_picks < 1
        ):
            raise ParameterError(f"max_picks must be a whole number ≥ 1, got {self.max_picks!r}")
        if self.threshold_method == "topn" and self.max_picks is None:
            raise ParameterError("threshold_method 'topn' needs max_picks (how many picks to keep)")
        if not _finite_number(self.k_mad):
            raise ParameterError(f"k_mad must be a finite number, got {self.k_mad!r}")
        if not _finite_number(self.aitom_level):
            raise ParameterError(f"aitom_level must be a finite number, got {self.aitom_level!r}")
        if self.min_distance is not None and (
            not _finite_number(self.min_distance) or self.min_distance < 0
        ):
            raise ParameterError(
                f"min_distance must be ≥ 0 Å (or None for 0.8 × diameter), got {self.min_distance!r}"
            )
        if not _finite_number(self.k) or self.k <= 1:
            raise ParameterError(f"k (σ2/σ1) must be a number > 1, got {self.k!r}")
        if self.sigma1 is not None and (not _finite_number(self.sigma1) or self.sigma1 <= 0):
            raise ParameterError(f"sigma1 must be a positive number of voxels, got {self.sigma1!r}")
        if self.border is not None and (not _finite_number(self.border) or self.border < 0):
            raise ParameterError(f"border must be ≥ 0 Å (or None for diameter/2), got {self.border!r}")
        if not _finite_number(self.memory_budget_mb) or self.memory_budget_mb <= 0:
            raise ParameterError(
                f"memory_budget_mb must be a positive number of MB, got {self.memory_budget_mb!r}"
            )
        if self.workers is not None and (int(self.workers) != self.workers or self.workers < 1):
            raise ParameterError(f"workers must be a whole number ≥ 1, got {self.workers!r}")
        return self

    def to_dict(self) -> dict:
        """Plain-Python copy (for reports and JSON)."""
        return asdict(self)


def _finite_number(value) -> bool:
    try:
        return value is not None and not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class PickingGeometry:
    """Per-axis (Z, Y, X) voxel quantities of one run on one tomogram.

    ``sigma1``/``sigma2``: Gaussian σ in voxels. ``min_distance``: Å (isotropic, applied to
    coordinates scaled by the voxel size). ``border``: voxels. ``bin``: decimation of the
    band-passed response (voxels per response sample). ``half_width``: half-width of the
    local-maximum cube in response samples; ``aitom_half_width``: that of the min-distance cube
    whose maxima define AITom's m. ``halo``: voxels read (or reflected) around a tile's
    core; a multiple of ``bin``.
    """

    voxel_size: tuple[float, float, float]
    sigma1: tuple[float, float, float]
    sigma2: tuple[float, float, float]
    min_distance: float
    border: tuple[float, float, float]
    bin: tuple[int, int, int]
    half_width: tuple[int, int, int]
    aitom_half_width: tuple[int, int, int]
    halo: tuple[int, int, int]
    workers: int

    def to_dict(self) -> dict:
        return asdict(self)


def derive_geometry(
    params: PickingParams, voxel_size, shape: tuple[int, int, int]
) -> PickingGeometry:
    """Turn ``params`` into voxel quantities for a tomogram of ``shape`` (Z, Y, X) voxels.

    Raises :class:`ParameterError` when the particle does not fit in the volume.
    """
    from ..io.tomogram import voxel_size_zyx

    params.validate()
    vs = voxel_size_zyx(voxel_size)
    diameter_vox = [params.diameter / v for v in vs]
    too_big = [a for a in range(3) if diameter_vox[a] > shape[a]]
    if too_big:
        a = too_big[0]
        raise ParameterError(
            f"diameter {params.diameter:g} Å is {diameter_vox[a]:.1f} voxels along "
            f"{'ZYX'[a]}, larger than the volume ({shape[a]} voxels); check the diameter (Å) and "
            f"the voxel size ({vs[a]:g} Å)"
        )
    if params.sigma1 is not None:
        s1 = (float(params.sigma1),) * 3
    else:
        s1 = tuple(max(d / 2.0, 0.5) for d in diameter_vox)
    s2 = tuple(params.k * s for s in s1)
    md = 0.8 * params.diameter if params.min_distance is None else float(params.min_distance)
    border_a = params.diameter / 2.0 if params.border is None else float(params.border)
    border = tuple(border_a / v for v in vs)
    # Decimation: the response is band-limited (its transfer is < 3e-9 beyond 1/(2·bin)
    # cycles/voxel when bin ≤ σ1/2), so sampling it every `bin` voxels loses nothing.
    b = tuple(int(min(MAX_BIN, max(1, math.floor(s / 2.0)))) for s in s1)
    md_vox = [md / v for v in vs]
    # Local maxima over a cube inscribed in the min-distance sphere: whatever the cube removes
    # has a higher response within min_distance (Euclidean), so the greedy step stays exact.
    hw = tuple(max(1, int(math.floor(md_vox[a] / math.sqrt(3.0) / b[a]))) for a in range(3))
    # AITom's m is taken over the peaks that are maxima of the whole min-distance cube (the peak
    # set of skimage's peak_local_max, and of AITom's distance filter); see thresholds.py.
    ahw = tuple(max(hw[a], int(math.ceil(md_vox[a] / b[a]))) for a in range(3))
    reach = ahw if params.threshold_method == "aitom" else hw
    halo = tuple(
        _ceil_to(math.ceil(GAUSS_TRUNCATE * s2[a]) + (reach[a] + 1) * b[a], b[a]) for a in range(3)
    )
    workers = int(params.workers) if params.workers is not None else cpu_count()
    return PickingGeometry(
        voxel_size=vs,
        sigma1=tuple(float(s) for s in s1),
        sigma2=tuple(float(s) for s in s2),
        min_distance=float(md),
        border=border,
        bin=b,
        half_width=hw,
        aitom_half_width=ahw,
        halo=halo,
        workers=workers,
    )


def _ceil_to(value: int, multiple: int) -> int:
    return int(-(-int(value) // multiple) * multiple)
