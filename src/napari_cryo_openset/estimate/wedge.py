"""The missing wedge: the tilt range from the angular profile of the 3-D power spectrum; the polarity
guess on the same blocks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..errors import ParameterError
from ..picking.dog import dog_filter
from ..picking.polarity import guess_polarity
from ._volume import _read
from .slab import _split_levels

#: Wedge depth ``1 − floor/plateau`` below which no wedge is reported (white noise: ~0.1).
MIN_WEDGE_DEPTH = 0.5
#: Rings of |(k_z, k_x)| (cycles/voxel) read for the wedge.
WEDGE_RINGS = ((0.10, 0.20), (0.20, 0.30), (0.30, 0.42))


def _block_starts(n: int, b: int, parts: int) -> list[int]:
    """Starts of one centred length-``b`` window, or of two side by side at the centre."""
    return [n // 2 - b, n // 2] if parts > 1 and n >= 2 * b else [(n - b) // 2]


def _read_blocks(volume, block: int, max_blocks: int, slab) -> tuple[list[np.ndarray], int]:
    """Up to ``max_blocks`` float32 blocks (≤ ``block`` per axis) centred on the slab in Z, and
    the Z of their first slice."""
    nz, ny, nx = volume.shape
    bz, by, bx = min(nz, block), min(ny, block), min(nx, block)
    centre = nz / 2 if slab is None else 0.5 * (slab[0] + slab[1])
    z0 = int(np.clip(round(centre - bz / 2), 0, nz - bz))
    per_axis = 2 if max_blocks >= 4 else 1
    starts = [(y, x) for y in _block_starts(ny, by, per_axis) for x in _block_starts(nx, bx, per_axis)]
    return [_read(volume, slice(z0, z0 + bz), slice(y, y + by), slice(x, x + bx))
            for y, x in starts[: max(1, max_blocks)]], z0


def _find_wedge(blocks: list[np.ndarray], workers: int) -> dict[str, Any]:
    """Tilt range from the averaged power spectrum of ``blocks`` (module docstring)."""
    shape = blocks[0].shape
    window = 1.0
    for a, n in enumerate(shape):
        w = np.hanning(n + 2)[1:-1].astype(np.float32)
        window = window * w.reshape([-1 if b == a else 1 for b in range(3)])
    p_zx = np.zeros((shape[0], shape[2] // 2 + 1))
    p_zy = np.zeros((shape[0], shape[1]))
    kx_weight = np.full(shape[2] // 2 + 1, 2.0)
    kx_weight[0] = 1.0
    if shape[2] % 2 == 0:
        kx_weight[-1] = 1.0
    for b in blocks:
        f = sfft.rfftn((b - b.mean()) * window, workers=workers)
        p = f.real**2 + f.imag**2
        p_zx += p.sum(axis=1)
        p_zy += (p * kx_weight).sum(axis=2)
    y = _wedge_of_plane(p_zx, shape[0], shape[2], rfft=True)
    x = _wedge_of_plane(p_zy, shape[0], shape[1], rfft=False)
    details = {"Y": y["details"], "X": x["details"], "block_shape": list(shape), "n_blocks": len(blocks)}
    best, axis = (x, "X") if x["depth"] > y["depth"] and x["tilt_range"] is not None else (y, "Y")
    if best["tilt_range"] is None:
        return {"tilt_range": None, "axis": None, "depth": max(y["depth"], 0.0), "uncertainty": None,
                "reason": y["reason"], "details": details}
    return {"tilt_range": best["tilt_range"], "axis": axis, "depth": best["depth"],
            "uncertainty": best["uncertainty"], "reason": None, "details": details}


def _wedge_of_plane(p2: np.ndarray, nz: int, nb: int, rfft: bool, step_deg: float = 1.0) -> dict[str, Any]:
    """Measured angular interval of a (k_z, k_b) power plane: per ring, then combined."""
    shifted = np.fft.fftshift(p2, axes=0 if rfft else (0, 1))
    phi = np.arange(-90.0, 90.0, step_deg)  # one direction per line through the origin
    rad = np.deg2rad(phi)
    rings = []
    for lo, hi in WEDGE_RINGS:
        radii = np.arange(lo, hi, 0.5 / max(nz, nb))
        kz = np.sin(rad)[:, None] * radii[None]
        kb = np.cos(rad)[:, None] * radii[None]
        iz = kz * nz + nz // 2
        ib = kb * nb if rfft else kb * nb + nb // 2
        samples = ndimage.map_coordinates(shifted, [iz.ravel(), ib.ravel()], order=1, mode="nearest")
        prof = samples.reshape(len(phi), len(radii)).mean(axis=1)
        prof = prof / max(float(np.percentile(prof, 90)), 1e-30)
        prof = ndimage.uniform_filter1d(prof, 3, mode="wrap")
        rings.append(_measured_interval(prof, phi, step_deg))
    depths = [r["depth"] for r in rings]
    details = {"rings": [list(r) for r in WEDGE_RINGS], "depth": [round(d, 3) for d in depths],
               "edges": [None if r["edges"] is None else [round(e, 2) for e in r["edges"]] for r in rings]}
    good = [r for r in rings if r["edges"] is not None and r["depth"] >= MIN_WEDGE_DEPTH]
    depth = float(max(depths))
    if not good:
        if depth < MIN_WEDGE_DEPTH:
            reason = (f"no missing wedge in the power spectrum (its angular profile is flat: depth {depth:.2f} "
                      f"< {MIN_WEDGE_DEPTH}); white noise, a full ±90° tilt range, or a filtered volume")
        else:
            reason = "the angular power profile has no single measured interval"
        return {"tilt_range": None, "depth": depth, "uncertainty": None, "reason": reason, "details": details}
    lo_e = np.array([r["edges"][0] for r in good])
    hi_e = np.array([r["edges"][1] for r in good])
    lo, hi = float(np.median(lo_e)), float(np.median(hi_e))
    if not (-90.5 <= lo < 0.0 < hi <= 90.5):
        return {"tilt_range": None, "depth": depth, "uncertainty": None, "details": details,
                "reason": f"the measured directions ({lo:+.0f}…{hi:+.0f}° from k_x) do not hold the 0° tilt; "
                          "not a single-axis tilt series about this axis"}
    lo, hi = max(lo, -90.0), min(hi, 90.0)
    spread = float(max(np.abs(lo_e - lo).max(), np.abs(hi_e - hi).max()))
    return {"tilt_range": (round(lo, 1), round(hi, 1)), "depth": float(np.median([r["depth"] for r in good])),
            "uncertainty": round(max(spread, step_deg), 1), "reason": None, "details": details}


def _measured_interval(prof: np.ndarray, phi: np.ndarray, step_deg: float) -> dict[str, Any]:
    """The one circular run of ``prof`` above the iterated half level, as (lo, hi) degrees."""
    n = prof.size

    def run_with_peak(above: np.ndarray) -> np.ndarray:
        if above.all() or not above.any():
            return above
        start = int(np.flatnonzero(~above)[0])  # rotate so the run does not wrap
        rolled = np.roll(above, -start)
        runs, i = [], 0
        while i < n:
            if rolled[i]:
                j = i
                while j < n and rolled[j]:
                    j += 1
                runs.append((prof[(np.arange(i, j) + start) % n].sum(), i, j))
                i = j
            else:
                i += 1
        _, i, j = max(runs)
        out = np.zeros(n, bool)
        out[(np.arange(i, j) + start) % n] = True
        return out

    high, plateau, floor, level = _split_levels(prof, run_with_peak)
    depth = 1.0 - floor / plateau if plateau > 0 else 0.0
    if high.all() or not high.any() or (~high).sum() * step_deg < 3:
        return {"edges": None, "depth": float(max(depth, 0.0)) if not high.all() else 0.0}
    first = int(np.flatnonzero(high & ~np.roll(high, 1))[0])   # run start (previous is below)
    last = int(np.flatnonzero(high & ~np.roll(high, -1))[0])   # run end (next is below)
    lo = _edge(prof, first, -1, level, phi, step_deg)
    hi = _edge(prof, last, +1, level, phi, step_deg)
    if hi < lo:
        hi += 180.0
    return {"edges": (float(lo), float(hi)), "depth": float(depth)}


def _edge(prof: np.ndarray, i_in: int, direction: int, level: float, phi: np.ndarray, step: float) -> float:
    """Angle (degrees) where ``prof`` crosses ``level`` between ``i_in`` and its outer neighbour."""
    n = prof.size
    i_out = (i_in + direction) % n
    a, b = prof[i_out], prof[i_in]
    f = 0.5 if a == b else float(np.clip((level - a) / (b - a), 0.0, 1.0))  # 1 at i_in, 0 at i_out
    return float(phi[i_in] + direction * step * (1.0 - f))


# --------------------------------------------------------------------------------------------
# polarity
# --------------------------------------------------------------------------------------------


def _slab_rows(slab, z0: int, bz: int) -> slice:
    """The block's Z rows inside the slab (all rows without a slab or when it is thin)."""
    if slab is None:
        return slice(0, bz)
    lo, hi = int(math.ceil(slab[0])) - z0, int(math.floor(slab[1])) - z0 + 1
    lo, hi = max(0, lo), min(bz, hi)
    return slice(lo, hi) if hi - lo >= 4 else slice(0, bz)


def _polarity(blocks: list[np.ndarray], vs, diameter, rows: slice) -> dict[str, Any]:
    """:func:`guess_polarity` on the DoG response (σ1 = radius, σ2 = 1.1 σ1) of the blocks.

    Only the ``rows`` (Z) inside the slab are sampled: the noise outside is symmetric and
    would only dilute the particles' skewness.
    """
    d_vox = (150.0 / vs[1] if vs is not None else 12.0) if diameter is None else (
        float(diameter) / vs[1] if vs is not None else float(diameter))
    if not (math.isfinite(d_vox) and d_vox > 0):
        raise ParameterError(f"diameter must be a positive length, got {diameter!r}")
    s1 = float(np.clip(d_vox / 2.0, 1.0, min(blocks[0].shape) / 8.0))
    samples = []
    for b in blocks:
        r = dog_filter(b, s1, 1.1 * s1, workers=1)
        stride = max(1, int(s1 // 2))
        samples.append(r[rows][::stride, ::stride, ::stride].ravel())
    polarity, evidence = guess_polarity(np.concatenate(samples))
    return {"polarity": polarity, "skewness": float(evidence["skewness"]),
            "confident": bool(evidence["confident"]), "blocks": len(blocks), "diameter_voxels": round(d_vox, 2)}
