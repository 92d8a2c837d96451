"""Difference-of-Gaussian (DoG) particle picking (core: no Qt, no napari).

Quick use::

    from napari_cryo_openset.picking import PickingParams, pick
    result = pick(tomo.data, tomo.voxel_size, PickingParams(diameter=120, polarity="auto"))
    result.picks            # picks table (z, y, x voxels; score), best first
    result.select(0.05)     # picks for another threshold, without filtering again

Modules: :mod:`.params` (the parameter set, derived voxel geometry), :mod:`.dog` (FFT band-pass),
:mod:`.peaks` (local maxima, refinement, min-distance suppression), :mod:`.thresholds`,
:mod:`.tiling`, :mod:`.polarity`, :mod:`.core` (the generator), :mod:`.evaluate` (matching picks
to ground truth), :mod:`._cli` (the ``pick`` subcommand).

Conventions: arrays (Z, Y, X); coordinates in voxels (0-based, voxel centres at integers,
sub-voxel precision); lengths from the user in Å except ``sigma1`` (voxels); score positive =
more particle-like (after polarity).
"""

from .core import PickResult, pick, pick_particles
from .dog import dog_filter
from .evaluate import match_picks
from .params import THRESHOLD_METHODS, PickingGeometry, PickingParams, derive_geometry
from .polarity import CANONICAL_POLARITY, POLARITIES, guess_polarity, polarity_sign

__all__ = [
    "CANONICAL_POLARITY",
    "POLARITIES",
    "THRESHOLD_METHODS",
    "PickResult",
    "PickingGeometry",
    "PickingParams",
    "derive_geometry",
    "dog_filter",
    "guess_polarity",
    "match_picks",
    "pick",
    "pick_particles",
    "polarity_sign",
]
