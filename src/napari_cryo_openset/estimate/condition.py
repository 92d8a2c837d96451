"""The imaging condition a run simulates: the user's values where given, the tomogram's otherwise.

A run knows the voxel size from the header. For the rest the user may say nothing; then the
simulation should not silently use our defaults (a ±60° tilt range when the data were recorded
at ±45° puts the missing wedge in the wrong place). :func:`resolve_condition` takes the
condition the run was given, the names of the fields the user really gave, and an
:class:`~napari_cryo_openset.estimate.VolumeEstimate` of the tomogram, and returns the condition
to simulate plus where each value came from:

- ``tilt_range`` — given → kept; else the estimate (rounded to 1°) when the missing wedge is
  readable; else the default, with the estimator's reason.
- ``snr`` (per projection) — given → kept; else :func:`calibrate_snr`: the estimator's 3-D SNR of
  the slab is not the simulator's per-projection SNR, so a small scene is simulated at a trial
  SNR with the target's slab and tilt range, estimated with the *same* estimator, and the trial
  SNR is rescaled towards the target's (a ratio, then log–log secant steps: the 3-D SNR grows
  with the projection SNR, not quite linearly); three rounds. Without a noise figure (no slices outside the slab) the default stays.
- ``slab`` — the Z edges of the sample (tomogram voxels) for a scene-simulated source, or None
  (then the scenes fill Z, as before).
- everything else (defocus, Cs, voltage, tilt step, amplitude contrast): given or the default —
  a tomogram does not tell them; the report says "default".

Every choice lands in :meth:`ResolvedCondition.to_dict` (``report.json``'s ``condition``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from ..params import ImagingCondition

#: The estimated tilt range is rounded to this (degrees).
TILT_ROUND = 1.0
#: The calibrated SNR is kept inside this range (the simulator's sane band).
SNR_LIMITS = (0.005, 10.0)


@dataclass(frozen=True)
class ResolvedCondition:
    """The condition to simulate and where every value came from."""

    condition: ImagingCondition
    sources: dict[str, str]  # field → "given" | "estimated" | "default"
    slab: tuple[float, float] | None = None  # Z edges, tomogram voxels
    notes: tuple[str, ...] = ()
    estimate: Any = None  # VolumeEstimate or None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        values = {}
        for f in fields(self.condition):
            v = getattr(self.condition, f.name)
            values[f.name] = list(v) if isinstance(v, tuple) else v
        return {"values": values, "sources": dict(self.sources), "slab_voxels": list(self.slab) if self.slab else None,
                "notes": list(self.notes), "details": dict(self.details),
                "estimate": self.estimate.to_dict() if self.estimate is not None else None}

    def summary(self) -> str:
        """One line: tilt range, SNR and slab with their sources."""
        c = self.condition
        tr = c.tilt_range
        snr = c.snr if not isinstance(c.snr, tuple) else f"{c.snr[0]:g}–{c.snr[1]:g}"
        slab = (f"slab Z {self.slab[0]:.0f}…{self.slab[1]:.0f}" if self.slab else "slab: whole Z")
        return (f"tilt {tr[0]:+.0f}…{tr[1]:+.0f}° ({self.sources.get('tilt_range')}), SNR {snr} "
                f"({self.sources.get('snr')}), defocus {c.defocus} µm ({self.sources.get('defocus')}), {slab}")


def resolve_condition(condition: ImagingCondition, given: Iterable[str] | None, estimate,
                      snr_calibrator: Callable[[float], tuple[float, dict]] | None = None) -> ResolvedCondition:
    """The condition to simulate (module docstring).

    ``given`` None = every field of ``condition`` is the user's (nothing is estimated, the slab
    is still reported); ``estimate`` a VolumeEstimate or None; ``snr_calibrator(snr3d)`` →
    (per-projection SNR, details) — see :func:`calibrate_snr`.
    """
    names = [f.name for f in fields(condition)]
    trusted = set(names) if given is None else set(given) | {"voxel_size"}
    sources = {n: ("given" if n in trusted else "default") for n in names}
    notes: list[str] = []
    details: dict = {}
    slab = None
    if estimate is not None:
        if estimate.slab is not None:
            slab = (float(estimate.slab[0]), float(estimate.slab[1]))
        elif estimate.slab_reason:
            notes.append(f"slab: {estimate.slab_reason}")
        if "tilt_range" not in trusted:
            if estimate.tilt_range is not None:
                lo, hi = (TILT_ROUND * round(v / TILT_ROUND) for v in estimate.tilt_range)
                condition = condition.replace(tilt_range=(float(lo), float(hi)))
                sources["tilt_range"] = "estimated"
                if estimate.tilt_axis and estimate.tilt_axis != "Y":
                    notes.append(f"the missing wedge is about {estimate.tilt_axis}, the simulation's about Y: "
                                 "rotate the tomogram so that the tilt axis is Y")
            else:
                notes.append(f"tilt range: {estimate.tilt_range_reason}; using "
                             f"{condition.tilt_range[0]:+.0f}…{condition.tilt_range[1]:+.0f}° (default)")
        if "snr" not in trusted:
            if estimate.snr is not None and snr_calibrator is not None and math.isfinite(estimate.snr) \
                    and estimate.snr > 0:
                snr, details["snr_calibration"] = snr_calibrator(float(estimate.snr))
                if snr is not None:
                    lo, hi = SNR_LIMITS
                    condition = condition.replace(snr=float(min(max(snr, lo), hi)))
                    sources["snr"] = "estimated"
            elif estimate.snr is None:
                notes.append(f"noise: {estimate.noise_reason}; using SNR {condition.snr} (default)")
    elif given is not None:
        notes.append("no estimate of the tomogram was made; the values not given are the defaults")
    return ResolvedCondition(condition=condition, sources=sources, slab=slab, notes=tuple(notes), estimate=estimate,
                             details=details)


def calibrate_snr(target_snr3d: float, simulate_snr3d: Callable[[float], float | None], start: float = 0.1,
                  rounds: int = 3) -> tuple[float | None, dict]:
    """Per-projection SNR whose simulated scene shows the target's 3-D SNR.

    ``simulate_snr3d(snr)`` simulates a scene like the target (slab, tilt range, crowding) at
    projection SNR ``snr`` and returns the estimator's 3-D SNR (or None). The 3-D SNR grows with
    the projection SNR but not linearly (on the grid's condition C, ×3.3 in projection SNR is
    ×5.9 in 3-D SNR), so the first round rescales the trial by the ratio and every later one
    takes a secant step in log–log through the last two trials (a power law
    ``snr3d ∝ snr^b``, ``b`` clipped to 0.5…3). A trial that yields no 3-D SNR ends the search
    with that trial — the step from the last one that measured (None only when the first fails).
    """
    trial = float(start)
    history: list[dict] = []
    good: list[tuple[float, float]] = []  # (projection SNR, 3-D SNR) of the trials that measured
    for _ in range(int(rounds)):
        got = simulate_snr3d(trial)
        history.append({"projection_snr": trial, "snr3d": got})
        if got is None or not math.isfinite(got) or got <= 0:
            break
        good.append((trial, float(got)))
        exponent = 1.0
        if len(good) >= 2 and good[-1][0] != good[-2][0] and good[-1][1] != good[-2][1]:
            (s0, g0), (s1, g1) = good[-2], good[-1]
            exponent = min(max(math.log(g1 / g0) / math.log(s1 / s0), 0.5), 3.0)
        trial = float(min(max(trial * (target_snr3d / got) ** (1.0 / exponent), SNR_LIMITS[0]), SNR_LIMITS[1]))
    if not good:
        return None, {"target_snr3d": target_snr3d, "rounds": history, "reason": "no 3-D SNR in the trial scene"}
    return trial, {"target_snr3d": target_snr3d, "rounds": history, "projection_snr": trial}
