"""Rotations: RELION's ZYZ Euler angles, uniform SO(3) grids, local grids, distances (numpy only).

Convention (RELION's, ``euler.cpp`` ``Euler_angles2matrix``/``Euler_matrix2angles``, checked
against the 3DEM conventions table and teamtomo's ``eulerangles``): for
``rlnAngleRot, rlnAngleTilt, rlnAnglePsi = (φ, θ, ψ)`` in degrees,

    A = Rz'(ψ) · Ry'(θ) · Rz'(φ),   Rz'(a) = [[c, s, 0], [−s, c, 0], [0, 0, 1]],
                                     Ry'(b) = [[c, 0, −s], [0, 1, 0], [s, 0, c]],

i.e. ``Aᵀ = Rz(φ)·Ry(θ)·Rz(ψ)`` with the usual right-handed (counter-clockwise) rotations, an
*intrinsic* ZYZ rotation. ``A`` acts on **(x, y, z)** column vectors (x = the last array axis)
and **maps the reference onto the particle**: RELION's projector samples the reference at
``Aᵀ·p`` for each particle coordinate ``p``, so ``particle(p) = reference(Aᵀ·p)`` — the particle
is the reference actively rotated by ``A`` about the box centre (voxel ``n // 2``). To bring a
particle into the reference frame (averaging), rotate it by ``Aᵀ``. A positive ``rot`` alone
turns the object clockwise seen from +z (x → −y), as the 3DEM table says of RELION.

Internally the arrays are (Z, Y, X): :func:`xyz_to_zyx` turns an (x, y, z) matrix into the one
that acts on (z, y, x) index vectors (``P·A·P`` with ``P`` the axis reversal, its own inverse).

The uniform grid is **super-Fibonacci** (Alexa, CVPR 2022): ``n`` unit quaternions spread on
S³ by two irrational spirals — deterministic, any ``n``, near-uniform without a HEALPix
dependency (``torch-so3`` is not on the package index this project uses). ``n`` for an angular
step follows RELION's HEALPix sampling: ``576 · (30° / step)³`` (4,608 at 15°, 15,552 at 10°).
"""

from __future__ import annotations

import numpy as np

# Alexa's constants: φ = √2 and ψ the real root of ψ⁴ = ψ + 4
_PHI = np.sqrt(2.0)
_PSI = 1.533751168755204288118041


def euler_to_matrix(rot, tilt, psi) -> np.ndarray:
    """RELION's rotation matrix ``A`` (…, 3, 3) of ZYZ Euler angles in degrees; acts on (x, y, z)."""
    a, b, g = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (rot, tilt, psi))
    a, b, g = np.broadcast_arrays(a, b, g)
    ca, cb, cg = np.cos(a), np.cos(b), np.cos(g)
    sa, sb, sg = np.sin(a), np.sin(b), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty(a.shape + (3, 3))
    m[..., 0, 0] = cg * cc - sg * sa
    m[..., 0, 1] = cg * cs + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cc - cg * sa
    m[..., 1, 1] = -sg * cs + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sc
    m[..., 2, 1] = ss
    m[..., 2, 2] = cb
    return m


def matrix_to_euler(matrix) -> np.ndarray:
    """RELION's (rot, tilt, psi) in degrees (…, 3) of matrices ``A`` (…, 3, 3); tilt in [0°, 180°].

    At tilt 0° (or 180°) only rot ± psi is defined: rot is set to 0 and psi takes the rest, as
    RELION does.
    """
    m = np.asarray(matrix, dtype=np.float64)
    abs_sb = np.sqrt(m[..., 0, 2] ** 2 + m[..., 1, 2] ** 2)
    tilt = np.arctan2(abs_sb, m[..., 2, 2])
    rot = np.arctan2(m[..., 2, 1], m[..., 2, 0])
    psi = np.arctan2(m[..., 1, 2], -m[..., 0, 2])
    gimbal = abs_sb <= 16 * np.finfo(np.float32).eps
    up = m[..., 2, 2] > 0
    rot = np.where(gimbal, 0.0, rot)
    psi = np.where(gimbal & up, np.arctan2(-m[..., 1, 0], m[..., 0, 0]), psi)
    psi = np.where(gimbal & ~up, np.arctan2(m[..., 1, 0], -m[..., 0, 0]), psi)
    return np.rad2deg(np.stack([rot, tilt, psi], axis=-1))


def xyz_to_zyx(matrix) -> np.ndarray:
    """The same rotation acting on (z, y, x) vectors instead of (x, y, z) (and back: an involution)."""
    m = np.asarray(matrix, dtype=np.float64)
    return m[..., ::-1, ::-1].copy()


zyx_to_xyz = xyz_to_zyx


def quaternion_to_matrix(q) -> np.ndarray:
    """Rotation matrices (…, 3, 3) of unit quaternions (…, 4) ordered (w, x, y, z)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    m = np.empty(q.shape[:-1] + (3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - z * w)
    m[..., 0, 2] = 2 * (x * z + y * w)
    m[..., 1, 0] = 2 * (x * y + z * w)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - x * w)
    m[..., 2, 0] = 2 * (x * z - y * w)
    m[..., 2, 1] = 2 * (y * z + x * w)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def axis_angle_to_matrix(v) -> np.ndarray:
    """Rotation matrices of rotation vectors (…, 3) (axis × angle in radians; Rodrigues)."""
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = angle / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        axis = np.where(angle > 0, v / np.where(angle > 0, angle, 1), 0.0)
    q = np.concatenate([np.cos(half), axis * np.sin(half)], axis=-1)
    return quaternion_to_matrix(q)


def grid_size(step_deg: float) -> int:
    """Rotations in a uniform grid of ``step_deg`` (RELION's HEALPix count: 576 · (30 / step)³)."""
    return max(1, int(round(576 * (30.0 / float(step_deg)) ** 3)))


def super_fibonacci(n: int) -> np.ndarray:
    """``n`` unit quaternions (w, x, y, z) spread uniformly on S³ (Alexa 2022), deterministic."""
    s = np.arange(n, dtype=np.float64) + 0.5
    t = s / n
    r, big_r = np.sqrt(t), np.sqrt(1.0 - t)
    alpha, beta = 2 * np.pi * s / _PHI, 2 * np.pi * s / _PSI
    return np.stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], axis=1)


def uniform_rotations(step_deg: float, seed: int | None = None) -> np.ndarray:
    """A uniform grid of rotation matrices (n, 3, 3) at about ``step_deg`` (see :func:`grid_size`).

    ``seed`` (optional) turns the whole grid by one random rotation, keeping its uniformity; the
    grid without it is fixed. The identity need not be in the grid.
    """
    mats = quaternion_to_matrix(super_fibonacci(grid_size(step_deg)))
    if seed is not None:
        rng = np.random.default_rng(seed)
        mats = quaternion_to_matrix(rng.normal(size=4)) @ mats
    return mats


def local_rotations(radius_deg: float, step_deg: float) -> np.ndarray:
    """Small rotations (L, 3, 3) within ``radius_deg`` of the identity at ``step_deg``; identity first.

    A cubic grid of rotation vectors (axis × angle) inside the ball of that radius: for the
    radii used in refinement (≤ 20°) the exponential map is near-isometric, so it is as uniform
    as a local grid needs to be.
    """
    k = int(np.floor(radius_deg / step_deg + 1e-9))
    ticks = np.arange(-k, k + 1, dtype=np.float64) * step_deg
    v = np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 3)
    v = v[np.linalg.norm(v, axis=1) <= radius_deg + 1e-9]
    v = v[np.argsort(np.linalg.norm(v, axis=1), kind="stable")]
    return axis_angle_to_matrix(np.deg2rad(v))


def rotation_angle(a, b=None) -> np.ndarray:
    """Geodesic angle in degrees between rotation matrices ``a`` and ``b`` (or of ``a`` alone)."""
    a = np.asarray(a, dtype=np.float64)
    rel = a if b is None else np.swapaxes(a, -1, -2) @ np.asarray(b, dtype=np.float64)
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0)))


def project_to_so3(m) -> np.ndarray:
    """The rotation nearest (Frobenius) to a 3 × 3 matrix (the chordal L2 mean of a sum of rotations)."""
    u, _, vt = np.linalg.svd(np.asarray(m, dtype=np.float64))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def cyclic_group(n: int) -> np.ndarray:
    """The ``n`` rotations (n, 3, 3) of Cn about z (acting on (x, y, z)); C1 is the identity."""
    ang = 2 * np.pi * np.arange(n) / n
    c, s = np.cos(ang), np.sin(ang)
    m = np.zeros((n, 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = c, -s, s, c, 1.0
    return m


def orientation_errors(estimated, truth, common_frame: bool = True, symmetry: int = 1) -> np.ndarray:
    """Per-particle angular error (degrees) of estimated vs true particle matrices (N, 3, 3).

    A reference-free average has an arbitrary frame ``H`` (``estimated_i ≈ truth_i · H``):
    with ``common_frame`` it is estimated as the chordal L2 mean of ``truthᵢᵀ · estimatedᵢ`` and
    removed first. ``symmetry`` = n of Cn: the smallest error over the group's copies.
    """
    est = np.asarray(estimated, dtype=np.float64)
    tru = np.asarray(truth, dtype=np.float64)
    group = cyclic_group(symmetry)
    if common_frame:
        rel = np.swapaxes(tru, -1, -2) @ est  # ≈ H (up to symmetry)
        best, best_err = None, np.inf
        for g in group:  # a frame per symmetry copy of the first guess
            h = project_to_so3((rel @ g).sum(axis=0))
            err = np.median(_sym_errors(tru @ h, est, group))
            if err < best_err:
                best, best_err = h, err
        tru = tru @ best
    return _sym_errors(tru, est, group)


def _sym_errors(tru, est, group) -> np.ndarray:
    return np.min(np.stack([rotation_angle(tru @ g, est) for g in group]), axis=0)


__all__ = [
    "axis_angle_to_matrix", "cyclic_group", "euler_to_matrix", "grid_size", "local_rotations", "matrix_to_euler",
    "orientation_errors", "project_to_so3", "quaternion_to_matrix", "rotation_angle", "super_fibonacci",
    "uniform_rotations", "xyz_to_zyx", "zyx_to_xyz",
]
