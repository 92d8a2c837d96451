#!/usr/bin/env python
"""Benchmark the spectral gap between simulated and real subtomograms, and how it is closed.

Target: boxes extracted at the Gag-lattice picks of the real HIV VLP tomogram
(``../shared/data/real/hiv_vlp_40A.mrc``, 40 Å/voxel; every ``--stride``-th pick), normalised as
every box fed to a network. Source: the package's simulator (built-in templates at 40 Å, full
chain) under several imaging conditions:

- ``baseline``: a run's source today: the default condition (5 µm, SNR 0.1, ±60°/3°, white
  projection noise, no B-factor) with the run's crowding (neighbours, background, shifts);
- ``bfactor=B``: a B-factor envelope on the projections (a small grid of B, Å²);
- ``coloured``: projection noise shaped so that the simulated **noise-only** reconstruction has
  the target's background spectrum (:func:`~napari_cryo_openset.spectrum.noise_spectrum`):
  projection power = target background 3D power / the chain's 3D power for white projection
  noise, both per shell (a one-off calibration with empty boxes);
- ``bfactor + coloured`` (the B of the grid closest to the target);
- ``tilt_jitter=1 px``: per-tilt misalignment;
- ``baseline + spectral match``: :func:`fit_spectral_match` on one simulated set, applied to
  that set and to a second set of another seed (held out).

For each it reports the mean and max |P_sim/P_target − 1| over shells 0 < f ≤ 0.8 Nyquist and
the per-shell deviation, the voxel kurtosis of the boxes, and the seconds to fit and to apply a
match to N boxes of 32³.

Run (2 CPU threads)::

    python benchmarks/bench_spectrum.py [--quick]

Results: ``benchmarks/results/spectrum.json`` / ``spectrum.md`` (``spectrum_quick.*``) and
``spectrum.png`` (baseline before/after matching).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
REAL = REPO / ".." / "shared" / "data" / "real"
VS = 40.0


def simulate(condition, per_class: int, box: int, seed: int, empty: int = 0) -> np.ndarray:
    """Boxes as a run simulates its source: its crowding (neighbours, background, shifts)."""
    from dataclasses import replace

    from napari_cryo_openset.params import PickingParams, RunParams
    from napari_cryo_openset.simulate import builtin_templates, generate_subtomograms

    crowd = RunParams(PickingParams(150.0)).source
    params = replace(crowd, box=box, per_class=per_class, empty=empty, condition=condition, seed=seed)
    gen = generate_subtomograms(builtin_templates(condition.voxel_size), params)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        data = stop.value
    x = data.subtomograms.astype(np.float32)
    if empty:
        x = x[np.asarray(data.labels) == data.class_names.index("empty")]
    return x


def deviation(freq, p, pt):
    from napari_cryo_openset.spectrum import REPORT_BAND

    sel = (freq > 0) & (freq <= REPORT_BAND / (2 * VS) + 1e-12)
    d = p / np.maximum(pt, 1e-30) - 1.0
    d[0] = 0.0  # DC: normalised boxes have none
    return {"mean_abs": float(np.abs(d[sel]).mean()), "max_abs": float(np.abs(d[sel]).max()),
            "per_shell": [round(float(v), 4) for v in d]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer boxes and B values")
    ap.add_argument("--box", type=int, default=24)
    ap.add_argument("--stride", type=int, default=5, help="use every N-th lattice pick as a target box")
    args = ap.parse_args()
    if not (REAL / "hiv_vlp_40A.mrc").exists():
        print("../shared/data/real is not here: nothing to benchmark")
        return 0

    from napari_cryo_openset.extract import extract_subtomograms
    from napari_cryo_openset.io import read_picks, read_tomogram
    from napari_cryo_openset.params import ImagingCondition
    from napari_cryo_openset.spectrum import (
        apply_spectral_match,
        box_statistics,
        fit_spectral_match,
        noise_spectrum,
        plot_spectra,
        radial_power_spectrum,
        spectrum_report,
    )

    box = args.box
    per_class = 20 if args.quick else 50
    bgrid = (3e4, 1e5) if args.quick else (1e4, 3e4, 1e5, 3e5)
    out: dict = {"voxel_size": VS, "box": box, "threads": int(os.environ["OMP_NUM_THREADS"]), "rows": []}

    tomo = read_tomogram(REAL / "hiv_vlp_40A.mrc")
    picks = read_picks(REAL / "hiv_vlp_40A_lattice.star", tomogram_shape=tomo.shape, voxel_size=tomo.voxel_size)
    target = extract_subtomograms(tomo, picks.iloc[:: args.stride], box, polarity="dark")
    freq, pt = radial_power_spectrum(target, VS)
    fn, pn = noise_spectrum(tomo, picks=picks, box=box, n=256)
    out["target"] = {"n": len(target), "power": [float(v) for v in pt], "background_power": [float(v) for v in pn],
                     "kurtosis": box_statistics(target)["kurtosis"]["mean"]}
    out["freq_per_A"] = [float(v) for v in freq]

    base = ImagingCondition(voxel_size=VS)  # the run's default condition (SNR 0.1, 5 µm) at 40 Å
    # calibration: the chain's 3D noise spectrum for white projection noise (empty boxes only)
    _, pw = radial_power_spectrum(simulate(base, 1, box, seed=7, empty=6 * per_class), VS)
    proj_power = np.maximum(pn, 1e-6) / np.maximum(pw, 1e-6)
    proj_power[0] = proj_power[1]
    coloured = (tuple(freq), tuple(proj_power / proj_power.max()))

    def row(name, x, seconds=None):
        _, p = radial_power_spectrum(x, VS)
        r = {"name": name, "n": len(x), **deviation(freq, p, pt), "kurtosis": box_statistics(x)["kurtosis"]["mean"]}
        if seconds is not None:
            r["seconds"] = round(seconds, 3)
        out["rows"].append(r)
        print(f"{name:34s} mean|dev| {r['mean_abs']:.3f}  max|dev| {r['max_abs']:.3f}  kurtosis {r['kurtosis']:.2f}")
        return p

    t = time.perf_counter()
    src = simulate(base, per_class, box, seed=1)
    out["simulate_seconds"] = round(time.perf_counter() - t, 2)
    row("baseline", src)
    for b in bgrid:
        row(f"bfactor={b:g}", simulate(base.replace(bfactor=b), per_class, box, seed=1))
    row("tilt_jitter=1 px", simulate(base.replace(tilt_jitter=1.0), per_class, box, seed=1))
    row("coloured", simulate(base.replace(noise_spectrum=coloured), per_class, box, seed=1))
    best_b = min((r for r in out["rows"] if r["name"].startswith("bfactor")), key=lambda r: r["mean_abs"])["name"]
    b_best = float(best_b.split("=")[1])
    row(f"bfactor={b_best:g} + coloured", simulate(base.replace(bfactor=b_best, noise_spectrum=coloured),
                                                   per_class, box, seed=1))

    t = time.perf_counter()
    match = fit_spectral_match(src, target, VS)
    fit_s = time.perf_counter() - t
    after = apply_spectral_match(src, match)
    row("baseline + match (fitted set)", after, fit_s)
    held = simulate(base, per_class, box, seed=2)
    row("baseline + match (held-out set)", apply_spectral_match(held, match))
    out["match"] = match.to_dict()

    report = spectrum_report(src, after, target, VS)
    plot_spectra(report, HERE / "results" / ("spectrum_quick.png" if args.quick else "spectrum.png"),
                 title=f"HIV VLP 40 Å, box {box}: simulated vs real")

    # speed: fit and apply on N boxes of 32³
    rng = np.random.default_rng(0)
    n = 1000 if args.quick else 4000
    a = rng.standard_normal((n, 32, 32, 32)).astype(np.float32)
    b = rng.standard_normal((256, 32, 32, 32)).astype(np.float32).cumsum(axis=1)
    t = time.perf_counter()
    m = fit_spectral_match(a, b, 10.0)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    apply_spectral_match(a, m)
    t_apply = time.perf_counter() - t
    out["speed"] = {"n": n, "box": 32, "fit_seconds": round(t_fit, 2), "apply_seconds": round(t_apply, 2)}
    print(f"fit on {n} boxes of 32³: {t_fit:.2f} s (3 refinements); apply: {t_apply:.2f} s")

    stem = "spectrum_quick" if args.quick else "spectrum"
    (HERE / "results" / f"{stem}.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Spectral gap, simulated vs real (HIV VLP, {VS:g} Å/voxel, box {box})", "",
             f"Target: {len(target)} boxes at lattice picks; deviation |P_sim/P_target − 1| over shells "
             "0 < f ≤ 0.8 Nyquist; kurtosis = mean per-box excess kurtosis "
             f"(target {out['target']['kurtosis']:.2f}).", "",
             "| source | n | mean abs dev | max abs dev | kurtosis |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['n']} | {r['mean_abs']:.3f} | {r['max_abs']:.3f} | {r['kurtosis']:.2f} |"
              for r in out["rows"]]
    lines += ["", f"Fit on {n} boxes of 32³: {t_fit:.2f} s; apply: {t_apply:.2f} s "
              f"({out['threads']} threads)."]
    (HERE / "results" / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
