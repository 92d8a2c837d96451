"""Benchmark DoG picking: throughput and pick F1 against reference implementations.

Run (2 CPU threads, as on the development machine)::

    python benchmarks/bench_picking.py            # full: 128×512×512 phantoms + 1024×1024×300 file
    python benchmarks/bench_picking.py --quick    # small phantoms, large-file test skipped
    python benchmarks/bench_picking.py --quick --large   # ... but with the large-file test

Compared, on the same synthetic volume with ground truth, in one run:

- **ours**: :func:`napari_cryo_openset.picking.pick` (FFT DoG band-pass sampled every ``bin``
  voxels, max-filter local maxima, KD-tree greedy min distance), default ``robust`` threshold
  and the ``aitom`` rule;
- **(a) reference**: the AITom approach with its defects fixed — ``scipy.ndimage.gaussian_filter``
  DoG (same σ1, σ2) + ``skimage.feature.peak_local_max`` (Euclidean min distance, border
  exclusion), thresholded with the same rules (AITom m + 3(M − m)/20 on its peak values;
  median + k·1.4826·MAD of its response);
- **(b) skimage.feature.blob_dog** (multi-scale DoG, σ = r/√3 × [0.75, 1.5], ratio 1.6,
  ``threshold_rel`` 0.2, overlap 0.5).

A pick matches a true particle within 0.3 × diameter, one-to-one (closest pairs first).
Throughput = voxels / wall time of the whole call (thresholding included), best of the repeats.

The large test writes a 1024×1024×300 float32 tomogram (1.2 GB: a blob phantom tiled 4×4) with
``napari_cryo_openset.io.write_tomogram`` into a temporary folder, then picks it in a fresh
subprocess from the memory-mapped file and reports wall time and peak RSS (``getrusage``),
and deletes the file.

Phantom hook: ``--phantom blob`` (default) uses :func:`napari_cryo_openset.synthetic.blob_tomogram`;
``--phantom scene`` calls ``napari_cryo_openset.simulate.scenes`` when that module exists (see
:func:`make_phantom`: one function to adapt when the realistic simulator lands).

Mixed sizes (``--mixed`` / ``--mixed-only``, issue 13): crowded scenes of
``napari_cryo_openset.simulate.scenes`` (64×256×256 at 20 Å, 400 particles of 8 templates of
../shared/data/templates_10A spanning 170–345 Å, SNR 0.08, defocus 4 µm, seeds 0–2; skipped
when ../shared is missing). Picked with one diameter (200 Å; 170 Å, the smallest) and with the
range 160–380 Å (multi-scale); a pick matches within 0.3 × the particle's own diameter;
precision / recall / F1 per size class, seconds, diameter error. Results in ``picking_mixed.*``.

Results: ``benchmarks/results/picking.json`` and ``picking.md``.
"""

from __future__ import annotations

import os

# Two threads everywhere (set before numpy/scipy/torch load their thread pools).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse
import json
import math
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
THREADS = 2


# --------------------------------------------------------------------------------------------
# phantoms (the hook for the realistic simulator)
# --------------------------------------------------------------------------------------------


def make_phantom(kind: str, shape, snr: float, polarity: str, seed: int, n_particles: int):
    """Return (volume float32 ZYX, truth picks table, voxel_size Å, diameter Å).

    ``blob``: :func:`napari_cryo_openset.synthetic.blob_tomogram` (120 Å particles at 10 Å).
    ``scene``: the realistic scene simulator, once ``napari_cryo_openset.simulate.scenes``
    provides it. Adapt the call below to its final API (it must return the volume, the
    ground-truth picks table, the voxel size and a representative particle diameter).
    """
    if kind == "blob":
        from napari_cryo_openset.synthetic import BlobTomogramParams, blob_tomogram

        p = BlobTomogramParams(
            shape=tuple(shape), voxel_size=10.0, diameter=120.0, n_particles=n_particles,
            snr=snr, polarity=polarity, seed=seed,
        )
        volume, truth = blob_tomogram(p)
        return volume, truth, p.voxel_size, p.diameter
    if kind == "scene":
        try:
            from napari_cryo_openset.simulate import scenes  # noqa: F401
        except ImportError as exc:
            raise SystemExit(f"--phantom scene: the scene simulator is not available yet ({exc})") from None
        make = getattr(scenes, "scene_tomogram", None)
        if make is None:
            raise SystemExit("--phantom scene: wire napari_cryo_openset.simulate.scenes into make_phantom()")
        return make(shape=tuple(shape), snr=snr, polarity=polarity, seed=seed)  # adapt when it lands
    raise SystemExit(f"unknown phantom {kind!r}")


# --------------------------------------------------------------------------------------------
# mixed particle sizes (multi-scale picking, issue 13)
# --------------------------------------------------------------------------------------------

#: Templates of ../shared/data/templates_10A whose diameters span ~170–345 Å at 20 Å.
MIXED_TEMPLATES = ("3d2f", "3j9i", "1qvr", "6utj", "4v4r", "4cr2", "5mrc", "4v94")
#: Size classes (Å): [lo, hi) of the template diameter.
SIZE_CLASSES = ((0.0, 200.0), (200.0, 300.0), (300.0, 1e9))
MIXED_VOXEL = 20.0


def mixed_scene(seed: int, shape=(64, 256, 256), n_particles: int = 400, snr: float = 0.08,
                defocus: float = 4.0, template_dir: Path | None = None):
    """Crowded scene of templates spanning ~170–345 Å at 20 Å (simulate.scenes); None if no data.

    Returns (volume, truth with a ``diameter`` column in Å, seconds).
    """
    template_dir = template_dir or HERE.parent.parent / "shared" / "data" / "templates_10A"
    if not template_dir.is_dir():
        return None
    from napari_cryo_openset.params import ImagingCondition
    from napari_cryo_openset.simulate.scenes import SceneParams, make_scene
    from napari_cryo_openset.simulate.templates import load_templates

    templates = [t for t in load_templates(template_dir, MIXED_VOXEL) if t.name in MIXED_TEMPLATES]
    t0 = time.perf_counter()
    cond = ImagingCondition(voxel_size=MIXED_VOXEL, defocus=defocus, snr=snr)
    volume, truth = make_scene(SceneParams(shape=shape, condition=cond, templates=tuple(templates),
                                           n_particles=n_particles, gap=1.0, seed=seed))
    size = {t.name: t.diameter for t in templates}
    truth["diameter"] = truth["class_name"].map(size).astype(float)
    return volume, truth, time.perf_counter() - t0


def match_sized(picks, truth, voxel_size: float, fraction: float = 0.3) -> np.ndarray:
    """One-to-one matches (closest first) within ``fraction`` × each true particle's diameter.

    Returns an int array: for each true particle the index of its pick, or −1.
    """
    from scipy.spatial import cKDTree

    p = picks[["z", "y", "x"]].to_numpy() * voxel_size
    t = truth[["z", "y", "x"]].to_numpy() * voxel_size
    tol = fraction * truth["diameter"].to_numpy()
    out = np.full(len(t), -1, dtype=np.int64)
    if not len(p) or not len(t):
        return out
    sdm = cKDTree(t).sparse_distance_matrix(cKDTree(p), float(tol.max()), output_type="ndarray")
    sdm = sdm[sdm["v"] < tol[sdm["i"]]]
    used = np.zeros(len(p), dtype=bool)
    for k in np.argsort(sdm["v"], kind="stable"):
        i, j = sdm["i"][k], sdm["j"][k]
        if out[i] < 0 and not used[j]:
            out[i], used[j] = j, True
    return out


def size_class_scores(picks, truth, voxel_size: float) -> dict:
    """Precision / recall / F1 overall and per size class (:data:`SIZE_CLASSES`).

    Per class: TP = its true particles that are matched; FN = the unmatched ones; FP = the
    unmatched picks whose nearest true particle belongs to the class.
    """
    from scipy.spatial import cKDTree

    match = match_sized(picks, truth, voxel_size)
    tdiam = truth["diameter"].to_numpy()
    matched = np.zeros(len(picks), dtype=bool)
    matched[match[match >= 0]] = True
    if len(picks) and len(truth):
        _, near = cKDTree(truth[["z", "y", "x"]].to_numpy()).query(picks[["z", "y", "x"]].to_numpy())
        fp_class = tdiam[near][~matched]
    else:
        fp_class = np.zeros(0)
    out = {}
    for name, (lo, hi) in [("all", (0.0, 1e9))] + [(f"{lo:g}-{hi:g}" if hi < 1e8 else f"≥{lo:g}", (lo, hi))
                                                   for lo, hi in SIZE_CLASSES]:
        sel = (tdiam >= lo) & (tdiam < hi)
        tp = int(np.count_nonzero(match[sel] >= 0))
        fn = int(np.count_nonzero(sel)) - tp
        fp = int(np.count_nonzero((fp_class >= lo) & (fp_class < hi)))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        row = {"n_true": tp + fn, "tp": tp, "fp": fp, "precision": prec, "recall": rec, "f1": f1}
        if "diameter" in picks.columns and tp:
            est = picks["diameter"].to_numpy()[match[sel][match[sel] >= 0]]
            row["diameter_error"] = float(np.median(np.abs(est / tdiam[sel][match[sel] >= 0] - 1.0)))
        out[name] = row
    return out


def mixed(args) -> list[dict]:
    """Single diameter (200 Å, the smallest) vs the range on crowded mixed-size scenes."""
    from napari_cryo_openset.picking import PickingParams, pick

    runs = {
        "single 200 Å": dict(diameter=200.0),
        "single 170 Å": dict(diameter=170.0),
        "range 160–380 Å": dict(diameter=160.0, max_diameter=380.0),
    }
    rows = []
    for seed in args.mixed_seeds:
        scene = mixed_scene(seed, n_particles=args.mixed_particles, snr=args.mixed_snr)
        if scene is None:
            print("mixed: ../shared/data/templates_10A not found; skipped")
            return []
        volume, truth, sim_s = scene
        print(f"mixed seed {seed}: {volume.shape} at {MIXED_VOXEL:g} Å, {len(truth)} particles, "
              f"SNR {truth.attrs.get('snr', float('nan')):.3g}, simulated in {sim_s:.1f} s")
        for label, kw in runs.items():
            params = PickingParams(polarity="dark", workers=THREADS, **kw)
            pick(volume[:32, :64, :64], MIXED_VOXEL, params)  # warm FFT plans
            t0 = time.perf_counter()
            result = pick(volume, MIXED_VOXEL, params)
            seconds = time.perf_counter() - t0
            scores = size_class_scores(result.picks, truth, MIXED_VOXEL)
            rows.append({"seed": seed, "method": label, "seconds": seconds, "n_picks": len(result.picks),
                         "n_scales": len(params.scale_diameters()), "scores": scores})
            per = "  ".join(f"{k}: P {v['precision']:.2f} R {v['recall']:.2f} F1 {v['f1']:.2f}"
                            for k, v in scores.items())
            print(f"  {label:16s} {seconds:6.2f} s  {len(result.picks):4d} picks  {per}")
    return rows


def mixed_report(rows) -> list[str]:
    """Markdown table: mean ± sd over seeds per method and size class."""
    if not rows:
        return []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    classes = list(rows[0]["scores"])
    seeds = sorted({r["seed"] for r in rows})
    lines = ["", f"## Mixed sizes: crowded scenes, templates 170–345 Å at {MIXED_VOXEL:g} Å "
                 f"(seeds {', '.join(map(str, seeds))}; mean ± sd)", "",
             "Match within 0.3 × the particle's own diameter. Per class: FP = unmatched picks whose "
             "nearest true particle is of the class.", "",
             "| method | scales | seconds | × single 200 | " + " | ".join(f"F1 {c}" for c in classes)
             + " | P all | R all | diameter error |",
             "|---|---|---|---|" + "---|" * len(classes) + "---|---|---|"]

    def ms(values):
        values = np.asarray(values, dtype=float)
        return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values.mean():.3f}"

    base = np.mean([r["seconds"] for r in rows if r["method"] == methods[0]])
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        sec = np.mean([r["seconds"] for r in rs])
        err = [r["scores"]["all"].get("diameter_error", np.nan) for r in rs]
        lines.append(
            f"| {m} | {rs[0]['n_scales']} | {sec:.2f} | {sec / base:.2f} | "
            + " | ".join(ms([r["scores"][c]["f1"] for r in rs]) for c in classes)
            + f" | {ms([r['scores']['all']['precision'] for r in rs])} | {ms([r['scores']['all']['recall'] for r in rs])}"
            + f" | {np.nanmedian(err) * 100:.0f} % |"
        )
    return lines


# --------------------------------------------------------------------------------------------
# the three pickers
# --------------------------------------------------------------------------------------------


def run_ours(volume, voxel_size, diameter, polarity, method):
    from napari_cryo_openset.picking import PickingParams, pick

    result = pick(volume, voxel_size, PickingParams(diameter=diameter, polarity=polarity,
                                                    threshold_method=method, workers=THREADS))
    return result.picks[["z", "y", "x"]].to_numpy(), {
        "threshold": result.threshold, "timing": result.timing, "bin": result.geometry.bin,
        "polarity": result.polarity,
    }


def run_reference(volume, voxel_size, diameter, polarity, k_mad=4.0, aitom_level=3.0):
    """(a) scipy gaussian_filter DoG + skimage peak_local_max, AITom and robust thresholds.

    Returns {rule: coordinates} for both rules; the timed work is the filter, the peak search
    and the AITom rule (the robust rule reuses the same response).
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max

    sign = -1.0 if polarity == "dark" else 1.0
    x = np.asarray(volume, dtype=np.float32)
    x = (sign * (x - x.mean()) / x.std()).astype(np.float32)
    s1 = diameter / 2.0 / voxel_size
    dog = ndimage.gaussian_filter(x, s1) - ndimage.gaussian_filter(x, 1.1 * s1)
    md = int(round(0.8 * diameter / voxel_size))
    border = int(round(diameter / 2.0 / voxel_size))
    coords = peak_local_max(dog, min_distance=md, exclude_border=border, p_norm=2)
    values = dog[tuple(coords.T)]
    m, M = float(values.min()), float(values.max())
    t_aitom = m + aitom_level * (M - m) / 20.0
    out = {"aitom": coords[values >= t_aitom]}
    sample = dog[::2, ::2, ::2]
    med = float(np.median(sample))
    mad = 1.4826 * float(np.median(np.abs(sample - med)))
    out["robust"] = coords[values >= med + k_mad * mad]
    return out


def run_blob_dog(volume, voxel_size, diameter, polarity):
    from skimage.feature import blob_dog

    sign = -1.0 if polarity == "dark" else 1.0
    x = np.asarray(volume, dtype=np.float32)
    x = (sign * (x - x.mean()) / x.std()).astype(np.float32)
    s = diameter / 2.0 / voxel_size / math.sqrt(3.0)
    blobs = blob_dog(x, min_sigma=0.75 * s, max_sigma=1.5 * s, sigma_ratio=1.6,
                     threshold=None, threshold_rel=0.2, overlap=0.5,
                     exclude_border=int(round(diameter / 2.0 / voxel_size)))
    return blobs[:, :3]


def timed(fn, repeats: int):
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def warm_memory(gb: float = 2.0) -> None:
    """Touch some memory once: a VM's first touch of fresh pages is slow, whoever comes first."""
    a = np.ones(int(gb * 1024**3 / 4), dtype=np.float32)
    del a


# --------------------------------------------------------------------------------------------
# synthetic comparison
# --------------------------------------------------------------------------------------------


def compare(args) -> list[dict]:
    from napari_cryo_openset.picking import match_picks

    shape = (64, 256, 256) if args.quick else (128, 512, 512)
    density = 120 / (64 * 256 * 256)  # particles per voxel (~2.6 % of the volume is particle)
    rows = []
    for snr in args.snr:
        n = int(round(density * math.prod(shape)))
        volume, truth, vs, diam = make_phantom(args.phantom, shape, snr, "dark", args.seed, n)
        tol = 0.3 * diam
        nvox = volume.size
        entries = []

        def add(name, rule, coords, seconds, extra=None):
            m = match_picks(coords, truth, tol, vs)
            entries.append({
                "snr": snr, "shape": list(shape), "n_true": len(truth), "method": name,
                "threshold_rule": rule, "seconds": seconds, "mvoxel_per_s": nvox / seconds / 1e6,
                "n_picks": int(len(coords)), "precision": m["precision"], "recall": m["recall"],
                "f1": m["f1"], "mean_error_A": m["mean_distance"], **(extra or {}),
            })

        rep = args.repeats
        for rule in ("robust", "aitom"):
            (coords, info), sec = timed(lambda r=rule: run_ours(volume, vs, diam, "dark", r), rep)
            add("ours", rule, coords, sec, {"bin": list(info["bin"])})
        (coords, info), sec = timed(lambda: run_ours(volume, vs, diam, "auto", "robust"), rep)
        add("ours (polarity auto)", "robust", coords, sec, {"polarity_guess": info["polarity"]})
        ref, sec = timed(lambda: run_reference(volume, vs, diam, "dark"), rep)
        add("(a) gaussian_filter DoG + peak_local_max", "aitom", ref["aitom"], sec)
        add("(a) gaussian_filter DoG + peak_local_max", "robust", ref["robust"], sec)
        if not args.no_blob_dog:
            coords, sec = timed(lambda: run_blob_dog(volume, vs, diam, "dark"), 1)
            add("(b) skimage blob_dog", "threshold_rel 0.2", coords, sec)
        ref_sec = next(e["seconds"] for e in entries if e["method"].startswith("(a)"))
        for e in entries:
            e["speedup_vs_a"] = ref_sec / e["seconds"]
        for e in entries:
            print(
                f"SNR {snr:<4g} {e['method']:<42s} {e['threshold_rule']:<18s} "
                f"{e['mvoxel_per_s']:7.2f} Mvoxel/s  ×{e['speedup_vs_a']:5.2f}  "
                f"F1 {e['f1']:.3f} (P {e['precision']:.2f} R {e['recall']:.2f}, {e['n_picks']} picks / "
                f"{e['n_true']} true)",
                flush=True,
            )
        rows.extend(entries)
    return rows


# --------------------------------------------------------------------------------------------
# components: where hand-written code replaces a library call, the measured ratio
# --------------------------------------------------------------------------------------------


def components(args) -> list[dict]:
    """Band-pass variants and reflect padding, timed on one phantom (best of the repeats)."""
    from scipy import ndimage

    from napari_cryo_openset.picking.dog import bandpass_decimated, dog_filter, fast_length, read_padded

    shape = (64, 256, 256) if args.quick else (128, 512, 512)
    volume, _, vs, diam = make_phantom(args.phantom, shape, 1.0, "dark", args.seed, 10)
    s1 = diam / 2.0 / vs
    s2 = 1.1 * s1
    pad = int(math.ceil(4 * s2))
    win = tuple(fast_length(n + 2 * pad, 3) for n in shape)
    block, _ = read_padded(volume, (-pad,) * 3, win, 0.0)
    rep = args.repeats
    cases = [
        ("DoG: scipy gaussian_filter ×2 (reference)",
         lambda: ndimage.gaussian_filter(volume, s1) - ndimage.gaussian_filter(volume, s2)),
        ("DoG: FFT full resolution (dog_filter, incl. padding)",
         lambda: dog_filter(volume, s1, s2, workers=THREADS)),
        ("DoG: FFT decimated ×3 (bandpass_decimated, padded block)",
         lambda: bandpass_decimated(block, (s1,) * 3, (s2,) * 3, (3, 3, 3), THREADS)),
        ("reflect padding: numpy.pad(mode='symmetric')",
         lambda: np.pad(volume, pad, mode="symmetric")),
        ("reflect padding: read_padded (ours: + NaN check, chunked memmap reads, one buffer)",
         lambda: read_padded(volume, (-pad,) * 3, tuple(n + 2 * pad for n in shape), 0.0)),
    ]
    rows = []
    for name, fn in cases:
        _, sec = timed(fn, rep)
        rows.append({"component": name, "shape": list(shape), "seconds": sec,
                     "mvoxel_per_s": volume.size / sec / 1e6})
    base = {"DoG": rows[0]["seconds"], "reflect": rows[3]["seconds"]}
    for r in rows:
        r["speedup"] = base["DoG" if r["component"].startswith("DoG") else "reflect"] / r["seconds"]
        print(f"{r['component']:<60s} {r['seconds']:7.3f} s  {r['mvoxel_per_s']:7.1f} Mvoxel/s  ×{r['speedup']:.2f}",
              flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# large memory-mapped tomogram
# --------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """Peak resident set size of this process image, MB.

    ``VmHWM`` from ``/proc/self/status`` (Linux): the high-water mark of this address space.
    ``getrusage(...).ru_maxrss`` is reported too, but Linux carries the *parent's* peak over
    fork + exec into it, so a child started by a parent holding a 1.2 GB array reads ≥ 1.2 GB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _large_worker(path: str, diameter: float, out: str) -> None:
    """Child process: read (memory-mapped), pick, write picks; print JSON with time and RSS."""
    t0 = time.perf_counter()
    from napari_cryo_openset.io import read_tomogram, write_picks
    from napari_cryo_openset.picking import PickingParams, pick

    tomo = read_tomogram(path)
    result = pick(tomo.data, tomo.voxel_size, PickingParams(diameter=diameter, workers=THREADS))
    write_picks(out, result.picks, voxel_size=tomo.voxel_size[0])
    wall = time.perf_counter() - t0
    print(json.dumps({
        "seconds": wall, "pick_seconds": result.timing["total"], "peak_rss_mb": _peak_rss_mb(),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n_picks": len(result.picks), "n_tiles": result.stats["n_tiles"],
        "timing": result.timing, "threshold": result.threshold,
    }))


def large(args) -> dict:
    from napari_cryo_openset.io import read_picks, write_tomogram
    from napari_cryo_openset.picking import match_picks
    from napari_cryo_openset.picks import make_picks

    tmp = Path(tempfile.mkdtemp(prefix="bench_picking_", dir=args.tmpdir))
    try:
        free = shutil.disk_usage(tmp).free
        if free < 3 * 1024**3:
            raise SystemExit(f"not enough disk in {tmp} ({free / 1024**3:.1f} GB free, need 3 GB)")
        tile_shape = (300, 256, 256)
        n_per_tile = int(round(120 / (64 * 256 * 256) * math.prod(tile_shape)))
        block, truth, vs, diam = make_phantom(args.phantom, tile_shape, 0.5, "dark", args.seed, n_per_tile)
        reps = (1, 4, 4)
        volume = np.tile(block, reps)
        centres = truth[["z", "y", "x"]].to_numpy()
        all_centres = np.concatenate([
            centres + np.array([0, j * tile_shape[1], i * tile_shape[2]])
            for j in range(reps[1]) for i in range(reps[2])
        ])
        path = tmp / "large_1024x1024x300.mrc"
        t0 = time.perf_counter()
        write_tomogram(path, volume, vs)
        write_s = time.perf_counter() - t0
        del volume
        out = tmp / "picks.star"
        cmd = [sys.executable, __file__, "--_large-worker", str(path), str(diam), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"large-volume worker failed:\n{proc.stderr}")
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        picks = read_picks(out)
        m = match_picks(picks, make_picks(all_centres), 0.3 * diam, vs)
        info.update(shape=[300, 1024, 1024], file_gb=path.stat().st_size / 1024**3,
                    write_seconds=write_s, f1=m["f1"], precision=m["precision"],
                    recall=m["recall"], n_true=len(all_centres))
        print(
            f"1024×1024×300 float32 memory-mapped ({info['file_gb']:.2f} GB): {info['seconds']:.1f} s "
            f"(picking {info['pick_seconds']:.1f} s, {info['n_tiles']} tiles), peak RSS "
            f"{info['peak_rss_mb']:.0f} MB, {info['n_picks']} picks, F1 {m['f1']:.3f}",
            flush=True,
        )
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------


def write_reports(rows, comps, big, args, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "phantom": args.phantom,
        "threads": THREADS, "cpus": os.cpu_count(), "python": platform.python_version(),
        "machine": platform.machine(),
    }
    name = "picking_quick" if args.quick else "picking"
    (out_dir / f"{name}.json").write_text(
        json.dumps({"meta": meta, "synthetic": rows, "components": comps, "large": big}, indent=2, default=str)
    )
    lines = [
        "# DoG picking benchmark",
        "",
        f"{meta['date']}, {THREADS} threads on {meta['cpus']} CPUs, phantom `{args.phantom}`"
        + (" (quick)" if args.quick else ""),
        "",
        f"F1: one-to-one match within 0.3 × diameter. Throughput: voxels / wall time of the whole "
        f"call, best of {args.repeats} runs (blob_dog: 1). Speed-up relative to (a).",
        "",
        "| SNR | shape (Z×Y×X) | method | threshold | Mvoxel/s | × (a) | F1 | precision | recall | picks / true |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['snr']:g} | {'×'.join(map(str, r['shape']))} | {r['method']} | {r['threshold_rule']} | "
            f"{r['mvoxel_per_s']:.2f} | {r['speedup_vs_a']:.2f} | {r['f1']:.3f} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['n_picks']} / {r['n_true']} |"
        )
    if comps:
        lines += [
            "",
            "## Components (hand-written code vs the library call it replaces)",
            "",
            "| component | shape | seconds | Mvoxel/s | speed-up |",
            "|---|---|---|---|---|",
        ]
        for c in comps:
            lines.append(
                f"| {c['component']} | {'×'.join(map(str, c['shape']))} | {c['seconds']:.3f} | "
                f"{c['mvoxel_per_s']:.1f} | {c['speedup']:.2f} |"
            )
    if big:
        lines += [
            "",
            "## 1024×1024×300 float32 tomogram, memory-mapped from disk",
            "",
            f"- wall time (read + pick + write STAR, fresh process): **{big['seconds']:.1f} s** "
            f"(picking {big['pick_seconds']:.1f} s, {big['n_tiles']} tiles)",
            f"- peak RSS: **{big['peak_rss_mb']:.0f} MB**",
            f"- {big['n_picks']} picks, F1 {big['f1']:.3f} against {big['n_true']} true particles",
        ]
    (out_dir / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir / (name + '.json')} and {out_dir / (name + '.md')}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small volumes, skip the large file")
    parser.add_argument("--large", action="store_true", help="with --quick: run the large-file test too")
    parser.add_argument("--large-only", action="store_true", help="only the large-file test")
    parser.add_argument("--no-large", action="store_true", help="skip the large-file test")
    parser.add_argument("--no-blob-dog", action="store_true", help="skip skimage blob_dog (slow)")
    parser.add_argument("--phantom", default="blob", choices=("blob", "scene"))
    parser.add_argument("--snr", type=float, nargs="+", default=[1.0, 0.2])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmpdir", default=None, help="folder for the 1.2 GB temporary file")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--_large-worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--mixed", action="store_true", help="also the mixed-size (multi-scale) comparison")
    parser.add_argument("--mixed-only", action="store_true", help="only the mixed-size comparison")
    parser.add_argument("--mixed-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mixed-particles", type=int, default=400)
    parser.add_argument("--mixed-snr", type=float, default=0.08)
    args = parser.parse_args(argv)
    if args._large_worker:
        path, diam, out = args._large_worker
        _large_worker(path, float(diam), out)
        return 0
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:  # pragma: no cover
        pass
    if args.repeats is None:
        args.repeats = 2
    if args.mixed_only:
        write_mixed(mixed(args), Path(args.out))
        return 0
    warm_memory()
    rows = [] if args.large_only else compare(args)
    comps = [] if args.large_only else components(args)
    run_large = args.large_only or (not args.no_large and (not args.quick or args.large))
    big = large(args) if run_large else None
    write_reports(rows, comps, big, args, Path(args.out))
    if args.mixed:
        write_mixed(mixed(args), Path(args.out))
    return 0


def write_mixed(rows, out_dir: Path) -> None:
    """``picking_mixed.json`` / ``.md`` (the mixed-size comparison)."""
    if not rows:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "picking_mixed.json").write_text(json.dumps(rows, indent=2, default=str))
    text = "\n".join(["# Multi-scale DoG picking", *mixed_report(rows)]) + "\n"
    (out_dir / "picking_mixed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
