"""Subtomogram alignment: ours (constrained CC and plain CC, with a reference and reference-free) vs acryo.

The SAME boxes for every method: ``--n`` copies of one template (``--template``, default the
70S ribosome ``4v4r``; from ``../shared/data/templates_10A`` when present, else the built-in
library) at ``--voxel`` Å in ``--box``³, at uniformly random known orientations and shifts
(±``--max-shift`` voxels), with a missing wedge (±60° about Y) and wedged white noise at ``--snr``.

Scored: median angular error (degrees; reference-free: after removing the average's common
frame), median shift error (voxels), the gold-standard FSC resolution (0.143; acryo: our FSC of
acryo's own two wedge-weighted half-averages), NCC of the average with the true map at 40 Å after
the best rotation (``resembles``), and wall seconds — in one run, on the same CPU threads.

acryo (BSD-3; ``pip install acryo``, the ``[bench]`` extra) is given the boxes tiled into one
tomogram (48³ cells, the box in the middle) and the reference (the true map low-passed to
40 Å, as ours), a ZNCC search with its single-axis wedge model over its Euler grid (global:
±180°/±90°/±180° by ``--acryo-step``, then ±step by step/3), sub-voxel shifts within the
same radius. Its molecule rotations are compared in whichever direction (R or R⁻¹) fits better.

    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/bench_align.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

from napari_cryo_openset.align import (  # noqa: E402
    align_group,
    align_to_reference,
    fit_box,
    fsc,
    orientation_errors,
    resembles,
    rotation_angle,
)
from napari_cryo_openset.align.fourier import lowpass_filter, soft_sphere  # noqa: E402
from napari_cryo_openset.align.synthetic import wedged_copies  # noqa: E402
from napari_cryo_openset.params import AlignParams  # noqa: E402
from napari_cryo_openset.progress import run_to_completion  # noqa: E402

TILT = (-60.0, 60.0)
RESULTS = REPO / "benchmarks" / "results"


def machine() -> dict:
    import os
    import platform

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def load_template(name: str, voxel: float, box: int) -> tuple[np.ndarray, str]:
    import os

    from napari_cryo_openset.simulate import load_templates
    from napari_cryo_openset.simulate.templates import builtin_templates

    root = Path(os.environ.get("CRYO_OPENSET_SHARED", REPO.parent / "shared")) / "data" / "templates_10A"
    path = root / f"{name}.mrc"
    if path.is_file():
        t, src = load_templates([path], voxel)[0], str(path.relative_to(root.parents[1]))
    else:
        t, src = {x.name: x for x in builtin_templates(voxel)}[name], "built-in library"
    return fit_box(t.density, box), src


def lowpass(vol: np.ndarray, voxel: float, angst: float) -> np.ndarray:
    d = vol.shape[0]
    f = torch.fft.rfftn(torch.as_tensor(vol)) * lowpass_filter(d, voxel / angst)
    return torch.fft.irfftn(f, s=vol.shape).numpy()


def ncc40(avg: np.ndarray, truth: np.ndarray, voxel: float, threads: int) -> float:
    return resembles(avg, {"truth": truth}, voxel, lowpass=40.0, params=AlignParams(threads=threads))[0].score


def run_ours(boxes, truth, mats, shifts, voxel, threads, step, score, reference):
    params = AlignParams(score=score, threads=threads, angular_step=step, iterations=3,
                         global_iterations=1 if reference is not None else 2, device="cpu")
    t0 = time.perf_counter()
    res = run_to_completion(align_group(boxes, voxel, tilt_range=TILT, reference=reference, params=params))
    sec = time.perf_counter() - t0
    free = reference is None
    err = orientation_errors(res.matrices, mats, common_frame=free)
    shift_err = None if free else float(np.median(np.linalg.norm(res.shifts - shifts, axis=1)))
    return {"median_angle_error": float(np.median(err)), "median_shift_error": shift_err,
            "resolution": float(res.resolution), "ncc40": ncc40(res.average, truth, voxel, threads), "seconds": sec,
            "history": res.history}


def run_search_only(boxes, ref, mats, shifts, voxel, threads, step, score):
    t0 = time.perf_counter()
    out = run_to_completion(align_to_reference(boxes, ref, voxel, tilt_range=TILT, lowpass=40.0,
                                               params=AlignParams(score=score, threads=threads, angular_step=step,
                                                                  device="cpu")))
    sec = time.perf_counter() - t0
    return {"median_angle_error": float(np.median(rotation_angle(out["matrices"], mats))),
            "median_shift_error": float(np.median(np.linalg.norm(out["shifts"] - shifts, axis=1))), "seconds": sec}


def run_acryo(boxes, ref, truth, mats, shifts, voxel, step, max_shift):
    from acryo import Molecules, SubtomogramLoader
    from acryo.alignment import ZNCCAlignment
    from acryo.tilt import single_axis
    from scipy.spatial.transform import Rotation

    n, d = boxes.shape[0], boxes.shape[-1]
    cell = d + 16
    side = int(np.ceil(n ** (1 / 3)))
    tomo = np.zeros((side * cell,) * 3, np.float32)
    centres = []
    for i in range(n):
        z, y, x = np.unravel_index(i, (side,) * 3)
        o = np.array([z, y, x]) * cell + (cell - d) // 2
        b = boxes[i]
        tomo[o[0]:o[0] + d, o[1]:o[1] + d, o[2]:o[2] + d] = (b - b.mean()) / b.std()
        centres.append(o + d // 2)
    scale = voxel / 10.0  # nm
    mole = Molecules(np.array(centres, np.float32) * scale, Rotation.identity(n))
    loader = SubtomogramLoader(tomo, mole, order=1, scale=scale, output_shape=(d, d, d),
                               tilt_model=single_axis(TILT, "y"))
    shift_nm = max_shift * scale
    t0 = time.perf_counter()
    aligned = loader.align(ref, max_shifts=shift_nm, alignment_model=ZNCCAlignment.with_params(
        rotations=((180, step), (90, step), (180, step)), tilt=single_axis(TILT, "y")))
    fine = step / 3
    aligned = aligned.align(ref, max_shifts=shift_nm, alignment_model=ZNCCAlignment.with_params(
        rotations=((step, fine), (step, fine), (step, fine)), tilt=single_axis(TILT, "y")))
    halves = aligned.average_split(n_set=1, seed=0, wedge_weighting=True)
    sec = time.perf_counter() - t0
    rot = aligned.molecules.rotator.as_matrix()  # acryo's (z, y, x) frame
    from napari_cryo_openset.align import so3

    cand = {"R": so3.zyx_to_xyz(rot), "R^-1": so3.zyx_to_xyz(np.swapaxes(rot, -1, -2))}
    errs = {k: np.median(rotation_angle(v, mats)) for k, v in cand.items()}
    which = min(errs, key=errs.get)
    pos = (aligned.molecules.pos / scale) - np.array(centres)
    shift_err = float(min(np.median(np.linalg.norm(s * pos - shifts, axis=1)) for s in (1, -1)))
    h = np.asarray(halves)
    h = h.reshape(-1, d, d, d)
    mask = soft_sphere(d, 0.9 * d / 2 - 2).numpy()
    res = fsc(h[0], h[1], voxel, mask=mask)
    return {"median_angle_error": float(errs[which]), "median_shift_error": shift_err, "rotation_read_as": which,
            "resolution": float(res.resolution), "ncc40": ncc40(h.mean(0), truth, voxel, 2), "seconds": sec}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--template", default="4v4r")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--voxel", type=float, default=20.0)
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--max-shift", type=float, default=2.0)
    ap.add_argument("--step", type=float, default=15.0, help="our global grid step (degrees)")
    ap.add_argument("--acryo-step", type=float, default=30.0, help="acryo's Euler grid step (degrees)")
    ap.add_argument("--acryo-timeout", type=int, default=600, help="seconds acryo may take before its row says so")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-acryo", action="store_true")
    ap.add_argument("--quick", action="store_true", help="24 copies and a 20° grid")
    ap.add_argument("--out", default="align")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.step, a.out = 24, 20.0, a.out + "_quick"
    torch.set_num_threads(a.threads)
    truth, src = load_template(a.template, a.voxel, a.box)
    boxes, mats, shifts = wedged_copies(truth, a.n, tilt_range=TILT, snr=a.snr, max_shift=a.max_shift, seed=0)
    ref = lowpass(truth, a.voxel, 40.0)
    rows = {}
    print(f"{a.n} copies of {a.template} ({src}), {a.box}³ at {a.voxel} Å, SNR {a.snr}, wedge ±60°", flush=True)
    rows["ours: search only, constrained CC (wedge)"] = run_search_only(boxes, ref, mats, shifts, a.voxel, a.threads,
                                                                        a.step, "wedge")
    rows["ours: search only, plain CC"] = run_search_only(boxes, ref, mats, shifts, a.voxel, a.threads, a.step, "cc")
    rows["ours: gold standard from the 40 Å reference, constrained CC"] = run_ours(
        boxes, truth, mats, shifts, a.voxel, a.threads, a.step, "wedge", ref)
    rows["ours: gold standard from the 40 Å reference, plain CC"] = run_ours(
        boxes, truth, mats, shifts, a.voxel, a.threads, a.step, "cc", ref)
    rows["ours: reference-free, constrained CC"] = run_ours(boxes, truth, mats, shifts, a.voxel, a.threads, a.step,
                                                            "wedge", None)
    for k in list(rows)[-3:]:
        print(k, {x: y for x, y in rows[k].items() if x != "history"}, flush=True)
    if not a.no_acryo:
        try:
            import acryo

            import signal

            def stop(*_):
                raise TimeoutError

            key = f"acryo {acryo.__version__}: ZNCC + wedge, from the 40 Å reference"
            signal.signal(signal.SIGALRM, stop)
            signal.alarm(a.acryo_timeout)
            try:
                rows[key] = run_acryo(boxes, ref, truth, mats, shifts, a.voxel, a.acryo_step, a.max_shift)
            except TimeoutError:
                rows[key + f" — did not finish in {a.acryo_timeout} s"] = {
                    "median_angle_error": None, "seconds": float(a.acryo_timeout)}
            finally:
                signal.alarm(0)
        except ImportError:
            print("acryo is not installed (pip install acryo): its row is left out")
    base_key = "ours: gold standard from the 40 Å reference, constrained CC"
    base = rows[base_key]

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    lines = [f"# Subtomogram alignment: ours vs acryo ({a.n} copies of {a.template}, {a.box}³ at {a.voxel:g} Å, "
             f"SNR {a.snr}, wedge ±60°)", "",
             f"Command: `PYTHONPATH=src python benchmarks/bench_align.py{' --quick' if a.quick else ''}` — "
             f"{machine()['cpu']}, {a.threads} torch threads, {time.strftime('%Y-%m-%d')}. Our grid "
             f"{a.step:g}° (super-Fibonacci) + local refinement; acryo's Euler grid {a.acryo_step:g}° then "
             f"±{a.acryo_step:g}° by {a.acryo_step / 3:g}°. Template: {src}.", "",
             "| method | median angle error (°) | median shift error (vox) | FSC 0.143 (Å) | NCC@40 Å with truth "
             "| seconds | time ratio vs ours |",
             "|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        lines.append(f"| {k} | {f(r.get('median_angle_error'), '.1f')} | {f(r.get('median_shift_error'), '.2f')} | "
                     f"{f(r.get('resolution'), '.1f')} | {f(r.get('ncc40'), '.3f')} | {r['seconds']:.1f} | "
                     f"{r['seconds'] / base['seconds']:.2f} |")
    lines += ["", f"Ratios are to “{base_key}”. “search only” = one global + local search of every box against the "
              "40 Å reference (no iterations). Reference-free errors are after removing the average's common frame."]
    md = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps({"args": vars(a), "machine": machine(), "rows": rows},
                                                      indent=2, default=float))
    (RESULTS / f"{a.out}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
