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
  condition (other seed), same size as the source set;
- **pytorch-adapt ADDA / CORAL (peer)** — optional: the library's algorithms on the same backbone
  (:mod:`_peer`, ``bash benchmarks/install_peer.sh``); left out when pytorch-adapt is not installed.

Accuracy is the closed-set arg-max accuracy on all target subtomograms (the transductive number
the papers report: adaptation sees the same unlabelled boxes it is scored on; no labels are used
for any choice). Mean ± sd over seeds.

    .venv/bin/python benchmarks/bench_adaptation.py            # full (seeds 0–2)
    .venv/bin/python benchmarks/bench_adaptation.py --quick    # smoke run
    .venv/bin/python benchmarks/bench_adaptation.py --rows peer-adda peer-coral --merge   # add rows

``--rows`` runs only some rows (keys below or full names); ``--merge`` replaces, in the existing
results file, the rows of the cells this run computed and keeps everything else.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time

import numpy as np
import torch

from _protocol import (BATCH_A, BATCH_B, RESULTS, adapt, boxes_of, fmt, load_source, machine, mean_sd, predict,
                       save, shared_templates, simulate, train)
import _peer
from napari_cryo_openset.adapt import AdaptParams

PEER_ADDA, PEER_CORAL = "pytorch-adapt ADDA (peer)", "pytorch-adapt CORAL (peer)"
PEER = (PEER_ADDA, PEER_CORAL)
ROWS = ["source-only", "AdaBN only", "source-only + centre loss", "Deep CORAL", "3D-ADA", "MLUDA", PEER_ADDA,
        PEER_CORAL, "target-supervised (upper bound)"]
KEYS = dict(zip(["source-only", "adabn", "centre", "coral", "ada", "mluda", "peer-adda", "peer-coral", "upper"], ROWS))
ADA_ROUNDS = AdaptParams().iterations  # the peer ADDA runs as many rounds as 3D-ADA's bound


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
    ap.add_argument("--rows", nargs="+", default=list(KEYS), metavar="ROW",
                    help=f"rows to compute: {' '.join(KEYS)} (or full names); default all")
    ap.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                    help="no computation: join results files of runs with other seeds (same settings), "
                         "e.g. one process per seed, into one table")
    ap.add_argument("--merge", action="store_true",
                    help="merge into the existing results: replace only the (cell, row) lists computed now")
    args = ap.parse_args(argv)
    unknown = [r for r in args.rows if r not in KEYS and r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}: use {' '.join(KEYS)} or full names")
    want = {KEYS.get(r, r) for r in args.rows}
    peer_missing = bool(want & set(PEER)) and not _peer.available()
    run_rows = [r for r in ROWS if r in want and not (peer_missing and r in PEER)]
    if args.quick:
        args.seeds, args.source_snr, args.target_snr = [0], [0.5], [0.1]
        args.per_class, args.target_per_class, args.epochs, args.iterations = 12, 8, 2, 10
    torch.set_num_threads(args.threads)
    cells: dict[tuple, dict[str, list]] = {}
    timings: dict[str, list] = {"3D-ADA": [], "MLUDA": []}
    upper: dict[tuple, object] = {}  # (seed, target SNR) → target-supervised model
    t_start = time.perf_counter()
    combined_commands = None
    if args.combine:
        cells, timings, combined_commands = _combine(args)
    templates = shared_templates() if not args.combine else None
    for seed in ([] if args.combine else args.seeds):
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
                cell = cells.setdefault((s_snr, t_snr), {r: [] for r in run_rows})
                if "source-only" in cell:
                    cell["source-only"].append(accuracy(closed(predict(bundle, xt), bundle.class_names), truth))
                if "AdaBN only" in cell:
                    b_bn = copy.deepcopy(bundle)
                    from napari_cryo_openset.adapt.loop import adapt_batchnorm
                    adapt_batchnorm(b_bn.model.encoder, xt[:, None], torch.device("cpu"))
                    cell["AdaBN only"].append(accuracy(closed(predict(b_bn, xt), bundle.class_names), truth))
                if "source-only + centre loss" in cell:
                    # source-only + centre loss: the "target" given is source training boxes (no target data)
                    xs_only = source.x[torch.from_numpy(source.train_idx[: len(xt)])][:, 0]
                    r, _ = adapt(bundle, source, xs_only, args.threads, method="mluda", iterations=args.iterations,
                                 lambda2=0.0, unknown_margin=False, seed=seed)
                    r.bundle.model.encoder.load_state_dict(r.bundle.model.encoder.state_dict())
                    cell["source-only + centre loss"].append(
                        accuracy(closed(predict(_with_source_stats(r.bundle), xt), bundle.class_names), truth))
                if "Deep CORAL" in cell:
                    r, _ = adapt(bundle, source, xt, args.threads, method="mluda", iterations=args.iterations,
                                 lambda1=0.0, lambda2=1.0, seed=seed)
                    cell["Deep CORAL"].append(accuracy(closed(r.predictions, bundle.class_names), truth))
                if "3D-ADA" in cell:
                    r, sec = adapt(bundle, source, xt, args.threads, method="ada", seed=seed)
                    timings["3D-ADA"].append(sec)
                    cell["3D-ADA"].append(accuracy(closed(r.predictions, bundle.class_names), truth))
                if "MLUDA" in cell:
                    r, sec = adapt(bundle, source, xt, args.threads, method="mluda", iterations=args.iterations,
                                   seed=seed)
                    timings["MLUDA"].append(sec)
                    cell["MLUDA"].append(accuracy(closed(r.predictions, bundle.class_names), truth))
                if "target-supervised (upper bound)" in cell:
                    # depends on the seed and the target SNR only: trained once, reused for every source SNR
                    if (seed, t_snr) not in upper:
                        up_set = simulate(templates, BATCH_A, t_snr, args.per_class, seed=3000 + seed)
                        upper[(seed, t_snr)] = train(up_set, seed, args.epochs, args.threads)[0]
                    up = upper[(seed, t_snr)]
                    cell["target-supervised (upper bound)"].append(
                        accuracy(closed(predict(up, xt), up.class_names), truth))
                # the peers last: every row above seeds itself, so they cannot shift the earlier rows
                if PEER_ADDA in cell:
                    r = _peer.peer_adda(bundle, source, xt, ADA_ROUNDS, seed)
                    cell[PEER_ADDA].append(accuracy(closed(r, bundle.class_names), truth))
                if PEER_CORAL in cell:
                    r = _peer.peer_coral(bundle, source, xt, args.iterations, seed)
                    cell[PEER_CORAL].append(accuracy(closed(r, bundle.class_names), truth))
                print(f"  target SNR {t_snr}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in cell.items()), flush=True)

    name = "adaptation_quick" if args.quick else "adaptation"
    commands = combined_commands or [" ".join([".venv/bin/python", "benchmarks/bench_adaptation.py", *sys.argv[1:]])]
    picks = args.target_per_class * 17
    if args.merge:
        cells, timings, commands, picks = _merge(name, cells, timings, commands, picks)
    keys = sorted(cells, key=lambda k: (-k[0], -k[1]))
    shown = [r for r in ROWS if r not in PEER or any(cells[k].get(r) for k in keys)]
    header = "| method | " + " | ".join(f"{s:g} → {t:g}" for s, t in keys) + " | mean |"
    peer_note = (f" pytorch-adapt peers (benchmarks/_peer.py, the library's algorithms on the same backbone, "
                 f"its own BatchNorm handling, no AdaBN): ADDA {ADA_ROUNDS} rounds, CORAL {args.iterations} rounds."
                 if set(PEER) & set(shown) else "")
    if len(commands) == 1:
        command_lines = [f"Command: `{commands[0]}`  "]
    else:
        command_lines = ["Commands (merged runs, oldest first):", "", *[f"- `{c}`" for c in commands], ""]
    lines = [
        "# Closed-set adaptation, 3D-ADA protocol (reduced)",
        "",
        f"Source batch-B (defocus {BATCH_B['defocus']} µm, Cs {BATCH_B['cs']} mm) → target batch-A (defocus "
        f"{BATCH_A['defocus']} µm, Cs {BATCH_A['cs']} mm); 16 classes + empty, 32³ at 10 Å; columns: source SNR → "
        f"target SNR. Target accuracy (arg-max, all target boxes), mean ± sd over seeds {args.seeds}. "
        f"{args.per_class} source and {args.target_per_class} target subtomograms per class; source training "
        f"≤ {args.epochs} epochs; fine-tuning methods {args.iterations} rounds; 3D-ADA default (≤ 300 rounds, "
        "label-free stop)." + peer_note,
        "",
        *command_lines,
        f"Machine: {machine()}",
        "",
        header,
        "|" + "---|" * (len(keys) + 2),
    ]
    for row in shown:
        vals = [fmt(cells[k].get(row, [])) for k in keys]
        allv = [v for k in keys for v in cells[k].get(row, [])]
        mean = mean_sd(allv)[0]
        lines.append(f"| {row} | " + " | ".join(vals) + (f" | {mean:.3f} |" if np.isfinite(mean) else " | – |"))
    both = [k for k in keys if cells[k].get("3D-ADA") and cells[k].get("source-only")]
    gains = [np.mean(cells[k]["3D-ADA"]) - np.mean(cells[k]["source-only"]) for k in both]
    better = sum(g > 0 for g in gains)
    gain = float(np.mean(gains)) if gains else None
    lines += ["", (f"3D-ADA − source-only: mean gain **{gain:+.3f}**, better in **{better}/{len(both)}** cells "
                   "(targets: ≥ 80 % of cells, ≥ 0.05 on average)." if gains else
                   "3D-ADA − source-only: no cell has both rows."),
              f"Adaptation time per target set ({picks} picks, {args.threads} threads): "
              f"3D-ADA {fmt(timings['3D-ADA'])} s, MLUDA {fmt(timings['MLUDA'])} s.", ""]
    if peer_missing:
        lines += [f"peer rows: pytorch-adapt not installed ({_peer.INSTALL})", ""]
    md = "\n".join(lines)
    payload = {"args": vars(args), "machine": machine(),
               "cells": {f"{s}->{t}": cells[(s, t)] for s, t in keys}, "timings": timings,
               "ada_gain_mean": gain, "ada_better_cells": int(better), "cells_total": len(keys), "commands": commands,
               "timing_picks": picks}
    save(name, payload, md)
    return 0


def _merge(name: str, cells: dict, timings: dict, commands: list, picks: int):
    """Fold this run into ``results/<name>.json``: its (cell, row) lists replace the old ones."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return cells, timings, commands, picks
    old = json.loads(path.read_text())
    earlier = old.get("commands")
    if earlier is None:  # written before commands were recorded: take it from the Markdown
        found = re.search(r"Command: `([^`]*)`", (RESULTS / f"{name}.md").read_text()) \
            if (RESULTS / f"{name}.md").exists() else None
        earlier = [found.group(1) if found else "(earlier run, command not recorded)"]
    merged = {tuple(float(v) for v in key.split("->")): rows for key, rows in old["cells"].items()}
    for key, rows in cells.items():
        merged.setdefault(key, {}).update(rows)
    # timings are flat lists over cells: the latest run that timed a method replaces them
    if not any(timings.values()):
        picks = old.get("timing_picks", old["args"]["target_per_class"] * 17)
    timings = {**old.get("timings", {}), **{m: v for m, v in timings.items() if v}}
    return merged, timings, earlier + commands, picks


def _combine(args):
    """Join results files of runs with disjoint seeds: lists per (cell, row) and timings concatenated.

    ``args`` takes the first file's settings and the union of the seeds (the files must agree on
    everything else).
    """
    runs = [json.loads(open(p).read()) for p in args.combine]
    same = ("source_snr", "target_snr", "per_class", "target_per_class", "epochs", "iterations", "threads")
    for key in same:
        if any(r["args"][key] != runs[0]["args"][key] for r in runs):
            raise SystemExit(f"--combine: the files differ in {key}")
    seeds = [s for r in runs for s in r["args"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--combine: seeds repeat across the files ({seeds})")
    for key in same + ("rows",):
        setattr(args, key, runs[0]["args"].get(key, getattr(args, key)))
    args.seeds = seeds
    cells: dict[tuple, dict[str, list]] = {}
    timings: dict[str, list] = {}
    for r in runs:
        for key, rows in r["cells"].items():
            cell = cells.setdefault(tuple(float(v) for v in key.split("->")), {})
            for row, values in rows.items():
                cell.setdefault(row, []).extend(values)
        for method, values in r.get("timings", {}).items():
            timings.setdefault(method, []).extend(values)
    commands = [c for r in runs for c in r.get("commands", [])]
    return cells, timings, commands


def _with_source_stats(bundle):
    """The centre-loss baseline keeps source BatchNorm statistics (it never sees the target)."""
    b = copy.deepcopy(bundle)
    if b.source_encoder is not None:
        b.model.encoder = b.source_encoder
    return b


if __name__ == "__main__":
    sys.exit(main())
