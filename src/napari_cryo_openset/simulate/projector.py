"""Single-axis tilt-series projection and weighted back-projection as sparse matrices.

Geometry (all volumes (Z, Y, X), the beam along Z at 0°, the tilt axis = Y):
a voxel at offsets (z, x) from the rotation centre lands, at tilt θ, on detector column

    u = x·cos θ + z·sin θ      (+ detector centre)

so the projection at θ samples the volume's Fourier transform on the plane through the k_y axis
and the direction (k_x, k_z) = (cos θ, sin θ) (projection-slice theorem). Directions with
``atan2(k_z, k_x)`` outside the tilt range are never measured: the **missing wedge** lies
around k_z.

Tilt about Y leaves every Y row independent, so the projector of one (Z, X) plane is a fixed
sparse matrix ``P`` (``T·U × Z·X``) applied to all rows of all volumes in one sparse × dense
product: exact real-space projection with linear interpolation on the detector, every voxel
split into ``supersample²`` sub-voxels. Weighted back-projection (WBP) is the Ram-Lak ramp
filter along the detector (spatial-domain kernel, zero-padded, no wrap-around), a per-tilt
angular weight Δθ (radians), and ``Pᵀ`` of a (possibly smaller) centred reconstruction plane.
With full angular coverage and no CTF, WBP returns the volume (band-limited); with a limited
tilt range it returns the volume without its missing wedge.

Matrices are built once per geometry and cached.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch


def shadow_width(plane_shape: Sequence[int], angles_deg: Sequence[float]) -> int:
    """Detector columns covering the projection of a (Z, X) plane at every tilt."""
    z, x = plane_shape
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    w = np.abs(np.cos(a)) * x + np.abs(np.sin(a)) * z
    return int(math.ceil(w.max())) + 2


def _projection_coo(plane_shape, angles, u_size, supersample):
    """COO triplets (row = t·U + u, col = z·X + x, value) of the projection matrix."""
    nz, nx = plane_shape
    zz, xx = np.meshgrid(np.arange(nz, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
    col = (zz * nx + xx).astype(np.int64).ravel()
    cz, cx, cu = (nz - 1) / 2.0, (nx - 1) / 2.0, (u_size - 1) / 2.0
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    weight = 1.0 / supersample**2
    rows, cols, vals = [], [], []
    for t, a in enumerate(np.deg2rad(np.asarray(angles, dtype=np.float64))):
        ca, sa = math.cos(a), math.sin(a)
        for oz in offs:
            for ox in offs:
                u = ((xx + ox - cx) * ca + (zz + oz - cz) * sa + cu).ravel()
                f = np.floor(u)
                frac = u - f
                f = f.astype(np.int64)
                for b, w in ((f, 1.0 - frac), (f + 1, frac)):
                    ok = (b >= 0) & (b < u_size) & (w > 0)
                    rows.append(t * u_size + b[ok])
                    cols.append(col[ok])
                    vals.append(w[ok] * weight)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _csr(rows, cols, vals, shape, device) -> torch.Tensor:
    import scipy.sparse as sp

    m = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.sort_indices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data),
            size=shape,
            device=device,
            check_invariants=False,
        )


def ramp_kernel_rfft(u_size: int, cutoff: float | None = None, falloff: float = 0.035) -> tuple[np.ndarray, int]:
    """Ram-Lak filter (spatial-domain definition, Kak & Slaney eq. 61) as an rfft of length L.

    With ``cutoff`` (cycles/pixel) the ramp is multiplied by IMOD's radial fall-off:
    1 up to ``cutoff``, then a Gaussian of σ = ``falloff`` cycles/pixel.
    """
    length = 1 << int(math.ceil(math.log2(2 * u_size)))
    n = np.arange(length)
    n = np.where(n > length // 2, n - length, n)
    h = np.zeros(length)
    h[0] = 0.25
    odd = (n % 2) == 1
    odd |= (n % 2) == -1
    h[odd] = -1.0 / (math.pi * n[odd]) ** 2
    ramp = np.fft.rfft(h).real
    if cutoff is not None:
        f = np.fft.rfftfreq(length)
        ramp = ramp * np.where(f <= cutoff, 1.0, np.exp(-((f - cutoff) ** 2) / (2 * falloff**2)))
    return ramp, length


class TiltProjector:
    """Projector (volume → tilt series) and WBP (tilt series → volume) for one geometry.

    Parameters
    ----------
    plane_shape
        (Z, X) of the volumes to project.
    angles
        Tilt angles, degrees.
    recon_plane_shape
        (Z, X) of the reconstruction, centred in the projected plane (default: the same). Both
        differences to ``plane_shape`` must be even.
    detector_width
        Detector columns ``U`` (default: the projection's shadow at the widest tilt + 2).
    supersample
        Sub-voxels per axis (in z and x) for the projection weights (default 2).
    cutoff, falloff
        Optional radial fall-off of the WBP ramp (cycles/pixel; IMOD's default is 0.35, 0.035).
    """

    def __init__(
        self,
        plane_shape: Sequence[int],
        angles: Sequence[float],
        recon_plane_shape: Sequence[int] | None = None,
        detector_width: int | None = None,
        supersample: int = 2,
        device: str | torch.device = "cpu",
        cutoff: float | None = None,
        falloff: float = 0.035,
    ) -> None:
        self.plane_shape = (int(plane_shape[0]), int(plane_shape[1]))
        self.recon_plane_shape = tuple(int(s) for s in (recon_plane_shape or self.plane_shape))
        for a, b in zip(self.plane_shape, self.recon_plane_shape):
            if b > a or (a - b) % 2:
                raise ValueError(f"reconstruction plane {self.recon_plane_shape} must fit centred in {self.plane_shape}")
        self.angles = np.asarray(angles, dtype=np.float64)
        self.n_tilts = len(self.angles)
        self.u_size = int(detector_width or shadow_width(self.plane_shape, self.angles))
        self.device = torch.device(device)
        shape_p = (self.n_tilts * self.u_size, self.plane_shape[0] * self.plane_shape[1])
        self.forward_matrix = _csr(*_projection_coo(self.plane_shape, self.angles, self.u_size, supersample), shape_p, self.device)
        r, c, v = _projection_coo(self.recon_plane_shape, self.angles, self.u_size, supersample)
        shape_b = (self.recon_plane_shape[0] * self.recon_plane_shape[1], self.n_tilts * self.u_size)
        self.back_matrix = _csr(c, r, v, shape_b, self.device)  # transpose of the recon plane's projector
        h, self._ramp_length = ramp_kernel_rfft(self.u_size, cutoff, falloff)
        self._ramp = torch.as_tensor(h, dtype=torch.float32, device=self.device)
        self.angle_weights = torch.as_tensor(_angle_weights(self.angles), dtype=torch.float32, device=self.device)

    # -------------------------------------------------------------------------------------

    def project(self, volumes: torch.Tensor) -> torch.Tensor:
        """(N, Z, Y, X) → (N, T, Y, U) line integrals (sum of voxel values along the beam)."""
        n, nz, ny, nx = volumes.shape
        if (nz, nx) != self.plane_shape:
            raise ValueError(f"volumes have (Z, X) = {(nz, nx)}, projector expects {self.plane_shape}")
        rhs = volumes.permute(1, 3, 0, 2).reshape(nz * nx, n * ny)
        out = torch.sparse.mm(self.forward_matrix, rhs.contiguous())  # (T·U, N·Y)
        return out.reshape(self.n_tilts, self.u_size, n, ny).permute(2, 0, 3, 1).contiguous()

    def ramp_filter(self, projections: torch.Tensor) -> torch.Tensor:
        """Ram-Lak filter along the detector (last axis) times the per-tilt Δθ weight."""
        f = torch.fft.rfft(projections, n=self._ramp_length, dim=-1)
        out = torch.fft.irfft(f * self._ramp, n=self._ramp_length, dim=-1)[..., : self.u_size]
        return out * self.angle_weights.view(1, -1, 1, 1)

    def backproject(self, projections: torch.Tensor) -> torch.Tensor:
        """Unfiltered back-projection, (N, T, Y, U) → (N, Zr, Y, Xr)."""
        n, t, ny, u = projections.shape
        if (t, u) != (self.n_tilts, self.u_size):
            raise ValueError(f"projections have (T, U) = {(t, u)}, projector expects {(self.n_tilts, self.u_size)}")
        rhs = projections.permute(1, 3, 0, 2).reshape(t * u, n * ny).contiguous()
        out = torch.sparse.mm(self.back_matrix, rhs)  # (Zr·Xr, N·Y)
        zr, xr = self.recon_plane_shape
        return out.reshape(zr, xr, n, ny).permute(2, 0, 3, 1).contiguous()

    def reconstruct(self, projections: torch.Tensor) -> torch.Tensor:
        """Weighted back-projection: ramp filter, Δθ weights, back-projection."""
        return self.backproject(self.ramp_filter(projections))


def _angle_weights(angles: np.ndarray) -> np.ndarray:
    """Δθ (radians) per tilt: half the distance to each neighbour (trapezoid rule)."""
    a = np.deg2rad(np.asarray(angles, dtype=np.float64))
    if len(a) == 1:
        return np.array([math.pi])
    order = np.argsort(a)
    s = a[order]
    gaps = np.diff(s)
    w = np.empty_like(s)
    w[1:-1] = (gaps[:-1] + gaps[1:]) / 2
    w[0], w[-1] = gaps[0] / 2, gaps[-1] / 2  # trapezoid rule over the tilt range
    out = np.empty_like(w)
    out[order] = w
    return out


@functools.lru_cache(maxsize=16)
def _cached(plane_shape, angles, recon_plane_shape, detector_width, supersample, device, cutoff, falloff) -> TiltProjector:
    return TiltProjector(plane_shape, angles, recon_plane_shape, detector_width, supersample, device, cutoff, falloff)


def get_projector(
    plane_shape: Sequence[int],
    angles: Sequence[float],
    recon_plane_shape: Sequence[int] | None = None,
    detector_width: int | None = None,
    supersample: int = 2,
    device: str | torch.device = "cpu",
    cutoff: float | None = None,
    falloff: float = 0.035,
) -> TiltProjector:
    """A cached :class:`TiltProjector`: building the sparse matrices costs more than using them."""
    return _cached(
        tuple(int(s) for s in plane_shape),
        tuple(round(float(a), 6) for a in angles),
        None if recon_plane_shape is None else tuple(int(s) for s in recon_plane_shape),
        None if detector_width is None else int(detector_width),
        int(supersample),
        str(torch.device(device)),
        None if cutoff is None else float(cutoff),
        float(falloff),
    )
