"""The imaging condition: one frozen object that describes how a tilt series is recorded.

Units: voxel size in Å, defocus in µm (**underfocus positive**, the convention of CTFFIND,
RELION and ``torch-ctf``; the 3D-ADA paper writes the same 5 µm underfocus as "−5 µm"),
spherical aberration in mm, voltage in kV, angles in degrees.

A value given as a ``(lo, hi)`` pair is a range: every simulated subtomogram draws its own
value, uniformly for the defocus and **log-uniformly** for the SNR (SNR levels span decades).

SNR definition (used everywhere in :mod:`napari_cryo_openset.simulate`):
``SNR = var(signal) / var(noise)`` **per projection**, where ``signal`` is the noise-free,
CTF × MTF (× dose) filtered projection image. For subtomograms the variance is taken over the
``box × box`` detector window centred on the particle and the signal is the *central particle's*
projection (neighbours and background do not raise the noise level); for whole scenes it is
taken over the whole projection of everything in the volume.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import ParameterError

Range = tuple[float, float]


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
    recon_cutoff, recon_falloff
        Reconstruction (weighted back-projection) radial filter in cycles/pixel: the ramp up to
        ``recon_cutoff``, then a Gaussian fall-off of σ ``recon_falloff`` — IMOD's default
        0.35 / 0.035. ``recon_cutoff=None`` = the plain ramp up to Nyquist.
    """

    voxel_size: float = 10.0
    defocus: float | Range = 5.0
    cs: float = 2.7
    voltage: float = 300.0
    amplitude_contrast: float = 0.07
    tilt_range: Range = (-60.0, 60.0)
    tilt_step: float = 3.0
    snr: float | Range = 0.1
    mtf: bool = True
    dose_per_tilt: float | None = None
    recon_cutoff: float | None = 0.35
    recon_falloff: float = 0.035

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
                out[k] = list(v)
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
