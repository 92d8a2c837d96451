"""``napari-cryo-openset run --tomo TOMO.mrc --templates PATH … --diameter Å --method ada|mluda -o OUTDIR``.

One go from a tomogram to classified picks (:func:`napari_cryo_openset.pipeline.run_pipeline`):
DoG picking (or the curated ``--picks`` given), simulation of the templates under the tomogram's
imaging conditions, source training, on-the-fly adaptation with open-set ``unknown`` calls, and
the t-SNE map with clusters of unknowns and their averages, aligned (``--no-align``: unaligned only). Writes ``OUTDIR/picks.star``,
``predictions.star``, ``model.pt``, ``adapted.pt``, ``report.json``, ``embedding.png`` and
``averages/`` (``average_<group>.mrc`` unaligned; ``<group>/average.mrc``, half-maps, ``fsc.csv``,
``fsc.png`` aligned), each atomically.
"""

from __future__ import annotations

import argparse
import time

from ..errors import PicksError
from ..params import AdaptParams, PickingParams, RunParams
from ._args import (
    add_device_options,
    add_options,
    build,
    check_device,
    check_picks_inside,
    given,
    input_file,
    output_dir,
    say,
)

_PICKING = ("diameter", "polarity", "max_picks")
_IMAGING = ("defocus", "cs", "voltage", "tilt_range", "tilt_step", "snr")
_CROWDING = ("neighbours", "background")
_RUN = ("seed", "fast", "box", "per_class", "epochs", "iterations", "device", "threads", "source_kind",
        "match_spectrum", "verify", "verify_rotations", "verify_threshold", "verify_score", "verify_max_picks", "align", "align_max_boxes", "resembles_threshold")
_DEFAULTS = RunParams(PickingParams(diameter=1.0))  # the run's own defaults (crowded source, mluda)


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        help="pick → simulate → train → adapt → predict → embed, in one go",
        description=(
            "Classify the particles of one tomogram in one go: DoG picking (or --picks), simulation of "
            "the templates at the tomogram's voxel size, source training, on-the-fly adaptation (3D-ADA "
            "or MLUDA) to the picks with open-set 'unknown' calls, and a t-SNE map with clusters of the "
            "unknown picks and their averages, aligned (gold standard, from the template for a class, reference-free "
            "for a cluster) and compared with the known structures. Writes picks.star, predictions.star, "
            "model.pt, adapted.pt, report.json, embedding.png and averages/ into OUTDIR."
        ),
    )
    p.add_argument("--tomo", required=True, metavar="TOMO.mrc", help="tomogram (MRC), read memory-mapped")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                   help="output folder (created if missing; an existing non-empty one needs --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier run in OUTDIR; they are kept until the new set is complete "
                        "(written into a hidden folder beside OUTDIR and swapped in at the end)")
    p.add_argument("--picks", default=None, metavar="PICKS.star",
                   help="use these (curated) picks instead of DoG picking; rejected picks are kept but not classified")
    add_run_options(p)
    p.set_defaults(func=cmd_run)
    return p


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of a run (templates, picking, imaging condition, model, adaptation, device): ``run``
    and ``batch`` (which runs this pipeline on every tomogram of a data set) share them."""
    p.add_argument("--templates", nargs="+", required=True, metavar="PATH",
                   help="MRC maps, PDB/mmCIF models, folders of them, or the word 'builtin'")
    add_options(p, PickingParams, ("diameter",), required=("diameter",))
    add_options(p, AdaptParams, ("method",), required=("method",))
    add_options(p, PickingParams, ("polarity",))
    add_options(p, _DEFAULTS, ("seed", "fast"))
    add_options(p, PickingParams, ("max_picks",))
    g = p.add_argument_group("imaging condition of the simulation (voxel size: the tomogram's)")
    add_options(g, _DEFAULTS.source.condition, _IMAGING)
    add_options(g, _DEFAULTS.source, _CROWDING)
    add_options(g, _DEFAULTS, ("source_kind", "match_spectrum", "verify", "verify_rotations", "verify_threshold",
                               "verify_score", "verify_max_picks"))
    g.add_argument("--no-estimate", action="store_true",
                   help="simulate with the defaults for what is not given, without reading the tilt range and SNR "
                        "from the tomogram (by default they are estimated from the volume and reported)")
    g = p.add_argument_group("model and adaptation")
    add_options(g, _DEFAULTS, ("box", "per_class", "epochs", "iterations"))
    g = p.add_argument_group("alignment of the class and cluster averages")
    add_options(g, _DEFAULTS, ("align", "align_max_boxes", "resembles_threshold"))
    add_device_options(p, _DEFAULTS)


def run_params_from_args(args: argparse.Namespace) -> RunParams:
    """:class:`~napari_cryo_openset.params.RunParams` from parsed arguments (validated)."""
    picking = build(PickingParams, args, _PICKING)
    condition = build(_DEFAULTS.source.condition, args, _IMAGING)
    source = build(_DEFAULTS.source, args, _CROWDING, condition=condition)
    adapt = build(AdaptParams, args, ("method",))
    told = None if getattr(args, "no_estimate", False) else ("voxel_size", *given(args, _IMAGING))
    return build(RunParams, args, _RUN, picking=picking, source=source, adapt=adapt, given=told)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole pipeline and write OUTDIR."""
    t0 = time.perf_counter()
    tomo_path = input_file(args.tomo, "--tomo", "a tomogram (.mrc)")
    picks_path = input_file(args.picks, "--picks", "a picks file (.star or .csv)") if args.picks else None
    out = output_dir(args.output, overwrite=args.overwrite)
    params = run_params_from_args(args)
    check_device(params.device)

    from ..io import read_picks, read_tomogram
    from ..io._atomic import atomic_dir
    from ..pipeline import run_pipeline, write_run
    from ..progress import run_with_tqdm
    from ..simulate.templates import load_templates

    tomo = read_tomogram(tomo_path)
    vs = tomo.voxel_size
    say(f"run: tomogram {tomo_path}: {'×'.join(map(str, tomo.shape))} voxels at "
        f"{'/'.join(f'{v:g}' for v in sorted(set(vs)))} Å")
    picks = None
    if picks_path is not None:
        picks = read_picks(picks_path, tomogram_shape=tomo.shape, voxel_size=vs)
        if len(picks) == 0:
            raise PicksError(f"--picks '{picks_path}' holds no picks")
        check_picks_inside(picks, tomo.shape, picks_path, tomo_path)
        say(f"run: {len(picks)} picks from {picks_path} "
            f"({int((picks['curation'] == 'rejected').sum())} rejected kept, not classified)")
    templates = load_templates(args.templates, vs[0])
    say(f"run: {len(templates)} templates: {', '.join(t.name for t in templates)}")
    _check_geometry(tomo, templates, params)
    job = run_pipeline(tomo, templates, params, picks=picks)
    result = run_with_tqdm(job, desc="run", disable=args.quiet or None)
    if result.picking is not None:
        say(f"run: pick: {result.picking.summary()}")
    if result.condition is not None:
        say(f"run: imaging condition: {result.condition.summary()}")
        for note in result.condition.notes:
            say(f"run: note: {note}")
    g = result.geometry
    say(f"run: model: {g['box']}³ boxes at {g['model_voxel_size']:g} Å (bin {g['bin']}); source validation "
        f"accuracy {result.trained.val_accuracy:.3f}; {result.trained.stopped}")
    say(f"run: adapt ({params.method}): {result.adaptation.result.stopped}; polarity {result.adaptation.polarity}")
    counts = ", ".join(f"{k} {v}" for k, v in result.class_counts().items())
    say(f"run: classes: {counts}")
    say(f"run: {result.embedded.summary()}")
    if result.alignments is not None:
        for note in result.alignments.notes:
            say(f"run: align: note: {note}")
        for line in result.alignments.summary():
            say(f"run: align: {line}")
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        paths = write_run(tmp, result)
    say(f"run: {time.perf_counter() - t0:.1f} s in all → {out}/ ({', '.join(sorted(p for p in paths if '/' not in p))}, "
        f"averages/ ×{sum('/' in p for p in paths)})")
    return 0


def _check_geometry(tomo, templates, params: RunParams) -> None:
    """The working box must fit the tomogram: checked before picking and simulating anything."""
    from ..pipeline import check_box_fits, working_geometry

    largest = max([params.picking.largest_diameter] + [float(t.diameter) for t in templates])
    _, box, binning = working_geometry(tomo.voxel_size[0], largest, params.box)
    what = "--box" if params.box is not None else f"the working box (from the largest structure, {largest:g} Å)"
    check_box_fits(tomo.shape, box, binning, what)
    _warn_memory(len(templates), box, params)


#: Copies of the source set a run holds at once (float32 boxes, augmented batches, spectra), roughly.
_SOURCE_COPIES = 3


def _warn_memory(n_templates: int, box: int, params: RunParams) -> None:
    """Say so before simulating when the source set alone would need more memory than is free."""
    n = params.n_per_class
    n_boxes = n_templates * n + n + max(1, n // 2)  # per template, decoys, empty (RunParams.source_params)
    need = _SOURCE_COPIES * 4 * n_boxes * box**3
    free = _available_memory()
    if free is not None and need > free:
        say(f"run: warning: {n_boxes} source boxes of {box}³ voxels need about {need / 1024**3:.1f} GB of memory, "
            f"{free / 1024**3:.1f} GB are free; lower --per-class or --box if the run runs out of memory")


def _available_memory() -> int | None:
    """Free physical memory in bytes (Linux/macOS), or None when the system does not say."""
    import os

    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
