"""DoG particle picking: the generator that the CLI and the Pick widget drive.

Pipeline (per tile, see :mod:`.tiling`): read the window (memory-mapped volumes are touched only
there) → FFT DoG band-pass sampled every ``bin`` voxels (:mod:`.dog`) → local maxima and
sub-voxel refinement (:mod:`.peaks`) → border and mask. Then, once for the whole volume:
polarity guess (if ``auto``), greedy min-distance suppression on all peaks, AITom's m and M,
the floor (score > 0), the threshold (:mod:`.thresholds`).

Limits: the robust threshold assumes particles are a minority of the voxels; in very crowded
volumes (or particles as large as the volume is thick) the MAD grows with the signal and the
default k = 4 can find nothing — the result's message says so; use ``topn``, ``aitom`` or a
lower ``k_mad``/explicit threshold (the candidates are all kept, so a slider can do it).

Scores
    ``score`` = the DoG response ``G(σ1)*v − G(σ2)*v`` of the volume standardised to zero mean
    and unit variance (mean and SD of the finite voxels, from a deterministic ~1 M-voxel sample
    for large volumes), multiplied by −1 for dark particles: **positive = more particle-like**,
    comparable between tomograms.

Diameter ranges
    With ``max_diameter`` the run is multi-scale (:mod:`.multiscale`): scores are then robust
    z-scores of each scale's response (comparable across scales) and every pick carries the
    diameter of its scale. One diameter takes the code path below, unchanged.

Candidates and the live threshold
    :class:`PickResult` keeps every candidate (local maximum with a positive score, after the
    min-distance step) sorted best-first, and the threshold actually used. Greedy suppression
    only ever removes a candidate in favour of a better one, so the picks for any other
    threshold T are exactly ``candidates[score >= T]`` — a widget slider calls
    :meth:`PickResult.select` without filtering again.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ..picks import make_picks
from ..progress import Progress, run_to_completion
from .dog import bandpass_decimated, read_padded
from .params import PickingGeometry, PickingParams, derive_geometry
from .peaks import cube_maxima, local_maxima, order_best_first, refine, suppress
from .polarity import guess_polarity
from .thresholds import aitom_threshold, robust_stats, robust_threshold, select, topn_threshold
from .tiling import plan_tiles

#: Volumes up to this many voxels get exact statistics; larger ones a ~1 M-voxel sample.
_EXACT_STATS_VOXELS = 8_000_000
#: Size of the regular response sample used for the robust threshold.
_RESPONSE_SAMPLE = 2_000_000


@dataclass
class PickResult:
    """The outcome of a picking run.

    Attributes
    ----------
    picks
        Picks table (:mod:`napari_cryo_openset.picks`): Z Y X in voxels (sub-voxel), ``score``,
        ``diameter`` (Å: the scale the pick was found at; the run's diameter for one scale),
        best first.
    candidates
        Every candidate (same table layout, best first); ``picks`` is its first rows.
    threshold
        Score threshold used (picks have score ≥ threshold).
    threshold_method
        ``aitom`` / ``robust`` / ``topn`` / ``value``.
    polarity
        Polarity used (``dark`` or ``bright``).
    polarity_guessed
        True when ``params.polarity`` was ``auto``; ``polarity_evidence`` says why.
    sigma1, sigma2
        Gaussian σ in voxels (Z, Y, X).
    geometry
        All derived voxel quantities (min distance Å, border voxels, bin, halo, ...).
    stats
        ``response_median``, ``response_sigma`` (1.4826·MAD), ``peak_min``/``peak_max`` (m, M of
        the AITom rule), ``n_local_maxima``, ``n_candidates``, ``n_tiles``, ``nonfinite``.
    timing
        Seconds per stage and ``total``.
    message
        One line for the user (always set; explains an empty result).
    """

    picks: pd.DataFrame
    candidates: pd.DataFrame
    threshold: float
    threshold_method: str
    polarity: str
    polarity_guessed: bool
    polarity_evidence: dict
    params: PickingParams
    voxel_size: tuple[float, float, float]
    shape: tuple[int, int, int]
    sigma1: tuple[float, float, float]
    sigma2: tuple[float, float, float]
    geometry: PickingGeometry
    stats: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    message: str = ""

    def select(self, threshold: float | None = None, max_picks: int | None = None) -> pd.DataFrame:
        """Picks for another threshold and/or cap, from the candidates (no refiltering).

        ``threshold`` None keeps the run's threshold; ``max_picks`` None keeps none (no cap).
        """
        t = self.threshold if threshold is None else float(threshold)
        n = select(self.candidates["score"].to_numpy(), t, max_picks)
        return self.candidates.iloc[:n].reset_index(drop=True)

    def summary(self) -> str:
        """One line: number of picks, threshold, polarity, time."""
        pol = f"{self.polarity} (guessed)" if self.polarity_guessed else self.polarity
        scales = self.stats.get("scales")
        size = (
            f"{len(scales)} scales {scales[0]['diameter']:.0f}–{scales[-1]['diameter']:.0f} Å"
            if scales else f"σ1 {_fmt(self.sigma1)} voxels"
        )
        return (
            f"{len(self.picks)} picks (of {len(self.candidates)} candidates), threshold "
            f"{self.threshold:.4g} ({self.threshold_method}), polarity {pol}, "
            f"{size}, {self.stats.get('n_tiles', 1)} tile(s), "
            f"{self.timing.get('total', float('nan')):.1f} s"
        )

    def to_dict(self) -> dict:
        """JSON-able report (without the tables)."""
        return {
            "n_picks": int(len(self.picks)),
            "n_candidates": int(len(self.candidates)),
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "polarity": self.polarity,
            "polarity_guessed": self.polarity_guessed,
            "polarity_evidence": self.polarity_evidence,
            "params": self.params.to_dict(),
            "voxel_size": list(self.voxel_size),
            "shape": list(self.shape),
            "geometry": self.geometry.to_dict(),
            "stats": self.stats,
            "timing": self.timing,
            "message": self.message,
        }


def _fmt(values) -> str:
    vals = [f"{v:.3g}" for v in values]
    return vals[0] if len(set(vals)) == 1 else "×".join(vals)


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def check_volume(volume) -> np.ndarray:
    """The (Z, Y, X) array to pick in; :class:`ParameterError` for anything else."""
    if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
        volume = np.asarray(volume)
    if volume.ndim == 2 or (volume.ndim == 3 and min(volume.shape) < 2):
        raise ParameterError(
            f"the volume is a 2-D image (shape {tuple(volume.shape)}); DoG picking needs a 3-D "
            "tomogram (Z, Y, X) with at least 2 voxels along every axis"
        )
    if volume.ndim != 3:
        raise ParameterError(
            f"the volume has {volume.ndim} dimensions (shape {tuple(volume.shape)}); expected a "
            "3-D tomogram (Z, Y, X)"
        )
    if np.dtype(volume.dtype).kind not in "fiub":
        raise ParameterError(f"the volume must be numeric, got dtype {volume.dtype}")
    return volume


def check_mask(mask, shape: tuple[int, ...]):
    """``mask`` (any array, nonzero = allowed) if its shape is ``shape``, else ParameterError."""
    if mask is None:
        return None
    if not hasattr(mask, "shape"):
        mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ParameterError(
            f"the mask has shape {tuple(mask.shape)} but the tomogram has shape {tuple(shape)} "
            "(Z, Y, X); the mask must be a boolean volume of the same shape"
        )
    return mask


def volume_stats(volume: np.ndarray) -> tuple[float, float]:
    """(mean, SD) of the finite voxels: exact for small volumes, from a sample for large ones.

    Raises :class:`ParameterError` for a volume without finite voxels or a constant one (both
    confirmed by a full pass for large volumes before refusing).
    """
    from ..io.tomogram import sample_voxels

    if volume.size <= _EXACT_STATS_VOXELS:
        return _exact_stats(volume)
    sample = sample_voxels(volume)
    finite = sample[np.isfinite(sample)]
    if finite.size < 2 or not float(finite.std()) > 0:
        return _exact_stats(volume)  # confirm (or find the signal the sample missed)
    return float(finite.mean(dtype=np.float64)), float(finite.std(dtype=np.float64))


def _exact_stats(volume: np.ndarray) -> tuple[float, float]:
    n, total, total_sq = 0, 0.0, 0.0
    lo, hi = math.inf, -math.inf
    step = max(1, int(_EXACT_STATS_VOXELS // max(1, volume.shape[1] * volume.shape[2])))
    for z in range(0, volume.shape[0], step):
        block = np.asarray(volume[z : z + step], dtype=np.float64)
        block = block[np.isfinite(block)]
        if block.size:
            n += block.size
            total += float(block.sum())
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    if n == 0:
        raise ParameterError("the volume has no finite voxels (all NaN or infinite); nothing to pick")
    if hi == lo:
        raise ParameterError(
            f"the volume is constant (every finite voxel is {lo:g}); there is nothing to pick"
        )
    mean = total / n
    for z in range(0, volume.shape[0], step):
        block = np.asarray(volume[z : z + step], dtype=np.float64)
        block = block[np.isfinite(block)] - mean
        total_sq += float(np.dot(block, block))
    return mean, math.sqrt(total_sq / n)


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


def pick_particles(
    volume,
    voxel_size=None,
    params: PickingParams | None = None,
    mask=None,
) -> Generator[Progress, None, PickResult]:
    """Pick particles by DoG; a generator yielding :class:`~napari_cryo_openset.progress.Progress`.

    Parameters
    ----------
    volume
        (Z, Y, X) array (numpy or memory-mapped; never loaded whole) or a
        :class:`~napari_cryo_openset.io.Tomogram` (then ``voxel_size`` may be None).
    voxel_size
        Å, one number or (Z, Y, X).
    params
        :class:`PickingParams` (``diameter`` is required).
    mask
        Optional (Z, Y, X) array of the volume's shape; picks only where it is nonzero.

    Yields one event per stage and per tile; returns a :class:`PickResult` (use
    :func:`pick` to run it to the end). NaN/inf voxels are replaced by the mean of the finite
    voxels, with a warning. Bad input raises :class:`ParameterError`.
    """
    t_total = time.perf_counter()
    timing: dict[str, float] = {}
    if params is None:
        raise ParameterError("picking needs PickingParams (at least the particle diameter in Å)")
    if hasattr(volume, "data") and hasattr(volume, "voxel_size") and not isinstance(volume, np.ndarray):
        voxel_size = volume.voxel_size if voxel_size is None else voxel_size
        volume = volume.data
    if voxel_size is None:
        raise ParameterError("voxel_size (Å) is required to convert the diameter to voxels")
    params.validate()
    volume = check_volume(volume)
    shape = tuple(int(s) for s in volume.shape)
    geo = derive_geometry(params, voxel_size, shape)
    mask = check_mask(mask, shape)

    yield Progress("statistics", 0, 1, "volume statistics")
    t0 = time.perf_counter()
    mean, sd = volume_stats(volume)
    timing["statistics"] = time.perf_counter() - t0
    yield Progress("statistics", 1, 1, f"mean {mean:.4g}, SD {sd:.4g}")

    signs = (1.0, -1.0) if params.polarity == "auto" else ((1.0,) if params.polarity == "bright" else (-1.0,))
    floor = 0.0
    if params.threshold_method == "value":
        floor = min(0.0, float(params.threshold))
    if params.is_range:
        from .multiscale import pick_scales

        result = yield from pick_scales(volume, voxel_size, params, mask, shape, mean, sd, signs, floor, timing)
        timing["total"] = time.perf_counter() - t_total
        return result
    tiles = plan_tiles(shape, geo, params.memory_budget_mb * 1024**2)
    coarse_total = math.prod(math.ceil(shape[a] / geo.bin[a]) for a in range(3))
    stride = max(1, math.ceil((coarse_total / _RESPONSE_SAMPLE) ** (1.0 / 3.0)))

    aitom = params.threshold_method == "aitom"
    scan = yield from _scan(volume, geo, tiles, mean, sd, signs, mask, shape, stride, aitom)
    found, n_maxima, samples, nonfinite = scan["found"], scan["n_maxima"], scan["samples"], scan["nonfinite"]
    for key in ("read", "bandpass", "peaks"):
        timing[key] = scan["timing"][key]

    sample = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    med, rsigma = robust_stats(sample)
    candidates = {
        s: (
            np.concatenate(found[s]["coords"]) if found[s]["coords"] else np.zeros((0, 3)),
            np.concatenate(found[s]["scores"]) if found[s]["scores"] else np.zeros(0),
        )
        for s in signs
    }
    cube = {s: np.concatenate(found[s]["cube"]) if found[s]["cube"] else None for s in signs}

    # Polarity.
    evidence: dict = {}
    if params.polarity == "auto":
        polarity, evidence = guess_polarity(
            sample,
            candidates[1.0][1][candidates[1.0][1] > 0],
            candidates[-1.0][1][candidates[-1.0][1] > 0],
            rsigma,
        )
        sign = 1.0 if polarity == "bright" else -1.0
    else:
        polarity, sign = params.polarity, signs[0]
    med, rsigma = (med, rsigma) if sign > 0 else (-med, rsigma)

    # Min-distance suppression on all candidates at once (exact; tiles do not matter).
    yield Progress("suppress", 0, 1, "min-distance suppression")
    t0 = time.perf_counter()
    coords, scores = candidates[sign]
    order = order_best_first(coords, scores)
    coords, scores = coords[order], scores[order]
    keep = suppress(coords * np.asarray(geo.voxel_size), geo.min_distance)
    coords, scores = coords[keep], scores[keep]
    # AITom's m and M: weakest and strongest peak; for m, the peaks that are maxima of their
    # whole min-distance cube (they always survive the suppression), see thresholds.py.
    n_max = len(scores)
    m, M = (float(scores.min()), float(scores.max())) if n_max else (math.nan, math.nan)
    if cube[sign] is not None and n_max:
        in_cube = cube[sign][order][keep]
        if in_cube.any():
            m = float(scores[in_cube].min())
    above = scores > floor  # candidates kept for thresholds and the live slider
    coords, scores = coords[above], scores[above]
    timing["suppress"] = time.perf_counter() - t0

    # Threshold.
    method = params.threshold_method
    if method == "aitom":
        threshold = aitom_threshold(m, M, params.aitom_level) if n_max else floor
    elif method == "robust":
        threshold = robust_threshold(med, rsigma, params.k_mad)
    elif method == "topn":
        threshold = topn_threshold(scores, int(params.max_picks))
    else:
        threshold = float(params.threshold)
    if threshold < floor:  # candidates exist only above the floor: a lower threshold = all of them
        threshold = floor
    cand_table = make_picks(coords, scores, diameter=np.full(len(scores), float(params.diameter)))
    n_picks = select(scores, threshold, params.max_picks)
    picks = cand_table.iloc[:n_picks].reset_index(drop=True)
    yield Progress("suppress", 1, 1, f"{n_picks} picks")

    if n_picks == 0:
        message = (
            f"no picks: none of the {len(scores)} candidate peaks reaches the threshold "
            f"{threshold:.4g} ({method}); lower the threshold, check the diameter "
            f"({params.diameter:g} Å) and the polarity ({polarity})"
        )
        if mask is not None and n_max == 0:
            message = "no picks: the mask leaves no allowed peak (check the mask)"
    else:
        message = f"{n_picks} picks above threshold {threshold:.4g} ({method}), polarity {polarity}"
        if method == "topn" and n_picks < int(params.max_picks):
            message += f"; only {n_picks} candidates exist (asked for {int(params.max_picks)})"
    timing["total"] = time.perf_counter() - t_total
    return PickResult(
        picks=picks,
        candidates=cand_table,
        threshold=float(threshold),
        threshold_method=method,
        polarity=polarity,
        polarity_guessed=params.polarity == "auto",
        polarity_evidence=evidence,
        params=params,
        voxel_size=geo.voxel_size,
        shape=shape,
        sigma1=geo.sigma1,
        sigma2=geo.sigma2,
        geometry=geo,
        stats={
            "volume_mean": mean,
            "volume_sd": sd,
            "response_median": med,
            "response_sigma": rsigma,
            "peak_min": m if n_max else None,
            "peak_max": M if n_max else None,
            "n_local_maxima": n_maxima[sign],
            "n_peaks": n_max,
            "n_candidates": int(len(scores)),
            "floor": floor,
            "n_tiles": len(tiles),
            "nonfinite": int(nonfinite),
            "response_sample": int(sample.size),
        },
        timing=timing,
        message=message,
    )


def _scan(volume, geo: PickingGeometry, tiles, mean: float, sd: float, signs, mask, shape, stride: int,
          aitom: bool, label: str = "", step0: int = 0, total: int | None = None, warn: bool = True):
    """Band-pass every tile and collect its local maxima (generator yielding Progress).

    Returns a dict: ``found[sign]`` (lists of coords, heights, cube flags), ``n_maxima[sign]``,
    ``samples`` (response samples, list), ``nonfinite`` and ``timing`` (read, bandpass, peaks).
    """
    b = np.asarray(geo.bin)
    border = np.asarray(geo.border)
    upper = np.asarray(shape, dtype=np.float64) - 1.0 - border
    timing: dict[str, float] = {}
    found: dict[float, dict[str, list]] = {s: {"coords": [], "scores": [], "cube": []} for s in signs}
    n_maxima = {s: 0 for s in signs}
    samples: list[np.ndarray] = []
    nonfinite = 0
    timing.update(read=0.0, bandpass=0.0, peaks=0.0)
    total = len(tiles) if total is None else total
    yield Progress("filter", step0, total, f"{label}{len(tiles)} tile(s)")
    for ti, tile in enumerate(tiles):
        t0 = time.perf_counter()
        block, bad = read_padded(volume, tile.window_start, tile.window_shape, mean)
        if bad and not nonfinite and warn:
            warnings.warn(
                f"the volume has NaN/inf voxels; they are replaced by the mean of the finite "
                f"voxels ({mean:.4g})",
                UserWarning,
                stacklevel=2,
            )
        nonfinite += bad
        t1 = time.perf_counter()
        resp = bandpass_decimated(block, geo.sigma1, geo.sigma2, geo.bin, geo.workers)
        del block
        resp *= np.float32(1.0 / sd)
        t2 = time.perf_counter()
        w0 = np.asarray(tile.window_start)
        core = tuple(
            slice(
                (tile.core_start[a] - tile.window_start[a]) // geo.bin[a],
                -(-(tile.core_stop[a] - tile.window_start[a]) // geo.bin[a]),
            )
            for a in range(3)
        )
        samples.append(_response_sample(resp, core, tile.window_start, geo.bin, stride, mask))
        for sign in signs:
            r = resp if sign > 0 else -resp
            idx, _ = local_maxima(r, core, geo.half_width)
            offset, height = refine(r, idx)
            coords = w0 + b * (idx + offset)
            valid = np.all((coords >= border) & (coords <= upper), axis=1)
            if mask is not None and valid.any():
                valid &= _mask_at(mask, coords, shape)
            n_maxima[sign] += int(np.count_nonzero(valid))
            found[sign]["coords"].append(coords[valid])
            found[sign]["scores"].append(height[valid])
            if aitom:
                found[sign]["cube"].append(cube_maxima(r, idx[valid], geo.aitom_half_width))
        del resp
        t3 = time.perf_counter()
        timing["read"] += t1 - t0
        timing["bandpass"] += t2 - t1
        timing["peaks"] += t3 - t2
        yield Progress("filter", step0 + ti + 1, total, f"{label}tile {ti + 1}/{len(tiles)}")

    return {"found": found, "n_maxima": n_maxima, "samples": samples, "nonfinite": nonfinite, "timing": timing}


def pick(volume, voxel_size=None, params: PickingParams | None = None, mask=None, **kwargs) -> PickResult:
    """Run :func:`pick_particles` to the end and return its :class:`PickResult`.

    Keyword arguments other than ``params`` build a :class:`PickingParams`, e.g.
    ``pick(vol, 10.0, diameter=120, polarity='auto')``.
    """
    if params is None:
        params = PickingParams(**kwargs)
    elif kwargs:
        from dataclasses import replace

        params = replace(params, **kwargs)
    return run_to_completion(pick_particles(volume, voxel_size, params, mask=mask))


def _mask_at(mask, coords: np.ndarray, shape) -> np.ndarray:
    """Mask value (nonzero → True) at the voxel nearest each coordinate."""
    iz = np.clip(np.floor(coords + 0.5).astype(np.int64), 0, np.asarray(shape) - 1)
    return np.asarray(mask[iz[:, 0], iz[:, 1], iz[:, 2]]).astype(bool)


def _response_sample(resp, core, window_start, bin, stride, mask) -> np.ndarray:
    """Response at the global lattice points (voxel ≡ 0 mod bin·stride) inside the core."""
    sl = []
    for a in range(3):
        g0 = window_start[a] // bin[a] + core[a].start  # global lattice index of core start
        first = core[a].start + (-g0) % stride
        sl.append(slice(first, core[a].stop, stride))
    values = resp[tuple(sl)]
    if mask is not None and values.size:
        grids = np.meshgrid(
            *[
                window_start[a] + bin[a] * np.arange(sl[a].start, sl[a].stop, stride)
                for a in range(3)
            ],
            indexing="ij",
        )
        coords = np.stack([g.ravel() for g in grids], axis=1).astype(np.float64)
        inside = np.all((coords >= 0) & (coords <= np.asarray(mask.shape) - 1), axis=1)
        allowed = np.zeros(len(coords), dtype=bool)
        allowed[inside] = _mask_at(mask, coords[inside], mask.shape)
        return values.ravel()[allowed].copy()
    return values.ravel().copy()
