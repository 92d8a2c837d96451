"""The ``napari-cryo-openset`` command line: one parser, one error policy.

Subcommands (one module each) share the core with the napari widgets; their options are
generated from the parameter dataclasses (:mod:`napari_cryo_openset.params`) by
:mod:`._args`. Progress goes to stderr; results to files. Bad input ends with one line
``napari-cryo-openset: error: <what, which file/parameter>`` and exit status 2 — never a
traceback (``--debug`` shows one) and never a half-written file.

Commands: ``pick``, ``simulate``, ``train``, ``predict``, ``adapt``, ``run`` (the whole pipeline),
``info`` (validate and describe files) and ``demo`` (the only one that imports napari).
Building the parser imports neither torch nor napari, so ``--help`` and bad input answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import CryoOpensetError
from . import adapt, demo, info, pick, predict, run, simulate, train
from ._args import PROG, say

#: In the order ``--help`` lists them.
COMMANDS = (pick, simulate, train, predict, adapt, run, info, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Find and recognise macromolecules in cryo-electron tomograms, including unknown "
            "ones. Arrays are (Z, Y, X); voxel sizes in Å; STAR coordinates in voxels."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; return the exit status (0, 1 internal error, 2 bad input, 130)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except CryoOpensetError as exc:
        if args.debug:
            raise
        say(f"{PROG}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        say(f"{PROG}: interrupted")
        return 130
    except Exception as exc:  # an unexpected failure: say what and how to get details
        if args.debug:
            raise
        say(f"{PROG}: internal error: {type(exc).__name__}: {exc} (run with --debug for details)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
