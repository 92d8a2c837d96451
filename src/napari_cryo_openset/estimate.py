"""The imaging condition read from the tomogram itself: tilt range, slab, polarity, noise.

:func:`estimate_volume` looks at a (Z, Y, X) tomogram (an array, a memory map or a
:class:`~napari_cryo_openset.io.tomogram.Tomogram`) and returns a frozen :class:`VolumeEstimate`.
Each estimate carries a quality figure, and where the volume does not tell, the estimate is
``None`` with a sentence saying why — never a made-up number — so the caller falls back to the
user's or the default value and reports it. Values the user or the header gives travel in
``given``; the result reports estimate and given side by side (:meth:`VolumeEstimate.resolved`
says which one to use: the given one).

**Tilt range** (degrees, tilt axis Y, beam along Z; the geometry of
:mod:`napari_cryo_openset.simulate.projector`): the projection at tilt θ measures the Fourier
plane through the k_y axis and the direction (k_x, k_z) = (cos θ, sin θ), so the measured
directions in the k_z–k_x plane are those with ``φ = atan2(k_z, k_x)`` inside the tilt range —
around the k_x axis — and the **missing wedge is around the k_z axis** (k_x = 0). The power
spectrum of a few windowed blocks is summed over k_y (the wedge does not depend on k_y), sampled
on polar rays in three rings of |(k_z, k_x)|, and the angular profile of each ring is split into
a plateau (measured) and a floor (wedge) by an iterated half level; the tilt range is where the
profile crosses half-way, its quality the wedge depth ``1 − floor/plateau``. The noise of a
reconstruction passes the same wedge, so even the empty parts of a tomogram show it. A flat
profile (white noise, a full ±90° range) gives ``tilt_range=None``. The same test about the X axis
says when the wedge is about X instead (``tilt_axis='X'``: a volume written with the tilt axis
along X). The sign follows the simulator (φ = θ); a real tilt series' sign depends on the
handedness of the reconstruction program.

**Slab** (voxels along Z, Å with a voxel size): per Z slice of a central crop, the power in
rings of in-plane frequency, restricted to frequencies mostly along X (``|k_x| ≥ 0.8·|k|``: the
missing wedge spreads structure with small k_x along the whole of Z). Inside the sample the slices
carry signal + noise, outside only noise. Of the rings whose log profile has a clear, significant step, the one of highest frequency is used (its edges
are sharpest); its profile is split into plateau and baseline by an iterated half level, and the
edges are where the profile, going outward, falls a quarter of the way from plateau to baseline
(:data:`SLAB_EDGE_LEVEL`). A flat profile says
that the sample fills the Z range (or that there is no signal): ``slab=None``.

**Polarity**: :func:`napari_cryo_openset.picking.polarity.guess_polarity` on the DoG response of
the blocks (σ1 = particle radius, as in picking) inside the slab.

**Noise**: ``noise_sigma`` is the standard deviation per voxel of the slices outside the slab
(volume units) and ``snr`` the per-voxel variance ratio ``(var_in − var_out)/var_out`` inside the
slab — a 3-D figure over the whole band, *not* the per-projection SNR of
:class:`~napari_cryo_openset.simulate.condition.ImagingCondition` (benchmarks/bench_estimate.py
tabulates both on simulated scenes). Without slices outside the slab there is no noise-only
region, and both are ``None``.

Cost: a few blocks of at most ``block``³ voxels and one central crop of at most ``crop``² voxels
per slice are read, chunk by chunk, so a memory-mapped tomogram of any size is estimated in
bounded memory and time (benchmarks/bench_estimate.py measures it).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from .errors import ParameterError
from .picking.dog import dog_filter, release_pages
from .picking.params import voxel_size_zyx
from .picking.polarity import guess_polarity

#: File bytes touched per read of a memory-mapped volume (pages are dropped after each read).
_READ_CHUNK_BYTES = 16 * 1024**2
#: Smallest size along every axis (voxels): below it neither wedge nor slab can be read.
MIN_SIZE = 32
#: Values a caller may give (header or user): tilt range (degrees), slab thickness (Å, voxels
#: without a voxel size), polarity ('dark'/'bright').
GIVEN_KEYS = ("tilt_range", "slab_thickness", "polarity")
#: A given tilt range agrees with the estimate when both ends are within this (degrees).
TILT_TOLERANCE = 5.0
#: A given slab thickness agrees with the estimate within this fraction.
THICKNESS_TOLERANCE = 0.10
#: Wedge depth ``1 − floor/plateau`` below which no wedge is reported (white noise: ~0.1).
MIN_WEDGE_DEPTH = 0.5
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
#: Rings of |(k_z, k_x)| (cycles/voxel) read for the wedge.
WEDGE_RINGS = ((0.10, 0.20), (0.20, 0.30), (0.30, 0.42))
#: Rings of in-plane frequency (cycles/voxel) for the slab profile (factor √2 apart).
SLAB_RINGS = tuple((0.025 * 2 ** (i / 2), 0.025 * 2 ** ((i + 1) / 2)) for i in range(8))


# --------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeEstimate:
    """What :func:`estimate_volume` read from a tomogram (axes Z, Y, X; degrees; Å).

    Attributes
    ----------
    shape
        (Z, Y, X) voxels of the volume.
    voxel_size
        (Z, Y, X) Å, or None (then lengths are in voxels only).
    tilt_range
        ``(min, max)`` degrees about ``tilt_axis``, or None (see ``tilt_range_reason``).
    tilt_axis
        ``'Y'`` (the simulator's and the usual convention) or ``'X'`` when the wedge is about X.
    tilt_quality
        Depth of the missing wedge in the angular power profile, 0 (none) … 1 (empty wedge).
    tilt_uncertainty
        Degrees: largest distance of a ring's edge from the chosen one (plus the angular
        sampling), None without a tilt range.
    tilt_range_reason
        Why there is no tilt range (None when there is one).
    slab
        ``(z_lo, z_hi)``: the Z edges of the sample, or None — voxel coordinates (centres at
        integers, so a sample filling slices a … b − 1 has edges a − ½, b − ½), crossings of
        the half level (in log power) between baseline and plateau.
    slab_contrast
        Plateau/baseline of the per-slice power profile used (1 = flat).
    slab_band
        The in-plane frequency ring (cycles/voxel) whose profile gave the slab.
    slab_reason
        Why there is no slab, or a caveat (the slab reaches a face of the volume).
    polarity, polarity_skewness, polarity_confident
        ``'dark'``/``'bright'`` from :func:`~napari_cryo_openset.picking.polarity.guess_polarity`,
        its skewness and whether |skewness| is large enough to trust.
    noise_sigma
        Per-voxel standard deviation outside the slab (volume units), or None.
    snr
        ``(var_in − var_out)/var_out`` per voxel inside the slab (3-D, whole band), or None.
    noise_reason
        Why there is no noise figure (None when there is one).
    given
        Values given by the header or the user (:data:`GIVEN_KEYS`).
    seconds
        Wall time of the estimate.
    details
        Per-ring edges and depths, blocks read, diameter used (for reports and debugging).
    """

    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float] | None
    tilt_range: tuple[float, float] | None
    tilt_axis: str | None
    tilt_quality: float
    tilt_uncertainty: float | None
    tilt_range_reason: str | None
    slab: tuple[float, float] | None
    slab_contrast: float
    slab_band: tuple[float, float] | None
    slab_reason: str | None
    polarity: str
    polarity_skewness: float
    polarity_confident: bool
    noise_sigma: float | None
    snr: float | None
    noise_reason: str | None
    given: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    # derived lengths ---------------------------------------------------------------------

    @property
    def thickness_voxels(self) -> float | None:
        """Slab thickness along Z in voxels, or None."""
        return None if self.slab is None else float(self.slab[1] - self.slab[0])

    @property
    def thickness_angstrom(self) -> float | None:
        """Slab thickness along Z in Å (None without a slab or a voxel size)."""
        t = self.thickness_voxels
        return None if t is None or self.voxel_size is None else t * self.voxel_size[0]

    @property
    def slab_centre(self) -> float | None:
        """Z of the slab's middle (voxels), or None."""
        return None if self.slab is None else 0.5 * (self.slab[0] + self.slab[1])

    def _thickness(self) -> float | None:
        """Thickness in the unit of a given ``slab_thickness``: Å, voxels without voxel size."""
        return self.thickness_angstrom if self.voxel_size is not None else self.thickness_voxels

    # estimate vs given -------------------------------------------------------------------

    def resolved(self, name: str) -> tuple[Any, str]:
        """(value, source) for ``name`` in :data:`GIVEN_KEYS`: the given value if any.

        ``source`` is ``'given'``, ``'estimated'`` or ``'none'`` (neither: the caller uses its
        default and should say so).
        """
        if name not in GIVEN_KEYS:
            raise ParameterError(f"unknown estimate {name!r}; expected one of {', '.join(GIVEN_KEYS)}")
        if self.given.get(name) is not None:
            return self.given[name], "given"
        value = {"tilt_range": self.tilt_range, "slab_thickness": self._thickness(),
                 "polarity": self.polarity}[name]
        return (value, "estimated") if value is not None else (None, "none")

    def agreement(self) -> dict[str, bool | None]:
        """For each given value: does the estimate agree (None: nothing estimated)?

        Tilt range: both ends within :data:`TILT_TOLERANCE` degrees; thickness: within
        :data:`THICKNESS_TOLERANCE`; polarity: equal (only when the guess is confident).
        """
        out: dict[str, bool | None] = {}
        for name, value in self.given.items():
            if value is None:
                continue
            if name == "tilt_range":
                est = self.tilt_range
                out[name] = None if est is None else bool(
                    abs(est[0] - value[0]) <= TILT_TOLERANCE and abs(est[1] - value[1]) <= TILT_TOLERANCE)
            elif name == "slab_thickness":
                est = self._thickness()
                out[name] = None if est is None else bool(abs(est - value) <= THICKNESS_TOLERANCE * value)
            else:
                out[name] = bool(self.polarity == value) if self.polarity_confident else None
        return out

    # reports -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: every field, the derived lengths and the agreement."""
        def plain(v):
            if isinstance(v, dict):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            if isinstance(v, (np.floating, np.integer, np.bool_)):
                return v.item()
            return v

        out = {name: plain(getattr(self, name)) for name in self.__dataclass_fields__}
        out.update(thickness_voxels=self.thickness_voxels, thickness_angstrom=self.thickness_angstrom,
                   slab_centre=self.slab_centre, agreement=self.agreement())
        return out

    def summary(self) -> str:
        """A few human-readable lines (estimate, quality, and the given value where there is one)."""
        agree = self.agreement()

        def given(name, fmt):
            if self.given.get(name) is None:
                return ""
            verdict = {True: "agrees", False: "DISAGREES", None: "not comparable"}[agree.get(name)]
            return f"; given {fmt(self.given[name])} ({verdict}, the given value is used)"

        def deg(r):
            return f"{r[0]:+.0f}…{r[1]:+.0f}°"

        lines = []
        if self.tilt_range is not None:
            lines.append(f"tilt range: {deg(self.tilt_range)} about {self.tilt_axis} (wedge depth "
                         f"{self.tilt_quality:.2f}, ±{self.tilt_uncertainty:.0f}°){given('tilt_range', deg)}")
        else:
            lines.append(f"tilt range: not readable — {self.tilt_range_reason}{given('tilt_range', deg)}")
        unit = "Å" if self.voxel_size is not None else "voxels"
        if self.slab is not None:
            t = self._thickness()
            note = f"; {self.slab_reason}" if self.slab_reason else ""
            lines.append(f"slab: {t:.0f} {unit} thick, Z {self.slab[0]:.1f}…{self.slab[1]:.1f} voxels (contrast "
                         f"{self.slab_contrast:.1f}){note}{given('slab_thickness', lambda v: f'{v:.0f} {unit}')}")
        else:
            lines.append(f"slab: not readable — {self.slab_reason}"
                         f"{given('slab_thickness', lambda v: f'{v:.0f} {unit}')}")
        conf = "confident" if self.polarity_confident else "NOT confident, check"
        lines.append(f"polarity: {self.polarity} (skewness {self.polarity_skewness:+.2f}, {conf})"
                     f"{given('polarity', str)}")
        if self.noise_sigma is not None:
            lines.append(f"noise: σ {self.noise_sigma:.3g} per voxel outside the slab; 3-D SNR in the slab "
                         f"{self.snr:.3g}")
        else:
            lines.append(f"noise: not readable — {self.noise_reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the estimate
# --------------------------------------------------------------------------------------------


def estimate_volume(
    volume,
    voxel_size=None,
    *,
    given: dict[str, Any] | None = None,
    diameter: float | None = None,
    block: int = 128,
    max_blocks: int = 4,
    crop: int = 256,
    workers: int | None = None,
) -> VolumeEstimate:
    """Estimate tilt range, slab, polarity and noise of a (Z, Y, X) tomogram (module docstring).

    Parameters
    ----------
    volume
        (Z, Y, X) array (memory-mapped is fine) or a ``Tomogram`` (its voxel size is used
        when ``voxel_size`` is None).
    voxel_size
        Å, one number or (Z, Y, X); None = lengths in voxels only.
    given
        Values from the header or the user, keys :data:`GIVEN_KEYS`: ``tilt_range`` (min, max
        degrees), ``slab_thickness`` (Å; voxels without a voxel size), ``polarity``.
    diameter
        Particle diameter in Å (voxels without a voxel size) for the polarity's DoG band;
        default 150 Å (12 voxels without a voxel size).
    block
        Edge of the blocks whose power spectra are averaged (voxels, per axis at most).
    max_blocks
        Blocks read (up to 2 × 2 in Y, X around the centre).
    crop
        Central Y, X crop (voxels) of every slice for the slab profile.
    workers
        FFT threads (default: the CPUs, at most 4).
    """
    t0 = time.perf_counter()
    if hasattr(volume, "data") and hasattr(volume, "voxel_size") and not isinstance(volume, np.ndarray):
        voxel_size = volume.voxel_size if voxel_size is None else voxel_size
        volume = volume.data
    volume = _check_volume(volume)
    vs = None if voxel_size is None else voxel_size_zyx(voxel_size)
    given = _check_given(given)
    workers = int(workers) if workers else min(4, os.cpu_count() or 1)

    profile = _slab_profiles(volume, crop, workers)
    slab = _find_slab(profile)
    noise = _noise(profile, slab)
    blocks, z0 = _read_blocks(volume, block, max_blocks, slab.get("slab"))
    wedge = _find_wedge(blocks, workers)
    pol = _polarity(blocks, vs, diameter, _slab_rows(slab.get("slab"), z0, blocks[0].shape[0]))
    del blocks
    return VolumeEstimate(
        shape=tuple(int(s) for s in volume.shape),
        voxel_size=vs,
        tilt_range=wedge["tilt_range"],
        tilt_axis=wedge["axis"],
        tilt_quality=wedge["depth"],
        tilt_uncertainty=wedge["uncertainty"],
        tilt_range_reason=wedge["reason"],
        slab=slab.get("slab"),
        slab_contrast=slab["contrast"],
        slab_band=slab.get("band"),
        slab_reason=slab["reason"],
        polarity=pol["polarity"],
        polarity_skewness=pol["skewness"],
        polarity_confident=pol["confident"],
        noise_sigma=noise["sigma"],
        snr=noise["snr"],
        noise_reason=noise["reason"],
        given=given,
        seconds=round(time.perf_counter() - t0, 3),
        details={"wedge": wedge["details"], "slab": slab["details"], "blocks": pol["blocks"],
                 "polarity_diameter_voxels": pol["diameter_voxels"]},
    )


# --------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------


def _check_volume(volume) -> np.ndarray:
    """The (Z, Y, X) array, or one :class:`ParameterError` saying what is wrong."""
    if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
        volume = np.asarray(volume)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise ParameterError(
            f"the volume has shape {shape} ({len(shape)}-D); estimating the imaging condition needs a "
            "3-D tomogram (Z, Y, X)")
    if np.dtype(volume.dtype).kind not in "fiu":
        raise ParameterError(f"the volume must be numeric, got dtype {volume.dtype}")
    if min(shape) < MIN_SIZE:
        raise ParameterError(
            f"the volume {shape[0]}×{shape[1]}×{shape[2]} (Z×Y×X) is too small to estimate the imaging "
            f"condition; every axis needs at least {MIN_SIZE} voxels")
    return volume


def _check_given(given: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in (given or {}).items():
        if name not in GIVEN_KEYS:
            raise ParameterError(f"unknown given value {name!r}; expected one of {', '.join(GIVEN_KEYS)}")
        if value is None:
            continue
        if name == "tilt_range":
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ParameterError(f"given tilt_range must be (min, max) degrees, got {value!r}") from None
            if not (-90 <= lo <= hi <= 90):
                raise ParameterError(f"given tilt_range must satisfy −90 ≤ min ≤ max ≤ 90 degrees, got {value!r}")
            value = (lo, hi)
        elif name == "slab_thickness":
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = math.nan
            if not (math.isfinite(value) and value > 0):
                raise ParameterError(f"given slab_thickness must be a positive length, got {given[name]!r}")
        elif value not in ("dark", "bright"):
            raise ParameterError(f"given polarity must be 'dark' or 'bright', got {value!r}")
        out[name] = value
    return out


def _read(volume, zs: slice, ys: slice, xs: slice, chunk_bytes: int = _READ_CHUNK_BYTES) -> np.ndarray:
    """float32 copy of ``volume[zs, ys, xs]``, refusing non-finite voxels with one clear message.

    A memory map is read a few slices at a time — sized by the file bytes the rows touch — and
    its pages are dropped after each, so the resident memory stays bounded whatever the file.
    """
    z0, z1 = zs.start, zs.stop
    out = np.empty((z1 - z0, ys.stop - ys.start, xs.stop - xs.start), dtype=np.float32)
    row_bytes = (ys.stop - ys.start) * volume.shape[2] * np.dtype(volume.dtype).itemsize
    step = max(1, int(chunk_bytes // row_bytes))
    for z in range(z0, z1, step):
        out[z - z0 : min(z1, z + step) - z0] = volume[z : min(z1, z + step), ys, xs]
        release_pages(volume)
    if not np.isfinite(out).all():
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        raise ParameterError(
            f"the volume has non-finite voxels (NaN or inf; {bad} in the region read); replace them "
            "(e.g. by the mean) before estimating the imaging condition")
    return out


# --------------------------------------------------------------------------------------------
# slab and noise: per-slice power profiles
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# tilt range: the missing wedge in the power spectrum of a few blocks
# --------------------------------------------------------------------------------------------


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
