#!/usr/bin/env python
"""Benchmark the imaging condition read from the tomogram (:mod:`napari_cryo_openset.estimate`).

For a grid of simulated tomograms with known tilt range and slab — :func:`slab_scene`: built-in
templates and a crowding background confined to a Z slab, imaged by the package's full chain
(tilt series about Y, −CTF × MTF, per-projection noise, WBP; the noise fills the whole
reconstruction, as in a real tomogram) — it prints and saves true vs estimated tilt range and
slab thickness, the 3-D SNR and noise figures beside the simulated per-projection SNR, the
polarity, and the seconds per estimate. Also: white-noise volumes (expected: no wedge, no
slab), the product's own scenes (:func:`~napari_cryo_openset.simulate.scenes.make_scene`,
particles over the whole Z range), the time on a 128×256×256 volume, the real HIV VLP tomogram
of ``../shared/data/real`` when present (EMPIAR-10164: tilt series ±60° in 3° steps; its Gag
lattice picks give the Z extent of the VLP layer), and with ``--large`` the time and peak
memory on a memory-mapped 300×1024×1024 float32 file in a fresh process.

Run (2 CPU threads)::

    python benchmarks/bench_estimate.py [--quick] [--large]

Results: ``benchmarks/results/estimate.json`` and ``estimate.md`` (``estimate_quick.*``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
THREADS = 2
TILT_TOL = 5.0
THICK_TOL = 0.10

def slab_scene(
    shape=(96, 128, 128),
    slab=(24, 72),
    tilt_range=(-60.0, 60.0),
    snr=0.5,
    n_particles=40,
    background=0.05,
    voxel_size=10.0,
    seed=0,
    mode="full",
):
    """A synthetic tomogram whose sample fills only the Z range ``slab`` = (z0, z1) voxels.

    The scene simulator (:func:`napari_cryo_openset.simulate.scenes.make_scene`) spreads
    particles over the whole Z extent; here built-in templates (random orientations, every
    particle inside the slab) and a smooth crowding background confined to the slab are imaged
    by the same chain (:func:`~napari_cryo_openset.simulate.imaging.image_volumes`: tilt series
    about Y, −CTF × MTF, per-projection noise at ``snr``, WBP), so the noise fills the whole
    reconstruction, as in a real tomogram. Returns (volume (Z, Y, X) float32, zero mean and unit
    variance, protein dark; truth dict).
    """
    import torch

    from napari_cryo_openset.params import ImagingCondition
    from napari_cryo_openset.simulate.generate import crowding_background
    from napari_cryo_openset.simulate.imaging import approximate_image_volumes, image_volumes
    from napari_cryo_openset.simulate.placement import add_into, random_rotations, rotate_into_boxes
    from napari_cryo_openset.simulate.scenes import place_particles
    from napari_cryo_openset.simulate.templates import builtin_templates

    shape = tuple(int(s) for s in shape)
    z0, z1 = int(slab[0]), int(slab[1])
    cond = ImagingCondition(voxel_size=voxel_size, tilt_range=tuple(tilt_range), snr=snr, defocus=5.0)
    rng = np.random.default_rng([int(seed), 0x51AB])
    templates = sorted(builtin_templates(voxel_size), key=lambda t: t.name)
    choice = rng.integers(len(templates), size=int(n_particles))
    radii = np.array([templates[k].radius_voxels for k in choice])
    placed, centres = place_particles((z1 - z0, shape[1], shape[2]), radii, rng)
    centres[:, 0] += z0
    choice = choice[placed]
    rotations = random_rotations(rng, len(choice))
    volume = torch.zeros(shape, dtype=torch.float32)
    for k in np.unique(choice):
        idx = np.flatnonzero(choice == k)
        tpl = templates[k]
        corner = np.round(centres[idx]).astype(np.int64)
        patches = rotate_into_boxes(tpl.density, rotations[idx], centres[idx] - corner, tpl.shape, "cpu")
        for j, c in enumerate(corner):
            add_into(volume, patches[j], c - np.asarray(tpl.shape) // 2)
    if background > 0:
        bg = crowding_background(shape, [int(rng.integers(2**62))], voxel_size)[0]
        bg[:z0] = 0
        bg[z1:] = 0
        volume += background * bg
    kwargs = dict(defocus=[5.0], snr=[snr], noise_seeds=[int(rng.integers(2**62))])
    if mode == "approximate":
        out = approximate_image_volumes(volume[None], cond, **kwargs)[0]
    else:
        out = image_volumes(volume[None], cond, snr_window=shape[1:], supersample=1, **kwargs)[0]
    out = ((out - out.mean()) / out.std().clamp_min(1e-12)).numpy().astype(np.float32)
    # Voxel centres at integers: the slab fills slices z0 … z1 − 1, its faces are z0 − ½, z1 − ½.
    truth = dict(tilt_range=tuple(float(t) for t in tilt_range), slab=(z0 - 0.5, z1 - 0.5), thickness=z1 - z0,
                 snr=float(snr), n_particles=len(choice), voxel_size=float(voxel_size))
    return out, truth


# ------------------------------------------------------------------------------------------
# the grid
# ------------------------------------------------------------------------------------------


def _row(kind, true_tilt, true_slab, true_thick, snr, est, extra=None) -> dict:
    t = est.thickness_voxels
    row = {
        "kind": kind,
        "true_tilt": None if true_tilt is None else list(true_tilt),
        "est_tilt": None if est.tilt_range is None else list(est.tilt_range),
        "tilt_axis": est.tilt_axis,
        "wedge_depth": round(est.tilt_quality, 3),
        "tilt_error": None,
        "true_thickness": true_thick,
        "est_thickness": None if t is None else round(t, 2),
        "thickness_error": None,
        "est_slab": None if est.slab is None else list(est.slab),
        "true_slab": None if true_slab is None else list(true_slab),
        "snr_projection": snr,
        "snr_3d_est": None if est.snr is None else round(est.snr, 4),
        "noise_sigma": None if est.noise_sigma is None else round(est.noise_sigma, 4),
        "polarity": est.polarity,
        "skewness": round(est.polarity_skewness, 3),
        "seconds": est.seconds,
        "reasons": [r for r in (est.tilt_range_reason, est.slab_reason, est.noise_reason) if r],
    }
    if true_tilt is not None and est.tilt_range is not None:
        row["tilt_error"] = round(max(abs(est.tilt_range[0] - true_tilt[0]), abs(est.tilt_range[1] - true_tilt[1])), 2)
    if true_thick and t is not None:
        row["thickness_error"] = round((t - true_thick) / true_thick, 4)
    row.update(extra or {})
    return row


def run_grid(quick: bool) -> list[dict]:
    from napari_cryo_openset.estimate import estimate_volume
    from napari_cryo_openset.params import ImagingCondition

    tilts = [(-40, 40), (-50, 50), (-60, 60), (-70, 70), (-50, 60), (-90, 90)]
    slabs = [(40, 56), (16, 80)]  # 16 and 64 of 96 voxels (160 and 640 Å at 10 Å)
    snrs = [0.1, 0.5]
    seeds = [0] if quick else [0, 1]
    if quick:
        tilts = [(-40, 40), (-60, 60), (-50, 60), (-90, 90)]
    rows = []
    for tr in tilts:
        for slab in slabs:
            for snr in snrs:
                for seed in seeds:
                    t0 = time.perf_counter()
                    vol, truth = slab_scene(shape=(96, 128, 128), slab=slab, tilt_range=tr, snr=snr,
                                            n_particles=60, background=0.3, seed=seed)
                    sim = time.perf_counter() - t0
                    est = estimate_volume(vol, 10.0, workers=THREADS)
                    true_tilt = None if tr == (-90, 90) else truth["tilt_range"]
                    angles = ImagingCondition(tilt_range=tr).tilt_angles
                    extra = {"tilt_range_simulated": list(tr), "seed": seed, "simulate_s": round(sim, 2),
                             "shape": list(vol.shape), "tilt_angles_end": [float(angles[0]), float(angles[-1])]}
                    if true_tilt is not None and est.tilt_range is not None:
                        extra["tilt_error_vs_angles"] = round(max(abs(est.tilt_range[0] - angles[0]),
                                                                  abs(est.tilt_range[1] - angles[-1])), 2)
                    row = _row("slab scene", true_tilt, truth["slab"], truth["thickness"], snr, est, extra)
                    rows.append(row)
                    _print_row(row)
    return rows


def run_other(quick: bool) -> list[dict]:
    from napari_cryo_openset.estimate import estimate_volume
    from napari_cryo_openset.params import ImagingCondition
    from napari_cryo_openset.simulate.scenes import SceneParams, make_scene, sample_scene

    rows = []
    for seed in range(1 if quick else 3):
        vol = np.random.default_rng(seed).standard_normal((96, 128, 128)).astype(np.float32)
        row = _row("white noise", None, None, None, None, estimate_volume(vol, 10.0, workers=THREADS),
                   {"seed": seed, "shape": list(vol.shape)})
        rows.append(row)
        _print_row(row)
    for tr in [(-60, 60), (-45, 55)]:
        cond = ImagingCondition(voxel_size=10.0, tilt_range=tr, snr=0.3)
        vol, _ = make_scene(SceneParams(shape=(64, 128, 128), condition=cond, n_particles=30, seed=5))
        for sign, name in ((1.0, "make_scene (dark)"), (-1.0, "make_scene inverted (bright)")):
            row = _row(name, tr, None, None, 0.3, estimate_volume(sign * vol, 10.0, workers=THREADS),
                       {"shape": list(vol.shape), "note": "particles over the whole Z range"})
            rows.append(row)
            _print_row(row)
    vol, _ = sample_scene(0)
    best = min(estimate_volume(vol, 10.0, workers=THREADS).seconds for _ in range(3))
    row = _row("napari sample scene 128×256×256 (best of 3)", (-60, 60), None, None, 0.5,
               estimate_volume(vol, 10.0, workers=THREADS), {"shape": list(vol.shape), "best_seconds": best})
    rows.append(row)
    _print_row(row)
    return rows


def run_real() -> dict | None:
    from napari_cryo_openset.estimate import estimate_volume
    from napari_cryo_openset.io.picks_io import read_picks
    from napari_cryo_openset.io.tomogram import read_tomogram

    root = Path(os.environ.get("CRYO_OPENSET_SHARED", REPO.parent / "shared")) / "data" / "real"
    path = root / "hiv_vlp_40A.mrc"
    if not path.is_file():
        print("  real tomogram not found: skipped", flush=True)
        return None
    est = estimate_volume(read_tomogram(path), given={"tilt_range": (-60, 60)}, workers=THREADS)
    out = {"path": str(path), "estimate": est.to_dict(), "summary": est.summary()}
    star = root / "hiv_vlp_40A_lattice.star"
    if star.is_file():
        z = read_picks(star)["z"].to_numpy()
        out["lattice_z_percentiles_1_50_99"] = [round(float(v), 2) for v in np.percentile(z, [1, 50, 99])]
        out["lattice_z_range"] = [round(float(z.min()), 2), round(float(z.max()), 2)]
    print(est.summary(), flush=True)
    return out


_LARGE_CHILD = """
import sys, time, json
sys.path.insert(0, {src!r})
from napari_cryo_openset.io.tomogram import read_tomogram
from napari_cryo_openset.estimate import estimate_volume
t = read_tomogram({path!r})
t0 = time.perf_counter()
e = estimate_volume(t, workers=2)
# VmHWM, not getrusage: ru_maxrss survives fork + exec, so it would report the parent's peak.
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(json.dumps({{"seconds": time.perf_counter() - t0, "peak_rss_mb": hwm / 1024,
                  "tilt_range": e.tilt_range, "slab": e.slab}}))
"""


def run_large() -> dict:
    """Estimate a memory-mapped 300×1024×1024 float32 file (1.2 GB) in a fresh process."""
    from napari_cryo_openset.io.tomogram import write_tomogram

    vol, truth = slab_scene(shape=(300, 128, 128), slab=(100, 220), tilt_range=(-60, 60), snr=0.3, seed=0)
    big = np.tile(vol, (1, 8, 8))
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "large.mrc")
        write_tomogram(path, big, voxel_size=10.0)
        del big
        code = _LARGE_CHILD.format(src=str(REPO / "src"), path=path)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(shape=[300, 1024, 1024], true_slab=list(truth["slab"]))
    print(f"  large memory-mapped file: {res}", flush=True)
    return res


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def _fmt_range(r) -> str:
    return "—" if r is None else f"{r[0]:+.1f}…{r[1]:+.1f}"


def _fmt(v, spec=".3g") -> str:
    return "—" if v is None else format(v, spec)


def _print_row(r: dict) -> None:
    print(f"  {r['kind']:<28} tilt {_fmt_range(r['true_tilt']):>13} → {_fmt_range(r['est_tilt']):>13} "
          f"thickness {_fmt(r['true_thickness'])} → {_fmt(r['est_thickness'])}  snr3d {_fmt(r['snr_3d_est'])} "
          f"{r['polarity']}  {r['seconds']:.2f}s", flush=True)


def summarise(rows: list[dict]) -> dict:
    scenes = [r for r in rows if r["kind"] == "slab scene"]
    tilt = [r for r in scenes if r["true_tilt"] is not None]
    full = [r for r in scenes if r["true_tilt"] is None]
    tilt_err = [r["tilt_error"] for r in tilt if r["tilt_error"] is not None]
    angle_err = [r["tilt_error_vs_angles"] for r in tilt if r.get("tilt_error_vs_angles") is not None]
    thick_err = [abs(r["thickness_error"]) for r in scenes if r["thickness_error"] is not None]
    noise = [r for r in rows if r["kind"] == "white noise"]
    return {
        "tilt_scenes": len(tilt),
        "tilt_read": len(tilt_err),
        "tilt_within_5deg": sum(e <= TILT_TOL for e in tilt_err),
        "tilt_error_median_deg": float(np.median(tilt_err)) if tilt_err else None,
        "tilt_error_max_deg": float(np.max(tilt_err)) if tilt_err else None,
        "tilt_error_vs_first_last_tilt_median_deg": float(np.median(angle_err)) if angle_err else None,
        "tilt_error_vs_first_last_tilt_max_deg": float(np.max(angle_err)) if angle_err else None,
        "full_range_scenes_no_wedge": sum(r["est_tilt"] is None for r in full),
        "full_range_scenes": len(full),
        "thickness_read": len(thick_err),
        "thickness_scenes": len(scenes),
        "thickness_within_10pct": sum(e <= THICK_TOL for e in thick_err),
        "thickness_error_median": float(np.median(thick_err)) if thick_err else None,
        "thickness_error_max": float(np.max(thick_err)) if thick_err else None,
        "white_noise_no_wedge_no_slab": sum(r["est_tilt"] is None and r["est_thickness"] is None for r in noise),
        "white_noise_volumes": len(noise),
        "seconds_median": float(np.median([r["seconds"] for r in rows])),
    }


def markdown(res: dict) -> str:
    s = res["summary"]
    lines = [
        "# Imaging condition read from the tomogram",
        "",
        f"{res['date']}, {THREADS} threads on {res['cpus']} CPUs{' (quick)' if res['quick'] else ''}. "
        "Scenes: 96×128×128 at 10 Å, full chain (3° tilt steps from the lower end, so the highest tilt "
        "can be up to 2° below the upper end of the range), 60 particles + crowding background in the slab. "
        "Slab edges: voxel coordinates, centres at integers.",
        "",
        "| | |",
        "|---|---|",
        f"| tilt range within ±{TILT_TOL:g}° | {s['tilt_within_5deg']}/{s['tilt_scenes']} "
        f"(read {s['tilt_read']}; median error {_fmt(s['tilt_error_median_deg'], '.2f')}°, "
        f"max {_fmt(s['tilt_error_max_deg'], '.2f')}°) |",
        f"| tilt range vs the first and last simulated tilt | median error "
        f"{_fmt(s['tilt_error_vs_first_last_tilt_median_deg'], '.2f')}°, "
        f"max {_fmt(s['tilt_error_vs_first_last_tilt_max_deg'], '.2f')}° |",
        f"| ±90° scenes reported as no wedge | {s['full_range_scenes_no_wedge']}/{s['full_range_scenes']} |",
        f"| slab thickness within {THICK_TOL:.0%} | {s['thickness_within_10pct']}/{s['thickness_scenes']} "
        f"(median |error| {_fmt(s['thickness_error_median'], '.1%')}, max {_fmt(s['thickness_error_max'], '.1%')}) |",
        f"| white noise → no wedge, no slab | {s['white_noise_no_wedge_no_slab']}/{s['white_noise_volumes']} |",
        f"| seconds per estimate (median) | {s['seconds_median']:.2f} |",
        "",
        "| scene | seed | projection SNR | true tilt | estimated tilt | wedge depth | true slab (Z) | "
        "estimated slab (Z) | thickness error | 3-D SNR | noise σ | polarity | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        true_tilt = _fmt_range(r["true_tilt"]) if r["true_tilt"] is not None else (
            "±90 (none)" if r.get("tilt_range_simulated") == [-90, 90] else "—")
        lines.append(
            f"| {r['kind']} | {r.get('seed', '')} | {_fmt(r['snr_projection'])} | {true_tilt} | "
            f"{_fmt_range(r['est_tilt'])} | {r['wedge_depth']:.2f} | {_fmt_range(r['true_slab'])} | "
            f"{_fmt_range(r['est_slab'])} | {_fmt(r['thickness_error'], '+.1%')} | {_fmt(r['snr_3d_est'])} | "
            f"{_fmt(r['noise_sigma'])} | {r['polarity']} ({r['skewness']:+.2f}) | {r['seconds']:.2f} |")
    if res.get("real"):
        real = res["real"]
        lines += ["", "## Real tomogram (HIV VLPs, 40 Å/voxel; EMPIAR-10164 tilt series ±60°, 3° steps)", "",
                  "```", real["summary"], "```", ""]
        if "lattice_z_range" in real:
            lines.append(f"Gag-lattice picks span Z {real['lattice_z_range'][0]}…{real['lattice_z_range'][1]} "
                         f"(1–99 %: {real['lattice_z_percentiles_1_50_99'][0]}…{real['lattice_z_percentiles_1_50_99'][2]}).")
    if res.get("large"):
        lg = res["large"]
        lines += ["", f"Memory-mapped {'×'.join(map(str, lg['shape']))} float32 file: {lg['seconds']:.2f} s, "
                  f"peak RSS {lg['peak_rss_mb']:.0f} MB; slab {_fmt_range(lg['slab'])} (true "
                  f"{_fmt_range(lg['true_slab'])}), tilt {_fmt_range(lg['tilt_range'])}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--large", action="store_true", help="also a memory-mapped 300×1024×1024 file")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(THREADS)
    t0 = time.perf_counter()
    rows = run_grid(args.quick) + run_other(args.quick)
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(), "threads": THREADS,
           "quick": args.quick, "platform": platform.platform(), "rows": rows}
    res["summary"] = summarise(rows)
    res["real"] = run_real()
    res["large"] = run_large() if args.large else None
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "estimate_quick" if args.quick else "estimate"
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(res))
    print(json.dumps(res["summary"], indent=2))
    print(f"saved {args.out / stem}.json and .md ({res['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
