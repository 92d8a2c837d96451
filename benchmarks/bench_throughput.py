#!/usr/bin/env python
"""Network throughput: training and inference subtomograms/s, default encoder vs the 3D-ADA reference.

Run (2 CPU threads, as on the development machine)::

    .venv/bin/python benchmarks/bench_throughput.py             # full run (a few minutes on 2 threads)
    .venv/bin/python benchmarks/bench_throughput.py --quick     # smoke run (< 30 s)
    .venv/bin/python benchmarks/bench_throughput.py --device cuda   # on a GPU (AMP as device.autocast)

Both encoders classify 32³ boxes into the same number of classes (17 by default), batch 64:

- **fast** (default, :class:`napari_cryo_openset.models.FastEncoder`);
- **ada-reference** (the 3D-ADA encoder of Lin et al. 2019 as its public code builds it; boxes
  < 37³ are zero-padded to 37³ inside the encoder).

What is timed, through the package's own code paths:

- **training** — :func:`napari_cryo_openset.train.train_source` itself, driven on an in-memory
  set of random 32³ boxes: a timed stretch of *full optimisation steps* (batch indexing,
  wedge-preserving :func:`~napari_cryo_openset.train.augment_batch`, channels-last transfer,
  forward, label-smoothed cross-entropy, backward, AdamW step, cosine schedule step, and the
  loss read-back the progress event does), measured between the progress events the generator
  yields after each step. The first step of each run (lazy optimiser state) is not timed; the
  generator is closed after the timed steps, so the end-of-epoch validation is not timed either.
- **inference** — :func:`napari_cryo_openset.train.infer`, the batched eval-mode forward pass
  that :func:`~napari_cryo_openset.predict.predict_picks` runs (box extraction excluded), on
  canonical boxes held on the CPU (on CUDA the host→device copies and the read-back are timed).

Every figure is the best of ``--repeats`` timed repetitions, interleaved between the
measurements (the machine is shared; contention only slows a run down), after one warm-up run of
each. Results: ``benchmarks/results/throughput.json`` and ``throughput.md`` (``_quick`` /
``_cuda`` suffixes for those runs).

Adding a row (e.g. an adaptation step): write a function ``fn(ctx) -> (samples, wall s, CPU s)`` and
append a :class:`Measurement` to the list built in :func:`measurements` — it is then warmed up,
interleaved, reported in the table and saved like the others.

Targets (CPU, 2 threads): default inference ≥ 300 subtomograms/s, default training ≥ 80
samples/s, default inference ≥ 3× the reference's.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

BOX = 32
CLASSES = 17
BATCH = 64
VOXEL = 10.0
FAST, REFERENCE = "fast", "ada-reference"
TARGETS = {"inference_per_s": 300.0, "training_per_s": 80.0, "inference_ratio": 3.0}


# ------------------------------------------------------------------------------------------
# the measurements
# ------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What every measurement may use (built once)."""

    device: object  # torch.device
    amp: bool
    threads: int
    batch: int
    classes: int
    sizes: dict  # per measurement key: timed samples (inference) or timed steps (training)
    boxes: object = None  # torch tensor (N, 1, B, B, B), canonical (normalised)
    models: dict = field(default_factory=dict)  # architecture → eval-mode model on the device
    sets: dict = field(default_factory=dict)  # architecture → in-memory SimulatedSet


@dataclass
class Measurement:
    """One row: ``fn(ctx)`` runs the work once and returns (samples, wall seconds, CPU seconds) of the timed part."""

    key: str
    label: str
    unit: str
    fn: Callable[[Context], tuple[int, float, float]]
    rates: list = field(default_factory=list)
    utilisation: list = field(default_factory=list)

    @property
    def best(self) -> float:
        return max(self.rates) if self.rates else float("nan")


def random_set(n: int, classes: int, box: int, seed: int = 0):
    """An in-memory :class:`SimulatedSet` of ``n`` random boxes (content does not change the speed)."""
    from napari_cryo_openset.params import ImagingCondition
    from napari_cryo_openset.simulate.datasets import DatasetParams, SimulatedSet

    rng = np.random.default_rng(seed)
    per_class = math.ceil(n / classes)
    labels = np.repeat(np.arange(classes), per_class)[:n].astype(np.int64)
    cond = ImagingCondition(voxel_size=VOXEL)
    return SimulatedSet(
        subtomograms=rng.standard_normal((n, box, box, box), dtype=np.float32).astype(np.float16),
        labels=labels, class_names=[f"class{i:02d}" for i in range(classes)], condition=cond,
        params=DatasetParams(box=box, per_class=per_class, condition=cond), seed=seed,
        template=np.array([f"class{i:02d}" for i in labels]), defocus=np.full(n, 5.0, np.float32),
        snr=np.full(n, 0.1, np.float32), rotations=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
        shifts=np.zeros((n, 3), np.float32),
    )


def training_set_size(steps: int, batch: int, classes: int, fraction: float = 0.05) -> int:
    """Samples so that the stratified training split holds ≥ ``steps`` full batches."""
    from napari_cryo_openset.train import stratified_split

    n = math.ceil(steps * batch / (1 - fraction)) + 2 * classes
    labels = np.repeat(np.arange(classes), math.ceil(n / classes))[:n]
    train, _ = stratified_split(labels, fraction, 0)
    assert len(train) // batch >= steps, (n, len(train))
    return n


def train_rate(architecture: str, key: str) -> Callable[[Context], tuple[int, float, float]]:
    """Full optimisation steps of ``train_source`` (see the module docstring)."""

    def fn(ctx: Context) -> tuple[int, float, float]:
        import torch

        from napari_cryo_openset.train import TrainParams, train_source

        steps = ctx.sizes[key]
        params = TrainParams(epochs=1, batch_size=ctx.batch, validation_fraction=0.05, patience=0,
                             architecture=architecture, device=str(ctx.device), threads=ctx.threads,
                             amp=ctx.amp, seed=0)
        gen = train_source(ctx.sets[key], params)
        t_start = seconds = c_start = cpu = None
        try:
            for event in gen:
                m = event.metrics or {}
                if "step" not in m:
                    continue
                if m["step"] == 1:  # first step done (lazy AdamW state): start the clock
                    t_start, c_start = time.perf_counter(), time.process_time()
                elif m["step"] == 1 + steps:
                    seconds, cpu = time.perf_counter() - t_start, time.process_time() - c_start
                    break
        finally:
            gen.close()  # skip the end-of-epoch validation
        if seconds is None:
            raise RuntimeError(f"{key}: the training set gave fewer than {1 + steps} steps")
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        return steps * ctx.batch, seconds, cpu

    return fn


def infer_rate(architecture: str, key: str) -> Callable[[Context], tuple[int, float, float]]:
    """Batched eval-mode forward passes of ``train.infer`` (the path of ``predict_picks``)."""

    def fn(ctx: Context) -> tuple[int, float, float]:
        from napari_cryo_openset.train import infer

        n = ctx.sizes[key]
        pool = len(ctx.boxes)
        chunks = [ctx.boxes[:min(pool, n - s)] for s in range(0, n, pool)]  # passes over the box pool
        t, c = time.perf_counter(), time.process_time()
        for boxes in chunks:
            logits, _ = infer(ctx.models[architecture], boxes, ctx.device, batch_size=ctx.batch, amp=ctx.amp)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        assert logits.shape == (len(chunks[-1]), ctx.classes)
        return n, seconds, cpu

    return fn


def measurements() -> list[Measurement]:
    """The rows, in table order. Append new ones here (they are interleaved with the others)."""
    return [
        Measurement("train_fast", "training, fast (default)", "samples/s", train_rate(FAST, "train_fast")),
        Measurement("train_reference", "training, ada-reference", "samples/s", train_rate(REFERENCE, "train_reference")),
        Measurement("infer_fast", "inference, fast (default)", "subtomograms/s", infer_rate(FAST, "infer_fast")),
        Measurement("infer_reference", "inference, ada-reference", "subtomograms/s",
                    infer_rate(REFERENCE, "infer_reference")),
        # ADD ROWS HERE, e.g. Measurement("adapt_ada", "adaptation step, 3D-ADA", "samples/s", adapt_rate(...))
    ]


def adaptation_timing(device, threads: int, quick: bool) -> dict:
    """Wall time to adapt a trained model to 500 target picks with default settings (both methods)."""
    import time

    import torch

    from napari_cryo_openset.adapt import AdaptParams, adapt_boxes
    from napari_cryo_openset.checkpoint import bundle_from_training
    from napari_cryo_openset.progress import run_to_completion
    from napari_cryo_openset.simulate import DatasetParams, ImagingCondition, builtin_templates, generate_subtomograms
    from napari_cryo_openset.train import TrainParams, source_boxes, train_source

    picks = 60 if quick else 500
    templates = builtin_templates(VOXEL)
    per = 10 if quick else 80
    src = run_to_completion(generate_subtomograms(templates, DatasetParams(
        box=BOX, per_class=per, decoys=per, empty=per, condition=ImagingCondition(defocus=10.0, snr=0.1), seed=1)))
    trained = run_to_completion(train_source(src, TrainParams(epochs=1 if quick else 3, threads=threads,
                                                              device=str(device))))
    bundle = bundle_from_training(trained)
    per_t = -(-picks // (len(templates) + 1))
    tgt = run_to_completion(generate_subtomograms(templates, DatasetParams(
        box=BOX, per_class=per_t, empty=per_t, condition=ImagingCondition(defocus=5.0, snr=0.1), seed=2)))
    target = source_boxes(tgt.subtomograms, tgt.polarity)[:picks]
    out = {"picks": int(len(target)), "source": len(src), "methods": []}
    for method in ("ada", "mluda"):
        params = AdaptParams(method=method, device=str(device), threads=threads,
                             iterations=20 if quick else AdaptParams.iterations)
        t0 = time.perf_counter()
        result = run_to_completion(adapt_boxes(bundle, src, target, params))
        seconds = time.perf_counter() - t0
        rounds = max([h.get("iteration", 0) for h in result.history] or [0])
        out["methods"].append({"method": method, "seconds": seconds, "rounds": rounds, "stopped": result.stopped})
        print(f"  adaptation, {method}: {seconds:.1f} s for {len(target)} picks ({rounds} rounds; {result.stopped})",
              flush=True)
    torch.set_num_threads(threads)
    return out


def sizes_for(quick: bool, device_type: str) -> dict:
    """Timed steps (training) / boxes (inference) per repetition: a few seconds each on 2 free CPU threads."""
    if quick:
        sizes = {"train_fast": 2, "train_reference": 1, "infer_fast": 256, "infer_reference": 64}
    else:
        sizes = {"train_fast": 30, "train_reference": 4, "infer_fast": 6144, "infer_reference": 384}
    if device_type == "cuda":  # GPUs are ~100× faster: longer runs for stable timings
        sizes = {k: v * (4 if quick else 16) for k, v in sizes.items()}
    return sizes


# ------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer steps, one repetition (< 30 s on 2 threads)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repetitions per row; the best is reported "
                                                              "(default 3, quick 1)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, auto, mps")
    ap.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    ap.add_argument("--classes", type=int, default=CLASSES, help="classifier outputs (default %(default)s)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--no-adaptation", action="store_true", help="skip the on-the-fly adaptation timing")
    args = ap.parse_args(argv)
    command = " ".join(["python", "benchmarks/bench_throughput.py", *(argv if argv is not None else sys.argv[1:])])

    import torch

    torch.set_num_threads(args.threads)
    from napari_cryo_openset.device import choose_device, describe
    from napari_cryo_openset.models import NetworkParams, build_model, count_parameters, to_device
    from napari_cryo_openset.train import source_boxes

    classes = args.classes
    device = choose_device(args.device)
    amp = not args.no_amp and device.type == "cuda"
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = sizes_for(args.quick, device.type)
    ctx = Context(device=device, amp=amp, threads=args.threads, batch=BATCH, classes=classes, sizes=sizes)

    # data and models
    n_infer = min(1024, max(v for k, v in sizes.items() if k.startswith("infer")))  # a pool, passed over again
    ctx.boxes = source_boxes(random_set(n_infer, classes, BOX, seed=1).subtomograms, "dark")
    for key, arch in (("train_fast", FAST), ("train_reference", REFERENCE)):
        ctx.sets[key] = random_set(training_set_size(sizes[key] + 1, BATCH, classes), classes, BOX, seed=2)
    params = {}
    for arch in (FAST, REFERENCE):
        torch.manual_seed(0)
        model = build_model(NetworkParams(architecture=arch, box=BOX, num_classes=classes))
        params[arch] = count_parameters(model)
        ctx.models[arch] = to_device(model, device).eval()

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    amp_dtype = (("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if amp else None)
    print(f"throughput benchmark: {BOX}³ boxes, {classes} classes, batch {BATCH}, {describe(device)}"
          f"{f', AMP {amp_dtype}' if amp else ''}, best of {repeats}", flush=True)

    rows = measurements()
    # warm-up: one step / one batch of each row (quick: training rows rely on the untimed first step of each run)
    ctx.sizes = {k: (1 if k.startswith("train") else BATCH) for k in sizes}
    for row in rows:
        if not (args.quick and row.key.startswith("train")):
            row.fn(ctx)
    ctx.sizes = sizes
    load_before = _loadavg()
    for _ in range(repeats):  # interleaved
        for row in rows:
            n, seconds, cpu = row.fn(ctx)
            row.rates.append(n / seconds if seconds > 0 else float("inf"))
            if device.type == "cpu":
                # CPU time / (wall × threads) of the timed part: ~1 on free cores; lower = other
                # processes shared the cores, and then the rate drops by far more than that share
                # (the threads of each parallel region wait for one another): trust runs near 100 %
                row.utilisation.append(cpu / (seconds * args.threads))
    load_after = _loadavg()
    for row in rows:
        use = f", CPU use {', '.join(f'{u:.0%}' for u in row.utilisation)}" if row.utilisation else ""
        print(f"  {row.label + ':':34s} {row.best:8.1f} {row.unit}  "
              f"(runs: {', '.join(f'{r:.1f}' for r in row.rates)}{use})", flush=True)

    best = {row.key: row.best for row in rows}
    # CPU use of each row's best run: below 90 % the figure is lowered by other processes
    best_use = {row.key: row.utilisation[row.rates.index(row.best)] for row in rows if row.utilisation}
    contended = sorted(k for k, u in best_use.items() if u < 0.9)
    if contended:
        print(f"  WARNING: other processes shared the CPU during the best run of {', '.join(contended)} "
              "(CPU use < 90 %); those figures are too low — rerun on a quiet machine", flush=True)
    infer_ratio = best["infer_fast"] / best["infer_reference"]
    train_ratio = best["train_fast"] / best["train_reference"]
    met = {
        "inference_per_s": best["infer_fast"] >= TARGETS["inference_per_s"],
        "training_per_s": best["train_fast"] >= TARGETS["training_per_s"],
        "inference_ratio": infer_ratio >= TARGETS["inference_ratio"],
    }
    print(f"  default / reference: inference {infer_ratio:.1f}×, training {train_ratio:.1f}×", flush=True)
    print(f"  targets: inference ≥ {TARGETS['inference_per_s']:g}/s {_ok(met['inference_per_s'])}, "
          f"training ≥ {TARGETS['training_per_s']:g}/s {_ok(met['training_per_s'])}, "
          f"inference ≥ {TARGETS['inference_ratio']:g}× reference {_ok(met['inference_ratio'])}"
          + ("" if device.type == "cpu" else " (targets are for the CPU)"), flush=True)

    adaptation = None if args.no_adaptation else adaptation_timing(device, args.threads, args.quick)
    results = {
        "adaptation": adaptation,
        "command": command,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "box": BOX, "classes": classes, "batch": BATCH, "quick": args.quick, "repeats": repeats,
        "device": describe(device), "device_type": device.type, "gpu": gpu, "amp": amp, "amp_dtype": amp_dtype,
        "threads": args.threads, "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(),
        "parameters": params,
        "timed_per_repetition": {k: (f"{v} steps × {BATCH}" if k.startswith("train") else f"{v} boxes")
                                 for k, v in sizes.items()},
        "rows": [{"key": r.key, "label": r.label, "unit": r.unit, "best": r.best, "runs": r.rates,
                  "cpu_utilisation": r.utilisation} for r in rows],
        "loadavg_1min_before_after": [load_before, load_after],
        "contended_rows": contended,
        **{f"{k}_per_s": v for k, v in best.items()},
        "inference_ratio_default_over_reference": infer_ratio,
        "training_ratio_default_over_reference": train_ratio,
        "targets": TARGETS, "targets_met": met, "all_targets_met": all(met.values()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "throughput" + ("_cuda" if device.type == "cuda" else "") + ("_quick" if args.quick else "")
    _write(args.out / f"{stem}.json", json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    _write(args.out / f"{stem}.md", _markdown(results))
    print(f"  saved {args.out / stem}.json and .md", flush=True)
    return 0


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _ok(flag: bool) -> str:
    return "met" if flag else "MISSED"


def _markdown(r: dict) -> str:
    where = (f"GPU `{r['gpu']}`" + (f", AMP {r['amp_dtype']}" if r["amp"] else ", float32") + f"; CPU `{r['cpu']}`"
             if r["gpu"] else f"CPU `{r['cpu']}` ({r['cpu_count']} cores)")
    lines = [
        "# Network throughput",
        "",
        f"`{r['command']}` — {r['date']}",
        "",
        f"{r['box']}³ boxes, {r['classes']} classes, batch {r['batch']}; {where}, torch {r['torch']}, "
        f"`torch.set_num_threads({r['threads']})`{' (quick run)' if r['quick'] else ''}; best of {r['repeats']} "
        "interleaved timed repetitions after a warm-up (shared machine). Training = full optimisation steps of "
        "`train_source` (augmentation, forward, backward, AdamW); inference = `train.infer` (the path of "
        "`predict_picks`, extraction excluded).",
        "",
        "| measurement | rate (best) | unit | timed per repetition | runs | CPU use per run |",
        "|---|---:|---|---|---|---|",
    ]
    for row in r["rows"]:
        use = row.get("cpu_utilisation") or []
        lines.append(f"| {row['label']} | **{row['best']:.1f}** | {row['unit']} | "
                     f"{r['timed_per_repetition'].get(row['key'], '')} | "
                     f"{', '.join(f'{x:.1f}' for x in row['runs'])} | "
                     f"{', '.join(f'{u:.0%}' for u in use) if use else '–'} |")
    met = r["targets_met"]
    t = r["targets"]
    load = r.get("loadavg_1min_before_after") or [None, None]
    if r.get("contended_rows"):
        lines += ["", f"**Contended:** the best run of {', '.join(r['contended_rows'])} shared the CPU with other "
                  "processes (CPU use < 90 %); those rates are lower than this machine gives alone."]
    lines += [
        "",
        "CPU use = process CPU time / (wall time × threads) of the timed part: about 100 % on free cores; about "
        "50 % when another process shared the two cores, and such runs are 2–6× slower than this machine gives "
        "alone (the threads of each parallel region wait for one another), so only runs near 100 % show the "
        f"machine's speed. Load average (1 min) before/after: {load[0]} / {load[1]}.",
        "",
        f"Parameters: fast {r['parameters']['fast']:,}, ada-reference {r['parameters']['ada-reference']:,}.",
        "",
        f"Default / reference: inference **{r['inference_ratio_default_over_reference']:.1f}×**, training "
        f"**{r['training_ratio_default_over_reference']:.1f}×**.",
        "",
        "| target | value | met |",
        "|---|---:|---|",
        f"| default inference ≥ {t['inference_per_s']:g} subtomograms/s | {r['infer_fast_per_s']:.1f} | "
        f"{_ok(met['inference_per_s'])} |",
        f"| default training ≥ {t['training_per_s']:g} samples/s | {r['train_fast_per_s']:.1f} | "
        f"{_ok(met['training_per_s'])} |",
        f"| default inference ≥ {t['inference_ratio']:g}× reference | "
        f"{r['inference_ratio_default_over_reference']:.1f}× | {_ok(met['inference_ratio'])} |",
        "",
    ]
    if r["gpu"]:
        lines += ["(The targets are set for 2 CPU threads; on a GPU they are shown for reference.)", ""]
    a = r.get("adaptation")
    if a:
        lines += [
            "## On-the-fly adaptation",
            "",
            f"Adapting a model to **{a['picks']} picks** ({BOX}³, simulated target at another defocus) with default "
            f"settings, source set {a['source']} subtomograms; wall time of `adapt_boxes` (AdaBN, rounds, open-set "
            "calibration, predictions of every pick).",
            "",
            "| method | seconds | rounds run | stop | target ≤ 90 s |",
            "|---|---:|---:|---|---|",
        ]
        for m in a["methods"]:
            lines.append(f"| {m['method']} | **{m['seconds']:.1f}** | {m['rounds']} | {m['stopped']} | "
                         f"{_ok(m['seconds'] <= 90.0)} |")
        lines.append("")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
