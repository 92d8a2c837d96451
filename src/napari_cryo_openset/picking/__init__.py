"""Difference-of-Gaussian (DoG) particle picking (core: no Qt, no napari).

Quick use::

    from napari_cryo_openset.picking import PickingParams, pick
    result = pick(tomo.data, tomo.voxel_size, PickingParams(diameter=120, polarity="auto"))
    result.picks            # picks table (z, y, x voxels; score), best first
    result.select(0.05)     # picks for another threshold, without filtering again

Modules: :mod:`.params` (the parameter set, derived voxel geometry), :mod:`.dog` (FFT band-pass),
:mod:`.peaks` (local maxima, refinement, min-distance suppression), :mod:`.thresholds`,
:mod:`.tiling`, :mod:`.polarity`, :mod:`.core` (the generator), :mod:`.evaluate` (matching picks
to ground truth). The ``pick`` subcommand is :mod:`napari_cryo_openset.cli.pick`.

Conventions: arrays (Z, Y, X); coordinates in voxels (0-based, voxel centres at integers,
sub-voxel precision); lengths from the user in Å except ``sigma1`` (voxels); score positive =
more particle-like (after polarity).
"""

from .._lazy import lazy_exports

# Lazy exports: the numerical modules
# (scipy.fft, pandas) load only when something here is used.
_EXPORTS = {
    "PickResult": ".core",
    "pick": ".core",
    "pick_particles": ".core",
    "dog_filter": ".dog",
    "match_picks": ".evaluate",
    "THRESHOLD_METHODS": ".params",
    "PickingGeometry": ".params",
    "PickingParams": ".params",
    "derive_geometry": ".params",
    "CANONICAL_POLARITY": ".polarity",
    "POLARITIES": ".polarity",
    "guess_polarity": ".polarity",
    "polarity_sign": ".polarity",
}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

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
