#!/usr/bin/env python
"""The benchmark that decides: the ``run`` pipeline on crowded scenes far from the defaults, three structures never seen.

Scenes (the user's case, not the simulator's): whole 256×256 tomograms at 10 Å with a slab of
the condition's thickness between 240 Å of empty ice above and below, crowded with the shared structures of 120–345 Å (``shared/data/
templates_10A``: 12 of the 16; the four < 100 Å are a few voxels at the run's working voxel size
and are left out of the scenes, not of the model) plus 5 % procedural decoys, a smooth crowding
background, imaged by the full chain (tilt series, CTF, noise, weighted back-projection) at three
imaging conditions far from the defaults (:data:`CONDITIONS`). The model is simulated from the
13 structures that are **not** held out (:data:`HELD_OUT`: their particles, and the decoys, are
the unknowns), the run picks the tomogram itself (DoG over a diameter range when the picker
offers one) and never sees a label.

Settings: ``told`` — the run is given what a user knows (voxel size, defocus, Cs, tilt range;
the SNR is read from the tomogram); ``estimated`` — only the voxel size (the tilt range and SNR
are read from the tomogram, defocus and Cs are the defaults).

Rows per cell: source-only (the source model and its calibrated threshold), 3D-ADA and MLUDA
(adapted from the same source model: the network's own calls), each also "+ templates" (the
calls after the run's template verification, :mod:`napari_cryo_openset.verify`, with that
model's probabilities — "MLUDA + templates" is what ``run`` gives by default; "MLUDA + templates,
H+c score" re-decides the same evidence with the earlier unknown score, entropy + correlation), and the
template-matching peer (``_tm.py``: normalised
cross-correlation against every known template imaged like the source, 300 rotations, its
unknown threshold calibrated on the same simulated source set and checked the same label-free
way). Scores against the scene's truth: pick F1 (a pick matches a particle within 0.3 × that
particle's diameter, one-to-one), then over the matched picks ALL, OS*, UNK, HOS, and seconds
(the whole run; 3D-ADA counts the shared simulation and training). All runs are ``--fast``.

    .venv/bin/python benchmarks/bench_run.py [--quick] [--conditions A B C] [--seeds 0 1 2] \
        [--settings told estimated] [--threads 2] [--source scenes|isolated]

Results are written after every cell (``benchmarks/results/run_grid.json`` / ``.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import replace

import numpy as np
from _protocol import RESULTS, fmt, machine, mean_sd, save, shared_templates
from _tm import template_matching_peer
from scipy.spatial import cKDTree

from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.metrics import open_set_metrics
from napari_cryo_openset.params import AdaptParams, ImagingCondition, PickingParams, RunParams
from napari_cryo_openset.pipeline import run_pipeline, verify_run_calls
from napari_cryo_openset.predict import PredictParams, classify_boxes, extract_pick_boxes, predict_picks
from napari_cryo_openset.progress import run_to_completion
from napari_cryo_openset.simulate.scenes import SceneParams, make_scene
from napari_cryo_openset.verify import decide

HELD_OUT = ("1u6g", "3d2f", "4cr2")  # 141, 169, 277 Å: small, middle, large
SCENE_MIN_DIAMETER = 100.0  # Å
DIAMETER_RANGE = (120.0, 340.0)  # Å, the picker's range
SINGLE_DIAMETER = 150.0  # Å, when the picker takes one diameter (best recall of 150/200 Å on the grid)
DECOY_DIAMETER = 200.0  # Å, for matching decoy particles
MATCH_FRACTION = 0.3
ICE = 24  # voxels of empty ice above and below the slab (the estimator reads the noise there)


@dataclasses.dataclass(frozen=True)
class Condition:
    defocus: float  # µm
    cs: float  # mm
    tilt: float  # ± degrees
    snr: float
    thickness: int  # slab, voxels of 10 Å
    particles: int
    why: str


CONDITIONS = {
    "A": Condition(2.0, 2.0, 40.0, 0.05, 64, 90, "thin slab, close to focus, narrow tilt range"),
    "B": Condition(8.0, 2.7, 65.0, 0.2, 128, 160, "thick slab, far from focus, wide tilt range"),
    "C": Condition(3.5, 2.3, 50.0, 0.03, 96, 130, "very noisy, mid tilt range"),
}
ROWS = ("source-only", "source + templates", "3D-ADA", "3D-ADA + templates", "MLUDA", "MLUDA + templates",
        "MLUDA + templates, H+c score", "template matching")
#: The earlier unknown score of the verification, re-decided from the same evidence (no extra cost).
OTHER_SCORE = "entropy+correlation"
#: The product's default path (``run``: MLUDA, template verification on).
PRODUCT = "MLUDA + templates"
COLUMNS = ("f1", "os_star", "unk", "hos", "seconds")


def match(picks, truth, diameters_voxels: np.ndarray) -> np.ndarray:
    """Index of the matched true particle per pick (−1: none); one-to-one, closest first,
    within ``MATCH_FRACTION`` × that particle's diameter."""
    p = picks[["z", "y", "x"]].to_numpy(float)
    t = truth[["z", "y", "x"]].to_numpy(float)
    out = np.full(len(p), -1)
    if not len(p) or not len(t):
        return out
    sdm = cKDTree(p).sparse_distance_matrix(cKDTree(t), MATCH_FRACTION * diameters_voxels.max(), output_type="ndarray")
    keep = sdm["v"] <= MATCH_FRACTION * diameters_voxels[sdm["j"]]
    sdm = sdm[keep]
    used = set()
    for k in np.argsort(sdm["v"], kind="stable"):
        i, j = int(sdm["i"][k]), int(sdm["j"][k])
        if out[i] < 0 and j not in used:
            out[i] = j
            used.add(j)
    return out


def score(pred_names, picks, truth, diam, known) -> dict:
    m = match(picks, truth, diam)
    tp = int((m >= 0).sum())
    f1 = 2 * tp / (len(picks) + len(truth))
    names = truth["class_name"].to_numpy()[m[m >= 0]]
    true = np.array([n if n in known else "unknown" for n in names])
    s = open_set_metrics(true, np.asarray(pred_names)[m >= 0].astype(str), known_classes=known)
    recall = {}
    for name in sorted(set(truth["class_name"])):
        sel = truth["class_name"].to_numpy() == name
        recall[name] = float(np.isin(np.flatnonzero(sel), m[m >= 0]).mean())
    return {"f1": f1, "all": s.all, "os_star": s.os_star, "unk": s.unk, "hos": s.hos, "n_picks": len(picks),
            "n_matched": tp, "pick_recall": recall}


def rule_scores(result, tomo, truth, diam, known) -> dict:
    """HOS of the adapted model under each label-free threshold rule (source τ, target mixture τ)."""
    transfer = result.adapted.openset.get("transfer") or {}
    rules = {"source": transfer.get("source_threshold")}
    mix = transfer.get("mixture") or {}
    if mix.get("trusted"):
        rules["mixture"] = mix.get("threshold")
    active = result.predictions["curation"] != "rejected"
    picks = result.predictions.loc[active]
    boxes, _, _ = extract_pick_boxes(result.adapted, tomo, picks, result.adaptation.polarity)
    out = {"chosen": transfer.get("why")}
    for rule, thr in rules.items():
        if thr is None:
            continue
        pred = classify_boxes(result.adapted, boxes, "cpu", threshold=float(thr))
        s = score(pred.class_name, picks, truth, diam, known)
        out[rule] = {"threshold": float(thr), "hos": s["hos"], "os_star": s["os_star"], "unk": s["unk"],
                     "called_unknown": float(np.mean(pred.is_unknown))}
    return out


def verified_rule_scores(verification, picks, truth, diam, known) -> dict:
    """HOS of the verified calls at the source-calibrated threshold and at the one used (diagnosis)."""
    out = {}
    rules = {"youden": verification.report.get("youden_threshold"), "source": verification.source_threshold,
             "used": verification.threshold}
    scores = np.asarray(verification.unknown_score)
    for q in (0.1, 0.2, 0.3, 0.4):  # called-unknown fractions (diagnosis: what a known fraction would give)
        rules[f"calls {q:.0%}"] = float(np.quantile(scores, 1 - q))
    for rule, thr in rules.items():
        s = score(verification.calls_at(thr), picks, truth, diam, known)
        out[rule] = {"threshold": float(thr), "hos": s["hos"], "os_star": s["os_star"], "unk": s["unk"]}
    return out


def dump_evidence(folder, stem: str, verification, picks, truth, diam, known) -> None:
    """Save what the verification decided from, with the matched picks' true names (``--dump``), so
    that unknown-score and threshold rules can be compared offline on the same cells
    (:func:`napari_cryo_openset.verify.decide` on an :class:`~napari_cryo_openset.verify.Evidence`
    rebuilt from the file); ``true`` is ``""`` for a pick that matches no particle."""
    import dataclasses as dc
    from pathlib import Path

    m = match(picks, truth, diam)
    names = np.where(m >= 0, truth["class_name"].to_numpy()[np.maximum(m, 0)], "")
    true = np.array([n if (n in known or n == "") else "unknown" for n in names])
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in dc.asdict(verification.evidence).items()}
    np.savez_compressed(out / f"{stem}.npz", true=true, **arrays)


def templates_at(templates, result):
    """``templates`` at the run's working voxel size."""
    vs = result.geometry["model_voxel_size"]
    return [t.at_voxel_size(vs) for t in templates] if result.geometry["bin"] > 1 else list(templates)


def picking_params(quick: bool) -> PickingParams:
    fields = {f.name for f in dataclasses.fields(PickingParams)}
    if "max_diameter" in fields:
        return PickingParams(diameter=DIAMETER_RANGE[0], max_diameter=DIAMETER_RANGE[1], polarity="auto")
    return PickingParams(diameter=SINGLE_DIAMETER, polarity="auto")


def run_params(cond: Condition, setting: str, method: str, seed: int, args) -> RunParams:
    base = RunParams(picking_params(args.quick), adapt=AdaptParams(method=method), seed=100 + seed, device="cpu",
                     threads=args.threads, fast=True, source_kind=args.source, match_spectrum=not args.no_match,
                     **({"per_class": 12, "epochs": 2, "iterations": 20} if args.quick else {}))
    if setting == "told":
        condition = base.source.condition.replace(defocus=cond.defocus, cs=cond.cs, tilt_range=(-cond.tilt, cond.tilt))
        given = ("voxel_size", "defocus", "cs", "tilt_range")
    else:
        condition, given = base.source.condition, ("voxel_size",)
    return replace(base, source=replace(base.source, condition=condition), given=given)


def cell(name: str, cond: Condition, seed: int, setting: str, templates, args) -> dict:
    thickness = cond.thickness if not args.quick else min(cond.thickness, 64)
    shape = (thickness + 2 * ICE, 256, 256) if not args.quick else (thickness + 2 * ICE, 192, 192)
    present = [t for t in templates if t.diameter >= SCENE_MIN_DIAMETER]
    scene = SceneParams(shape=shape, condition=ImagingCondition(voxel_size=10.0, defocus=cond.defocus, cs=cond.cs,
                                                                tilt_range=(-cond.tilt, cond.tilt), snr=cond.snr),
                        templates=tuple(present), n_particles=cond.particles if not args.quick else 80,
                        unknown_fraction=0.05, background=0.05, slab=(ICE, ICE + thickness - 1),
                        seed=1000 * (ord(name) - 64) + seed)
    t0 = time.perf_counter()
    volume, truth = make_scene(scene)
    tomo = Tomogram(volume, (10.0,) * 3)
    by_name = {t.name: t.diameter for t in templates}
    diam = np.array([by_name.get(n, DECOY_DIAMETER) for n in truth["class_name"]]) / 10.0
    known_templates = [t for t in templates if t.name not in HELD_OUT]
    known = sorted(t.name for t in known_templates)
    print(f"[{name} seed {seed} {setting}] scene {shape}: {len(truth)} particles "
          f"({int(truth['class_name'].isin(HELD_OUT).sum())} held out, {int((truth['class_name'] == 'unknown').sum())}"
          f" decoys) in {time.perf_counter() - t0:.1f} s", flush=True)
    out: dict = {"condition": name, "seed": seed, "setting": setting, "n_particles": len(truth)}
    trained, sim_train_s = None, 0.0
    for method, row in (("mluda", "MLUDA"), ("ada", "3D-ADA")):
        params = run_params(cond, setting, method, seed, args)
        t1 = time.perf_counter()
        result = run_to_completion(run_pipeline(tomo, known_templates, params, trained=trained))
        seconds = time.perf_counter() - t1
        if trained is None:
            trained, sim_train_s = result.trained, result.timings.get("simulate+train", 0.0)
            first = result
        else:
            seconds += sim_train_s
        network = result.adaptation.picks  # the adapted network's own calls, before template verification
        net_active = network["curation"] != "rejected"
        out[row] = score(network.loc[net_active, "class_name"], network.loc[net_active], truth, diam, known) | {
            "seconds": seconds - result.timings.get("verify", 0.0),
            "called_unknown": float((network.loc[net_active, "class_name"] == "unknown").mean()),
            "threshold_rules": rule_scores(result, tomo, truth, diam, known)}
        active = result.predictions["curation"] != "rejected"
        out[row + " + templates"] = score(result.predictions.loc[active, "class_name"], result.predictions.loc[active],
                                          truth, diam, known) | {
            "seconds": seconds, "expected_unknown": result.report()["open_set"]["expected_unknown_fraction"],
            "called_unknown": result.unknown_fraction(), "stages": {k: round(v, 1) for k, v in result.timings.items()},
            "verification": {k: result.verification.report.get(k) for k in ("temperature", "source_known_accuracy",
                                                                             "threshold", "seconds", "bank_seconds")},
            "threshold_rules": verified_rule_scores(result.verification, result.predictions.loc[active], truth, diam,
                                                    known)}
        if args.dump and result.verification.evidence is not None:
            dump_evidence(args.dump, f"{name}{seed}{setting}_{method}", result.verification, result.predictions.loc[active],
                          truth, diam, known)
        if row == "MLUDA" and result.verification.evidence is not None:
            other = decide(result.verification.evidence, OTHER_SCORE, result.params.verify_threshold, seed=seed)
            out[row + " + templates, H+c score"] = score(other.class_name, result.predictions.loc[active], truth,
                                                         diam, known) | {
                "seconds": seconds, "called_unknown": float(np.mean(other.is_unknown)),
                "threshold": other.threshold}
    result = first
    t1 = time.perf_counter()
    src = run_to_completion(predict_picks(result.model, tomo, result.picks,
                                          PredictParams(polarity=result.adaptation.polarity, device="cpu",
                                                        threads=args.threads)))
    out["source-only"] = score(src.picks["class_name"], src.picks, truth, diam, known) | {
        "seconds": sim_train_s + result.timings.get("pick", 0) + time.perf_counter() - t1}
    t1 = time.perf_counter()
    verified, _ = run_to_completion(verify_run_calls(result.model, result.trained, templates_at(known_templates, result),
                                                     result.trained.data.params.condition, tomo, result.picks,
                                                     result.adaptation.polarity, result.params,
                                                     bank=result.verification.bank))
    active = verified["curation"] != "rejected"
    out["source + templates"] = score(verified.loc[active, "class_name"], verified.loc[active], truth, diam, known) | {
        "seconds": out["source-only"]["seconds"] + time.perf_counter() - t1}
    t1 = time.perf_counter()
    active = result.picks["curation"] != "rejected"
    boxes, _, _ = extract_pick_boxes(result.model, tomo, result.picks.loc[active], result.adaptation.polarity)
    model_vs = result.geometry["model_voxel_size"]
    tm = template_matching_peer(result.trained, [t.at_voxel_size(model_vs) for t in known_templates],
                                result.condition.condition, boxes.numpy(), n_rotations=args.rotations, seed=seed,
                                bank=result.verification.bank if result.verification is not None else None)
    out["template matching"] = score(tm["class_name"], result.picks.loc[active], truth, diam, known) | {
        "seconds": result.timings.get("pick", 0) + time.perf_counter() - t1, "threshold": tm["transfer"]}
    est = result.condition.to_dict() if result.condition is not None else {}
    out["resolved_condition"] = est
    out["true_unknown_fraction"] = float(np.mean([n not in known for n in truth["class_name"]]))
    print(f"[{name} seed {seed} {setting}] " + "; ".join(
        f"{r}: " + ", ".join(f"{c} {out[r][c]:.3f}" for c in COLUMNS) for r in ROWS), flush=True)
    return out


def table(cells: list[dict], args) -> str:
    lines = [
        "# End-to-end grid: crowded scenes far from the defaults, three structures never seen",
        "",
        f"Scenes: 256×256 tomograms at 10 Å, slab = the condition's thickness (+ {ICE * 10} Å of ice above and below), crowded with the 12 shared structures "
        f"≥ {SCENE_MIN_DIAMETER:g} Å + 5 % decoys; model from the 13 shared structures not held out (held out: "
        f"{', '.join(HELD_OUT)}). Picks: DoG by the run itself ({picking_params(args.quick).to_dict().get('diameter')}"
        f"{'–' + str(DIAMETER_RANGE[1]) if 'max_diameter' in picking_params(args.quick).to_dict() else ''} Å). "
        f"F1: picks vs particles within {MATCH_FRACTION} × the particle's diameter; OS*/UNK/HOS over matched picks. "
        f"All runs `--fast`, {args.threads} threads. Mean ± sd over seeds.",
        "",
        "Conditions: " + "; ".join(f"**{k}** defocus {c.defocus:g} µm, Cs {c.cs:g} mm, ±{c.tilt:g}°, SNR {c.snr:g}, "
                                   f"slab {c.thickness * 10} Å ({c.why})" for k, c in CONDITIONS.items()
                                   if k in args.conditions),
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/bench_run.py', *sys.argv[1:]])}`  ",
        f"Machine: {machine()}",
        "",
        "| condition | setting | row | pick F1 | OS* | UNK | **HOS** | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["condition"], c["setting"]), []).append(c)
    for (cond, setting), cs in groups.items():
        for r in ROWS:
            lines.append(f"| {cond} | {setting} | {r} | " + " | ".join(fmt([c[r][k] for c in cs]) for k in COLUMNS)
                         + f" |  (n={len(cs)})")
    lines += ["", "Over the whole grid:", ""]
    for r in ROWS:
        m, s = mean_sd([c[r]["hos"] for c in cells])
        lines.append(f"- {r}: HOS {m:.3f} ± {s:.3f}, OS* {fmt([c[r]['os_star'] for c in cells])}")
    for r, base in (("3D-ADA", "source-only"), ("MLUDA", "source-only"), ("3D-ADA + templates", "source + templates"),
                    ("MLUDA + templates", "source + templates")):
        wins = sum(c[r]["hos"] >= c[base]["hos"] for c in cells)
        lines.append(f"- {r} ≥ {base} (HOS) in {wins} of {len(cells)} cells")
    for r in ("MLUDA", PRODUCT):
        wins = sum(c[r]["hos"] >= c["template matching"]["hos"] for c in cells)
        lines.append(f"- {r} ≥ template matching (HOS) in {wins} of {len(cells)} cells")
    lines += ["", f"Estimated tilt range / expected vs. called unknown fraction ({PRODUCT}) / true unknown fraction:", ""]
    for c in cells:
        est = (c.get("resolved_condition") or {}).get("estimate") or {}
        lines.append(f"- {c['condition']} seed {c['seed']} {c['setting']}: tilt {est.get('tilt_range')} "
                     f"(true ±{CONDITIONS[c['condition']].tilt:g}); unknown expected {c[PRODUCT]['expected_unknown']}, "
                     f"called {c[PRODUCT]['called_unknown']:.2f}, true {c['true_unknown_fraction']:.2f}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", default=["told", "estimated"], choices=["told", "estimated"])
    ap.add_argument("--rotations", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--source", choices=("scenes", "isolated"), default="scenes",
                    help="the run's source set (RunParams.source_kind)")
    ap.add_argument("--no-match", action="store_true", help="no spectral matching of the source boxes")
    ap.add_argument("--name", default=None, help="results file stem (default run_grid / run_grid_quick)")
    ap.add_argument("--dump", default=None, metavar="DIR",
                    help="save every cell's verification evidence and the picks' true names (.npz) for offline rule studies")
    args = ap.parse_args(argv)
    if args.quick:
        args.conditions, args.seeds, args.settings, args.rotations = ["B"], args.seeds[:1], args.settings[:1], 20
    templates = shared_templates(10.0)
    name = args.name or ("run_grid_quick" if args.quick else "run_grid")
    cells = []
    for seed in args.seeds:
        for cond in args.conditions:
            for setting in args.settings:
                cells.append(cell(cond, CONDITIONS[cond], seed, setting, templates, args))
                save(name, {"args": vars(args), "machine": machine(), "held_out": HELD_OUT, "cells": cells},
                     table(cells, args))
    print(f"results: {RESULTS / name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
