"""Orthogonal slices of the *raw* tomogram around a pick, for judging it by eye (no Qt, no napari).

The Curate step shows XY, XZ and YZ slices through the pick, cut from the tomogram itself (never
a band-passed or averaged volume), with grey levels from the box's own percentiles (not the whole
tomogram's), an optional light low-pass (a Gaussian of σ = 1 voxel, toggled by the user) and the
protein always drawn dark, as in a raw reconstruction: a ``bright`` (inverted) tomogram is
inverted back. Volumes are (Z, Y, X), coordinates in voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: σ (voxels) of the light low-pass a user can toggle.
LOWPASS_SIGMA = 1.0
#: Percentiles of the box that map to black and white.
PERCENTILES = (1.0, 99.0)


def pick_box(volume, centre_zyx, half: int) -> np.ndarray:
    """The (2·half+1)³ box of ``volume`` around ``centre_zyx`` (voxels), edge-padded at the borders."""
    c = np.round(np.asarray(centre_zyx, dtype=float)).astype(int)
    shape = np.asarray(volume.shape)
    lo, hi = c - half, c + half + 1
    src_lo, src_hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
    size = 2 * half + 1
    if not np.all(src_hi > src_lo):
        return np.zeros((size, size, size), dtype=np.float32)
    block = np.asarray(volume[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))], dtype=np.float32)
    pad = [(int(a - lo_), int(hi_ - b)) for a, b, lo_, hi_ in zip(src_lo, src_hi, lo, hi)]
    return np.pad(block, pad, mode="edge")


@dataclass(frozen=True)
class ParticleView:
    """The three slices through a pick, ready to draw: ``planes`` XY, XZ, YZ (protein dark),
    ``limits`` (black, white) from the box, ``radius`` of the particle (voxels, for the circle)."""

    planes: tuple[np.ndarray, np.ndarray, np.ndarray]
    limits: tuple[float, float]
    radius: float


def particle_view(volume, centre_zyx, diameter_voxels: float, polarity: str = "dark", lowpass: bool = False,
                  half: int | None = None) -> ParticleView:
    """Slices of the raw ``volume`` through ``centre_zyx`` for a particle ``diameter_voxels`` across.

    The box is twice the diameter (at least 17 voxels, at most 97); ``polarity`` ``bright`` is
    inverted so the protein is dark; ``lowpass`` smooths with σ = :data:`LOWPASS_SIGMA` voxels.
    """
    from .errors import ParameterError

    if polarity not in ("dark", "bright"):
        raise ParameterError(f"polarity must be 'dark' or 'bright' to draw a pick, got {polarity!r}")
    d = float(diameter_voxels) if diameter_voxels and np.isfinite(diameter_voxels) else 16.0
    half = int(half) if half is not None else int(np.clip(round(d), 8, 48))
    box = pick_box(volume, centre_zyx, half)
    if polarity == "bright":
        box = -box
    if lowpass:
        from scipy.ndimage import gaussian_filter

        box = gaussian_filter(box, LOWPASS_SIGMA, mode="nearest")
    lo, hi = np.percentile(box, PERCENTILES)
    planes = (box[half], box[:, half, :], box[:, :, half])
    return ParticleView(planes, (float(lo), float(hi) if hi > lo else float(lo) + 1.0), d / 2.0)


def centre_contrast(plane: np.ndarray, radius: float) -> float:
    """(mean of the central disc − mean of the box edge) in SDs of the box edge (the surround's
    noise): negative where the particle's centre is darker than its surround. The disc's radius is
    half the particle's (at least 1.5 voxels)."""
    plane = np.asarray(plane, dtype=float)
    h, w = plane.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0)
    centre = plane[r <= max(1.5, radius / 2.0)]
    edge = np.concatenate([plane[:2].ravel(), plane[-2:].ravel(), plane[2:-2, :2].ravel(), plane[2:-2, -2:].ravel()])
    sd = float(edge.std()) or 1.0
    return float((centre.mean() - edge.mean()) / sd)
