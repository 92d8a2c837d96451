"""``batch`` throughput (1 vs 2 Dask workers, the shared source stage) and per-tomogram vs joint adaptation (issue 16).

N simulated tomograms of one imaging condition (crowded 64×128×128 scenes at 10 Å, SNR 0.2, ±60°,
with the shared built-in structures; **1u6g-like held-out structures are replaced here by the
built-in templates the model is not given**: the run is told only ``--templates`` KNOWN, so the
others in the scenes are unknowns) are written to a folder; the real command
``napari-cryo-openset batch FOLDER`` runs on a LocalCluster with 1 and then 2 workers (each a
fresh output folder), in its own process. From each ``batch_report.json``:

- the shared source stage (``sources.<condition>.seconds``: simulate + train once);
- the per-tomogram part: wall time of the batch minus the source stage, and tomograms per hour
  of it (expect close to 2× with 2 workers on 2 free cores);
- peak RSS per worker (MB);
- HOS per tomogram against the scenes' truth (picks matched within 0.3 × the particle's diameter,
  as ``bench_run.py``), mean ± sd — per-tomogram adaptation;
- **per-tomogram vs joint adaptation**: the same data set once more with ``batch --joint`` (one
  model adapted to the pooled picks of all the tomograms, every tomogram predicted with it), on
  the largest worker count, starting from the per-tomogram batch's saved source model (the same
  parameters: the same source model, so the two differ only in the adaptation): HOS per tomogram
  mean ± sd for each, and the paired difference (joint − per-tomogram) mean ± sd.

Results: ``benchmarks/results/batch.json`` and ``.md``.

    python benchmarks/bench_batch.py --quick      # 4 tomograms, tiny settings (several minutes on 2 cores): a smoke
                                                  # test of the machinery; its HOS (2-epoch model) means nothing
    python benchmarks/bench_batch.py              # 8 tomograms, --fast settings (tens of minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _protocol import fmt, machine, mean_sd, save  # noqa: E402  (puts src/ on the path)

CLI = [sys.executable, "-c", "import sys; from napari_cryo_openset.cli import main; sys.exit(main())"]
KNOWN = ("1bxn", "1qvr", "2cg9", "4v4r")
UNKNOWN = ("3j9i", "4cr2")
QUICK = ["--per-class", "10", "--epochs", "2", "--iterations", "20", "--source", "isolated", "--no-estimate",
         "--verify-rotations", "24", "--max-picks", "60"]
FULL = ["--fast", "--max-picks", "120"]


def make_dataset(folder: Path, n: int, seed: int = 0) -> dict[str, "object"]:
    """``n`` crowded scenes of one condition; returns the truth table of each."""
    from napari_cryo_openset.io import write_tomogram
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, builtin_templates, make_scene

    folder.mkdir(parents=True, exist_ok=True)
    templates = [t for t in builtin_templates(10.0) if t.name in KNOWN + UNKNOWN]
    truths = {}
    for i in range(n):
        volume, truth = make_scene(SceneParams(
            shape=(64, 128, 128), condition=ImagingCondition(voxel_size=10.0, snr=0.2, tilt_range=(-60.0, 60.0)),
            templates=tuple(templates), n_particles=40, unknown_fraction=0.0, seed=seed + i))
        name = f"TS_{i + 1:02d}"
        write_tomogram(folder / f"{name}.mrc", volume, 10.0)
        truths[name] = truth
    return truths


def known_templates(folder: Path) -> Path:
    """The known structures as MRC maps (the run is given only these)."""
    from napari_cryo_openset.io import write_tomogram
    from napari_cryo_openset.simulate import builtin_templates

    folder.mkdir(parents=True, exist_ok=True)
    for t in builtin_templates(10.0):
        if t.name in KNOWN:
            write_tomogram(folder / f"{t.name}.mrc", np.asarray(t.density, np.float32), 10.0)
    return folder


def run_batch(data: Path, templates: Path, out: Path, workers: int, settings: list[str], joint: bool = False,
              ) -> tuple[float, dict, int]:
    cmd = [*CLI, "batch", str(data), "-o", str(out), "--templates", str(templates), "--diameter", "120", "345",
           "--method", "mluda", "--workers", str(workers), "--device", "cpu", "--quiet", *settings,
           *(["--joint"] if joint else [])]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    t0 = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - t0
    report = json.loads((out / "batch_report.json").read_text()) if (out / "batch_report.json").exists() else {}
    return seconds, report, rc


def hos_per_tomogram(out: Path, truths: dict) -> dict[str, float]:
    from bench_run import score  # the end-to-end benchmark's matching and open-set scoring

    from napari_cryo_openset.io import read_picks
    from napari_cryo_openset.simulate import builtin_templates

    diam = {t.name: float(t.diameter) / 10.0 for t in builtin_templates(10.0)}
    values = {}
    for name, truth in truths.items():
        pred = out / "tomograms" / name / "predictions.star"
        if not pred.exists():
            continue
        picks = read_picks(pred)
        d = np.array([diam.get(str(c), 20.0) for c in truth["class_name"]])
        res = score(picks["class_name"].astype(str).to_numpy(), picks, truth, d, list(KNOWN))
        values[name] = float(res.get("hos", float("nan")))
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 tomograms, tiny settings")
    ap.add_argument("--tomograms", type=int, default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    n = args.tomograms or (4 if args.quick else 8)
    settings = QUICK if args.quick else FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        work = Path(tmp)
        truths = make_dataset(work / "data", n)
        templates = known_templates(work / "templates")
        for workers in args.workers:
            out = work / f"out_{workers}"
            seconds, report, rc = run_batch(work / "data", templates, out, workers, settings)
            source = next(iter((report.get("sources") or {}).values()), {})
            src_s = float(source.get("seconds_with_transfer", source.get("seconds", 0.0)))
            done = (report.get("status_counts") or {}).get("done", 0)
            per_tomo = max(seconds - src_s, 1e-9)
            hos = hos_per_tomogram(out, truths)
            mean, sd = mean_sd(hos.values())
            rows.append({"workers": workers, "exit": rc, "tomograms": n, "done": done, "wall_s": seconds,
                         "source_stage_s": src_s, "per_tomogram_part_s": per_tomo,
                         "tomograms_per_hour": 3600.0 * done / per_tomo if done else 0.0,
                         "peak_rss_mb_per_worker": report.get("peak_rss_mb_per_worker"),
                         "hos": hos, "hos_mean": mean, "hos_sd": sd})
        joint = run_joint(work, templates, truths, settings, rows, max(args.workers))
    base = rows[0]["tomograms_per_hour"] or float("nan")
    lines = ["| workers | tomograms done | wall s | source stage s | per-tomogram part s | tomograms/hour | speed-up | "
             "peak RSS/worker MB | HOS (per-tomogram adaptation) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        rss = ", ".join(f"{v:.0f}" for v in (r["peak_rss_mb_per_worker"] or {}).values()) or "–"
        hos = fmt(r["hos"].values())
        lines.append(f"| {r['workers']} | {r['done']}/{r['tomograms']} | {r['wall_s']:.1f} | {r['source_stage_s']:.1f} | "
                     f"{r['per_tomogram_part_s']:.1f} | {r['tomograms_per_hour']:.1f} | "
                     f"{r['tomograms_per_hour'] / base:.2f}× | {rss} | {hos} |")
    md = (f"# batch throughput ({'quick' if args.quick else 'full'}; {machine()['date']}, {machine()['cores']} cores)\n\n"
          + "\n".join(lines) + "\n\n" + joint_table(joint, rows, n) + "\n")
    save("batch_quick" if args.quick else "batch",
         {"machine": machine(), "settings": settings, "rows": rows, "joint": joint}, md)


def run_joint(work: Path, templates: Path, truths: dict, settings: list[str], rows: list[dict], workers: int) -> dict:
    """``batch --joint`` on the same data set with ``workers`` workers, from the per-tomogram batch's saved
    source model (copied: the same parameters reuse it), HOS per tomogram."""
    import shutil

    out = work / "out_joint"
    out.mkdir()
    if (work / f"out_{workers}" / "sources").is_dir():
        shutil.copytree(work / f"out_{workers}" / "sources", out / "sources")
    seconds, report, rc = run_batch(work / "data", templates, out, workers, settings, joint=True)
    source = next(iter((report.get("sources") or {}).values()), {})
    info = source.get("joint") or {}
    hos = hos_per_tomogram(out, truths)
    mean, sd = mean_sd(hos.values())
    per = next((r for r in rows if r["workers"] == workers), rows[-1])
    diffs = [hos[k] - per["hos"][k] for k in hos if k in per["hos"]]
    src_s = float(source.get("seconds_with_transfer", source.get("seconds", 0.0)))
    return {"workers": workers, "exit": rc, "done": (report.get("status_counts") or {}).get("done", 0),
            "wall_s": seconds, "after_source_s": seconds - src_s, "joint_adaptation_s": info.get("seconds"),
            "pooled_picks": info.get("pooled_picks"),
            "adaptation_picks": info.get("adaptation_picks"), "hos": hos, "hos_mean": mean, "hos_sd": sd,
            "per_tomogram_workers": per["workers"], "diff": diffs, "diff_mean": mean_sd(diffs)[0],
            "diff_sd": mean_sd(diffs)[1]}


def joint_table(joint: dict, rows: list[dict], n: int) -> str:
    """Per-tomogram vs joint adaptation: HOS per tomogram (mean ± sd) and the paired difference."""
    per = next((r for r in rows if r["workers"] == joint["per_tomogram_workers"]), rows[-1])
    names = sorted(set(per["hos"]) | set(joint["hos"]))
    cells = " ".join(f"{k} {per['hos'].get(k, float('nan')):.3f}" for k in names)
    joint_cells = " ".join(f"{k} {joint['hos'].get(k, float('nan')):.3f}" for k in names)
    return "\n".join([
        f"Per-tomogram vs joint adaptation ({n} tomograms of one condition, {joint['workers']} workers, the same "
        f"source model; {' and '.join(UNKNOWN)} are in the scenes but not given):", "",
        "| adaptation | tomograms done | wall s after the source stage | pooled picks (learnt from) | "
        "HOS per tomogram, mean ± sd | per tomogram |", "|---|---:|---:|---:|---|---|",
        f"| per tomogram | {per['done']}/{n} | {per['per_tomogram_part_s']:.1f} | – | {fmt(per['hos'].values())} "
        f"| {cells} |",
        f"| joint (`--joint`) | {joint['done']}/{n} | {joint['after_source_s']:.1f} | {joint['pooled_picks']} "
        f"({joint['adaptation_picks']}) | {fmt(joint['hos'].values())} | {joint_cells} |",
        "", f"Paired difference joint − per tomogram: {fmt(joint['diff'])} HOS (sample sd).",
    ])


if __name__ == "__main__":
    main()
