"""The ``simulate`` subcommand (wired into ``napari_cryo_openset.cli`` with :func:`register`).

::

    napari-cryo-openset simulate --templates PATH [PATH ...] --voxel-size Å --box N --per-class N
        [--decoys N] [--empty N] [--snr S | --snr-range LO HI] [--defocus µm | --defocus-range LO HI]
        [--cs mm] [--voltage kV] [--tilt-range MIN MAX] [--tilt-step DEG] [--seed N] -o SOURCE

``PATH`` is an MRC map, a PDB/mmCIF model, a folder of them, or the word ``builtin``. The
output ``SOURCE`` is one ``.npz`` file (see :mod:`.datasets`), written atomically. Progress goes
to stderr (tqdm). Bad input raises :class:`~napari_cryo_openset.errors.CryoOpensetError`
subclasses whose message names the option or file.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ..errors import CryoOpensetError, ParameterError

DEFAULTS = {"snr": 0.1, "defocus": 5.0, "cs": 2.7, "voltage": 300.0, "tilt_range": (-60.0, 60.0), "tilt_step": 3.0}


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate a labelled training set of subtomograms from templates",
        description=(
            "Simulate labelled subtomograms (tilt series about Y, CTF, MTF, noise, weighted "
            "back-projection; protein dark, per-box normalised) from density maps, atomic models "
            "or the built-in library, and write them to one .npz file. Defocus in µm "
            "(underfocus positive); SNR = var(signal)/var(noise) per projection."
        ),
    )
    p.add_argument("--templates", nargs="+", required=True, metavar="PATH",
                   help="MRC maps, PDB/mmCIF models, folders of them, or the word 'builtin'")
    p.add_argument("--voxel-size", type=float, required=True, metavar="Å", help="voxel size of the simulated data")
    p.add_argument("--box", type=int, required=True, metavar="N", help="subtomogram edge in voxels (≥ 16)")
    p.add_argument("--per-class", type=int, required=True, metavar="N", help="subtomograms per template")
    p.add_argument("--decoys", type=int, default=0, metavar="N", help="subtomograms of procedural decoys (class 'unknown')")
    p.add_argument("--empty", type=int, default=0, metavar="N", help="empty (noise-only) subtomograms (class 'empty')")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--snr", type=float, metavar="S", help=f"per-projection SNR (default {DEFAULTS['snr']})")
    g.add_argument("--snr-range", type=float, nargs=2, metavar=("LO", "HI"), help="SNR drawn log-uniformly per subtomogram")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--defocus", type=float, metavar="µm", help=f"underfocus in µm (default {DEFAULTS['defocus']})")
    g.add_argument("--defocus-range", type=float, nargs=2, metavar=("LO", "HI"), help="defocus drawn uniformly per subtomogram")
    p.add_argument("--cs", type=float, default=DEFAULTS["cs"], metavar="mm", help="spherical aberration (default %(default)s)")
    p.add_argument("--voltage", type=float, default=DEFAULTS["voltage"], metavar="kV", help="default %(default)s")
    p.add_argument("--tilt-range", type=float, nargs=2, default=list(DEFAULTS["tilt_range"]), metavar=("MIN", "MAX"),
                   help="tilt range in degrees (default -60 60)")
    p.add_argument("--tilt-step", type=float, default=DEFAULTS["tilt_step"], metavar="DEG", help="default %(default)s")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("-o", "--output", required=True, metavar="SOURCE", help="output file (.npz)")
    p.set_defaults(func=cmd_simulate)
    return p


def _check(args: argparse.Namespace) -> None:
    """Validate the options; messages name the option."""
    def finite(v):
        return v is not None and math.isfinite(v)

    if not finite(args.voxel_size) or args.voxel_size <= 0:
        raise ParameterError(f"--voxel-size must be a positive number of Å, got {args.voxel_size}")
    if args.box < 16:
        raise ParameterError(f"--box must be at least 16 voxels, got {args.box}")
    if args.per_class < 1:
        raise ParameterError(f"--per-class must be at least 1, got {args.per_class}")
    if args.decoys < 0:
        raise ParameterError(f"--decoys must be ≥ 0, got {args.decoys}")
    if args.empty < 0:
        raise ParameterError(f"--empty must be ≥ 0, got {args.empty}")
    if args.snr is not None and (not finite(args.snr) or args.snr <= 0):
        raise ParameterError(f"--snr must be positive (var(signal)/var(noise)), got {args.snr}")
    if args.snr_range is not None:
        lo, hi = args.snr_range
        if not (finite(lo) and finite(hi)) or lo <= 0 or hi < lo:
            raise ParameterError(f"--snr-range must be 0 < LO ≤ HI, got {lo} {hi}")
    if args.defocus is not None and (not finite(args.defocus) or args.defocus <= 0):
        raise ParameterError(f"--defocus must be positive µm of underfocus (e.g. 5), got {args.defocus}")
    if args.defocus_range is not None:
        lo, hi = args.defocus_range
        if not (finite(lo) and finite(hi)) or lo <= 0 or hi < lo:
            raise ParameterError(f"--defocus-range must be 0 < LO ≤ HI µm of underfocus, got {lo} {hi}")
    if not finite(args.cs) or args.cs < 0:
        raise ParameterError(f"--cs must be ≥ 0 mm, got {args.cs}")
    if not finite(args.voltage) or args.voltage <= 0:
        raise ParameterError(f"--voltage must be positive kV, got {args.voltage}")
    lo, hi = args.tilt_range
    if not (finite(lo) and finite(hi)) or lo < -90 or hi > 90 or lo > hi:
        raise ParameterError(f"--tilt-range must satisfy -90 ≤ MIN ≤ MAX ≤ 90 degrees, got {lo} {hi}")
    if not finite(args.tilt_step) or args.tilt_step <= 0:
        raise ParameterError(f"--tilt-step must be positive degrees, got {args.tilt_step}")
    if args.seed < 0:
        raise ParameterError(f"--seed must be ≥ 0, got {args.seed}")
    out = Path(args.output)
    if out.is_dir():
        raise CryoOpensetError(f"-o '{out}' is a folder; give a file name such as source.npz")
    if not out.parent.is_dir():
        raise CryoOpensetError(f"-o '{out}': the folder '{out.parent}' does not exist")


def params_from_args(args: argparse.Namespace):
    """(DatasetParams, template paths) from parsed arguments (validated)."""
    from .condition import ImagingCondition
    from .datasets import DatasetParams

    _check(args)
    condition = ImagingCondition(
        voxel_size=args.voxel_size,
        defocus=tuple(args.defocus_range) if args.defocus_range else (args.defocus if args.defocus is not None else DEFAULTS["defocus"]),
        cs=args.cs,
        voltage=args.voltage,
        tilt_range=tuple(args.tilt_range),
        tilt_step=args.tilt_step,
        snr=tuple(args.snr_range) if args.snr_range else (args.snr if args.snr is not None else DEFAULTS["snr"]),
    )
    params = DatasetParams(box=args.box, per_class=args.per_class, decoys=args.decoys, empty=args.empty,
                           condition=condition, seed=args.seed)
    return params, list(args.templates)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run ``simulate``: load templates, simulate with a tqdm bar on stderr, write SOURCE."""
    from ..progress import run_with_tqdm
    from .datasets import generate_dataset
    from .templates import load_templates, templates_fit_box

    t0 = time.perf_counter()
    params, paths = params_from_args(args)
    templates = load_templates(paths, params.voxel_size)
    too_big = templates_fit_box(templates, params.box)
    if too_big:
        print(f"simulate: warning: {', '.join(too_big)} larger than the {params.box}-voxel box "
              f"({params.box * params.voxel_size / 10:g} nm); they are cut by the box", file=sys.stderr)
    data = run_with_tqdm(generate_dataset(templates, params, args.output), desc="simulate")
    counts = ", ".join(f"{k} {v}" for k, v in data.counts().items())
    print(f"simulate: wrote {args.output} ({len(data)} subtomograms of {params.box}³ voxels at "
          f"{params.voxel_size:g} Å; {counts}) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
