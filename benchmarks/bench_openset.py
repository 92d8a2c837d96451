#!/usr/bin/env python
"""MLUDA S1→S2-style open-set protocol on our simulator: known classes vs. never-seen structures.

Classes (fixed, from the sorted names of ``shared/data/templates_10A``):

- **known** (6): the model's classes (+ ``empty`` boxes as a 7th known class in the source);
- **source "other"** (2): simulated in the source and labelled ``unknown``, together with the
  simulator's procedural decoys (the source unknowns that feed MLUDA's L_c);
- **target novel** (4): appear only in the target, never in any source set.

Source: batch-B condition (defocus 10 µm, Cs 2.2 mm); target: batch-A (defocus 5 µm, Cs 2.0 mm);
SNR 0.1 both; 32³ at 10 Å. Every threshold is calibrated on **source validation** data (known
vs. source unknowns, Youden's J). Rows:

- **softmax threshold** — source model; unknown if the arg-max is ``unknown`` or 1 − max softmax
  exceeds the calibrated threshold;
- **centre loss** — source-only fine-tuning with the margin/centre terms (no target data),
  unknown = distance to the nearest centre above the threshold;
- **JDDA-like** — CORAL + centre terms (MLUDA code without L_c);
- **OSBP-style** — open-set back-propagation (Saito et al. 2018; :mod:`_osbp`): K+1 classifier,
  adversarial ``p_unk = 0.5`` game on the target through gradient reversal; arg-max decision;
- **3D-ADA + open-set rule** — 3D-ADA, unknown score = distance to the nearest source centre;
- **MLUDA** — the full loss.

Columns: ALL, OS, OS*,
UNK, HOS, AUROC of the unknown score; mean ± sd over seeds.

    .venv/bin/python benchmarks/bench_openset.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time

import numpy as np
import torch

from _osbp import adapt_osbp
from _protocol import (BATCH_A, BATCH_B, adapt, boxes_of, fmt, load_source, machine, predict, save,
                       shared_templates, simulate, train)

from napari_cryo_openset.metrics import open_set_metrics
from napari_cryo_openset.openset import calibrate_threshold
from napari_cryo_openset.picks import UNKNOWN_CLASS

KNOWN = 6
OTHER = 2
NOVEL = 4
ROWS = ["softmax threshold", "centre loss", "JDDA-like (CORAL + centre)", "OSBP-style", "3D-ADA + open-set rule", "MLUDA"]
COLUMNS = ["all", "os", "os_star", "unk", "hos", "auroc"]


def relabel(data, keep_known: list[str]):
    """Merge every class not in ``keep_known`` (except empty) into ``unknown``."""
    names = list(data.class_names)
    new_names = sorted(keep_known) + ["empty", UNKNOWN_CLASS]
    mapping = np.array([new_names.index(n) if n in new_names else new_names.index(UNKNOWN_CLASS) for n in names])
    return dataclasses.replace(data, labels=mapping[data.labels], class_names=new_names)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--target-per-class", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.per_class, args.target_per_class, args.epochs, args.iterations = [0], 12, 8, 2, 10
    torch.set_num_threads(args.threads)
    templates = shared_templates()
    names = sorted(t.name for t in templates)
    known, other, novel = names[:KNOWN], names[KNOWN:KNOWN + OTHER], names[KNOWN + OTHER:KNOWN + OTHER + NOVEL]
    by_name = {t.name: t for t in templates}
    results = {r: {c: [] for c in COLUMNS} for r in ROWS}
    t0 = time.perf_counter()
    for seed in args.seeds:
        src = simulate([by_name[n] for n in known + other], BATCH_B, args.snr, args.per_class, seed=1000 + seed,
                       decoys=args.per_class)
        src = relabel(src, known)
        bundle, res = train(src, seed, args.epochs, args.threads)
        source = load_source(src, bundle)
        tgt = simulate([by_name[n] for n in known + novel], BATCH_A, args.snr, args.target_per_class,
                       seed=2000 + seed, empty=0)
        xt = boxes_of(tgt)
        truth = np.array([n if n in known else UNKNOWN_CLASS for n in np.asarray(tgt.class_names)[tgt.labels]])
        print(f"seed {seed}: source val acc {res.val_accuracy:.3f}; target {len(xt)} boxes "
              f"({(truth == UNKNOWN_CLASS).sum()} novel) ({time.perf_counter() - t0:.0f} s)", flush=True)

        def score(row, pred):
            m = open_set_metrics(truth, np.asarray(pred.class_name, dtype=str), pred.unknown_score, known_classes=known)
            for c in COLUMNS:
                results[row][c].append(float(getattr(m, c)))
            print(f"  {row}: " + ", ".join(f"{c} {getattr(m, c):.3f}" for c in COLUMNS), flush=True)

        # softmax threshold calibrated on source validation (known vs. source unknowns)
        va_known, va_unknown = source.split_known_unknown(source.val_idx)
        pv = predict(bundle, source.x[torch.from_numpy(np.concatenate([va_known, va_unknown]))][:, 0])
        cal = calibrate_threshold(pv.unknown_score[:len(va_known)], pv.unknown_score[len(va_known):])
        b_soft = copy.deepcopy(bundle)
        b_soft.openset["threshold"] = cal.threshold
        score("softmax threshold", predict(b_soft, xt))

        xs_only = source.x[torch.from_numpy(source.train_idx[: len(xt)])][:, 0]
        r, _ = adapt(bundle, source, xs_only, args.threads, method="mluda", iterations=args.iterations, lambda2=0.0,
                     unknown_margin=False, seed=seed)
        b = copy.deepcopy(r.bundle)
        b.model.encoder = b.source_encoder
        score("centre loss", predict(b, xt))
        r, _ = adapt(bundle, source, xt, args.threads, method="mluda", iterations=args.iterations,
                     unknown_margin=False, seed=seed)
        score("JDDA-like (CORAL + centre)", r.predictions)
        score("OSBP-style", adapt_osbp(bundle, source, xt[:, None], iterations=args.iterations, seed=seed))
        r, _ = adapt(bundle, source, xt, args.threads, method="ada", seed=seed)
        score("3D-ADA + open-set rule", r.predictions)
        r, _ = adapt(bundle, source, xt, args.threads, method="mluda", iterations=args.iterations, seed=seed)
        score("MLUDA", r.predictions)

    lines = [
        "# Open-set recognition, MLUDA S1→S2-style protocol",
        "",
        f"Known: {', '.join(known)} (+ empty in the source); source unknowns: decoys + {', '.join(other)}; target "
        f"novel: {', '.join(novel)}. Source batch-B → target batch-A, SNR {args.snr:g}, 32³ at 10 Å; "
        f"{args.per_class} source / {args.target_per_class} target per class; thresholds from source validation "
        f"data only. Mean ± sd over seeds {args.seeds}.",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/bench_openset.py', *sys.argv[1:]])}`  ",
        f"Machine: {machine()}",
        "",
        "| method | ALL | OS | OS* | UNK | **HOS** | AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join(fmt(results[row][c]) for c in COLUMNS) + " |")
    gain = np.mean(results["MLUDA"]["hos"]) - np.mean(results["softmax threshold"]["hos"])
    lines += ["", f"MLUDA HOS − softmax-threshold HOS: **{gain:+.3f}** (target ≥ +0.10).", ""]
    md = "\n".join(lines)
    save("openset_quick" if args.quick else "openset", {"args": vars(args), "machine": machine(), "known": known,
                                                         "other": other, "novel": novel, "results": results,
                                                         "mluda_hos_gain": float(gain)}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
