"""Fourier helpers of the aligner: frequency grids, wedge masks at any rotation, filters, FSC.

All volumes are (…, Z, Y, X) cubes; half spectra are ``torch.fft.rfftn`` layouts
(…, D, D, D // 2 + 1). Frequencies are in cycles per voxel unless named ``_angst``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: FSC threshold of the gold-standard resolution (half-maps, Rosenthal & Henderson 2003).
FSC_THRESHOLD = 0.143


def freq_grid(d: int, device="cpu", rfft: bool = True) -> torch.Tensor:
    """(D, D, D//2+1, 3) frequency vectors (k_z, k_y, k_x) in cycles/voxel of a D³ box."""
    kz = torch.fft.fftfreq(d, device=device, dtype=torch.float32)
    kx = torch.fft.rfftfreq(d, device=device, dtype=torch.float32) if rfft else kz
    return torch.stack(torch.meshgrid(kz, kz, kx, indexing="ij"), dim=-1)


def hermitian_weights(d: int, device="cpu") -> torch.Tensor:
    """Weights (D//2+1,) along the last rfft axis so that Σ w·|F|² is the full-spectrum sum."""
    w = torch.full((d // 2 + 1,), 2.0, device=device)
    w[0] = 1.0
    if d % 2 == 0:
        w[-1] = 1.0
    return w


def wedge_of(k: torch.Tensor, tilt_range) -> torch.Tensor:
    """Binary measured-region mask of frequency vectors ``k`` (…, 3) (z, y, x) for a Y tilt axis.

    The convention of :func:`napari_cryo_openset.simulate.imaging.wedge_mask`: measured when
    ``atan2(k_z, k_x)`` folded to (−90°, 90°] lies in the tilt range, plus the k_y axis. ``k``
    may be rotated (the wedge of a box seen from the reference frame). ``None`` = all measured.
    """
    if tilt_range is None:
        return torch.ones(k.shape[:-1], dtype=torch.float32, device=k.device)
    kz, kx = k[..., 0], k[..., 2]
    phi = torch.rad2deg(torch.atan2(kz, kx))
    phi = torch.where(phi > 90, phi - 180, phi)
    phi = torch.where(phi <= -90, phi + 180, phi)
    lo, hi = float(tilt_range[0]), float(tilt_range[1])
    on_axis = (kz * kz + kx * kx) < 1e-8
    return (((phi >= lo - 1e-4) & (phi <= hi + 1e-4)) | on_axis).to(torch.float32)


def lowpass_filter(d: int, cutoff: float, device="cpu", width: float | None = None) -> torch.Tensor:
    """Raised-cosine low-pass (D, D, D//2+1): 1 below ``cutoff`` cycles/voxel, 0 above cutoff + width.

    The DC term is removed (zero-mean correlation). ``width`` defaults to two Fourier shells.
    """
    k = freq_grid(d, device).norm(dim=-1)
    width = 2.0 / d if width is None else width
    edge = torch.clamp((k - cutoff) / width, 0.0, 1.0)
    f = 0.5 * (1 + torch.cos(math.pi * edge))
    f[0, 0, 0] = 0.0
    return f


def soft_sphere(d: int, radius: float, device="cpu", edge: float = 2.0) -> torch.Tensor:
    """Soft spherical mask (D, D, D) centred on voxel D//2: 1 inside ``radius``, cosine edge."""
    c = d // 2
    ax = torch.arange(d, device=device, dtype=torch.float32) - c
    r = torch.sqrt(ax.view(-1, 1, 1) ** 2 + ax.view(1, -1, 1) ** 2 + ax.view(1, 1, -1) ** 2)
    t = torch.clamp((r - radius) / max(edge, 1e-6), 0.0, 1.0)
    return 0.5 * (1 + torch.cos(math.pi * t))


def fourier_crop(volumes: torch.Tensor, d: int) -> torch.Tensor:
    """Fourier-crop (…, D, D, D) real cubes to (…, d, d, d): the same field of view, d/D the sampling.

    Exact for content below the new Nyquist frequency; the values keep their scale (mean kept).
    """
    big = volumes.shape[-1]
    if d == big:
        return volumes
    f = torch.fft.fftshift(torch.fft.fftn(volumes, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    a = big // 2 - d // 2
    f = f[..., a : a + d, a : a + d, a : a + d]
    if d % 2 == 0:  # the new Nyquist planes have no Hermitian partner in the crop: drop them
        f = f.clone()
        f[..., 0, :, :] = 0
        f[..., :, 0, :] = 0
        f[..., :, :, 0] = 0
    out = torch.fft.ifftn(torch.fft.ifftshift(f, dim=(-3, -2, -1)), dim=(-3, -2, -1)).real
    return out * (d / big) ** 3


def shift_volumes(volumes: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate (N, D, D, D) cubes by ``shifts`` (N, 3) voxels (z, y, x), exactly (Fourier phase)."""
    d = volumes.shape[-1]
    k = freq_grid(d, volumes.device)
    phase = torch.exp(-2j * math.pi * (k @ shifts.to(torch.float32).T).permute(3, 0, 1, 2))
    f = torch.fft.rfftn(volumes, dim=(-3, -2, -1)) * phase
    return torch.fft.irfftn(f, s=(d, d, d), dim=(-3, -2, -1))


@dataclass
class FSC:
    """A Fourier shell correlation: one value per shell, the resolution where it crosses a threshold."""

    frequency: np.ndarray  #: shell frequencies, 1/Å (shell s at s / (D · voxel size))
    fsc: np.ndarray  #: correlation per shell (shell 0 = DC)
    resolution: float  #: Å at the first crossing below ``threshold`` (interpolated); Nyquist if none
    threshold: float = FSC_THRESHOLD
    at_nyquist: bool = False  #: never fell below the threshold: the resolution is bounded by Nyquist
    voxel_size: float = 1.0

    def to_dict(self) -> dict:
        return {"frequency": self.frequency.tolist(), "fsc": self.fsc.tolist(), "resolution": self.resolution,
                "threshold": self.threshold, "at_nyquist": self.at_nyquist, "voxel_size": self.voxel_size}


def fsc_curve(map1, map2) -> np.ndarray:
    """FSC per integer shell 0 … D//2 of two (D, D, D) maps (no mask: apply one before)."""
    a = torch.as_tensor(np.asarray(map1), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(map2), dtype=torch.float32)
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise ValueError(f"FSC needs two cubes of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    d = a.shape[-1]
    fa, fb = torch.fft.rfftn(a.double()), torch.fft.rfftn(b.double())
    w = hermitian_weights(d).double()
    shell = torch.round(freq_grid(d).norm(dim=-1) * d).long()
    n = d // 2 + 1
    keep = shell < n
    idx = shell[keep]
    num = torch.zeros(n, dtype=torch.float64).index_add_(0, idx, ((fa * fb.conj()).real * w)[keep])
    pa = torch.zeros(n, dtype=torch.float64).index_add_(0, idx, ((fa.abs() ** 2) * w)[keep])
    pb = torch.zeros(n, dtype=torch.float64).index_add_(0, idx, ((fb.abs() ** 2) * w)[keep])
    return (num / torch.sqrt(pa * pb).clamp_min(1e-30)).numpy()


def resolution_at(frequency: np.ndarray, fsc: np.ndarray, threshold: float = FSC_THRESHOLD) -> tuple[float, bool]:
    """Å where ``fsc`` first falls below ``threshold`` (linear interpolation; shell 0 ignored).

    Returns (resolution, at_nyquist); ``at_nyquist`` when it never falls below it (the resolution
    is then the Nyquist limit, a bound).
    """
    for s in range(1, len(fsc)):
        if fsc[s] < threshold:
            f0, f1, c0, c1 = frequency[s - 1], frequency[s], fsc[s - 1], fsc[s]
            f = f1 if c0 == c1 else f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0)
            return (float(1.0 / f) if f > 0 else float("inf")), False
    return float(1.0 / frequency[-1]), True


def fsc(map1, map2, voxel_size: float = 1.0, threshold: float = FSC_THRESHOLD, mask=None) -> FSC:
    """The FSC of two half-maps (optionally multiplied by ``mask``) and its resolution in Å."""
    a, b = np.asarray(map1, dtype=np.float32), np.asarray(map2, dtype=np.float32)
    if mask is not None:
        m = np.asarray(mask, dtype=np.float32)
        a, b = a * m, b * m
    curve = fsc_curve(a, b)
    d = a.shape[-1]
    freq = np.arange(len(curve)) / (d * float(voxel_size))
    res, nyq = resolution_at(freq, curve, threshold)
    return FSC(freq, curve, res, threshold, nyq, float(voxel_size))


__all__ = ["FSC", "FSC_THRESHOLD", "fourier_crop", "freq_grid", "fsc", "fsc_curve", "hermitian_weights",
           "lowpass_filter", "resolution_at", "shift_volumes", "soft_sphere", "wedge_of"]
