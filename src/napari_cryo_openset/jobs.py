"""The jobs the dock widgets run in the background: core generators, one per button (no Qt).

Each is a generator that yields :class:`~napari_cryo_openset.progress.Progress` events and
returns its result, like every core step, so a widget's task runner (progress bar, Cancel at
the next ``yield``) or :func:`~napari_cryo_openset.progress.run_to_completion` can drive it.
They never change the objects they are given: a model bundle another widget holds is copied
before the network is moved around (:func:`predict_job`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

#: Volumes up to this many voxels get a full-resolution band-pass (DoG) preview.
PREVIEW_MAX_VOXELS = 64 * 1024**2


def pick_job(volume, voxel_size, params, preview: bool):
    """Pick particles in ``volume`` (Z, Y, X; ``voxel_size`` in Å), then optionally its DoG response.

    Returns ``(PickingResult, response)``: ``response`` is the band-pass the peaks were found
    in (protein bright), or None when ``preview`` is off or the volume has more than
    :data:`PREVIEW_MAX_VOXELS` voxels (a second full-size float copy would not be small).
    """
    from .picking import dog_filter, pick_particles
    from .progress import Progress

    result = yield from pick_particles(volume, voxel_size, params)
    response = None
    if preview and int(np.prod(volume.shape)) <= PREVIEW_MAX_VOXELS:
        yield Progress("preview", 0, 1, "band-pass preview")
        response = dog_filter(volume, result.sigma1, result.sigma2)
        if result.polarity == "dark":
            response = -response
    return result, response


def train_job(builtin_names, paths, voxel_size: float, dataset_params, train_params, source_kind: str = "isolated",
              picking=None, slab: float | None = None):
    """Load the chosen templates at ``voxel_size`` (Å), then simulate a set and train on it.

    ``builtin_names``: names from the built-in library; ``paths``: the user's maps or atomic
    models (files or folders). ``source_kind``: ``isolated`` (one particle per box) or ``scenes``
    (crowded scenes picked with ``picking`` — default DoG parameters with the largest template's
    diameter — of slab thickness ``slab`` voxels, None = all slab; see
    :func:`~napari_cryo_openset.simulate.scene_source.generate_scene_source`).
    Returns the :class:`~napari_cryo_openset.train.TrainResult`.
    """
    from .progress import Progress
    from .simulate import builtin_templates, load_templates
    from .train import simulate_and_train, simulate_scenes_and_train

    yield Progress("templates", 0, 1, "loading templates")
    templates = []
    if builtin_names:
        chosen = set(builtin_names)
        templates += [t for t in builtin_templates(voxel_size) if t.name in chosen]
    if paths:
        templates += load_templates(list(paths), voxel_size)
    yield Progress("templates", 1, 1, f"{len(templates)} templates")
    if source_kind == "scenes" and templates:
        from .params import PickingParams

        if picking is None:
            picking = PickingParams(diameter=max(float(t.diameter) for t in templates))
        return (yield from simulate_scenes_and_train(templates, dataset_params, picking, train_params, slab=slab))
    return (yield from simulate_and_train(templates, dataset_params, train_params))


def estimate_job(volume, voxel_size: float):
    """Read the imaging condition of a (Z, Y, X) ``volume`` at ``voxel_size`` Å
    (:func:`~napari_cryo_openset.estimate.estimate_volume`); returns the VolumeEstimate."""
    from .estimate import estimate_volume
    from .progress import Progress

    yield Progress("estimate", 0, 1, "reading the tilt range, slab and noise")
    found = estimate_volume(volume, voxel_size)
    yield Progress("estimate", 1, 1, "done")
    return found


def predict_job(bundle, tomogram, picks, params):
    """Classify the active ``picks`` of ``tomogram`` with ``bundle`` (see
    :func:`~napari_cryo_openset.predict.predict_picks`).

    Runs on a shallow copy of ``bundle``: prediction puts the network back in place when it is
    done, and the bundle other widgets hold is not reassigned from a worker thread.
    """
    from .predict import predict_picks

    return (yield from predict_picks(replace(bundle), tomogram, picks, params))


def embed_job(bundle, tomogram, picks, polarity: str, params):
    """Map, cluster and average classified ``picks`` (see :func:`~napari_cryo_openset.embed.embed_picks`),
    on a shallow copy of ``bundle`` as :func:`predict_job`."""
    from .embed import embed_picks

    return (yield from embed_picks(replace(bundle), tomogram, picks, polarity=polarity, params=params))
