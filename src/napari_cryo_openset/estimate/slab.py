"""The slab: per-Z power profiles, the slab edges and the noise outside it (Z, Y, X)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..errors import ParameterError
from ._volume import _READ_CHUNK_BYTES, _read

#: Plateau/baseline ratio of a slab profile below which no slab edge is reported.
MIN_SLAB_CONTRAST = 1.3
#: A slab step must exceed this many standard deviations of the (smoothed) profile's scatter...
MIN_SLAB_STEP_SIGMA = 8.0
#: ... and this fraction of the slices between the edges must lie above the level (white
#: noise splits into two halves that interleave: about 0.5).
MIN_SLAB_FILL = 0.85
#: Slab edges: where the log power crosses this fraction of the way from baseline to plateau.
#: Not ½: particles sit away from the faces (each must fit inside), so the power inside a slab
#: peaks in its middle and the half level lies inside the faces; a quarter of the way up (in
#: log power) finds where material starts (chosen on the slab scenes of benchmarks/bench_estimate.py,
#: where the half level made every thin slab too thin).
SLAB_EDGE_LEVEL = 0.25
#: Plateau/baseline ratio above which a ring counts as a clear step (highest such ring wins).
CLEAR_SLAB_CONTRAST = 2.0
#: Rings of in-plane frequency (cycles/voxel) for the slab profile (factor √2 apart).
SLAB_RINGS = tuple((0.025 * 2 ** (i / 2), 0.025 * 2 ** ((i + 1) / 2)) for i in range(8))


def _slab_profiles(volume, crop: int, workers: int, chunk_bytes: int = _READ_CHUNK_BYTES) -> dict[str, np.ndarray]:
    """Per-Z-slice power in each of :data:`SLAB_RINGS` and the per-slice variance (central crop)."""
    nz, ny, nx = volume.shape
    cy, cx = min(ny, crop), min(nx, crop)
    ys = slice((ny - cy) // 2, (ny - cy) // 2 + cy)
    xs = slice((nx - cx) // 2, (nx - cx) // 2 + cx)
    window = np.outer(np.hanning(cy + 2)[1:-1], np.hanning(cx + 2)[1:-1]).astype(np.float32)
    ky = np.fft.fftfreq(cy)[:, None]
    kx = np.fft.rfftfreq(cx)[None, :]
    q = np.hypot(ky, kx)
    along_x = kx >= 0.8 * q  # the missing wedge smears frequencies with small k_x along Z
    rings = [(lo, hi) for lo, hi in SLAB_RINGS if ((q >= lo) & (q < hi) & along_x).sum() >= 8]
    masks = [(q >= lo) & (q < hi) & along_x for lo, hi in rings]  # rings too small for the crop are left out
    power = np.zeros((len(masks), nz))
    variance = np.zeros(nz)
    step = max(1, int(chunk_bytes // (cy * nx * np.dtype(volume.dtype).itemsize)))  # see _read
    for z in range(0, nz, step):
        s = _read(volume, slice(z, min(nz, z + step)), ys, xs)
        s -= s.mean(axis=(1, 2), keepdims=True)
        variance[z : z + len(s)] = (s.astype(np.float64) ** 2).mean(axis=(1, 2))
        p = np.abs(sfft.rfft2(s * window, workers=workers)) ** 2
        for i, m in enumerate(masks):
            power[i, z : z + len(s)] = p[:, m].mean(axis=1)
    if not variance.max() > 0:
        raise ParameterError("the volume is constant; there is nothing to estimate the imaging condition from")
    return {"power": power, "variance": variance, "rings": rings}


def _split_levels(values: np.ndarray, select, iterations: int = 8):
    """Iterated half level (ISODATA) between a high and a low group of ``values``.

    ``select(above)`` maps the boolean "above the level" array to the final high group (e.g. a
    contiguous run); returns (high mask, plateau, floor, level).
    """
    hi, lo = np.percentile(values, 90), np.percentile(values, 5)
    level = 0.5 * (hi + lo)
    high = select(values > level)
    for _ in range(iterations):
        if high.all() or not high.any():
            break
        plateau, floor = float(np.median(values[high])), float(np.median(values[~high]))
        new = 0.5 * (plateau + floor)
        new_high = select(values > new)
        if np.array_equal(new_high, high):
            level = new
            break
        high, level = new_high, new
    if high.all() or not high.any():
        return high, float(hi), float(lo), float(level)
    return high, float(np.median(values[high])), float(np.median(values[~high])), float(level)


def _outer_run(above: np.ndarray) -> np.ndarray:
    """From the first to the last True (the slab is one piece; dips inside do not split it)."""
    out = np.zeros_like(above)
    idx = np.flatnonzero(above)
    if idx.size:
        out[idx[0] : idx[-1] + 1] = True
    return out


def _crossing(values: np.ndarray, i_out: int, i_in: int, level: float) -> float:
    """Sub-sample position between neighbours ``i_out`` (below level) and ``i_in`` (above)."""
    a, b = values[i_out], values[i_in]
    f = 0.5 if b == a else float(np.clip((level - a) / (b - a), 0.0, 1.0))
    return i_out + f * (i_in - i_out)


def _find_slab(profile: dict[str, np.ndarray]) -> dict[str, Any]:
    """Slab edges from the per-slice ring powers (module docstring)."""
    power, rings = profile["power"], profile["rings"]
    nz = power.shape[1]
    width = max(3, int(round(nz / 48)) | 1)
    per_ring = []
    for i, p in enumerate(power):
        logp = np.log(np.maximum(p, 1e-30))
        smooth = ndimage.uniform_filter1d(logp, width, mode="nearest")
        high, plateau, floor, level = _split_levels(smooth, _outer_run)
        # Scatter of the smoothed log profile from slice-to-slice differences (robust to the step).
        scatter = 1.4826 * float(np.median(np.abs(np.diff(logp) - np.median(np.diff(logp))))) / math.sqrt(2 * width)
        fill = float(np.mean(smooth[high] > level)) if high.any() else 0.0
        significant = (plateau - floor) >= MIN_SLAB_STEP_SIGMA * max(scatter, 1e-12) and fill >= MIN_SLAB_FILL
        contrast = math.exp(plateau - floor) if significant else 1.0
        level = floor + SLAB_EDGE_LEVEL * (plateau - floor)
        per_ring.append(dict(ring=i, high=high, contrast=float(contrast), edges=_edges_of_run(smooth, high, level),
                             step_sigma=(plateau - floor) / max(scatter, 1e-12), fill=fill))
    details = {"rings": [list(rings[r["ring"]]) for r in per_ring],
               "contrast": [round(r["contrast"], 3) for r in per_ring],
               "step_sigma": [round(r["step_sigma"], 1) for r in per_ring],
               "fill": [round(r["fill"], 2) for r in per_ring],
               "edges": [None if r["edges"] is None else [round(e, 2) for e in r["edges"]] for r in per_ring]}
    clear = [r for r in per_ring if r["contrast"] >= CLEAR_SLAB_CONTRAST and not r["high"].all()]
    usable = [r for r in per_ring if r["contrast"] >= MIN_SLAB_CONTRAST and not r["high"].all()]
    if not usable:
        return {"contrast": max((r["contrast"] for r in per_ring), default=1.0), "details": details,
                "reason": "the power per Z slice shows no step (no band has a significant plateau above a "
                          "baseline): the sample fills the Z range, or there is no signal above the noise"}
    r = clear[-1] if clear else max(usable, key=lambda r: r["contrast"])
    z_lo, z_hi = r["edges"]
    reason = None
    if z_lo <= -0.5 or z_hi >= nz - 0.5:
        reason = "the slab reaches a Z face of the volume: its thickness is a lower bound"
    if not clear:
        reason = ((reason + "; ") if reason else "") + f"weak step (contrast {r['contrast']:.2f})"
    details["ring_used"] = list(rings[r["ring"]])
    return {"slab": (round(float(z_lo), 2), round(float(z_hi), 2)), "contrast": r["contrast"],
            "band": tuple(rings[r["ring"]]), "reason": reason, "details": details}


def _edges_of_run(s: np.ndarray, high: np.ndarray, level: float) -> tuple[float, float] | None:
    """Z edges (voxels) where the slice profile ``s`` falls below ``level`` outside the run ``high``.

    From each end of the run (found at the half level) the edge moves outward while ``s`` stays
    above ``level`` (which may be lower), then interpolates linearly. Voxel centres are at
    integers (slice i spans i − ½ … i + ½), so a crossing a fraction f of the way from slice i
    to i + 1 is at z = i + f; a profile that stays above the level ends at the face (−½, n − ½).
    """
    idx = np.flatnonzero(high)
    if idx.size == 0:
        return None
    n = s.size
    lo, hi = int(idx[0]), int(idx[-1])
    while lo > 0 and s[lo - 1] > level:
        lo -= 1
    while hi < n - 1 and s[hi + 1] > level:
        hi += 1
    z_lo = _crossing(s, lo - 1, lo, level) if lo > 0 else -0.5
    z_hi = _crossing(s, hi + 1, hi, level) if hi < n - 1 else n - 0.5
    return float(z_lo), float(z_hi)


def _noise(profile: dict[str, np.ndarray], slab: dict[str, Any]) -> dict[str, Any]:
    """Per-voxel noise outside the slab and the 3-D SNR inside it (module docstring)."""
    var = profile["variance"]
    nz = var.size
    if slab.get("slab") is None:
        return {"sigma": None, "snr": None, "reason": "no slab edge was found, so there is no noise-only region"}
    z_lo, z_hi = slab["slab"]
    margin = 2.0 + 0.1 * (z_hi - z_lo)
    z = np.arange(nz)
    outside = (z < z_lo - margin) | (z > z_hi + margin)
    inside = (z > z_lo + margin) & (z < z_hi - margin)
    if outside.sum() < 3 or inside.sum() < 3:
        return {"sigma": None, "snr": None,
                "reason": "fewer than 3 slices lie clearly outside (or inside) the slab"}
    v_out, v_in = float(np.median(var[outside])), float(np.median(var[inside]))
    return {"sigma": math.sqrt(v_out), "snr": max(0.0, v_in / v_out - 1.0), "reason": None}




#: Rings (cycles/voxel) at or below this frequency form the low-frequency band of :func:`snr_in_slab`.
SNR_BAND_MAX = 0.1


def snr_in_slab(volume, slab: tuple[float, float], crop: int = 256, workers: int = 1, band: bool = False) -> float | None:
    """The estimator's 3-D SNR of a (Z, Y, X) ``volume`` whose slab (Z edges, voxels) is known.

    The same per-slice statistics (central ``crop``² voxels) and inside/outside margins as
    :func:`napari_cryo_openset.estimate.estimate_volume`, without detecting the slab: a scene
    simulated to calibrate the SNR knows where its slab is, and at a low SNR the detection can
    fail where the ratio is still measurable. ``band`` False: the per-voxel variance ratio − 1
    (``estimate_volume``'s ``snr``); True: the same ratio of the power in the slab-profile rings
    up to :data:`SNR_BAND_MAX` cycles/voxel — the particles' band, where a very noisy slab still
    stands out (at a per-projection SNR of 0.03 in a 960 Å slab the variance ratio is 0.003–0.008,
    within its own scatter; the band ratio is ≈ 1.1–1.3). None when fewer than 3 slices lie
    clearly outside or inside.
    """
    profile = _slab_profiles(volume, crop, workers)
    if band:
        rows = [i for i, (_, hi) in enumerate(profile["rings"]) if hi <= SNR_BAND_MAX + 1e-9]
        if not rows:
            return None
        profile = {**profile, "variance": profile["power"][rows].sum(axis=0)}
    return _noise(profile, {"slab": (float(slab[0]), float(slab[1]))})["snr"]
