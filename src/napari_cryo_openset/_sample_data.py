"""napari sample data: a small synthetic tomogram with its ground-truth picks (seeded, ~1 s)."""

from __future__ import annotations

from .io.tomogram import Tomogram
from .layers import picks_layer, tomogram_layer
from .synthetic import BlobTomogramParams, blob_tomogram


def sample_tomogram():
    """A 64×128×128 tomogram at 10 Å/voxel with 40 dark 12 nm particles and their picks."""
    params = BlobTomogramParams()
    volume, picks = blob_tomogram(params)
    vs = (params.voxel_size,) * 3
    tomo = Tomogram(data=volume, voxel_size=vs, header={"synthetic": True, "seed": params.seed})
    image = tomogram_layer(tomo, name="synthetic tomogram")
    points = picks_layer(picks, voxel_size=vs, name="ground truth", diameter=params.diameter)
    return [image, points]
