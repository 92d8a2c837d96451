#!/usr/bin/env python
"""3D-ADA Table 1 protocol (reduced), on our simulator: closed-set accuracy on the target.

Source = the paper's batch-B condition (defocus 10 µm, Cs 2.2 mm), target = batch-A (defocus
5 µm, Cs 2.0 mm); the 16 structures of ``shared/data/templates_10A`` + ``empty``; 32³ boxes at
10 Å; a grid of source × target SNR. For every seed and source SNR one source model is trained
(source validation split for early stopping); each target set is then classified by:

- **source-only** — the source model as is;
- **AdaBN only** — target BatchNorm statistics, nothing else (part of every adapted row below);
- **source-only + centre loss** — fine-tuned on the source only with CE + margin/centre terms
  (MLUDA code, λ2 = 0, no target data);
- **Deep CORAL** — MLUDA code with λ1 = 0 (CE + CORAL);
- **3D-ADA** — :mod:`napari_cryo_openset.adapt.ada`;
- **MLUDA** — :mod:`napari_cryo_openset.adapt.mluda`;
- **target-supervised** — upper bound: a model trained on a labelled set simulated at the target
  condition (other seed), same size as the source set.

Accuracy is the closed-set arg-max accuracy on all target subtomograms (the transductive number
the papers report: adaptation sees the same unlabelled boxes it is scored on; no labels are used
for any choice). Mean ± sd over seeds.

    .venv/bin/python benchmarks/bench_adaptation.py            # full (seeds 0–2)
    .venv/bin/python benchmarks/bench_adaptation.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch

from _protocol import (BATCH_A, BATCH_B, adapt, boxes_of, fmt, load_source, machine, mean_sd, predict, save,
                       shared_templates, simulate, train)

ROWS = ["source-only", "AdaBN only", "source-only + centre loss", "Deep CORAL", "3D-ADA", "MLUDA",
        "target-supervised (upper bound)"]


def accuracy(pred, true_names) -> float:
    names = np.asarray(pred.class_name, dtype=str)
    arg = np.asarray(true_names)
    return float((names == arg).mean())


def closed(pred, class_names) -> object:
    """Closed-set decision: arg-max over the network outputs (no unknown rule)."""
    p = copy.copy(pred)
    p.class_name = np.asarray(class_names, dtype=object)[pred.probabilities.argmax(1)]
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--source-snr", type=float, nargs="+", default=[0.5, 0.1])
    ap.add_argument("--target-snr", type=float, nargs="+", default=[0.5, 0.1, 0.05])
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--target-per-class", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=150, help="rounds for the fine-tuning methods")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.source_snr, args.target_snr = [0], [0.5], [0.1]
        args.per_class, args.target_per_class, args.epochs, args.iterations = 12, 8, 2, 10
    torch.set_num_threads(args.threads)
    templates = shared_templates()
    cells: dict[tuple, dict[str, list]] = {}
    timings: dict[str, list] = {"3D-ADA": [], "MLUDA": []}
    t_start = time.perf_counter()
    for seed in args.seeds:
        for s_snr in args.source_snr:
            src = simulate(templates, BATCH_B, s_snr, args.per_class, seed=1000 + seed)
            bundle, res = train(src, seed, args.epochs, args.threads)
            source = load_source(src, bundle)
            print(f"seed {seed} source SNR {s_snr}: source val acc {res.val_accuracy:.3f} "
                  f"({time.perf_counter() - t_start:.0f} s)", flush=True)
            for t_snr in args.target_snr:
                tgt = simulate(templates, BATCH_A, t_snr, args.target_per_class, seed=2000 + seed, empty=args.target_per_class)
                xt = boxes_of(tgt)
                truth = np.asarray(tgt.class_names)[tgt.labels]
                cell = cells.setdefault((s_snr, t_snr), {r: [] for r in ROWS})
                cell["source-only"].append(accuracy(closed(predict(bundle, xt), bundle.class_names), truth))
                b_bn = copy.deepcopy(bundle)
                from napari_cryo_openset.adapt.common import adapt_batchnorm
                adapt_batchnorm(b_bn.model.encoder, xt[:, None], torch.device("cpu"))
                cell["AdaBN only"].append(accuracy(closed(predict(b_bn, xt), bundle.class_names), truth))
                # source-only + centre loss: the "target" given is source training boxes (no target data)
                xs_only = source.x[torch.from_numpy(source.train_idx[: len(xt)])][:, 0]
                r, _ = adapt(bundle, source, xs_only, args.threads, method="mluda", iterations=args.iterations,
                             lambda2=0.0, unknown_margin=False, seed=seed)
                r.bundle.model.encoder.load_state_dict(r.bundle.model.encoder.state_dict())
                cell["source-only + centre loss"].append(
                    accuracy(closed(predict(_with_source_stats(r.bundle), xt), bundle.class_names), truth))
                r, _ = adapt(bundle, source, xt, args.threads, method="mluda", iterations=args.iterations,
                             lambda1=0.0, lambda2=1.0, seed=seed)
                cell["Deep CORAL"].append(accuracy(closed(r.predictions, bundle.class_names), truth))
                r, sec = adapt(bundle, source, xt, args.threads, method="ada", seed=seed)
                timings["3D-ADA"].append(sec)
                cell["3D-ADA"].append(accuracy(closed(r.predictions, bundle.class_names), truth))
                r, sec = adapt(bundle, source, xt, args.threads, method="mluda", iterations=args.iterations, seed=seed)
                timings["MLUDA"].append(sec)
                cell["MLUDA"].append(accuracy(closed(r.predictions, bundle.class_names), truth))
                up_set = simulate(templates, BATCH_A, t_snr, args.per_class, seed=3000 + seed)
                up, _ = train(up_set, seed, args.epochs, args.threads)
                cell["target-supervised (upper bound)"].append(accuracy(closed(predict(up, xt), up.class_names), truth))
                print(f"  target SNR {t_snr}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in cell.items()), flush=True)

    keys = sorted(cells, key=lambda k: (-k[0], -k[1]))
    header = "| method | " + " | ".join(f"{s:g} → {t:g}" for s, t in keys) + " | mean |"
    lines = [
        "# Closed-set adaptation, 3D-ADA protocol (reduced)",
        "",
        f"Source batch-B (defocus {BATCH_B['defocus']} µm, Cs {BATCH_B['cs']} mm) → target batch-A (defocus "
        f"{BATCH_A['defocus']} µm, Cs {BATCH_A['cs']} mm); 16 classes + empty, 32³ at 10 Å; columns: source SNR → "
        f"target SNR. Target accuracy (arg-max, all target boxes), mean ± sd over seeds {args.seeds}. "
        f"{args.per_class} source and {args.target_per_class} target subtomograms per class; source training "
        f"≤ {args.epochs} epochs; fine-tuning methods {args.iterations} rounds; 3D-ADA default (≤ 300 rounds, "
        "label-free stop).",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/bench_adaptation.py', *sys.argv[1:]])}`  ",
        f"Machine: {machine()}",
        "",
        header,
        "|" + "---|" * (len(keys) + 2),
    ]
    for row in ROWS:
        vals = [fmt(cells[k][row]) for k in keys]
        allv = [v for k in keys for v in cells[k][row]]
        lines.append(f"| {row} | " + " | ".join(vals) + f" | {mean_sd(allv)[0]:.3f} |")
    gains = [np.mean(cells[k]["3D-ADA"]) - np.mean(cells[k]["source-only"]) for k in keys]
    better = sum(g > 0 for g in gains)
    lines += ["", f"3D-ADA − source-only: mean gain **{np.mean(gains):+.3f}**, better in **{better}/{len(keys)}** cells "
              f"(targets: ≥ 80 % of cells, ≥ 0.05 on average).",
              f"Adaptation time per target set ({args.target_per_class * 17} picks, {args.threads} threads): "
              f"3D-ADA {fmt(timings['3D-ADA'])} s, MLUDA {fmt(timings['MLUDA'])} s.", ""]
    md = "\n".join(lines)
    payload = {"args": vars(args), "machine": machine(),
               "cells": {f"{s}->{t}": cells[(s, t)] for s, t in keys}, "timings": timings,
               "ada_gain_mean": float(np.mean(gains)), "ada_better_cells": int(better), "cells_total": len(keys)}
    save("adaptation_quick" if args.quick else "adaptation", payload, md)
    return 0


def _with_source_stats(bundle):
    """The centre-loss baseline keeps source BatchNorm statistics (it never sees the target)."""
    b = copy.deepcopy(bundle)
    if b.source_encoder is not None:
        b.model.encoder = b.source_encoder
    return b


if __name__ == "__main__":
    sys.exit(main())
