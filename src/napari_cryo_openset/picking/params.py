"""The geometry of a DoG picking run on one tomogram (:func:`derive_geometry`).

:class:`~napari_cryo_openset.params.PickingParams` (re-exported here) describes a run in Å;
:func:`derive_geometry` turns it into per-axis voxel quantities (Z, Y, X) for a given voxel
size: the Gaussians' σ, the decimation of the band-passed response, the local-maximum cube and
the halo a tile needs. The defaults and their reasons are documented with the parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..device import cpu_count
from ..errors import ParameterError
from ..params import THRESHOLD_METHODS, PickingParams  # noqa: F401 (re-exported)


#: Gaussians are treated as zero beyond this many σ (scipy's ``gaussian_filter`` default).
GAUSS_TRUNCATE = 4.0
#: Largest decimation of the band-passed response (see :mod:`.dog`).
MAX_BIN = 4


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
    params: PickingParams, voxel_size, shape: tuple[int, int, int], sigma_factor: float = 1.0
) -> PickingGeometry:
    """Turn ``params`` into voxel quantities for a tomogram of ``shape`` (Z, Y, X) voxels.

    ``sigma_factor``: default σ1 = ``sigma_factor`` × radius (1 for the single-scale picker; the
    multi-scale picker uses 1/√3, see :mod:`.multiscale`).

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
        s1 = tuple(max(sigma_factor * d / 2.0, 0.5) for d in diameter_vox)
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
