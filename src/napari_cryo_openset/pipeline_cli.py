"""The ``run`` subcommand of ``napari-cryo-openset`` (ARCHITECTURE.md § 4.1)::

    napari-cryo-openset run --tomo TOMO.mrc --templates PATH [PATH ...] --diameter Å --method ada|mluda
                            -o OUTDIR [--polarity dark|bright|auto] [--device ...] [--seed N] [--fast]
                            [--picks PICKS.star] [--max-picks N] [--defocus µm] [--cs mm] [--voltage kV]
                            [--tilt-range MIN MAX] [--tilt-step DEG] [--snr S] [--box N] [--per-class N]
                            [--epochs N] [--iterations N] [--threads N] [--quiet]

One go from a tomogram to classified picks: DoG picking (or the curated ``--picks`` given),
simulation of the templates under the tomogram's imaging conditions, source training,
on-the-fly adaptation (3D-ADA or MLUDA) to the picks with open-set ``unknown`` calls, and the
t-SNE map with clusters of unknowns and their averages. Writes ``OUTDIR/picks.star``,
``predictions.star``, ``model.pt``, ``adapted.pt``, ``report.json``, ``embedding.png`` and
``averages/*.mrc`` (see :mod:`.pipeline`), each atomically. Bad input exits with status 2 and
one line naming the option or file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import CryoOpensetError, ParameterError, PicksError
from .model_cli import (
    _add_device_options,
    _check_device,
    _check_input,
    _check_picks_inside,
    _finite_float,
    _int,
    _option_error,
)
from .simulate._cli import DEFAULTS as SIM_DEFAULTS

METHODS = ("ada", "mluda")
_OPTIONS = {"diameter": "--diameter", "method": "--method", "polarity": "--polarity", "max_picks": "--max-picks",
            "per_class": "--per-class", "epochs": "--epochs", "iterations": "--iterations", "box": "--box",
            "seed": "--seed", "threads": "--threads", "neighbours": "--neighbours", "background": "--background"}


def _print(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "run",
        help="pick → simulate → train → adapt → predict → embed, in one go",
        description=(
            "Classify the particles of one tomogram in one go: DoG picking (or --picks), simulation of "
            "the templates at the tomogram's voxel size, source training, on-the-fly adaptation (3D-ADA "
            "or MLUDA) to the picks with open-set 'unknown' calls, and a t-SNE map with clusters of the "
            "unknown picks and their (unaligned) averages. Writes picks.star, predictions.star, "
            "model.pt, adapted.pt, report.json, embedding.png and averages/ into OUTDIR."
        ),
    )
    p.add_argument("--tomo", required=True, metavar="TOMO.mrc", help="tomogram (MRC), read memory-mapped")
    p.add_argument("--templates", nargs="+", required=True, metavar="PATH",
                   help="MRC maps, PDB/mmCIF models, folders of them, or the word 'builtin'")
    p.add_argument("--diameter", type=_finite_float, required=True, metavar="Å", help="particle diameter in Å")
    p.add_argument("--method", choices=METHODS, required=True,
                   help="adaptation: 'ada' (3D-ADA, adversarial) or 'mluda' (margin losses + CORAL, open set)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--polarity", choices=("dark", "bright", "auto"), default="dark",
                   help="protein contrast in this tomogram (default dark; auto guesses and reports)")
    p.add_argument("--seed", type=_int, default=0, metavar="N", help="seed of everything random (default 0)")
    p.add_argument("--fast", action="store_true",
                   help="a quick first look: 150 simulated boxes per class, 10 epochs, 100 adaptation rounds "
                        "(default 300, 15, 300)")
    p.add_argument("--picks", default=None, metavar="PICKS.star",
                   help="use these (curated) picks instead of DoG picking; rejected picks are kept but not classified")
    p.add_argument("--max-picks", type=_int, default=None, metavar="N", help="keep at most the N best picks")
    g = p.add_argument_group("imaging condition of the simulation (voxel size: the tomogram's)")
    g.add_argument("--defocus", type=_finite_float, default=SIM_DEFAULTS["defocus"], metavar="µm",
                   help="underfocus in µm (default %(default)s)")
    g.add_argument("--cs", type=_finite_float, default=SIM_DEFAULTS["cs"], metavar="mm",
                   help="spherical aberration (default %(default)s)")
    g.add_argument("--voltage", type=_finite_float, default=SIM_DEFAULTS["voltage"], metavar="kV",
                   help="default %(default)s")
    g.add_argument("--tilt-range", type=_finite_float, nargs=2, default=list(SIM_DEFAULTS["tilt_range"]),
                   metavar=("MIN", "MAX"), help="tilt range in degrees (default -60 60)")
    g.add_argument("--tilt-step", type=_finite_float, default=SIM_DEFAULTS["tilt_step"], metavar="DEG",
                   help="default %(default)s")
    g.add_argument("--snr", type=_finite_float, default=SIM_DEFAULTS["snr"], metavar="S",
                   help="per-projection SNR of the simulation (default %(default)s)")
    g.add_argument("--neighbours", type=_finite_float, default=1.0, metavar="N",
                   help="mean number of neighbouring particles at the edges of each simulated box (default "
                        "%(default)s; 0 = isolated particles)")
    g.add_argument("--background", type=_finite_float, default=0.05, metavar="S",
                   help="smooth crowding background of the simulated boxes, in units of protein density "
                        "(default %(default)s; 0 = off)")
    g = p.add_argument_group("model and adaptation")
    g.add_argument("--box", type=_int, default=None, metavar="N",
                   help="box edge in voxels (default: the largest structure + 20 %%, 24–40, binning the "
                        "tomogram when a structure needs more)")
    g.add_argument("--per-class", type=_int, default=None, metavar="N", help="simulated boxes per template")
    g.add_argument("--epochs", type=_int, default=None, metavar="N", help="source training epochs")
    g.add_argument("--iterations", type=_int, default=None, metavar="N", help="adaptation rounds")
    _add_device_options(p)
    p.set_defaults(func=cmd_run)
    return p


def run_params_from_args(args: argparse.Namespace):
    """:class:`~napari_cryo_openset.pipeline.RunParams` from parsed arguments (validated)."""
    from .pipeline import RunParams

    checks = (("--defocus", args.defocus, 0), ("--voltage", args.voltage, 0), ("--tilt-step", args.tilt_step, 0),
              ("--snr", args.snr, 0))
    for option, value, lo in checks:
        if value <= lo:
            raise ParameterError(f"{option} must be > {lo:g}, got {value:g}")
    if args.cs < 0:
        raise ParameterError(f"--cs must be ≥ 0 mm, got {args.cs:g}")
    lo, hi = args.tilt_range
    if lo < -90 or hi > 90 or lo > hi:
        raise ParameterError(f"--tilt-range must satisfy -90 ≤ MIN ≤ MAX ≤ 90 degrees, got {lo:g} {hi:g}")
    if args.threads is not None and args.threads < 1:
        raise ParameterError(f"--threads must be ≥ 1, got {args.threads}")
    try:
        return RunParams(diameter=args.diameter, method=args.method, polarity=args.polarity, seed=args.seed,
                         device=args.device, threads=args.threads, fast=args.fast, max_picks=args.max_picks,
                         defocus=args.defocus, cs=args.cs, voltage=args.voltage, tilt_range=tuple(args.tilt_range),
                         tilt_step=args.tilt_step, snr=args.snr, neighbours=args.neighbours,
                         background=args.background, box=args.box, per_class=args.per_class,
                         epochs=args.epochs, iterations=args.iterations)
    except ParameterError as exc:
        raise _option_error(exc, _OPTIONS) from None


def _check_outdir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CryoOpensetError(f"-o '{out}' is a file; give a folder for the run's outputs")
    if not out.exists() and not out.parent.is_dir():
        raise CryoOpensetError(f"-o '{out}': the folder '{out.parent}' does not exist")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole pipeline and write OUTDIR."""
    t0 = time.perf_counter()
    tomo_path = _check_input(args.tomo, "--tomo", "a tomogram (.mrc)")
    picks_path = _check_input(args.picks, "--picks", "a picks file (.star or .csv)") if args.picks else None
    out = _check_outdir(args.output)
    params = run_params_from_args(args)
    _check_device(params.device)

    from .io import read_picks, read_tomogram
    from .pipeline import run_pipeline, write_run
    from .progress import run_with_tqdm
    from .simulate.templates import load_templates

    tomo = read_tomogram(tomo_path)
    vs = tomo.voxel_size
    _print(f"run: tomogram {tomo_path}: {'×'.join(map(str, tomo.shape))} voxels at "
           f"{'/'.join(f'{v:g}' for v in sorted(set(vs)))} Å")
    picks = None
    if picks_path is not None:
        picks = read_picks(picks_path, tomogram_shape=tomo.shape, voxel_size=vs)
        if len(picks) == 0:
            raise PicksError(f"--picks '{picks_path}' holds no picks")
        _check_picks_inside(picks, tomo.shape, picks_path, tomo_path)
        _print(f"run: {len(picks)} picks from {picks_path} "
               f"({int((picks['curation'] == 'rejected').sum())} rejected kept, not classified)")
    templates = load_templates(args.templates, vs[0])
    _print(f"run: {len(templates)} templates: {', '.join(t.name for t in templates)}")
    job = run_pipeline(tomo, templates, params, picks=picks)
    result = run_with_tqdm(job, desc="run", disable=args.quiet or None)
    if result.picking is not None:
        _print(f"run: pick: {result.picking.summary()}")
    g = result.geometry
    _print(f"run: model: {g['box']}³ boxes at {g['model_voxel_size']:g} Å (bin {g['bin']}); source validation "
           f"accuracy {result.trained.val_accuracy:.3f}; {result.trained.stopped}")
    _print(f"run: adapt ({params.method}): {result.adaptation.result.stopped}; polarity {result.adaptation.polarity}")
    counts = ", ".join(f"{k} {v}" for k, v in result.class_counts().items())
    _print(f"run: classes: {counts}")
    _print(f"run: {result.embedded.summary()}")
    paths = write_run(out, result)
    _print(f"run: {time.perf_counter() - t0:.1f} s in all → {out}/ ({', '.join(sorted(p for p in paths if '/' not in p))}, "
           f"averages/ ×{sum('/' in p for p in paths)})")
    return 0
