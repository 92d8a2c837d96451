"""Benchmark the imaging-condition estimate (:mod:`napari_cryo_openset.estimate`).

Placeholder while the module is written; see the full docstring below once done.
"""

from __future__ import annotations

import numpy as np


def slab_scene(
    shape=(96, 128, 128),
    slab=(24, 72),
    tilt_range=(-60.0, 60.0),
    snr=0.5,
    n_particles=40,
    background=0.05,
    voxel_size=10.0,
    seed=0,
    mode="full",
):
    """A synthetic tomogram whose sample fills only the Z range ``slab`` = (z0, z1) voxels.

    The scene simulator (:func:`napari_cryo_openset.simulate.scenes.make_scene`) spreads
    particles over the whole Z extent; here built-in templates (random orientations, every
    particle inside the slab) and a smooth crowding background confined to the slab are imaged
    by the same chain (:func:`~napari_cryo_openset.simulate.imaging.image_volumes`: tilt series
    about Y, −CTF × MTF, per-projection noise at ``snr``, WBP), so the noise fills the whole
    reconstruction, as in a real tomogram. Returns (volume (Z, Y, X) float32, zero mean and unit
    variance, protein dark; truth dict).
    """
    import torch

    from napari_cryo_openset.simulate.condition import ImagingCondition
    from napari_cryo_openset.simulate.datasets import crowding_background
    from napari_cryo_openset.simulate.imaging import approximate_image_volumes, image_volumes
    from napari_cryo_openset.simulate.placement import add_into, random_rotations, rotate_into_boxes
    from napari_cryo_openset.simulate.scenes import place_particles
    from napari_cryo_openset.simulate.templates import builtin_templates

    shape = tuple(int(s) for s in shape)
    z0, z1 = int(slab[0]), int(slab[1])
    cond = ImagingCondition(voxel_size=voxel_size, tilt_range=tuple(tilt_range), snr=snr, defocus=5.0)
    rng = np.random.default_rng([int(seed), 0x51AB])
    templates = sorted(builtin_templates(voxel_size), key=lambda t: t.name)
    choice = rng.integers(len(templates), size=int(n_particles))
    radii = np.array([templates[k].radius_voxels for k in choice])
    placed, centres = place_particles((z1 - z0, shape[1], shape[2]), radii, rng)
    centres[:, 0] += z0
    choice = choice[placed]
    rotations = random_rotations(rng, len(choice))
    volume = torch.zeros(shape, dtype=torch.float32)
    for k in np.unique(choice):
        idx = np.flatnonzero(choice == k)
        tpl = templates[k]
        corner = np.round(centres[idx]).astype(np.int64)
        patches = rotate_into_boxes(tpl.density, rotations[idx], centres[idx] - corner, tpl.shape, "cpu")
        for j, c in enumerate(corner):
            add_into(volume, patches[j], c - np.asarray(tpl.shape) // 2)
    if background > 0:
        bg = crowding_background(shape, [int(rng.integers(2**62))], voxel_size)[0]
        bg[:z0] = 0
        bg[z1:] = 0
        volume += background * bg
    kwargs = dict(defocus=[5.0], snr=[snr], noise_seeds=[int(rng.integers(2**62))])
    if mode == "approximate":
        out = approximate_image_volumes(volume[None], cond, **kwargs)[0]
    else:
        out = image_volumes(volume[None], cond, snr_window=shape[1:], supersample=1, **kwargs)[0]
    out = ((out - out.mean()) / out.std().clamp_min(1e-12)).numpy().astype(np.float32)
    truth = dict(tilt_range=tuple(float(t) for t in tilt_range), slab=(z0, z1), thickness=z1 - z0,
                 snr=float(snr), n_particles=len(choice), voxel_size=float(voxel_size))
    return out, truth
