"""napari sample data.

- ``simulated-scene``: a 128×256×256 tomogram at 10 Å simulated from the built-in structures
  (tilt series ±60°, CTF, noise, weighted back-projection; protein dark) with ~100 particles,
  some of them procedural "unknown" decoys, and the ground-truth picks coloured by class.
  Seeded; small enough to simulate when the sample is opened.
- ``synthetic-tomogram``: a tiny blob phantom (64×128×128) with its picks, for a quick look.
"""

from __future__ import annotations

from .io.tomogram import Tomogram
from .layers import picks_layer, tomogram_layer


def _layers(volume, picks, voxel_size: float, diameter: float | None, name: str, header: dict):
    vs = (float(voxel_size),) * 3
    tomo = Tomogram(data=volume, voxel_size=vs, header=header)
    image = tomogram_layer(tomo, name=name)
    points = picks_layer(picks, voxel_size=vs, name=f"{name} ground truth", diameter=diameter)
    return [image, points]


def simulated_scene():
    """The simulated sample scene with its ground truth (class names from the templates)."""
    from .simulate.scenes import SAMPLE_SCENE, sample_scene

    volume, picks = sample_scene()
    vs = float(SAMPLE_SCENE.condition.voxel_size)
    header = {"synthetic": True, "simulated": True, "seed": SAMPLE_SCENE.seed, "polarity": "dark"}
    layers = _layers(volume, picks, vs, None, "simulated scene", header)
    # point size: a typical particle of the built-in library (~20 nm)
    layers[1][1]["size"] = 200.0 / vs
    return layers


def sample_tomogram():
    """A 64×128×128 blob phantom at 10 Å/voxel with 40 dark 12 nm particles and their picks."""
    from .synthetic import BlobTomogramParams, blob_tomogram

    params = BlobTomogramParams()
    volume, picks = blob_tomogram(params)
    header = {"synthetic": True, "seed": params.seed}
    return _layers(volume, picks, params.voxel_size, params.diameter, "blob phantom", header)
