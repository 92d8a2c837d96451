"""Wedged, noisy copies of a map at known orientations and shifts (tests and the benchmark).

The rotation uses scipy's cubic ``affine_transform`` — independent of the aligner's own
trilinear ``grid_sample`` rotation, so the tests check the convention end to end: copy ``i`` is
``shift_tᵢ(Aᵢ · template)`` with ``Aᵢ`` RELION's matrix of ``euler[i]`` (reference → particle).
"""

from __future__ import annotations

import numpy as np

from . import so3


def rotate_map(volume: np.ndarray, matrix_xyz: np.ndarray, shift_zyx=(0.0, 0.0, 0.0), order: int = 3) -> np.ndarray:
    """``shift(A · volume)`` about voxel ``D // 2`` (A: RELION's (x, y, z) matrix), cubic spline."""
    from scipy import ndimage

    v = np.asarray(volume, dtype=np.float64)
    r = so3.xyz_to_zyx(matrix_xyz)
    c = np.array(v.shape) // 2
    t = np.asarray(shift_zyx, dtype=np.float64)
    # out(x) = v(Rᵀ (x − c − t) + c)
    m = r.T
    offset = c - m @ (c + t)
    return ndimage.affine_transform(v, m, offset=offset, order=order, mode="constant", cval=0.0).astype(np.float32)


def wedge_filter(volumes: np.ndarray, tilt_range) -> np.ndarray:
    """Remove the missing wedge (tilt axis Y) from (…, D, D, D) volumes."""
    import torch

    from .fourier import freq_grid, wedge_of

    if tilt_range is None:
        return np.asarray(volumes, dtype=np.float32)
    v = torch.as_tensor(np.asarray(volumes, dtype=np.float32))
    d = v.shape[-1]
    w = wedge_of(freq_grid(d), tilt_range)
    return torch.fft.irfftn(torch.fft.rfftn(v, dim=(-3, -2, -1)) * w, s=(d, d, d), dim=(-3, -2, -1)).numpy()


def random_matrices(n: int, seed: int = 0) -> np.ndarray:
    """``n`` uniformly random RELION matrices (x, y, z)."""
    rng = np.random.default_rng(seed)
    return so3.quaternion_to_matrix(rng.normal(size=(n, 4)))


def wedged_copies(template: np.ndarray, n: int, *, tilt_range=(-60.0, 60.0), snr: float = 0.1,
                  max_shift: float = 2.0, seed: int = 0, box: int | None = None):
    """``n`` copies of ``template`` at random orientations/shifts, wedged, with wedged white noise.

    SNR = var(wedged particle) / var(noise) over the box. Returns ``(boxes (n, D, D, D),
    matrices (n, 3, 3) RELION A, shifts (n, 3) voxels z y x)``.
    """
    from .core import fit_box

    rng = np.random.default_rng(seed)
    t = np.asarray(template, dtype=np.float32) if box is None else fit_box(template, box)
    mats = random_matrices(n, seed + 1)
    shifts = rng.uniform(-max_shift, max_shift, size=(n, 3)) if max_shift else np.zeros((n, 3))
    clean = np.stack([rotate_map(t, mats[i], shifts[i]) for i in range(n)])
    clean = wedge_filter(clean, tilt_range)
    noise = wedge_filter(rng.normal(size=clean.shape).astype(np.float32), tilt_range)
    sig = clean.reshape(n, -1).var(axis=1)
    noise /= noise.reshape(n, -1).std(axis=1)[:, None, None, None]
    if snr and np.isfinite(snr):
        boxes = clean + noise * np.sqrt(sig / snr)[:, None, None, None]
    else:
        boxes = clean
    return boxes.astype(np.float32), mats, shifts


def phantom(d: int = 24, seed: int = 0) -> np.ndarray:
    """An asymmetric test object (blobs of very different sizes along +x, +y, −z and a diagonal), centred on D // 2."""
    rng = np.random.default_rng(seed)
    ax = np.arange(d) - d // 2
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    s = d / 28.0  # inside the default mask (0.9 of the half box, less 2 voxels)
    blobs = [((0, 0, 0), 3.0), ((0, 0, 6), 2.4), ((0, 4, 0), 1.3), ((-5, 0, 0), 1.8), ((3, -3, -3), 1.0)]
    out = np.zeros((d, d, d))
    for (cz, cy, cx), r in blobs:
        jit = rng.normal(scale=0.1, size=3)
        out += np.exp(-((z - s * (cz + jit[0])) ** 2 + (y - s * (cy + jit[1])) ** 2 + (x - s * (cx + jit[2])) ** 2)
                      / (2 * (r * s) ** 2))
    return out.astype(np.float32)


__all__ = ["phantom", "random_matrices", "rotate_map", "wedge_filter", "wedged_copies"]
