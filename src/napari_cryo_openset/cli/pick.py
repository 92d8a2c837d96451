"""``napari-cryo-openset pick TOMO.mrc --diameter Å … -o PICKS.star`` (ARCHITECTURE.md § 4.1)."""

from __future__ import annotations

import argparse

from ..errors import ParameterError
from ..params import PickingParams
from ._args import add_options, build, input_file, output_file, say, write_table

_DESCRIPTION = (
    "Pick particles in a tomogram by Difference of Gaussians (σ1 = particle radius, σ2 = 1.1 σ1), "
    "with a minimum distance between picks, and write them as STAR (or CSV) with coordinates "
    "in voxels and the DoG score in rlnAutopickFigureOfMerit. Threshold: robust (median + k·MAD "
    "of the DoG response) by default; --threshold T for a fixed score, --max-picks N for the N "
    "best, --threshold-method aitom for AITom's m + 3(M − m)/20. --diameter MIN MAX (Å) picks "
    "mixed sizes: DoG at scales from MIN to MAX, scores are robust z-scores per scale, and each "
    "pick's diameter is written to cosDiameterAngst."
)
_OPTIONS = ("diameter", "n_scales", "polarity", "k_mad", "min_distance", "memory_budget_mb")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pick", help="pick particles by Difference of Gaussians (DoG) and write a STAR file",
                              description=_DESCRIPTION)
    p.add_argument("tomogram", metavar="TOMO.mrc", help="tomogram (MRC), read memory-mapped")
    add_options(p, PickingParams, _OPTIONS, required=("diameter",))
    group = p.add_mutually_exclusive_group()
    add_options(group, PickingParams, ("threshold", "max_picks"))
    p.add_argument("--threshold-method", choices=("robust", "aitom"), default=None,
                   help="automatic threshold rule (default robust)")
    p.add_argument("--mask", default=None, metavar="MASK.mrc", help="pick only where this volume (same shape) is nonzero")
    p.add_argument("-o", "--output", required=True, metavar="PICKS.star",
                   help="output picks file (.star or .csv), written atomically")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pick)
    return p


def params_from_args(args: argparse.Namespace) -> PickingParams:
    """:class:`~napari_cryo_openset.params.PickingParams` from parsed arguments (validated)."""
    if args.threshold is not None and args.threshold_method is not None:
        raise ParameterError("--threshold sets the score threshold itself; do not combine it with --threshold-method")
    if args.threshold is not None:
        method = "value"
    elif args.threshold_method is not None:
        method = args.threshold_method
    elif args.max_picks is not None:
        method = "topn"
    else:
        method = "robust"
    return build(PickingParams, args, _OPTIONS + ("threshold", "max_picks"), threshold_method=method)


def cmd_pick(args: argparse.Namespace) -> int:
    """Run ``pick``; return 0. Bad input raises CryoOpensetError."""
    from ..io import read_tomogram
    from ..io.picks_io import PICKS_EXTENSIONS
    from ..picking import pick_particles
    from ..progress import run_with_tqdm

    out = output_file(args.output, PICKS_EXTENSIONS, "the picks file", "picks.star")
    params = params_from_args(args)
    tomo = read_tomogram(input_file(args.tomogram, "TOMO.mrc", "a tomogram (.mrc)"))
    mask = None
    if args.mask is not None:
        mask_tomo = read_tomogram(input_file(args.mask, "--mask", "a mask volume (.mrc)"),
                                  allow_missing_voxel_size=True, check_finite=False)
        if mask_tomo.shape != tomo.shape:
            raise ParameterError(f"--mask '{args.mask}' has shape {mask_tomo.shape} but the tomogram "
                                 f"'{args.tomogram}' has shape {tomo.shape} (Z, Y, X); they must match")
        mask = mask_tomo.data
    result = run_with_tqdm(pick_particles(tomo.data, tomo.voxel_size, params, mask=mask), desc="pick",
                           disable=args.quiet or None)
    write_table(out, result.picks, tomo.voxel_size)
    if result.polarity_guessed:
        ev = result.polarity_evidence
        say(f"pick: polarity guessed {result.polarity} (DoG skewness {ev.get('skewness', 0):+.2f}"
            + ("" if ev.get("confident") else "; weak evidence — check it and set --polarity") + ")")
    if len(result.picks) == 0:
        say(f"pick: {result.message}")
    say(f"pick: {result.summary()} → {out}")
    return 0
