"""``napari-cryo-openset demo``: the built-in sample, classified by ``run --fast``, shown in napari.

The only CLI module that imports napari (and only when a window or a screenshot is asked for).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from ._args import say


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="run the demo on the built-in sample tomogram")
    p.add_argument("-o", "--output", default="demo_output", metavar="OUTDIR")
    p.add_argument("--no-gui", action="store_true", help="do not open napari")
    p.add_argument("--screenshot", metavar="PNG", help="open napari, save a screenshot, close")
    p.add_argument("--no-classify", action="store_true",
                   help="only the sample and its ground truth (no pick → train → adapt → embed run)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return p


#: The built-in structure the demo's model never sees: its particles should come up ``unknown``.
DEMO_HELD_OUT = "4cr2"
#: DoG diameter for the sample scene (Å): best picking F1 there (see benchmarks/bench_run.py).
DEMO_DIAMETER = 120.0


def _demo_classify(tomo, condition, seed: int, out: Path):
    """Run the pipeline (fast) on the sample with one built-in structure held out; write ``out``."""
    from ..params import AdaptParams, PickingParams, RunParams
    from ..io._atomic import atomic_dir
    from ..pipeline import run_pipeline, write_run
    from ..progress import run_with_tqdm
    from ..simulate import builtin_templates

    templates = [t for t in builtin_templates(tomo.voxel_size[0]) if t.name != DEMO_HELD_OUT]
    say(f"demo: classifying: model of {', '.join(t.name for t in templates)} ({DEMO_HELD_OUT} held out: "
        "never simulated, so its particles should come up unknown), DoG picks, MLUDA, fast settings …")
    params = RunParams(PickingParams(diameter=DEMO_DIAMETER, polarity="auto"), fast=True, seed=seed + 1,
                       adapt=AdaptParams(method="mluda"))
    sample = params.source.condition.replace(snr=float(condition.snr), defocus=float(condition.defocus))
    params = replace(params, source=replace(params.source, condition=sample))  # the sample's SNR and defocus
    result = run_with_tqdm(run_pipeline(tomo, templates, params), desc="demo")
    with atomic_dir(out, overwrite=True) as tmp:  # the demo's own folder: replaced, whole, each time
        write_run(tmp, result)
    counts = ", ".join(f"{k} {v}" for k, v in result.class_counts().items())
    say(f"demo: {len(result.picks)} picks classified in {result.timings['total']:.0f} s: {counts}; "
        f"{result.embedded.summary()} → {out}/")
    return result


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the built-in sample, write it, classify it (``run``, fast), and show it (or screenshot it)."""
    from ..io.picks_io import read_picks, write_picks
    from ..io.tomogram import read_tomogram, write_tomogram
    from ..simulate.scenes import SAMPLE_SCENE, SceneParams, make_scene

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    params = SceneParams(**{**SAMPLE_SCENE.__dict__, "seed": args.seed})
    say("demo: simulating a 128×256×256 tomogram of built-in structures and decoys …")
    volume, truth = make_scene(params)
    voxel_size = float(params.condition.voxel_size)
    tomo_path = write_tomogram(out / "sample_tomogram.mrc", volume, voxel_size)
    picks_path = write_picks(out / "sample_tomogram_truth.star", truth, voxel_size=voxel_size)
    tomo = read_tomogram(tomo_path)
    picks = read_picks(picks_path)
    counts = picks["class_name"].value_counts().sort_index().to_dict()
    say(
        f"demo: wrote {tomo_path} ({'×'.join(map(str, tomo.shape))} voxels at "
        f"{tomo.voxel_size[0]:g} Å) and {picks_path} ({len(picks)} ground-truth picks: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f") in {time.perf_counter() - t0:.1f} s"
    )
    result = None if args.no_classify else _demo_classify(tomo, params.condition, args.seed, out / "run")
    if args.no_gui and not args.screenshot:
        return 0
    import napari

    viewer = napari.Viewer(show=True, title="napari-cryo-openset demo")
    viewer.open([str(tomo_path), str(picks_path)], plugin="napari-cryo-openset")
    from .._viewer import show_particles_across_slices

    truth_layer = viewer.layers[-1]
    truth_layer.size = 200.0 / voxel_size  # ~20 nm: a typical built-in particle
    results = None
    if result is not None:
        truth_layer.visible = False  # the ground truth stays one click away
        from .._widgets import show_run_result

        results = show_run_result(viewer, result, voxel_size)
        viewer.window.resize(1280, 1000)
    show_particles_across_slices(viewer, 200.0)
    viewer.reset_view()
    viewer.dims.set_point(0, tomo.shape[0] // 2 * tomo.voxel_size[0])
    if args.screenshot:
        from qtpy.QtWidgets import QApplication
        from skimage.io import imsave

        for _ in range(3):
            QApplication.processEvents()
        viewer.reset_view()  # the window and the dock have their final sizes now
        if results is not None:
            results.scroll_to_map()  # the table and the map in view
        QApplication.processEvents()
        shot = Path(args.screenshot)
        shot.parent.mkdir(parents=True, exist_ok=True)
        imsave(shot, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
        say(f"demo: screenshot saved to {shot}")
        viewer.close()
        return 0
    napari.run()
    return 0
