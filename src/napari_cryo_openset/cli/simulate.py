"""``napari-cryo-openset simulate --templates PATH … -o SOURCE`` (ARCHITECTURE.md § 4.1).

``PATH`` is an MRC map, a PDB/mmCIF model, a folder of them, or the word ``builtin``. The
output ``SOURCE`` is one ``.npz`` file (:mod:`napari_cryo_openset.simulate.datasets`), written
atomically.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..params import DatasetParams, ImagingCondition
from ._args import add_options, build, finite, say
from ._outputs import check_space, output_file, simulated_set_bytes

_CONDITION = ("voxel_size", "cs", "voltage", "tilt_range", "tilt_step", "bfactor", "tilt_jitter")
_DATASET = ("box", "per_class", "decoys", "empty", "seed")


def register(subparsers) -> argparse.ArgumentParser:
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
    add_options(p, ImagingCondition, ("voxel_size",), required=("voxel_size",))
    add_options(p, DatasetParams, ("box", "per_class"), required=("box", "per_class"))
    add_options(p, DatasetParams, ("decoys", "empty"))
    g = p.add_mutually_exclusive_group()
    add_options(g, ImagingCondition, ("snr",))
    g.add_argument("--snr-range", type=finite, nargs=2, metavar=("LO", "HI"), help="SNR drawn log-uniformly per subtomogram")
    g = p.add_mutually_exclusive_group()
    add_options(g, ImagingCondition, ("defocus",))
    g.add_argument("--defocus-range", type=finite, nargs=2, metavar=("LO", "HI"),
                   help="defocus drawn uniformly per subtomogram")
    add_options(p, ImagingCondition, ("cs", "voltage", "tilt_range", "tilt_step", "bfactor", "tilt_jitter"))
    add_options(p, DatasetParams, ("seed",))
    p.add_argument("-o", "--output", required=True, metavar="SOURCE", help="output file (.npz)")
    p.set_defaults(func=cmd_simulate)
    return p


def params_from_args(args: argparse.Namespace) -> tuple[DatasetParams, list[str]]:
    """(DatasetParams, template paths) from parsed arguments (validated by the dataclasses)."""
    output_file(args.output, None, "the simulated set", "source.npz", need=0, command="simulate")
    ranges = {}
    flags = {}
    for name in ("snr", "defocus"):
        lo_hi = getattr(args, f"{name}_range")
        if lo_hi is not None:
            ranges[name] = tuple(lo_hi)
            flags[name] = f"--{name}-range"
    condition = build(ImagingCondition, args, _CONDITION + tuple(n for n in ("snr", "defocus") if n not in ranges),
                      flags=flags, **ranges)
    return build(DatasetParams, args, _DATASET, condition=condition), list(args.templates)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run ``simulate``: load templates, simulate with a tqdm bar on stderr, write SOURCE."""
    from ..progress import run_with_tqdm
    from ..simulate.datasets import generate_dataset
    from ..simulate.templates import load_templates, templates_fit_box

    t0 = time.perf_counter()
    params, paths = params_from_args(args)
    templates = load_templates(paths, params.voxel_size)
    n_boxes = len(templates) * params.per_class + params.decoys + params.empty
    check_space(Path(args.output), simulated_set_bytes(n_boxes, params.box), "-o", "simulate")
    too_big = templates_fit_box(templates, params.box)
    if too_big:
        say(f"simulate: warning: {', '.join(too_big)} larger than the {params.box}-voxel box "
            f"({params.box * params.voxel_size / 10:g} nm); they are cut by the box")
    data = run_with_tqdm(generate_dataset(templates, params, args.output), desc="simulate")
    counts = ", ".join(f"{k} {v}" for k, v in data.counts().items())
    say(f"simulate: wrote {args.output} ({len(data)} subtomograms of {params.box}³ voxels at "
        f"{params.voxel_size:g} Å; {counts}) in {time.perf_counter() - t0:.1f} s")
    return 0
