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

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..io.tomogram import voxel_size_zyx
from ._volume import GIVEN_KEYS, _check_given, _check_volume
from .slab import _find_slab, _noise, _slab_profiles
from .wedge import _find_wedge, _polarity, _read_blocks, _slab_rows

#: A given tilt range agrees with the estimate when both ends are within this (degrees).
TILT_TOLERANCE = 5.0
#: A given slab thickness agrees with the estimate within this fraction.
THICKNESS_TOLERANCE = 0.10


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


