"""A quick synthetic test tomogram: smooth particle-like blobs in noise, with ground truth.

This is *not* the physics simulator (``simulate/`` builds tomograms from real structures with
CTF, missing wedge and noise). It is a seconds-fast, seeded phantom for the demo, the sample
data and tests of I/O and picking: spherical-ish particles of a given diameter at random
non-overlapping positions, low-pass filtered white noise as background, protein dark by default
(the raw-reconstruction convention) or bright.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import ParameterError
from .picks import make_picks


@dataclass(frozen=True)
class BlobTomogramParams:
    """Parameters of :func:`blob_tomogram`.

    shape: (Z, Y, X) voxels. voxel_size: Å. diameter: particle diameter in Å. n_particles: how
    many to place (fewer if they do not fit). snr: variance of the particle signal over the
    variance of the noise. polarity: ``dark`` (protein darker than background) or ``bright``.
    """

    shape: tuple[int, int, int] = (64, 128, 128)
    voxel_size: float = 10.0
    diameter: float = 120.0
    n_particles: int = 40
    snr: float = 1.0
    polarity: str = "dark"
    seed: int = 0


def _place(shape, n, min_dist, margin, rng) -> np.ndarray:
    """Random non-overlapping centres (Z, Y, X) at least ``min_dist`` voxels apart."""
    lo = np.full(3, margin, dtype=float)
    hi = np.asarray(shape, dtype=float) - 1 - margin
    if np.any(hi <= lo):
        return np.zeros((0, 3))
    centres: list[np.ndarray] = []
    tries = 0
    while len(centres) < n and tries < 200 * n:
        tries += 1
        c = rng.uniform(lo, hi)
        if all(np.sum((c - o) ** 2) >= min_dist**2 for o in centres):
            centres.append(c)
    return np.array(centres).reshape(-1, 3)


def blob_tomogram(params: BlobTomogramParams = BlobTomogramParams()) -> tuple[np.ndarray, pd.DataFrame]:
    """Return a float32 (Z, Y, X) volume and its ground-truth picks table.

    Particle centres are placed at least 1.2 diameters apart and at least one radius from every
    border. The picks table has ``class_name`` = ``blob`` and ``score`` = NaN.
    """
    from scipy import ndimage

    if params.voxel_size <= 0 or params.diameter <= 0:
        raise ParameterError("voxel_size and diameter must be positive (Å)")
    if params.polarity not in ("dark", "bright"):
        raise ParameterError(f"polarity must be 'dark' or 'bright', got {params.polarity!r}")
    rng = np.random.default_rng(params.seed)
    radius = params.diameter / params.voxel_size / 2.0
    centres = _place(params.shape, params.n_particles, 2.4 * radius, int(np.ceil(radius)) + 1, rng)

    signal = np.zeros(params.shape, dtype=np.float32)
    r = int(np.ceil(radius * 1.5)) + 1
    zz, yy, xx = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1].astype(np.float32)
    for c in centres:
        ic = np.round(c).astype(int)
        frac = c - ic
        d2 = (zz - frac[0]) ** 2 + (yy - frac[1]) ** 2 + (xx - frac[2]) ** 2
        blob = 1.0 / (1.0 + np.exp((np.sqrt(d2) - radius) / 0.6))  # soft-edged sphere
        sl = tuple(slice(ic[i] - r, ic[i] + r + 1) for i in range(3))
        src = tuple(
            slice(max(0, -(ic[i] - r)), 2 * r + 1 - max(0, ic[i] + r + 1 - params.shape[i]))
            for i in range(3)
        )
        dst = tuple(slice(max(0, s.start), min(params.shape[i], s.stop)) for i, s in enumerate(sl))
        signal[dst] += blob[src]

    noise = rng.standard_normal(params.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, 1.0)
    sig_var = float(signal.var()) or 1.0
    noise *= np.sqrt(sig_var / params.snr / float(noise.var()))
    sign = -1.0 if params.polarity == "dark" else 1.0
    volume = (sign * signal + noise).astype(np.float32)
    volume -= volume.mean()
    volume /= volume.std() or 1.0
    picks = make_picks(centres, class_name=["blob"] * len(centres))
    return volume, picks


def mixed_blob_tomogram(
    shape: tuple[int, int, int] = (64, 128, 128),
    voxel_size: float = 10.0,
    diameters: tuple[float, ...] = (80.0, 200.0),
    n_per_size: tuple[int, ...] = (20, 10),
    snr: float = 0.5,
    polarity: str = "dark",
    seed: int = 0,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Soft spheres of several diameters (Å) in one (Z, Y, X) volume, for multi-scale picking.

    Largest first, each centre at least 1.2 × the mean diameter of a pair from every other and
    a radius + 1 voxel from every face; noise as in :func:`blob_tomogram`. The truth table has
    ``class_name`` ``blob<d>`` and ``diameter`` (Å).
    """
    from scipy import ndimage

    if voxel_size <= 0 or min(diameters) <= 0 or len(diameters) != len(n_per_size):
        raise ParameterError("voxel_size and diameters must be positive (Å), one count per diameter")
    rng = np.random.default_rng(seed)
    centres: list[np.ndarray] = []
    sizes: list[float] = []
    for d, n in sorted(zip(diameters, n_per_size), reverse=True):
        r = d / voxel_size / 2.0
        lo = np.full(3, r + 1.0)
        hi = np.asarray(shape, dtype=float) - 2.0 - r
        placed, tries = 0, 0
        while placed < n and tries < 300 * max(n, 1) and np.all(hi > lo):
            tries += 1
            c = rng.uniform(lo, hi)
            if all(np.linalg.norm(c - o) >= 0.6 * (d + od) / voxel_size for o, od in zip(centres, sizes)):
                centres.append(c)
                sizes.append(float(d))
                placed += 1
    signal = np.zeros(shape, dtype=np.float32)
    for c, d in zip(centres, sizes):
        r = d / voxel_size / 2.0
        R = int(np.ceil(1.5 * r)) + 1
        lo = [max(0, int(c[a]) - R) for a in range(3)]
        hi = [min(shape[a], int(c[a]) + R + 1) for a in range(3)]
        zz, yy, xx = np.meshgrid(*[np.arange(lo[a], hi[a], dtype=np.float32) - c[a] for a in range(3)],
                                 indexing="ij")
        dist = np.sqrt(zz**2 + yy**2 + xx**2)
        signal[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += 1.0 / (1.0 + np.exp((dist - r) / 0.6))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0)
    noise *= np.sqrt((float(signal.var()) or 1.0) / snr / float(noise.var()))
    sign = -1.0 if polarity == "dark" else 1.0
    volume = (sign * signal + noise).astype(np.float32)
    volume -= volume.mean()
    volume /= volume.std() or 1.0
    coords = np.array(centres).reshape(-1, 3)
    return volume, make_picks(coords, class_name=[f"blob{d:g}" for d in sizes], diameter=np.array(sizes))
