#!/usr/bin/env python
"""End to end: the ``run`` pipeline on the built-in sample scene, one structure held out as "never seen".

The scene is the plugin's sample data (128×256×256 at 10 Å, 100 particles of the six built-in
structures + 10 % procedural decoys, SNR 0.5, defocus 5 µm). The model is simulated from five
of the six built-in structures: ``4cr2`` is left out, so its particles — and the scene's decoys,
drawn with another seed than the simulator's — are the **unknowns** the run should flag. The
run is told the scene's imaging condition (SNR 0.5, defocus 5 µm), as a user sets ``--snr`` and
``--defocus`` for their data; it uses DoG picks (polarity auto) and its own seed, different
from the scene's. What remains is the shift between isolated simulated boxes and a crowded,
whole-volume reconstruction (neighbours in the box, background, picking offsets).

Scored against the scene's ground truth: picking F1 (a pick matches a particle within 6 voxels,
one-to-one), then over the matched picks the open-set figures (ALL, OS*, UNK, HOS), and the
per-stage wall time. Rows: ``--fast`` (150 per class, 10 epochs, 100 rounds) over seeds, and the
full defaults (300, 15, 300) for one seed. Closed-set reference: the same source model without
adaptation (source-only softmax decision with its calibrated threshold).

    .venv/bin/python benchmarks/bench_run.py [--quick] [--seeds 0 1 2] [--full-seeds 0] [--source scenes|isolated]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
from _protocol import fmt, machine, save

from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.metrics import open_set_metrics
from napari_cryo_openset.picking.evaluate import match_picks
from napari_cryo_openset.params import AdaptParams, PickingParams, RunParams
from napari_cryo_openset.pipeline import run_pipeline
from napari_cryo_openset.predict import PredictParams, predict_picks
from napari_cryo_openset.progress import run_to_completion
from napari_cryo_openset.simulate import builtin_templates
from napari_cryo_openset.simulate.scenes import SAMPLE_SCENE, SceneParams, make_scene

HELD_OUT = "4cr2"
MATCH_VOXELS = 6.0
DIAMETER = 120.0  # Å: the smaller built-in structures; best picking F1 on the scene (0.97; 150 Å: 0.91)
COLUMNS = ("f1", "all", "os_star", "unk", "hos", "seconds")


def score(picks, truth, known) -> dict:
    pairs = match_picks(picks, truth, MATCH_VOXELS)["pairs"]  # one-to-one, closest pairs first
    m = np.full(len(picks), -1)
    m[pairs[:, 0]] = pairs[:, 1]
    tp = int((m >= 0).sum())
    f1 = 2 * tp / (len(picks) + len(truth))
    true = np.array([n if n in known else "unknown" for n in truth["class_name"].to_numpy()[m[m >= 0]]])
    pred = picks["class_name"].to_numpy()[m >= 0].astype(str)
    s = open_set_metrics(true, pred, known_classes=known)
    return {"f1": f1, "all": s.all, "os_star": s.os_star, "unk": s.unk, "hos": s.hos, "n_picks": len(picks),
            "n_matched": tp}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--full-seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--methods", nargs="+", default=["ada", "mluda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--source", choices=("scenes", "isolated"), default="scenes",
                    help="the run's source set (RunParams.source_kind)")
    args = ap.parse_args(argv)
    scene = SAMPLE_SCENE
    if args.quick:
        args.seeds, args.full_seeds = [0], []
        scene = SceneParams(**{**SAMPLE_SCENE.__dict__, "shape": (64, 128, 128), "n_particles": 30})
    t0 = time.perf_counter()
    volume, truth = make_scene(scene)
    tomo = Tomogram(volume, (scene.condition.voxel_size,) * 3)
    templates = [t for t in builtin_templates(scene.condition.voxel_size) if t.name != HELD_OUT]
    known = sorted(t.name for t in templates)
    print(f"scene {scene.shape}, {len(truth)} particles ({(truth['class_name'] == HELD_OUT).sum()} {HELD_OUT}, "
          f"{(truth['class_name'] == 'unknown').sum()} decoys) in {time.perf_counter() - t0:.1f} s", flush=True)

    rows: dict[str, dict[str, list]] = {}
    runs = [(m, "fast", s) for m in args.methods for s in args.seeds] + \
           [(m, "full", s) for m in args.methods for s in args.full_seeds]
    for method, mode, seed in runs:
        base = RunParams(PickingParams(diameter=DIAMETER, polarity="auto"), adapt=AdaptParams(method=method),
                         seed=100 + seed, device="cpu", threads=args.threads, fast=(mode == "fast"),
                         source_kind=args.source,
                         **({"per_class": 12, "epochs": 2, "iterations": 20} if args.quick else {}))
        condition = base.source.condition.replace(snr=scene.condition.snr, defocus=scene.condition.defocus)
        params = replace(base, source=replace(base.source, condition=condition))  # the scene's SNR and defocus
        t1 = time.perf_counter()
        result = run_to_completion(run_pipeline(tomo, templates, params))
        seconds = time.perf_counter() - t1
        adapted = score(result.predictions, truth, known) | {"seconds": seconds}
        source_only = run_to_completion(predict_picks(result.model, tomo, result.picks,
                                                      PredictParams(polarity=result.adaptation.polarity,
                                                                    device="cpu", threads=args.threads)))
        base = score(source_only.picks, truth, known) | {"seconds": float("nan")}
        for name, values in ((f"{method} ({mode})", adapted), (f"source-only ({mode}, {method} run)", base)):
            row = rows.setdefault(name, {c: [] for c in COLUMNS} | {"stages": []})
            for c in COLUMNS:
                row[c].append(float(values[c]))
        rows[f"{method} ({mode})"]["stages"].append({k: round(v, 1) for k, v in result.timings.items()})
        print(f"{method} {mode} seed {seed}: " + ", ".join(f"{c} {adapted[c]:.3f}" for c in COLUMNS)
              + f"; source-only hos {base['hos']:.3f}; stages {result.timings}", flush=True)

    lines = [
        "# End-to-end run on the sample scene (one structure never seen)",
        "",
        f"Scene: the sample data ({'×'.join(map(str, scene.shape))} at {scene.condition.voxel_size:g} Å, "
        f"{len(truth)} particles, SNR {scene.condition.snr:g}, defocus {scene.condition.defocus:g} µm); model "
        f"simulated from {', '.join(known)} (held out: **{HELD_OUT}**; decoys of the scene are unknown too); "
        f"simulated at the scene's SNR and defocus, DoG picks at {DIAMETER:g} Å, polarity auto. F1: picks vs "
        f"particles within {MATCH_VOXELS:g} voxels; ALL/OS*/UNK/HOS over the matched picks; seconds = the whole "
        f"run on {args.threads} threads. Mean ± sd over seeds (fast: {args.seeds}; full: {args.full_seeds or '–'}).",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/bench_run.py', *sys.argv[1:]])}`  ",
        f"Machine: {machine()}",
        "",
        "| run | picking F1 | ALL | OS* | UNK | **HOS** | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(row[c]) for c in COLUMNS) + " |")
    stage_lines = [f"- {name}: " + "; ".join(str(s) for s in row["stages"]) for name, row in rows.items()
                   if row["stages"]]
    lines += ["", "Per-stage seconds (pick, simulate+train, adapt, embed, total):", *stage_lines, ""]
    md = "\n".join(lines)
    save("run_quick" if args.quick else "run", {"args": vars(args), "machine": machine(), "rows": rows,
                                                 "held_out": HELD_OUT, "known": known}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
