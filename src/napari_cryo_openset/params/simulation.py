"""The imaging condition and the simulated-set parameters (torch-free).

:class:`ImagingCondition` describes how a tilt series is recorded. Units: voxel size in Å,
defocus in µm (**underfocus positive**, the convention of CTFFIND, RELION and ``torch-ctf``; the
3D-ADA paper writes the same 5 µm underfocus as "−5 µm"), spherical aberration in mm, voltage in
kV, angles in degrees. A value given as a ``(lo, hi)`` pair is a range: every simulated
subtomogram draws its own value, uniformly for the defocus and **log-uniformly** for the SNR.

SNR definition (used everywhere in :mod:`napari_cryo_openset.simulate`):
``SNR = var(signal) / var(noise)`` **per projection**, where ``signal`` is the noise-free,
CTF × MTF (× dose) filtered projection image. For subtomograms the variance is taken over the
``box × box`` detector window centred on the particle and the signal is the *central particle's*
projection (neighbours and background do not raise the noise level); for whole scenes it is
taken over the whole projection of everything in the volume.

:class:`DatasetParams` says what to simulate for a labelled subtomogram set
(:mod:`napari_cryo_openset.simulate.datasets`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import ParameterError, known_fields
from ..picks import UNKNOWN_CLASS
from ._spec import check_fields, param

Range = tuple[float, float]

#: Half-width (Å) of the field in which ``defocus_gradient`` places a subtomogram off the tilt
#: axis: about half of a 4k detector at 1.3 Å/pixel.
DEFOCUS_FIELD_HALF_WIDTH = 2500.0


def _as_value_or_range(name: str, value: Any) -> float | Range:
    """Normalise a number or a (lo, hi) pair (lists from JSON become tuples)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        vals = [float(v) for v in value]
        if len(vals) != 2:
            raise ParameterError(f"{name} must be one number or a (lo, hi) pair, got {value!r}")
        lo, hi = vals
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ParameterError(f"{name} range must be finite, got {value!r}")
        if lo > hi:
            raise ParameterError(f"{name} range must have lo ≤ hi, got ({lo:g}, {hi:g})")
        return (lo, hi)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    return v


def _bounds(value: float | Range) -> Range:
    return value if isinstance(value, tuple) else (value, value)


def _check_noise_spectrum(value: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(freq, power)`` as two tuples of floats; one clear message per bad input."""
    what = "noise_spectrum must be None or a (freq, power) pair of equally long sequences"
    try:
        freq, power = value
        freq = np.asarray(freq, dtype=np.float64).ravel()
        power = np.asarray(power, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ParameterError(f"{what}, got {value!r}") from None
    if len(freq) != len(power) or len(freq) < 2:
        raise ParameterError(f"{what} of at least 2 values, got {len(freq)} frequencies and {len(power)} powers")
    if not (np.isfinite(freq).all() and np.isfinite(power).all()):
        raise ParameterError("noise_spectrum must hold finite numbers only")
    if freq[0] < 0 or np.any(np.diff(freq) <= 0):
        raise ParameterError("noise_spectrum frequencies (1/Å) must be ≥ 0 and strictly increasing")
    if np.any(power < 0) or not np.any(power > 0):
        raise ParameterError("noise_spectrum powers must be ≥ 0 and not all zero")
    return tuple(float(v) for v in freq), tuple(float(v) for v in power)


@dataclass(frozen=True)
class ImagingCondition:
    """How the microscope records a tilt series (3D-ADA § 3.1 chain).

    Attributes
    ----------
    voxel_size
        Å per voxel (= Å per detector pixel; projections are not binned).
    defocus
        µm, underfocus positive; one value or a ``(lo, hi)`` range (uniform). Paper batch A:
        5 µm, batch B: 10 µm.
    cs
        Spherical aberration, mm.
    voltage
        Acceleration voltage, kV.
    amplitude_contrast
        Fraction of amplitude contrast (0.07 for vitreous ice).
    tilt_range
        ``(min, max)`` tilt angles in degrees, within ±90; the tilt axis is Y.
    tilt_step
        Degrees between tilts; angles are ``min, min + step, …`` up to ``max`` (41 tilts for
        −60…60 at 3°).
    snr
        ``var(signal)/var(noise)`` per projection (see the module docstring); one value or a
        ``(lo, hi)`` range (log-uniform).
    mtf
        Apply the detector MTF ``sinc(f)`` (f in cycles/pixel; 0.64 at Nyquist).
    dose_per_tilt
        e⁻/Å² per tilt for dose weighting (Grant & Grigorieff 2015, dose-symmetric order from
        0°); ``None`` = no dose weighting.
    bfactor
        Å²: a B-factor envelope ``exp(−B·k²/4)`` (k in 1/Å) on every projection — the
        resolution loss of radiation damage, drift and beam-induced motion that the dose filter
        alone does not model. 0 = off (the default: no envelope).
    noise_spectrum
        ``None`` (white noise, the default) or ``(freq, power)``: two equally long sequences,
        frequencies in 1/Å (increasing, ≥ 0) and the relative noise **power** at each, of the
        noise added to every projection (2D radial; linear in between, constant past the ends).
        The noise is shaped by it and then scaled to the variance the SNR asks for, so only its
        shape matters. In the approximate 3D mode it shapes the 3D noise.
    tilt_jitter
        Pixels: residual tilt-series misalignment — every projection of every subtomogram is
        shifted by its own Gaussian random (Y, U) offset of this standard deviation before the
        reconstruction (full chain only; 0 = perfectly aligned, the default).
    defocus_gradient
        Model the defocus gradient across tilted images: a particle at distance ``x`` (Å) from
        the tilt axis is ``x·sin θ`` closer to focus at tilt θ, so every tilt gets its own CTF.
        Each subtomogram draws its ``x`` uniformly in ±:data:`DEFOCUS_FIELD_HALF_WIDTH` Å (a
        typical detector field; seeded from its noise seed); the gradient *within* a box is
        neglected (≤ 0.03 µm across 32 × 10 Å). A whole scene is one sample, so it gets one
        ``x``, not a gradient across its field. Full chain only. False = one defocus for all
        tilts (the default).
    recon_cutoff, recon_falloff
        Reconstruction (weighted back-projection) radial filter in cycles/pixel: the ramp up to
        ``recon_cutoff``, then a Gaussian fall-off of σ ``recon_falloff`` — IMOD's default
        0.35 / 0.035. ``recon_cutoff=None`` = the plain ramp up to Nyquist.
    """

    voxel_size: float = param(10.0, unit="Å", help="voxel size of the simulated data")
    defocus: float | Range = param(5.0, unit="µm", help="underfocus in µm")
    cs: float = param(2.7, unit="mm", help="spherical aberration")
    voltage: float = param(300.0, unit="kV", help="acceleration voltage")
    amplitude_contrast: float = param(0.07, help="fraction of amplitude contrast")
    tilt_range: Range = param((-60.0, 60.0), unit="degrees", help="tilt range in degrees")
    tilt_step: float = param(3.0, unit="degrees", help="degrees between tilts")
    snr: float | Range = param(0.1, metavar="S", help="per-projection SNR of the simulation")
    mtf: bool = param(True, help="apply the detector MTF")
    dose_per_tilt: float | None = param(None, unit="e/Å²", help="dose per tilt for dose weighting")
    recon_cutoff: float | None = param(0.35, unit="cycles/pixel", help="reconstruction filter cut-off")
    recon_falloff: float = param(0.035, unit="cycles/pixel", help="reconstruction filter fall-off")
    bfactor: float = param(0.0, low=0.0, unit="Å²", help="B-factor envelope exp(-B k²/4) on the projections (0 = off)")
    tilt_jitter: float = param(0.0, low=0.0, unit="pixels", help="SD of random per-tilt alignment shifts (0 = off)")
    defocus_gradient: bool = param(False, help="per-tilt defocus of a particle off the tilt axis (x·sin θ)")
    noise_spectrum: tuple[tuple[float, ...], tuple[float, ...]] | None = param(
        None, help="(freq 1/Å, relative power) of the projection noise; None = white")

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        vs = _as_value_or_range("voxel_size", self.voxel_size)
        if isinstance(vs, tuple) or not vs > 0:
            raise ParameterError(f"voxel_size must be one positive number of Å, got {self.voxel_size!r}")
        set_(self, "voxel_size", vs)

        defocus = _as_value_or_range("defocus", self.defocus)
        if _bounds(defocus)[0] <= 0:
            raise ParameterError(
                f"defocus must be positive µm of underfocus (e.g. 5 for 5 µm underfocus), got {self.defocus!r}"
            )
        set_(self, "defocus", defocus)

        for name, lo_ok in (("cs", 0.0), ("voltage", None), ("tilt_step", None)):
            v = _as_value_or_range(name, getattr(self, name))
            if isinstance(v, tuple):
                raise ParameterError(f"{name} must be one number, got {getattr(self, name)!r}")
            if (lo_ok is None and not v > 0) or (lo_ok is not None and v < lo_ok):
                unit = {"cs": "mm", "voltage": "kV", "tilt_step": "degrees"}[name]
                raise ParameterError(f"{name} must be {'≥ 0' if lo_ok is not None else 'positive'} ({unit}), got {v:g}")
            set_(self, name, v)

        ac = _as_value_or_range("amplitude_contrast", self.amplitude_contrast)
        if isinstance(ac, tuple) or not 0.0 <= ac < 1.0:
            raise ParameterError(f"amplitude_contrast must be a fraction in [0, 1), got {self.amplitude_contrast!r}")
        set_(self, "amplitude_contrast", ac)

        tr = _as_value_or_range("tilt_range", self.tilt_range)
        if not isinstance(tr, tuple):
            raise ParameterError(f"tilt_range must be a (min, max) pair of degrees, got {self.tilt_range!r}")
        if tr[0] < -90 or tr[1] > 90:
            raise ParameterError(f"tilt_range must lie within ±90 degrees, got ({tr[0]:g}, {tr[1]:g})")
        set_(self, "tilt_range", tr)

        snr = _as_value_or_range("snr", self.snr)
        if _bounds(snr)[0] <= 0:
            raise ParameterError(f"snr must be positive (var(signal)/var(noise)), got {self.snr!r}")
        set_(self, "snr", snr)

        set_(self, "mtf", bool(self.mtf))
        if self.dose_per_tilt is not None:
            d = _as_value_or_range("dose_per_tilt", self.dose_per_tilt)
            if isinstance(d, tuple) or not d > 0:
                raise ParameterError(f"dose_per_tilt must be positive e/Å² or None, got {self.dose_per_tilt!r}")
            set_(self, "dose_per_tilt", d)
        if self.recon_cutoff is not None:
            c = _as_value_or_range("recon_cutoff", self.recon_cutoff)
            if isinstance(c, tuple) or not 0 < c <= 0.5:
                raise ParameterError(f"recon_cutoff must be in (0, 0.5] cycles/pixel or None, got {self.recon_cutoff!r}")
            set_(self, "recon_cutoff", c)
        f = _as_value_or_range("recon_falloff", self.recon_falloff)
        if isinstance(f, tuple) or not f > 0:
            raise ParameterError(f"recon_falloff must be positive (cycles/pixel), got {self.recon_falloff!r}")
        set_(self, "recon_falloff", f)

        b = _as_value_or_range("bfactor", self.bfactor)
        if isinstance(b, tuple) or b < 0:
            raise ParameterError(f"bfactor must be one number ≥ 0 (Å²; 0 = no envelope), got {self.bfactor!r}")
        set_(self, "bfactor", b)
        j = _as_value_or_range("tilt_jitter", self.tilt_jitter)
        if isinstance(j, tuple) or j < 0:
            raise ParameterError(f"tilt_jitter must be one number ≥ 0 (pixels; 0 = aligned), got {self.tilt_jitter!r}")
        set_(self, "tilt_jitter", j)
        if not isinstance(self.defocus_gradient, (bool, np.bool_)) and self.defocus_gradient not in (0, 1):
            raise ParameterError(f"defocus_gradient must be True or False, got {self.defocus_gradient!r}")
        set_(self, "defocus_gradient", bool(self.defocus_gradient))
        if self.noise_spectrum is not None:
            set_(self, "noise_spectrum", _check_noise_spectrum(self.noise_spectrum))

    # ---------------------------------------------------------------------------------------

    @property
    def tilt_angles(self) -> np.ndarray:
        """Tilt angles in degrees (float64), ``min, min + step, …, ≤ max``."""
        lo, hi = self.tilt_range
        n = int(math.floor((hi - lo) / self.tilt_step + 1e-6)) + 1
        return lo + self.tilt_step * np.arange(n, dtype=np.float64)

    @property
    def n_tilts(self) -> int:
        return len(self.tilt_angles)

    @property
    def defocus_range(self) -> Range:
        """``(lo, hi)`` µm (equal for a fixed defocus)."""
        return _bounds(self.defocus)

    @property
    def snr_range(self) -> Range:
        """``(lo, hi)`` (equal for a fixed SNR)."""
        return _bounds(self.snr)

    def sample_defocus(self, rng: np.random.Generator, n: int | None = None):
        """Defocus in µm, uniform in the range."""
        lo, hi = self.defocus_range
        return rng.uniform(lo, hi, size=n) if hi > lo else (lo if n is None else np.full(n, lo))

    def sample_snr(self, rng: np.random.Generator, n: int | None = None):
        """SNR, log-uniform in the range."""
        lo, hi = self.snr_range
        if hi > lo:
            return np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
        return lo if n is None else np.full(n, lo)

    def replace(self, **changes) -> ImagingCondition:
        """A copy with some fields changed (validated again)."""
        return ImagingCondition(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (ranges become lists)."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = [list(e) if isinstance(e, tuple) else e for e in v]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagingCondition:
        """Inverse of :meth:`to_dict`; unknown keys are refused with a clear message."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParameterError(f"imaging condition has unknown field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ImagingCondition:
        return cls.from_dict(json.loads(text))


#: The class of empty (noise-only) boxes when they are their own class.
EMPTY_CLASS = "empty"
#: ``full``: tilt series + CTF + noise + weighted back-projection; ``approximate``: a 3-D shortcut.
MODES = ("full", "approximate")


@dataclass(frozen=True)
class DatasetParams:
    """What to simulate (the templates are given separately).

    Attributes
    ----------
    box
        Subtomogram edge in voxels (≥ 16).
    per_class
        Subtomograms per known template (≥ 1).
    decoys
        Subtomograms of the ``unknown`` class (procedural decoys).
    empty
        Empty (noise-only) subtomograms.
    condition
        The imaging condition (its ``voxel_size`` is the templates' voxel size).
    seed
        Everything random derives from it.
    decoy_structures
        Distinct decoy structures in the pool the ``unknown`` samples are drawn from.
    empty_label
        ``empty`` (own class) or ``unknown``.
    max_shift
        Particle centre shift, uniform in ±max_shift voxels per axis.
    neighbours
        Mean number (Poisson, at most 4) of neighbouring particles touching the box edges.
    background
        Standard deviation of a smooth crowding background (units of protein density; 0 = off).
    mode
        ``full`` (tilt series + CTF + noise + WBP) or ``approximate`` (3D shortcut).
    batch_size
        Subtomograms simulated per batched call (memory ~ 3 MB × batch for box 32).
    """

    box: int = param(32, low=16, unit="voxels", help="subtomogram edge in voxels")
    per_class: int = param(100, low=1, help="subtomograms per template")
    decoys: int = param(0, low=0, help="subtomograms of procedural decoys (class 'unknown')")
    empty: int = param(0, low=0, help="empty (noise-only) subtomograms (class 'empty')")
    condition: ImagingCondition = param(default_factory=ImagingCondition, help="the imaging condition")
    seed: int = param(0, low=0, help="random seed")
    decoy_structures: int = param(16, low=1, help="distinct decoy structures")
    empty_label: str = param(EMPTY_CLASS, choices=(EMPTY_CLASS, UNKNOWN_CLASS), help="class of the empty boxes")
    max_shift: float = param(1.0, low=0, unit="voxels", help="particle centre offsets, uniform in ±N voxels per axis")
    neighbours: float = param(0.0, low=0, help="mean number of neighbouring particles at the edges of each box "
                                                 "(0 = isolated particles)")
    background: float = param(0.0, low=0, help="smooth crowding background, in units of protein density (0 = off)")
    mode: str = param("full", choices=MODES, help="imaging chain")
    batch_size: int = param(64, low=1, help="subtomograms simulated per batched call")

    def __post_init__(self) -> None:
        check_fields(self)
        if isinstance(self.condition, dict):  # read back from a set's JSON
            object.__setattr__(self, "condition", ImagingCondition.from_dict(self.condition))
        elif not isinstance(self.condition, ImagingCondition):
            raise ParameterError(f"condition must be an ImagingCondition, got {type(self.condition).__name__}")

    @property
    def voxel_size(self) -> float:
        return self.condition.voxel_size

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["condition"] = self.condition.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> DatasetParams:
        return cls(**known_fields(cls, data))
