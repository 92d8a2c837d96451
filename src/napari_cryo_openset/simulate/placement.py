"""Random orientations and placing rotated templates into boxes (batched, torch).

Conventions: arrays are (Z, Y, X); rotation matrices act on **(z, y, x) column vectors** of
voxel offsets; a template's centre is its voxel ``n // 2`` and the centre of an output box of
edge ``s`` is voxel ``s // 2`` (the same voxel a picker's box extraction puts the pick on).

A particle with rotation ``R`` and shift ``t`` (voxels, z y x) has the density
``out(p) = template(Rᵀ (p − c_out − t) + c_in)``, sampled with trilinear interpolation
(``torch.nn.functional.grid_sample``; documented interpolation of maps — atomic models can be
rotated exactly with :func:`~napari_cryo_openset.simulate.atomic.density_from_atoms`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rotation matrices uniform on SO(3) (normalised Gaussian quaternions), (n, 3, 3)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return quaternion_to_matrix(q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (…, 4) as (w, a, b, c) → rotation matrices (…, 3, 3)."""
    w, a, b, c = np.moveaxis(np.asarray(q, dtype=np.float64), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w)], -1),
            np.stack([2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w)], -1),
            np.stack([2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)], -1),
        ],
        -2,
    )


def _base_coords(shape: Sequence[int], device) -> torch.Tensor:
    """(prod(shape), 3) voxel offsets (z, y, x) from the box centre ``s // 2``."""
    axes = [torch.arange(s, dtype=torch.float32, device=device) - (s // 2) for s in shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([zz, yy, xx], -1).reshape(-1, 3)


def rotate_into_boxes(
    density: np.ndarray | torch.Tensor,
    rotations: np.ndarray | torch.Tensor,
    shifts: np.ndarray | torch.Tensor | None,
    out_shape: Sequence[int],
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Rotate and shift one template into ``N`` boxes at once.

    Parameters
    ----------
    density
        (D, H, W) template (Z, Y, X), centre at voxel ``n // 2`` of each axis.
    rotations
        (N, 3, 3) rotation matrices acting on (z, y, x).
    shifts
        (N, 3) shifts in voxels (z, y, x) of the particle centre from the box centre, or None.
    out_shape
        (Z, Y, X) of every output box.

    Returns
    -------
    torch.Tensor
        (N, Z, Y, X) float32.
    """
    dens = torch.as_tensor(density, dtype=torch.float32, device=device)
    rot = torch.as_tensor(np.asarray(rotations), dtype=torch.float32, device=device).reshape(-1, 3, 3)
    n = rot.shape[0]
    if n == 0:
        return torch.zeros((0, *out_shape), dtype=torch.float32, device=device)
    base = _base_coords(out_shape, device)  # (P, 3)
    if shifts is not None:
        sh = torch.as_tensor(np.asarray(shifts), dtype=torch.float32, device=device).reshape(n, 1, 3)
        rel = base[None] - sh  # (N, P, 3)
    else:
        rel = base[None].expand(n, -1, -1)
    # source = Rᵀ rel  →  row vectors: rel @ R
    src = torch.bmm(rel, rot)  # (N, P, 3) offsets in the template (z, y, x)
    size = torch.tensor(dens.shape, dtype=torch.float32, device=device)
    centre = torch.floor(size / 2)
    norm = (src + centre) / (size - 1) * 2 - 1  # align_corners=True normalisation
    grid = norm.flip(-1).reshape(n, *out_shape, 3)  # grid_sample wants (x, y, z)
    inp = dens[None, None].expand(n, 1, *dens.shape)
    out = F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[:, 0]


def add_into(volume: torch.Tensor, patch: torch.Tensor, corner: Sequence[int]) -> None:
    """Add ``patch`` (Z, Y, X) into ``volume`` with its first voxel at ``corner``, clipped."""
    dst, src = [], []
    for axis in range(3):
        c = int(corner[axis])
        lo, hi = max(0, c), min(volume.shape[axis], c + patch.shape[axis])
        if hi <= lo:
            return
        dst.append(slice(lo, hi))
        src.append(slice(lo - c, hi - c))
    volume[tuple(dst)] += patch[tuple(src)]


def random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)
