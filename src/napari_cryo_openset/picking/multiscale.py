"""Multi-scale DoG picking for a diameter range (``PickingParams.max_diameter``).

Scale space: ``n`` diameters d_1 < … < d_n spaced geometrically between ``diameter`` and
``max_diameter`` (:meth:`PickingParams.scale_diameters`). Each scale is the single-scale picker's
band-pass (σ1 = d_i / 2 voxels, σ2 = K σ1) on its own decimated grid and tiles, so a range costs
about the sum of its scales' band-passes (small scales, finer grids, cost most).

Normalisation: each scale's response is turned into a robust z-score, (r − median_i) /
(1.4826 · MAD_i), with median and MAD from that scale's regular response sample. The raw DoG
amplitude of a matched particle and of noise both change with σ; after the z-score, "k noise
SDs" means the same at every scale, so one threshold (robust: ``k_mad``) applies to the pooled
candidates and per-scale and joint robust rules coincide (median 0, SD 1 at every scale).
Measured against the alternative — the raw (γ = 2-normalised, since DoG ≈ (K − 1) σ² ∇²G)
response with one robust threshold on the pooled sample of all scales — on the crowded
170–345 Å scenes of ``benchmarks/bench_picking.py --mixed-only`` (seeds 0, 1): z-scores F1
0.91 / 0.91, pooled raw 0.41 / 0.42 (small scales' noise floods the picks); on the
80 + 200 Å blob phantom of the tests precision 1.00 vs 0.57.

Maxima across position and scale: local maxima in position per scale (cube of that scale's
min-distance), then greedy non-maximum suppression over all scales at once, best z first: two
candidates overlap when their spheres do — closer than :data:`OVERLAP` (1.0) × the mean of
their two diameters (or the explicit ``min_distance``): a particle seen at several neighbouring
scales keeps its strongest scale, which sets its ``diameter``; a second response on the same
particle (a lobe of a large or elongated complex, a small scale inside a large one) is
suppressed, while two particles that touch (centres (d_i + d_j)/2 apart) are both kept. Border: each scale drops picks within its own radius of a face
(unless ``border`` is given). Candidates stay sorted best-first, so ``PickResult.select`` (the
live slider) works on the z-score as for one scale.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from ..picks import make_picks
from ..progress import Progress
from .params import derive_geometry
from .peaks import order_best_first, suppress, suppress_sized
from .polarity import guess_polarity
from .thresholds import aitom_threshold, robust_stats, select, topn_threshold
from .tiling import plan_tiles

#: σ1 of a scale = this × its radius: a uniform sphere of radius R gives its largest normalised
#: response at σ = R/√3 (Lindeberg's scale selection for a 3-D ball; measured here with the
#: z-scored DoG), so the scale that wins is the particle's size.
SIGMA_FACTOR = 1.0 / math.sqrt(3.0)
#: Scale selection: the suppression ranks overlapping candidates by z · (d / d_min)^SCALE_BIAS
#: (scores and threshold stay plain z-scores). 0 = plain z-scores, exact for spheres with
#: σ = R/√3. Measured (benchmarks/bench_picking.py --mixed-only, seeds 0–2, crowded 170–345 Å
#: templates with CTF): 0.5 lowers the median diameter error of templates from ~16 % to ~11 %
#: (F1 +≤ 0.01) but overestimates uniform spheres by 30–45 % (vs ≤ 20 % at 0), so 0 is kept.
SCALE_BIAS = 0.0
#: Two picks overlap when closer than this × the mean of their diameters: 1.0 = their spheres
#: overlap. Measured on the crowded grid scenes of ``benchmarks/bench_run.py`` (8 cells of
#: conditions A–C, 120–340 Å): 0.8 (the single-scale rule) F1 0.806, precision 0.64–0.82, most
#: false picks a second pick 0.3–0.5 diameters from a particle's centre; 1.0 F1 0.867; 1.1
#: 0.881 and 1.25 0.887 but they merge touching particles of one size, so 1.0 is kept.
OVERLAP = 1.0


def pick_scales(volume, voxel_size, params, mask, shape, mean, sd, signs, floor, timing):
    """The multi-scale run (generator yielding Progress, returns a ``PickResult``).

    Called by :func:`napari_cryo_openset.picking.core.pick_particles` after the volume
    statistics; ``floor`` is the lowest z-score kept as a candidate.
    """
    from .core import _RESPONSE_SAMPLE, PickResult, _scan

    diameters = params.scale_diameters()
    n = len(diameters)
    budget = params.memory_budget_mb * 1024**2
    aitom = params.threshold_method == "aitom"
    plans = []
    for d in diameters:
        geo = derive_geometry(replace(params, diameter=d, max_diameter=None, n_scales=None), voxel_size, shape,
                              sigma_factor=SIGMA_FACTOR)
        plans.append((d, geo, plan_tiles(shape, geo, budget)))
    total = sum(len(t) for _, _, t in plans)
    timing.update(read=0.0, bandpass=0.0, peaks=0.0)
    scales, nonfinite, step = [], 0, 0
    for i, (d, geo, tiles) in enumerate(plans):
        t0 = time.perf_counter()
        coarse_total = math.prod(math.ceil(shape[a] / geo.bin[a]) for a in range(3))
        stride = max(1, math.ceil((coarse_total / _RESPONSE_SAMPLE) ** (1.0 / 3.0)))
        scan = yield from _scan(volume, geo, tiles, mean, sd, signs, mask, shape, stride, aitom,
                                label=f"scale {i + 1}/{n} ({d:.0f} Å): ", step0=step, total=total,
                                warn=i == 0)
        step += len(tiles)
        nonfinite = max(nonfinite, scan["nonfinite"])
        for key in ("read", "bandpass", "peaks"):
            timing[key] += scan["timing"][key]
        sample = np.concatenate(scan["samples"]) if scan["samples"] else np.zeros(0, np.float32)
        med, rsigma = robust_stats(sample)
        found = scan["found"]
        cands = {
            s: (
                np.concatenate(found[s]["coords"]) if found[s]["coords"] else np.zeros((0, 3)),
                np.concatenate(found[s]["scores"]) if found[s]["scores"] else np.zeros(0),
                np.concatenate(found[s]["cube"]) if found[s]["cube"] else None,
            )
            for s in signs
        }
        scales.append({"diameter": d, "geometry": geo, "median": med, "sigma": rsigma, "cands": cands,
                       "sample": sample if i == n // 2 else None, "n_maxima": scan["n_maxima"],
                       "n_tiles": len(tiles), "seconds": time.perf_counter() - t0})

    evidence: dict = {}
    if params.polarity == "auto":
        mid = scales[n // 2]
        pos, neg = mid["cands"][1.0][1], mid["cands"][-1.0][1]
        polarity, evidence = guess_polarity(mid["sample"], pos[pos > 0], neg[neg > 0], mid["sigma"])
        sign = 1.0 if polarity == "bright" else -1.0
    else:
        polarity, sign = params.polarity, signs[0]

    # Robust z-score per scale, then pool.
    yield Progress("suppress", 0, 1, "non-maximum suppression across scales")
    t0 = time.perf_counter()
    coords, scores, diam, cube = [], [], [], []
    for sc in scales:
        c, h, cb = sc["cands"][sign]
        rs = sc["sigma"] if sc["sigma"] > 0 else 1.0
        coords.append(c)
        scores.append((h - sign * sc["median"]) / rs)
        diam.append(np.full(len(h), sc["diameter"]))
        cube.append(cb if cb is not None else np.zeros(len(h), dtype=bool))
    coords, scores = np.concatenate(coords), np.concatenate(scores)
    diam, cube = np.concatenate(diam), np.concatenate(cube)
    # Suppression order: z-score × (d / d_min)^SCALE_BIAS, so that of two overlapping responses
    # of one particle the larger scale wins unless clearly weaker; the picks stay the z-scores.
    order = order_best_first(coords, scores * (diam / diameters[0]) ** SCALE_BIAS)
    coords, scores, diam, cube = coords[order], scores[order], diam[order], cube[order]
    points = coords * np.asarray(scales[0]["geometry"].voxel_size)
    if params.min_distance is None:
        keep = suppress_sized(points, diam, OVERLAP)
    else:
        keep = suppress(points, float(params.min_distance))
    coords, scores, diam, cube = coords[keep], scores[keep], diam[keep], cube[keep]
    order = order_best_first(coords, scores)  # best z first: PickResult.select needs it
    coords, scores, diam, cube = coords[order], scores[order], diam[order], cube[order]
    n_max = len(scores)
    m, M = (float(scores.min()), float(scores.max())) if n_max else (math.nan, math.nan)
    if aitom and cube.any():
        m = float(scores[cube].min())
    above = scores > floor
    coords, scores, diam = coords[above], scores[above], diam[above]
    timing["suppress"] = time.perf_counter() - t0

    method = params.threshold_method
    if method == "aitom":
        threshold = aitom_threshold(m, M, params.aitom_level) if n_max else floor
    elif method == "robust":
        threshold = float(params.k_mad)  # z-scores: median 0, 1.4826·MAD 1 at every scale
    elif method == "topn":
        threshold = topn_threshold(scores, int(params.max_picks))
    else:
        threshold = float(params.threshold)
    threshold = max(threshold, floor)
    table = make_picks(coords, scores, diameter=diam)
    n_picks = select(scores, threshold, params.max_picks)
    picks = table.iloc[:n_picks].reset_index(drop=True)
    yield Progress("suppress", 1, 1, f"{n_picks} picks")

    span = f"{diameters[0]:g}–{diameters[-1]:g} Å in {n} scales"
    if n_picks == 0:
        message = (f"no picks: none of the {len(scores)} candidate peaks reaches the threshold "
                   f"{threshold:.4g} ({method}, robust z-score); lower the threshold, check the diameter "
                   f"range ({span}) and the polarity ({polarity})")
        if mask is not None and n_max == 0:
            message = "no picks: the mask leaves no allowed peak (check the mask)"
    else:
        sizes = ", ".join(f"{d:.0f} Å: {int(np.count_nonzero(diam[:n_picks] == d))}" for d in diameters)
        message = (f"{n_picks} picks above threshold {threshold:.4g} ({method}, robust z-score), "
                   f"polarity {polarity}; per scale {sizes}")
        if method == "topn" and n_picks < int(params.max_picks):
            message += f"; only {n_picks} candidates exist (asked for {int(params.max_picks)})"
    geo0 = scales[0]["geometry"]
    return PickResult(
        picks=picks,
        candidates=table,
        threshold=float(threshold),
        threshold_method=method,
        polarity=polarity,
        polarity_guessed=params.polarity == "auto",
        polarity_evidence=evidence,
        params=params,
        voxel_size=geo0.voxel_size,
        shape=tuple(shape),
        sigma1=geo0.sigma1,
        sigma2=geo0.sigma2,
        geometry=geo0,
        stats={
            "volume_mean": mean,
            "volume_sd": sd,
            "response_median": 0.0,
            "response_sigma": 1.0,
            "score": "robust z-score per scale",
            "peak_min": m if n_max else None,
            "peak_max": M if n_max else None,
            "n_local_maxima": int(sum(sc["n_maxima"][sign] for sc in scales)),
            "n_peaks": n_max,
            "n_candidates": int(len(scores)),
            "floor": floor,
            "n_tiles": total,
            "nonfinite": int(nonfinite),
            "scales": [
                {"diameter": sc["diameter"], "sigma1": sc["geometry"].sigma1, "bin": sc["geometry"].bin,
                 "response_median": sc["median"] * sign, "response_sigma": sc["sigma"],
                 "n_tiles": sc["n_tiles"], "seconds": sc["seconds"],
                 "n_picks": int(np.count_nonzero(diam[:n_picks] == sc["diameter"]))}
                for sc in scales
            ],
        },
        timing=timing,
        message=message,
    )
