#!/usr/bin/env python
"""Source accuracy: 16 structures + empty at SNR 0.1, 32³ boxes, 10 Å, same condition held out.

Simulates ``--per-class`` subtomograms of each of the 16 maps in ``shared/data/templates_10A``
plus as many empty boxes (defocus 5 µm, ±60° every 3°), trains the default encoder with the
default :class:`~napari_cryo_openset.train.TrainParams` (``--epochs``), and reports the accuracy
on the held-out *source* validation split (15 %, stratified, seeded). ``--reference`` also trains
the 3D-ADA reference encoder on the same set (32³ zero-padded to 37³; slow on a CPU).

    .venv/bin/python benchmarks/bench_source.py [--reference] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

from _protocol import machine, save, shared_templates, simulate

import torch

from napari_cryo_openset.progress import run_to_completion
from napari_cryo_openset.train import TrainParams, train_source


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--reference", action="store_true", help="also train the 3D-ADA reference encoder")
    ap.add_argument("--reference-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.per_class, args.epochs, args.reference_epochs = 10, 1, 1
    torch.set_num_threads(args.threads)
    templates = shared_templates()
    t0 = time.perf_counter()
    data = simulate(templates, {"defocus": 5.0}, 0.1, args.per_class, seed=args.seed)
    sim_s = time.perf_counter() - t0
    rows = []
    archs = [("fast", args.epochs)] + ([("ada-reference", args.reference_epochs)] if args.reference else [])
    for arch, epochs in archs:
        r = run_to_completion(train_source(data, TrainParams(epochs=epochs, architecture=arch, seed=args.seed,
                                                             threads=args.threads, device="cpu")))
        rows.append({"architecture": arch, "box": 32 if arch == "fast" else "32 → 37 (padded)", "epochs": epochs,
                     "best_epoch": r.best_epoch, "val_accuracy": r.val_accuracy, "seconds": r.seconds,
                     "stopped": r.stopped})
        print(f"{arch}: validation accuracy {r.val_accuracy:.3f} (best epoch {r.best_epoch}, {r.seconds:.0f} s)",
              flush=True)
    lines = ["# Source accuracy (held-out simulated split, same condition)", "",
             f"16 classes + empty, {args.per_class} per class, SNR 0.1, defocus 5 µm, 32³ at 10 Å; simulation "
             f"{sim_s:.0f} s. Command: `.venv/bin/python benchmarks/bench_source.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine()}", "",
             "| encoder | box | epochs (best) | validation accuracy | training time |", "|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['architecture']} | {r['box']} | {r['epochs']} ({r['best_epoch']}) | "
                     f"**{r['val_accuracy']:.3f}** | {r['seconds']:.0f} s |")
    lines += ["", "Target: default encoder ≥ 0.85.", ""]
    save("source_quick" if args.quick else "source", {"args": vars(args), "rows": rows, "machine": machine()},
         "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
