"""Decoys: procedural pseudo-macromolecules for the source ``unknown`` class.

MLUDA trains with a source *unknown* class made of structures outside the known set; the
target's unknowns are different structures again. A decoy here is a seeded assembly of Gaussian
blobs that looks like a protein complex at cryo-ET resolution without being any of the known
templates:

- overall diameter drawn uniformly in 8–30 nm (protein-complex sizes; capped by the box);
- point-group symmetry drawn among asymmetric (C1), cyclic Cn (n = 2…8) and dihedral Dn
  (n = 2…6), the symmetry axis along Z;
- an ellipsoidal envelope (aspect 0.5–1.6), optionally hollow (barrel/cage-like, 30 %);
- 1–4 compact domains per asymmetric unit, each a cluster of blobs of 0.6–1.2 nm σ (plus some
  blobs twice as wide), the number of blobs set by a random packing fraction, so that some
  decoys are dense and globular and others porous.

Density is rendered by trilinear splatting of blob centres and Gaussian filtering, then
normalised like every template (mean density inside the support = 1; see :mod:`.templates`).
The same seed gives the same decoys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .templates import Template


@dataclass(frozen=True)
class DecoyParams:
    """Ranges for :func:`make_decoy`. Diameters in nm, blob σ in nm."""

    diameter_range: tuple[float, float] = (8.0, 30.0)
    blob_sigma_range: tuple[float, float] = (0.6, 1.2)
    packing_range: tuple[float, float] = (0.25, 0.7)
    hollow_probability: float = 0.3
    symmetry_weights: tuple[float, float, float] = (0.3, 0.4, 0.3)  # C1, Cn, Dn


def symmetry_operators(symmetry: str) -> np.ndarray:
    """Rotation matrices (k, 3, 3) acting on (z, y, x) for ``C1``, ``Cn`` or ``Dn`` (axis Z)."""
    kind, n = symmetry[0].upper(), int(symmetry[1:] or 1)
    ops = []
    for k in range(n):
        a = 2 * math.pi * k / n
        c, s = math.cos(a), math.sin(a)
        ops.append(np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64))  # about z
    if kind == "D":
        flip = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], dtype=np.float64)  # 2-fold about x
        ops += [flip @ o for o in ops]
    elif kind != "C":
        raise ValueError(f"symmetry must be Cn or Dn, got {symmetry!r}")
    return np.stack(ops)


def _splat(points: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Trilinear splatting of (P, 3) voxel coordinates onto a (size³) grid."""
    grid = np.zeros((size, size, size), dtype=np.float64)
    base = np.floor(points).astype(np.int64)
    frac = points - base
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                idx = base + np.array([dz, dy, dx])
                w = weights * np.where(dz, frac[:, 0], 1 - frac[:, 0]) * np.where(dy, frac[:, 1], 1 - frac[:, 1]) \
                    * np.where(dx, frac[:, 2], 1 - frac[:, 2])
                ok = np.all((idx >= 0) & (idx < size), axis=1)
                np.add.at(grid, tuple(idx[ok].T), w[ok])
    return grid


def make_decoy(
    rng: np.random.Generator,
    voxel_size: float,
    name: str = "decoy",
    *,
    params: DecoyParams = DecoyParams(),
    max_diameter: float | None = None,
    symmetry: str | None = None,
) -> Template:
    """One procedural pseudo-macromolecule as a :class:`Template` (``source='decoy'``).

    ``max_diameter`` (nm) caps the drawn diameter (e.g. 0.9 × the box edge).
    """
    from scipy import ndimage

    lo, hi = params.diameter_range
    if max_diameter is not None:
        hi = max(min(hi, max_diameter), min(lo, max_diameter))
        lo = min(lo, hi)
    diameter = rng.uniform(lo, hi) * 10.0  # Å
    if symmetry is None:
        kind = rng.choice(3, p=np.asarray(params.symmetry_weights) / sum(params.symmetry_weights))
        symmetry = "C1" if kind == 0 else (f"C{rng.integers(2, 9)}" if kind == 1 else f"D{rng.integers(2, 7)}")
    ops = symmetry_operators(symmetry)

    sigma = max(rng.uniform(*params.blob_sigma_range) * 10.0 / voxel_size, 0.7)  # voxels
    radius = diameter / 2.0 / voxel_size  # voxels
    r_env = max(radius - 1.5 * sigma, 1.5 * sigma)
    aspect = rng.uniform(0.5, 1.6)
    axes = np.array([aspect, 1.0, 1.0]) if symmetry != "C1" else np.array([aspect, rng.uniform(0.6, 1.0), 1.0])
    axes = axes / axes.max() * r_env
    hollow = rng.random() < params.hollow_probability
    r_in = rng.uniform(0.35, 0.6) * min(axes[1], axes[2]) if hollow else 0.0

    env_volume = 4.0 / 3.0 * math.pi * float(np.prod(axes))
    blob_volume = (2.2 * sigma) ** 3
    packing = rng.uniform(*params.packing_range)
    n_total = max(8, int(packing * env_volume / blob_volume))
    n_unit = max(3, n_total // len(ops))

    n_domains = int(rng.integers(1, 5))
    domain_centres = _inside(rng, n_domains * 20, axes, r_in)[:n_domains]
    domain_spread = max(r_env / (1.5 + n_domains), 1.5 * sigma)
    pts = []
    while sum(len(p) for p in pts) < n_unit:
        d = domain_centres[rng.integers(len(domain_centres))]
        cand = d + rng.normal(scale=domain_spread, size=(4 * n_unit, 3))
        keep = _in_envelope(cand, axes, r_in)
        pts.append(cand[keep])
    unit = np.concatenate(pts)[:n_unit]
    big = rng.random(n_unit) < 0.25
    weights = rng.uniform(0.5, 1.0, n_unit)

    size = 2 * int(math.ceil(r_env + 4 * 2 * sigma)) + 1
    centre = size // 2
    grids = []
    for mask, s in ((~big, sigma), (big, 2 * sigma)):
        if not mask.any():
            continue
        allp = np.concatenate([unit[mask] @ op.T for op in ops]) + centre
        allw = np.tile(weights[mask], len(ops)) * (1.0 if s == sigma else 0.5)
        grids.append(ndimage.gaussian_filter(_splat(allp, allw, size), s, mode="constant"))
    density = np.sum(grids, axis=0).astype(np.float32)
    t = Template.from_density(name, density, voxel_size, source=f"decoy:{symmetry}")
    return t


def _in_envelope(p: np.ndarray, axes: np.ndarray, r_in: float) -> np.ndarray:
    inside = ((p / axes) ** 2).sum(1) <= 1.0
    if r_in > 0:
        inside &= np.sqrt(p[:, 1] ** 2 + p[:, 2] ** 2) >= r_in
    return inside


def _inside(rng: np.random.Generator, n: int, axes: np.ndarray, r_in: float) -> np.ndarray:
    out = []
    while sum(len(o) for o in out) < max(n, 1):
        cand = rng.uniform(-1, 1, size=(4 * max(n, 4), 3)) * axes
        out.append(cand[_in_envelope(cand, axes, r_in)])
    return np.concatenate(out)


def make_decoys(
    n: int,
    voxel_size: float,
    seed: int = 0,
    *,
    params: DecoyParams = DecoyParams(),
    max_diameter: float | None = None,
    prefix: str = "decoy",
) -> list[Template]:
    """``n`` distinct decoys named ``decoy_000 …`` (seeded: the same seed gives the same set)."""
    rng = np.random.default_rng([int(seed), 0xDEC0])
    return [make_decoy(rng, voxel_size, f"{prefix}_{i:03d}", params=params, max_diameter=max_diameter)
            for i in range(int(n))]


# --------------------------------------------------------------------------------------------
# near-miss decoys derived from the known templates
# --------------------------------------------------------------------------------------------

#: Scale factors of a rescaled known template (too small / too large to be it).
SCALE_RANGES = ((0.7, 0.85), (1.2, 1.4))
DERIVED_KINDS = ("scaled", "fragment", "chimera")


def _pad_to(d: np.ndarray, shape) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float32)
    sl = tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(shape, d.shape))
    out[sl] = d
    return out


def _half_space(shape, normal: np.ndarray, offset: float) -> np.ndarray:
    idx = [np.arange(n, dtype=np.float32) - n // 2 for n in shape]
    zz, yy, xx = np.meshgrid(*idx, indexing="ij")
    return (zz * normal[0] + yy * normal[1] + xx * normal[2]) > offset


def derived_decoy(rng: np.random.Generator, known: list[Template], name: str) -> Template:
    """One near-miss decoy from the known templates (all at one voxel size): a known structure
    rescaled by 0.7–0.85 or 1.2–1.4 (``scaled``), cut by a random plane through its core
    (``fragment``, 55–80 % kept), or the halves of two different known structures joined
    (``chimera``). Close to the known classes without being any of them: the source ``unknown``
    class then teaches the model that *almost* a known structure is not it — real unknown
    proteins are near-misses far more often than they are procedural blobs."""
    from .templates import resample_density

    vs = known[0].voxel_size
    kind = DERIVED_KINDS[int(rng.integers(len(DERIVED_KINDS) if len(known) > 1 else 2))]
    a = known[int(rng.integers(len(known)))]
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    if kind == "scaled":
        lo, hi = SCALE_RANGES[int(rng.integers(2))]
        s = float(rng.uniform(lo, hi))
        dens = resample_density(a.density, vs * s, vs)
    elif kind == "fragment":
        r = a.radius_voxels
        dens = a.density * _half_space(a.shape, normal, float(rng.uniform(-0.5, -0.15)) * r)
    else:
        others = [t for t in known if t.name != a.name]
        b = others[int(rng.integers(len(others)))]
        shape = tuple(max(x, y) for x, y in zip(a.shape, b.shape))
        da, db = _pad_to(a.density, shape), _pad_to(b.density, shape)
        keep = _half_space(shape, normal, 0.0)
        dens = np.where(keep, da, db)
    return Template.from_density(name, np.asarray(dens, dtype=np.float32), vs, source=f"decoy:{kind}:{a.name}")


def derived_decoys(known: list[Template], n: int, seed: int = 0, prefix: str = "near") -> list[Template]:
    """``n`` near-miss decoys (:func:`derived_decoy`) named ``near_000 …``; seeded."""
    if not known or n <= 0:
        return []
    rng = np.random.default_rng([int(seed), 0xEA2])
    return [derived_decoy(rng, list(known), f"{prefix}_{i:03d}") for i in range(int(n))]
