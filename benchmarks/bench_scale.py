"""Peak memory and time of ``predict`` and ``run --picks`` at 10k / 100k / 1M picks (issue 17).

Every case runs the real command line (``napari-cryo-openset …``) in its own process; its peak
resident set (``ru_maxrss`` of that child, from ``os.wait4``) and wall-clock seconds are
recorded. One small tomogram (64 × 96 × 96 voxels at 10 Å, noise: the content does not change
the memory) and a tiny model bundle (simulated and trained here in a few seconds) serve every
case; the picks are uniform random positions, written as CSV (and STAR for the read reference).

``run --picks`` uses the cheapest source settings (``--fast --source isolated --no-estimate
--per-class 20 --epochs 2 --iterations 30``): the source stages do not depend on the number of
picks, and a million picks in a 0.6-million-voxel tomogram are far denser than any real sample,
so crowded scene simulation at that density would measure nothing useful. What scales with the
picks — extraction, adaptation's target set (at most ``max_target_picks``), prediction, t-SNE
(fitted on at most 20,000), clusters and averages — runs as in any run.

Reference in the same run: reading the largest picks file as STAR vs CSV (``read_picks``),
and with ``starfile.read`` alone.

    python benchmarks/bench_scale.py            # predict 10k/100k/1M, run 10k/100k (~25 min on 2 cores)
    python benchmarks/bench_scale.py --quick    # predict 10k/100k, run 10k
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _protocol import machine, save  # noqa: E402  (puts src/ on the path)

CLI = [sys.executable, "-c", "import sys; from napari_cryo_openset.cli import main; sys.exit(main())"]
RUN_OPTIONS = ["--fast", "--source", "isolated", "--no-estimate", "--per-class", "20", "--epochs", "2",
               "--iterations", "30", "--diameter", "150", "--method", "mluda", "--templates", "builtin"]
LIMITS_GB = {"predict": 2.0, "run": 4.0}


def child_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    return env


def measure(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit status) of one command run as a child process."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024.0, proc.returncode


def prepare(work: Path, sizes: list[int]) -> None:
    """Tomogram, model bundle and picks files in ``work``."""
    import numpy as np
    import pandas as pd

    from napari_cryo_openset.io import write_tomogram
    from napari_cryo_openset.io.picks_io import read_picks, write_picks

    rng = np.random.default_rng(0)
    write_tomogram(work / "tomo.mrc", rng.normal(size=(64, 96, 96)).astype(np.float32), 10.0)
    for n in sizes:
        zyx = rng.uniform(0, 1, (n, 3)) * (np.array([64, 96, 96]) - 1)
        df = pd.DataFrame({"x": zyx[:, 2], "y": zyx[:, 1], "z": zyx[:, 0], "score": rng.uniform(0, 1, n)})
        write_picks(work / f"picks_{n}.csv", df)
    biggest = read_picks(work / f"picks_{max(sizes)}.csv")
    write_picks(work / "read.star", biggest)
    write_picks(work / "read.csv", biggest)
    for cmd in (["simulate", "--templates", "builtin", "--voxel-size", "10", "--box", "24", "--per-class", "8",
                 "--decoys", "8", "--empty", "4", "-o", str(work / "source.npz")],
                ["train", str(work / "source.npz"), "-o", str(work / "model.pt"), "--epochs", "1",
                 "--device", "cpu", "--threads", "1"]):
        subprocess.run(CLI + cmd, check=True, env=child_env(), capture_output=True)


def read_times(work: Path) -> dict:
    """Seconds to read the largest picks file as STAR and as CSV (read_picks), and with starfile alone."""
    code = ("import sys, time; from pathlib import Path; from napari_cryo_openset.io import read_picks; "
            "t = time.perf_counter(); df = read_picks(sys.argv[1]); print(time.perf_counter() - t, len(df))")
    out = {}
    for name in ("read.star", "read.csv"):
        res = subprocess.run([sys.executable, "-c", code, str(work / name)], env=child_env(), check=True,
                             capture_output=True, text=True).stdout.split()
        out[name] = {"seconds": float(res[0]), "rows": int(res[1])}
    star = ("import sys, time, starfile; t = time.perf_counter(); df = starfile.read(sys.argv[1]); "
            "print(time.perf_counter() - t, len(df))")
    res = subprocess.run([sys.executable, "-c", star, str(work / "read.star")], env=child_env(), check=True,
                         capture_output=True, text=True).stdout.split()
    out["starfile"] = {"seconds": float(res[0]), "rows": int(res[1])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="predict 10k/100k, run 10k")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the commands (default 1)")
    ap.add_argument("--commands", nargs="+", choices=("predict", "run"), default=["predict", "run"],
                    help="measure only these; the other rows are kept from the last results file")
    ap.add_argument("--run-sizes", nargs="+", type=int, default=None, help="picks of the run cases")
    args = ap.parse_args()
    predict_sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    run_sizes = args.run_sizes or ([10_000] if args.quick else [10_000, 100_000])
    predict_sizes = predict_sizes if "predict" in args.commands else []
    run_sizes = run_sizes if "run" in args.commands else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        prepare(work, sorted(set(predict_sizes + run_sizes)))
        reads = read_times(work)
        device = ["--device", "cpu", "--threads", str(args.threads)]
        cases = [("predict", n, ["predict", str(work / "model.pt"), "--tomo", str(work / "tomo.mrc"), "--picks",
                                 str(work / f"picks_{n}.csv"), "-o", str(work / f"pred_{n}.star"), *device])
                 for n in predict_sizes]
        cases += [("run", n, ["run", "--tomo", str(work / "tomo.mrc"), "--picks", str(work / f"picks_{n}.csv"),
                              "-o", str(work / f"run_{n}"), *RUN_OPTIONS, *device]) for n in run_sizes]
        for command, n, cmd in cases:
            seconds, rss, status = measure(CLI + cmd, work / f"{command}_{n}.log")
            row = {"command": command, "picks": n, "seconds": round(seconds, 1), "peak_rss_mb": round(rss),
                   "date": time.strftime("%Y-%m-%d %H:%M"),
                   "limit_gb": LIMITS_GB[command], "exit": status,
                   "within_limit": bool(status == 0 and rss / 1024 < LIMITS_GB[command])}
            if status != 0:
                row["log_tail"] = (work / f"{command}_{n}.log").read_text()[-2000:]
            rows.append(row)
            print(f"{command:8s} {n:>9,d} picks: {seconds:7.1f} s, peak RSS {rss:7.0f} MB, exit {status}", flush=True)
    name = "scale_quick" if args.quick else "scale"
    rows = kept_rows(name, args.commands) + rows
    reads = kept_reads(name, reads)
    payload = {"machine": machine(), "tomogram": "64×96×96 voxels at 10 Å", "model": "fast, 24³ boxes",
               "run_options": RUN_OPTIONS, "threads": args.threads, "cases": rows, "read_seconds": reads}
    save(name, payload, markdown(rows, reads, args))


def kept_rows(name: str, measured: list[str]) -> list[dict]:
    """Rows of the commands not measured now, from the last ``results/NAME.json`` (with their date)."""
    import json

    from _protocol import RESULTS

    path = RESULTS / f"{name}.json"
    if not path.exists() or set(measured) == {"predict", "run"}:
        return []
    old = json.loads(path.read_text())
    return [{**r, "date": r.get("date", old["machine"]["date"])} for r in old["cases"] if r["command"] not in measured]


def kept_reads(name: str, reads: dict) -> dict:
    """The read reference of the last results file when it read more rows than this run."""
    import json

    from _protocol import RESULTS

    path = RESULTS / f"{name}.json"
    if path.exists():
        old = json.loads(path.read_text()).get("read_seconds", {})
        if old.get("read.star", {}).get("rows", 0) > reads["read.star"]["rows"]:
            return old
    return reads


def markdown(rows, reads, args) -> str:
    m = machine()
    lines = [
        "# Scale: peak memory and time vs number of picks",
        "",
        f"`python benchmarks/bench_scale.py{' --quick' if args.quick else ''}` — {m['date']}, {m['cores']} cores "
        f"(shared), torch {m['torch']}, {args.threads} torch thread(s). One tomogram of 64×96×96 voxels at 10 Å, "
        "a fast-encoder model with 24³ boxes; uniform random picks (CSV). Each case is the real command line in its "
        "own process; peak RSS is that process's `ru_maxrss`.",
        "",
        "| command | picks | seconds | peak RSS (MB) | limit | within | measured |",
        "|---|---:|---:|---:|---:|:---:|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['command']}` | {r['picks']:,} | {r['seconds']:.1f} | {r['peak_rss_mb']:,} | "
                     f"{r['limit_gb']:g} GB | {'yes' if r['within_limit'] else 'NO'} | {r.get('date', '')} |")
    star, csv, sf = reads["read.star"], reads["read.csv"], reads["starfile"]
    lines += [
        "",
        f"`run` options: `{' '.join(RUN_OPTIONS)}` (the source stages do not depend on the number of picks; see "
        "the script's docstring).",
        "",
        f"Reference, reading picks (`read_picks`, with every check): {star['rows']:,} rows of STAR in "
        f"{star['seconds']:.1f} s vs {csv['seconds']:.1f} s for the same CSV ({star['seconds'] / csv['seconds']:.1f}×); "
        f"`starfile.read` alone (no checks, no picks table) takes {sf['seconds']:.1f} s. The reader before issue 17 "
        "(a per-line `shlex` check, then starfile) took 42 s for this file on this machine.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
