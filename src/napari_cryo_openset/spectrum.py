"""Radial power spectra of subtomograms, and matching a simulated set's spectrum to real data.

The gap between simulated and real subtomograms is measured here as the difference of their
**radially averaged power spectra** (power per spherical shell of the 3D Fourier transform) and
closed by a per-shell **spectral match**: every source (simulated) box is filtered in Fourier
space by the amplitude gain ``sqrt(P_target / P_source)`` of its shell, then normalised again
exactly as extraction does (:func:`~napari_cryo_openset.extract.normalise_subtomograms`: zero
mean, unit variance per box; the sign is kept).

Conventions
-----------
- Boxes are (N, Z, Y, X) (or one (Z, Y, X)) cubes of B voxels, numpy or torch, any float type.
- Shell ``s`` holds the Fourier coefficients with ``round(|k|·B) = s`` (``k`` in cycles/voxel);
  shells ``0 … B//2`` are reported, at frequencies ``s / (B · voxel_size)`` in **1/Å** up to
  Nyquist ``1 / (2 · voxel_size)``. A spectral match also fits the corner shells past Nyquist
  (up to √3 × Nyquist): the normalisation after its filter sees every coefficient.
- Power is ``|FFT|² / B³`` averaged over the coefficients of a shell (each coefficient of the
  full, not half, transform counts once) and over the boxes: white noise of variance σ² has
  power σ² in every shell. The periodogram uses no window (the same estimator is used to fit
  and to check a match, so a match is exact up to its smoothing and bounds).

No Qt/napari; torch does the FFTs (in chunks), numpy the binning (``np.bincount``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParameterError

__all__ = [
    "SpectralMatch",
    "apply_spectral_match",
    "box_statistics",
    "fit_spectral_match",
    "noise_spectrum",
    "plot_spectra",
    "radial_power_spectrum",
    "spectrum_report",
]

#: Boxes transformed per FFT call (memory ~ chunk × B³ × 12 bytes).
_CHUNK = 512
#: Fraction of Nyquist up to which :func:`spectrum_report` summarises the deviation.
REPORT_BAND = 0.8


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_boxes(boxes, what: str = "boxes") -> np.ndarray | Any:
    """(N, B, B, B) array or tensor (one (B, B, B) box gets a leading axis)."""
    shape = tuple(getattr(boxes, "shape", np.shape(boxes)))
    if len(shape) == 3:
        boxes = boxes[None]
        shape = (1, *shape)
    if len(shape) != 4 or not (shape[1] == shape[2] == shape[3]) or shape[1] < 2:
        raise ParameterError(f"{what} must be cubic boxes (N, B, B, B) with B ≥ 2 voxels, got shape {shape}")
    if shape[0] < 1:
        raise ParameterError(f"{what}: no boxes given")
    return boxes


def _check_voxel_size(voxel_size) -> float:
    vs = np.atleast_1d(np.asarray(voxel_size, dtype=np.float64))
    if vs.size not in (1, 3) or not np.all(np.isfinite(vs)) or not np.all(vs > 0):
        raise ParameterError(f"voxel_size must be a positive number of Å, got {voxel_size!r}")
    if not np.allclose(vs, vs[0], rtol=1e-6):
        raise ParameterError(f"the spectra need isotropic voxels, got voxel_size {tuple(vs)} Å (Z, Y, X)")
    return float(vs[0])


def _chunk_tensor(boxes, a: int, b: int):
    import torch

    part = boxes[a:b]
    if isinstance(part, torch.Tensor):
        return part.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))


def _rfft_grid(b: int) -> tuple[np.ndarray, np.ndarray]:
    """|k| (cycles/voxel) of a (B, B, B//2+1) rfftn grid and each coefficient's multiplicity
    (2 for the half-plane columns that stand for their conjugate, else 1)."""
    kz = np.fft.fftfreq(b)
    kx = np.fft.rfftfreq(b)
    k = np.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)
    mult = np.full(kx.shape, 2.0)
    mult[0] = 1.0
    if b % 2 == 0:
        mult[-1] = 1.0
    return k, np.broadcast_to(mult[None, None, :], k.shape)


def _shell_index(b: int) -> np.ndarray:
    """Shell ``round(|k|·B)`` of every rfftn coefficient (corners past Nyquist included)."""
    k, _ = _rfft_grid(b)
    return np.rint(k * b).astype(np.int64)


def _box_power_by_shell(boxes, full: bool = False) -> np.ndarray:
    """(N, S) mean power per shell of every box: shells 0 … B//2 (Nyquist), or with ``full``
    also the corner shells past Nyquist (up to √3·B/2), which the fit of a match needs so that
    the normalisation after the filter sees the whole spectrum."""
    import torch

    boxes = _as_boxes(boxes)
    n, b = int(boxes.shape[0]), int(boxes.shape[1])
    idx = _shell_index(b).ravel()
    _, mult = _rfft_grid(b)
    w = mult.ravel()
    n_shells = int(idx.max()) + 1 if full else b // 2 + 1
    if not full:
        w = w * (idx < n_shells)
        idx = np.minimum(idx, n_shells - 1)
    counts = np.bincount(idx, weights=w, minlength=n_shells)
    # per-box sums via a matrix product (coefficient → shell), faster than N bincounts
    onehot = np.zeros((idx.size, n_shells), dtype=np.float32)
    onehot[np.arange(idx.size), idx] = w
    onehot_t = torch.from_numpy(onehot)
    out = np.empty((n, n_shells), dtype=np.float64)
    for a in range(0, n, _CHUNK):
        x = _chunk_tensor(boxes, a, min(n, a + _CHUNK))
        f = torch.fft.rfftn(x, dim=(-3, -2, -1))
        p = (f.real**2 + f.imag**2).reshape(x.shape[0], -1) / float(b**3)
        out[a : a + x.shape[0]] = (p @ onehot_t).double().numpy()
    return out / np.maximum(counts, 1e-12)[None]


def _freqs(b: int, voxel_size: float, n: int | None = None) -> np.ndarray:
    return np.arange(b // 2 + 1 if n is None else n, dtype=np.float64) / (b * voxel_size)


# --------------------------------------------------------------------------------------------
# spectra and statistics
# --------------------------------------------------------------------------------------------


def radial_power_spectrum(boxes, voxel_size) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a batch of boxes.

    Parameters
    ----------
    boxes
        (N, B, B, B) cubes (Z, Y, X), numpy or torch (or one (B, B, B) box).
    voxel_size
        Å per voxel (isotropic; one number or Z, Y, X).

    Returns
    -------
    (freq, power)
        ``freq``: (B//2+1,) shell frequencies in 1/Å, 0 … Nyquist; ``power``: (B//2+1,) mean
        ``|FFT|²/B³`` per shell, averaged over the boxes (white noise of variance σ² → σ²).
    """
    vs = _check_voxel_size(voxel_size)
    boxes = _as_boxes(boxes)
    return _freqs(int(boxes.shape[1]), vs), _box_power_by_shell(boxes).mean(axis=0)


def box_statistics(boxes) -> dict[str, Any]:
    """Voxel statistics of every box, summarised over the batch (JSON-able).

    Returns ``{"n": N, "mean": S, "sd": S, "skewness": S, "kurtosis": S}`` where each ``S`` is
    ``{"mean", "sd", "median", "p05", "p95"}`` over the boxes of that per-box statistic
    (``kurtosis`` is the excess kurtosis: 0 for a Gaussian).
    """
    boxes = _as_boxes(boxes)
    n = int(boxes.shape[0])
    per: dict[str, list[np.ndarray]] = {"mean": [], "sd": [], "skewness": [], "kurtosis": []}
    for a in range(0, n, _CHUNK):
        x = _chunk_tensor(boxes, a, min(n, a + _CHUNK)).double().reshape(-1, int(boxes.shape[1]) ** 3)
        m = x.mean(dim=1, keepdim=True)
        d = x - m
        var = (d**2).mean(dim=1)
        sd = var.sqrt()
        safe = var.clamp_min(1e-30)
        per["mean"].append(m[:, 0].numpy())
        per["sd"].append(sd.numpy())
        per["skewness"].append(((d**3).mean(dim=1) / safe**1.5).numpy())
        per["kurtosis"].append(((d**4).mean(dim=1) / safe**2 - 3.0).numpy())
    out: dict[str, Any] = {"n": n}
    for name, parts in per.items():
        v = np.concatenate(parts)
        out[name] = {"mean": float(v.mean()), "sd": float(v.std()), "median": float(np.median(v)),
                     "p05": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95))}
    return out


def background_positions(shape, box: int, n: int, picks=None, *, min_distance: float | None = None,
                         seed: int = 0) -> np.ndarray:
    """Up to ``n`` random (Z, Y, X) voxel centres of whole boxes inside ``shape``, each at least
    ``min_distance`` voxels (default ``box / 2``) from every pick; (M, 3) float64, M ≤ n.

    Candidates are drawn with a fixed ``seed`` (10 × n tries), so the result is reproducible.
    """
    shape = np.asarray(shape, dtype=np.int64)
    half = box // 2
    lo = np.full(3, half)
    hi = shape - (box - half)  # inclusive upper bound of a centre whose box fits
    if np.any(hi < lo):
        raise ParameterError(f"a box of {box} voxels does not fit in the tomogram of shape {tuple(shape)} (Z, Y, X)")
    rng = np.random.default_rng(seed)
    cand = rng.integers(lo, hi + 1, size=(10 * n, 3)).astype(np.float64)
    if picks is not None:
        from .extract import _coords

        pts = _coords(picks)
        if len(pts):
            from scipy.spatial import cKDTree

            dist, _ = cKDTree(pts).query(cand, k=1)
            cand = cand[dist >= (box / 2 if min_distance is None else float(min_distance))]
    return cand[:n]


def noise_spectrum(volume, voxel_size=None, picks=None, *, box: int = 32, n: int = 256,
                   min_distance: float | None = None, seed: int = 0, normalise: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Radial power spectrum of background boxes of a tomogram: the target's coloured noise.

    Parameters
    ----------
    volume
        (Z, Y, X) tomogram (numpy/memmap) or a :class:`~napari_cryo_openset.io.Tomogram`
        (whose voxel size is then the default).
    voxel_size
        Å per voxel (isotropic).
    picks
        Optional (M, 3) Z Y X voxel coordinates or a picks table: background boxes are centred
        at least ``min_distance`` voxels (default ``box / 2``) away from all of them.
    box, n
        Box edge (voxels) and number of background boxes (fewer when not enough room is free).
    seed
        Seed of the random positions.
    normalise
        Normalise each box like extraction does (zero mean, unit variance) before the spectrum,
        so that it compares with spectra of extracted or simulated boxes.

    Returns
    -------
    (freq, power)
        As :func:`radial_power_spectrum`. Raises :class:`ParameterError` when no background
        box fits.
    """
    from .extract import extract_subtomograms

    if hasattr(volume, "data") and hasattr(volume, "voxel_size") and not isinstance(volume, np.ndarray):
        voxel_size = volume.voxel_size if voxel_size is None else voxel_size
        volume = volume.data
    if voxel_size is None:
        raise ParameterError("noise_spectrum needs the tomogram's voxel_size (Å)")
    vs = _check_voxel_size(voxel_size)
    if isinstance(box, bool) or int(box) != box or box < 2:
        raise ParameterError(f"box must be a whole number of voxels ≥ 2, got {box!r}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ParameterError(f"n must be a whole number ≥ 1, got {n!r}")
    pos = background_positions(volume.shape, int(box), int(n), picks, min_distance=min_distance, seed=seed)
    if len(pos) == 0:
        raise ParameterError(
            f"no background box of {box} voxels fits at least {box / 2 if min_distance is None else min_distance:g} "
            "voxels away from the picks; use a smaller box or min_distance"
        )
    boxes = extract_subtomograms(volume, pos, int(box), polarity="bright", normalise=normalise)
    return radial_power_spectrum(boxes, vs)


# --------------------------------------------------------------------------------------------
# spectral matching
# --------------------------------------------------------------------------------------------


@dataclass
class SpectralMatch:
    """A per-shell amplitude gain that makes a source set's spectrum follow a target's.

    Attributes
    ----------
    voxel_size
        Å per voxel of both sets (the gain is a function of frequency in 1/Å, so it applies to
        boxes of any size at this voxel size).
    freq
        (S,) shell frequencies in 1/Å, 0 … √3 × Nyquist: the corner shells past Nyquist are
        fitted too (normalising a filtered box sees its whole spectrum).
    gain
        (S,) amplitude gain per shell (after smoothing and bounding); 1 = unchanged.
    source_power, target_power
        (S,) radial power spectra the gain was fitted from.
    smooth, max_gain
        Fit settings: smoothing window in shells, bound ``1/max_gain ≤ gain ≤ max_gain``.
    """

    voxel_size: float
    freq: np.ndarray
    gain: np.ndarray
    source_power: np.ndarray
    target_power: np.ndarray
    smooth: int = 1
    max_gain: float = 10.0
    meta: dict = field(default_factory=dict)

    def gain_at(self, freq_per_A) -> np.ndarray:
        """The gain at any frequencies (1/Å), linear between shells, constant past the last."""
        return np.interp(np.asarray(freq_per_A, dtype=np.float64), self.freq, self.gain)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (arrays become lists)."""
        out = asdict(self)
        for k in ("freq", "gain", "source_power", "target_power"):
            out[k] = [float(v) for v in np.asarray(out[k])]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpectralMatch:
        d = dict(data)
        for k in ("freq", "gain", "source_power", "target_power"):
            d[k] = np.asarray(d[k], dtype=np.float64)
        return cls(**d)


def _smooth_log(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average of ``log(values)`` over ``window`` shells (odd; edges use fewer)."""
    if window <= 1 or len(values) < 3:
        return values
    half = window // 2
    logv = np.log(values)
    c = np.concatenate([[0.0], np.cumsum(logv)])
    i = np.arange(len(values))
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, len(values))
    return np.exp((c[hi] - c[lo]) / (hi - lo))


def fit_spectral_match(source_boxes, target_boxes, voxel_size, *, smooth: int = 1,
                       max_gain: float = 10.0, iterations: int = 3, max_boxes: int = 1000) -> SpectralMatch:
    """Fit the per-shell amplitude gain ``sqrt(P_target / P_source)`` (refined, bounded).

    Parameters
    ----------
    source_boxes, target_boxes
        (N, B, B, B) and (M, B', B', B') boxes at the same voxel size (e.g. simulated and
        extracted subtomograms, both normalised). Box sizes may differ: the target spectrum is
        interpolated onto the source shells (in 1/Å).
    voxel_size
        Å per voxel of both.
    smooth
        Odd window (shells) of a moving average of the final log gain (1 = none, the default:
        the spectra are averages over many boxes already; use 3 for a few noisy boxes). The DC
        shell is left out (normalised boxes have no power there; its gain is 1).
    max_gain
        Bound of the gain: ``1/max_gain ≤ gain ≤ max_gain`` (> 1).
    iterations
        Refinements of the gain on the matched source set (0 = the one-step ratio). Every box
        is normalised again after the filter, which changes the mean spectrum non-linearly
        (boxes dominated by low frequencies are scaled down more); each refinement multiplies
        the gain by ``sqrt(P_target / P_matched)`` (a fixed-point iteration that converges
        fast: ~10× smaller deviation per step on the real HIV tomogram), at the cost of one
        :func:`apply_spectral_match` of (up to ``max_boxes``) source boxes. ``meta`` records the largest
        |deviation| (0 < f ≤ 0.8 Nyquist) before each refinement.
    max_boxes
        The refinements use at most this many source boxes (evenly spaced), so that the fit
        costs the same for very large sets; the first spectrum uses all.

    Returns
    -------
    SpectralMatch
    """
    vs = _check_voxel_size(voxel_size)
    if isinstance(smooth, bool) or int(smooth) != smooth or smooth < 1 or smooth % 2 == 0:
        raise ParameterError(f"smooth must be an odd whole number of shells ≥ 1, got {smooth!r}")
    if not (isinstance(max_gain, (int, float)) and math.isfinite(max_gain) and max_gain > 1):
        raise ParameterError(f"max_gain must be a finite number > 1, got {max_gain!r}")
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ParameterError(f"iterations must be a whole number ≥ 0, got {iterations!r}")
    if isinstance(max_boxes, bool) or int(max_boxes) != max_boxes or max_boxes < 1:
        raise ParameterError(f"max_boxes must be a whole number ≥ 1, got {max_boxes!r}")
    source_boxes = _as_boxes(source_boxes, "source_boxes")
    target_boxes = _as_boxes(target_boxes, "target_boxes")
    freq, ps = _full_spectrum(source_boxes, vs)
    ft, pt = _full_spectrum(target_boxes, vs)
    if len(ft) != len(freq) or not np.allclose(ft, freq):
        pt = np.interp(freq, ft, pt)
    match = SpectralMatch(voxel_size=vs, freq=freq, gain=np.ones_like(ps), source_power=ps, target_power=pt,
                          smooth=int(smooth), max_gain=float(max_gain))
    fit_boxes = source_boxes
    if int(source_boxes.shape[0]) > max_boxes:  # evenly spaced subset for the refinements
        fit_boxes = source_boxes[np.linspace(0, int(source_boxes.shape[0]) - 1, int(max_boxes)).astype(np.int64)]
    current = ps
    history = []
    for _ in range(int(iterations) + 1):
        step = np.sqrt(_ratio(pt, current))
        match.gain = np.clip(match.gain * step, 1.0 / max_gain, max_gain)
        match.gain[0] = 1.0
        if len(history) == int(iterations):
            break
        # per-box normalisation after the filter is not linear in the spectrum: refine the gain
        # on the matched set (a fixed-point iteration; each step is one apply + one spectrum)
        _, current = _full_spectrum(apply_spectral_match(fit_boxes, match), vs)
        history.append(_band_summary(_ratio(current, pt) - 1.0, freq, 1.0 / (2.0 * vs))["max_abs"])
    if smooth > 1:
        match.gain[1:] = _smooth_log(match.gain[1:], int(smooth))
    match.meta = {"iterations": int(iterations), "fit_boxes": int(fit_boxes.shape[0]),
                  "max_abs_deviation_per_iteration": history}
    return match


def _full_spectrum(boxes, vs: float) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`radial_power_spectrum`, with the corner shells past Nyquist."""
    p = _box_power_by_shell(boxes, full=True).mean(axis=0)
    return _freqs(int(boxes.shape[1]), vs, len(p)), p


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    tiny = 1e-30
    return np.maximum(a, tiny) / np.maximum(b, tiny)


def apply_spectral_match(boxes, match: SpectralMatch, *, voxel_size=None, normalise: bool = True):
    """Filter every box by the match's radial gain in Fourier space, then normalise it again.

    Parameters
    ----------
    boxes
        (N, B, B, B) boxes (numpy or torch; float16 is fine), at ``match.voxel_size``.
    match
        From :func:`fit_spectral_match`.
    voxel_size
        Optional Å per voxel of ``boxes``, checked against the match's.
    normalise
        Zero mean and unit variance per box afterwards, the sign kept
        (:func:`~napari_cryo_openset.extract.normalise_subtomograms` with ``bright``), as every
        box fed to a network. False: the filtered values.

    Returns
    -------
    numpy.ndarray
        float32 (N, B, B, B) (a torch tensor of float32 if a tensor was given); a single
        (B, B, B) box gives a single box.
    """
    import torch

    from .extract import normalise_subtomograms

    if not isinstance(match, SpectralMatch):
        raise ParameterError(f"match must be a SpectralMatch, got {type(match).__name__}")
    if voxel_size is not None and not math.isclose(_check_voxel_size(voxel_size), match.voxel_size, rel_tol=1e-6):
        raise ParameterError(
            f"the boxes are at {_check_voxel_size(voxel_size):g} Å/voxel but the spectral match was fitted at "
            f"{match.voxel_size:g} Å/voxel"
        )
    single = len(getattr(boxes, "shape", ())) == 3
    is_tensor = isinstance(boxes, torch.Tensor)
    boxes = _as_boxes(boxes)
    n, b = int(boxes.shape[0]), int(boxes.shape[1])
    # gain per coefficient: its shell's (shells past Nyquist included), in 1/Å
    g = torch.from_numpy(match.gain_at(_shell_index(b) / (b * match.voxel_size)).astype(np.float32))
    out = np.empty((n, b, b, b), dtype=np.float32)
    for a in range(0, n, _CHUNK):
        x = _chunk_tensor(boxes, a, min(n, a + _CHUNK))
        y = torch.fft.irfftn(torch.fft.rfftn(x, dim=(-3, -2, -1)) * g, s=(b, b, b), dim=(-3, -2, -1)).numpy()
        out[a : a + x.shape[0]] = normalise_subtomograms(y, "bright") if normalise else y
    if single:
        out = out[0]
    return torch.from_numpy(out) if is_tensor else out


# --------------------------------------------------------------------------------------------
# report and plot
# --------------------------------------------------------------------------------------------


def _band_summary(dev: np.ndarray, freq: np.ndarray, nyquist: float) -> dict[str, float]:
    sel = (freq > 0) & (freq <= REPORT_BAND * nyquist + 1e-12)
    a = np.abs(dev[sel])
    return {"mean_abs": float(a.mean()) if a.size else 0.0, "max_abs": float(a.max()) if a.size else 0.0}


def spectrum_report(source_before, source_after, target, voxel_size, *,
                    match: SpectralMatch | None = None) -> dict[str, Any]:
    """How far a source set's spectrum is from a target's, before and after matching.

    Parameters
    ----------
    source_before, source_after, target
        (N, B, B, B) boxes: the simulated set, the same set after :func:`apply_spectral_match`
        (or None), and the target (e.g. extracted) boxes, all at ``voxel_size`` and of one box
        size.
    voxel_size
        Å per voxel.
    match
        Optional: the :class:`SpectralMatch` used, stored as ``match`` (:meth:`SpectralMatch.to_dict`).

    Returns
    -------
    dict (JSON-able)
        ``voxel_size``, ``box``, ``freq_per_A`` (shells 0 … Nyquist), ``power`` (``source_before``,
        ``source_after``, ``target``), ``relative_deviation`` (``P_source/P_target − 1`` per
        shell, ``before``/``after``), ``summary`` (mean and max |deviation| over shells
        0 < f ≤ 0.8 Nyquist, ``band_per_A``), ``statistics`` (:func:`box_statistics` of each set).
    """
    vs = _check_voxel_size(voxel_size)
    sets = {"source_before": source_before, "source_after": source_after, "target": target}
    spectra: dict[str, np.ndarray] = {}
    freq = None
    for name, boxes in sets.items():
        if boxes is None:
            continue
        f, p = radial_power_spectrum(boxes, vs)
        if freq is not None and (len(f) != len(freq)):
            raise ParameterError("spectrum_report needs boxes of one size in all sets")
        freq, spectra[name] = f, p
    if "target" not in spectra or "source_before" not in spectra:
        raise ParameterError("spectrum_report needs source_before and target boxes")
    nyq = 1.0 / (2.0 * vs)
    pt = np.maximum(spectra["target"], 1e-30)
    dev = {k.replace("source_", ""): spectra[k] / pt - 1.0 for k in ("source_before", "source_after") if k in spectra}
    for d in dev.values():
        d[0] = 0.0  # DC: normalised boxes have none
    return {
        "voxel_size": vs,
        "box": int(_as_boxes(target).shape[1]),
        "freq_per_A": [float(v) for v in freq],
        "nyquist_per_A": nyq,
        "power": {k: [float(v) for v in p] for k, p in spectra.items()},
        "relative_deviation": {k: [float(v) for v in d] for k, d in dev.items()},
        "summary": {"band_per_A": [0.0, REPORT_BAND * nyq], **{k: _band_summary(d, freq, nyq) for k, d in dev.items()}},
        "statistics": {k: box_statistics(b) for k, b in sets.items() if b is not None},
        **({"match": match.to_dict()} if match is not None else {}),
    }


def plot_spectra(report: dict[str, Any], path, title: str = "") -> Path:
    """Save the spectra of a :func:`spectrum_report` as a PNG, atomically (matplotlib Agg).

    Top: power per shell (log scale) of the source before/after matching and of the target;
    bottom: relative deviation from the target per shell, the ±10 % band shaded.
    """
    from matplotlib.figure import Figure

    from .io import atomic_path

    freq = np.asarray(report["freq_per_A"], dtype=float)
    fig = Figure(figsize=(6.4, 6.0), dpi=120)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    style = {"source_before": ("simulated", "#1f77b4", "--"), "source_after": ("simulated, matched", "#1f77b4", "-"),
             "target": ("target", "#d62728", "-")}
    for name, p in report["power"].items():
        label, color, ls = style.get(name, (name, None, "-"))
        ax1.semilogy(freq[1:], np.maximum(np.asarray(p, dtype=float)[1:], 1e-30), ls, color=color, label=label)
    ax1.set_ylabel("power per shell")
    ax1.legend(fontsize=8, frameon=False)
    nyq = float(report.get("nyquist_per_A", freq[-1]))
    ax2.axhspan(-0.1, 0.1, color="#dddddd", zorder=0)
    ax2.axhline(0.0, color="#888888", lw=0.8)
    for name, d in report["relative_deviation"].items():
        color, ls = ("#1f77b4", "--") if name == "before" else ("#1f77b4", "-")
        ax2.plot(freq[1:], np.asarray(d, dtype=float)[1:], ls, color=color, label=f"{name} matching")
    ax2.axvline(REPORT_BAND * nyq, color="#888888", lw=0.8, ls=":")
    ax2.set_xlabel("spatial frequency (1/Å)")
    ax2.set_ylabel("P_sim / P_target − 1")
    ax2.legend(fontsize=8, frameon=False)
    if title:
        ax1.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
