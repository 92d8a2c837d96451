"""The ``pick`` subcommand of ``napari-cryo-openset`` (ARCHITECTURE.md § 4.1)::

    napari-cryo-openset pick TOMO.mrc --diameter Å [--polarity dark|bright|auto]
                             [--threshold T | --max-picks N] [--min-distance Å]
                             [--mask MASK.mrc] -o PICKS.star

Wire it into the main parser with ``register(subparsers)``; it sets ``func`` to
:func:`cmd_pick`, which returns the exit status and raises
:class:`~napari_cryo_openset.errors.CryoOpensetError` subclasses for bad input (the main CLI
prints those as one line). :func:`main` runs the subcommand alone with the same error policy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import CryoOpensetError, ParameterError, PicksError

PROG = "napari-cryo-openset"

_DESCRIPTION = (
    "Pick particles in a tomogram by Difference of Gaussians (σ1 = particle radius, σ2 = 1.1 σ1), "
    "with a minimum distance between picks, and write them as STAR (or CSV) with coordinates "
    "in voxels and the DoG score in rlnAutopickFigureOfMerit. Threshold: robust (median + k·MAD "
    "of the DoG response) by default; --threshold T for a fixed score, --max-picks N for the N "
    "best, --threshold-method aitom for AITom's m + 3(M − m)/20."
)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``pick`` subcommand to an ``argparse`` subparsers object; return its parser."""
    p = subparsers.add_parser(
        "pick",
        help="pick particles by Difference of Gaussians (DoG) and write a STAR file",
        description=_DESCRIPTION,
    )
    p.add_argument("tomogram", metavar="TOMO.mrc", help="tomogram (MRC), read memory-mapped")
    p.add_argument("--diameter", type=float, required=True, metavar="Å",
                   help="particle diameter in Å")
    p.add_argument("--polarity", choices=("dark", "bright", "auto"), default="dark",
                   help="protein contrast in this tomogram (default dark; auto guesses and reports)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, metavar="T",
                       help="keep peaks with a DoG score ≥ T (score: response of the standardised "
                            "volume, positive = particle-like)")
    group.add_argument("--max-picks", type=int, metavar="N",
                       help="keep the N best peaks (with --threshold-method: a cap)")
    p.add_argument("--threshold-method", choices=("robust", "aitom"), default=None,
                   help="automatic threshold rule (default robust)")
    p.add_argument("--k-mad", type=float, default=None, metavar="K",
                   help="robust threshold = median + K · 1.4826 · MAD of the response (default 4)")
    p.add_argument("--min-distance", type=float, default=None, metavar="Å",
                   help="minimum distance between picks in Å (default 0.8 × diameter)")
    p.add_argument("--mask", default=None, metavar="MASK.mrc",
                   help="pick only where this volume (same shape) is nonzero")
    p.add_argument("--memory-mb", type=float, default=None, metavar="MB",
                   help="working-memory target per tile (default 1024); larger tomograms are tiled")
    p.add_argument("-o", "--output", required=True, metavar="PICKS.star",
                   help="output picks file (.star or .csv), written atomically")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pick)
    return p


def params_from_args(args: argparse.Namespace):
    """Build :class:`~napari_cryo_openset.picking.PickingParams` from parsed arguments."""
    from .params import PickingParams

    if args.threshold is not None and args.threshold_method is not None:
        raise ParameterError(
            "--threshold sets the score threshold itself; do not combine it with --threshold-method"
        )
    if args.threshold is not None:
        method = "value"
    elif args.threshold_method is not None:
        method = args.threshold_method
    elif args.max_picks is not None:
        method = "topn"
    else:
        method = "robust"
    kwargs = {}
    if args.k_mad is not None:
        kwargs["k_mad"] = args.k_mad
    if args.memory_mb is not None:
        kwargs["memory_budget_mb"] = args.memory_mb
    return PickingParams(
        diameter=args.diameter,
        polarity=args.polarity,
        threshold_method=method,
        threshold=args.threshold,
        max_picks=args.max_picks,
        min_distance=args.min_distance,
        **kwargs,
    ).validate()


def cmd_pick(args: argparse.Namespace) -> int:
    """Run the ``pick`` subcommand; return 0. Bad input raises CryoOpensetError."""
    from ..io import read_tomogram, write_picks
    from ..io.picks_io import PICKS_EXTENSIONS
    from ..progress import run_with_tqdm
    from .core import pick_particles

    out = Path(args.output)
    if out.suffix.lower() not in PICKS_EXTENSIONS:
        raise PicksError(f"'{out}': unknown picks file extension '{out.suffix}'; expected .star or .csv")
    if not out.parent.is_dir():
        raise PicksError(f"'{out}': the folder '{out.parent}' does not exist")
    params = params_from_args(args)
    tomo = read_tomogram(args.tomogram)
    mask = None
    if args.mask is not None:
        mask_tomo = read_tomogram(args.mask, allow_missing_voxel_size=True, check_finite=False)
        if mask_tomo.shape != tomo.shape:
            raise ParameterError(
                f"--mask '{args.mask}' has shape {mask_tomo.shape} but the tomogram "
                f"'{args.tomogram}' has shape {tomo.shape} (Z, Y, X); they must match"
            )
        mask = mask_tomo.data
    result = run_with_tqdm(
        pick_particles(tomo.data, tomo.voxel_size, params, mask=mask), desc="pick", disable=args.quiet or None
    )
    vs = tomo.voxel_size
    isotropic = max(vs) - min(vs) <= 1e-6 * max(vs)
    write_picks(out, result.picks, voxel_size=vs[0] if isotropic else None)
    if result.polarity_guessed:
        ev = result.polarity_evidence
        _print(
            f"pick: polarity guessed {result.polarity} (DoG skewness {ev.get('skewness', 0):+.2f}"
            + ("" if ev.get("confident") else "; weak evidence — check it and set --polarity")
            + ")"
        )
    if len(result.picks) == 0:
        _print(f"pick: {result.message}")
    _print(f"pick: {result.summary()} → {out}")
    return 0


def _print(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pick`` alone (``python -m napari_cryo_openset.picking._cli TOMO.mrc ...``).

    Same policy as the main CLI: bad input → one line on stderr, exit status 2.
    """
    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["pick", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except CryoOpensetError as exc:
        _print(f"{PROG}: error: {exc}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
