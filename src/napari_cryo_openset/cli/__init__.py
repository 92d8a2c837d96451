"""The ``napari-cryo-openset`` command line: one parser, one error policy.

Subcommands (one module each) share the core with the napari widgets; their options are
generated from the parameter dataclasses (:mod:`napari_cryo_openset.params`) by
:mod:`._args`. Progress goes to stderr; results to files. Bad input ends with one line
``napari-cryo-openset: error: <what, which file/parameter>`` and exit status 2 — never a
traceback (``--debug`` shows one) and never a half-written file.

Commands: ``pick``, ``simulate``, ``train``, ``predict``, ``adapt``, ``run`` (the whole pipeline), ``batch`` (it on many tomograms, on Dask),
``export`` (RELION 5 / Warp STAR, copick), ``info`` (validate and describe files) and ``demo`` (the only one that imports napari).
Building the parser imports neither torch nor napari, so ``--help`` and bad input answer at once.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import CryoOpensetError
from . import adapt, batch, demo, export, info, pick, predict, run, simulate, train
from ._args import PROG, say
from ._signals import EXIT_SIGINT, EXIT_SIGTERM, Terminated, terminate_as_exception

#: File-system errors caused by the user's files, folders or disk (exit 2, one line), not bugs.
USER_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                         errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.EFBIG, errno.ENAMETOOLONG,
                         errno.ENOTEMPTY, errno.EXDEV, errno.EBUSY, errno.ELOOP})

#: In the order ``--help`` lists them.
COMMANDS = (pick, simulate, train, predict, adapt, run, batch, export, info, demo)


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
    """Parse ``argv`` and run the command; return the exit status.

    0 success, 1 internal error, 2 bad input or an output that cannot be written, 130 SIGINT
    (Ctrl-C), 143 SIGTERM. Interrupted commands leave no temporary files behind.
    """
    parser = build_parser()
    with terminate_as_exception():
        try:
            args = parser.parse_args(argv)
            if not getattr(args, "command", None):
                parser.print_help(sys.stderr)
                return 2
            return _run(args)
        except Terminated:
            say(f"{PROG}: terminated (SIGTERM); no partial output was left")
            return EXIT_SIGTERM
        except KeyboardInterrupt:
            say(f"{PROG}: interrupted; no partial output was left")
            return EXIT_SIGINT


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command under the one error policy (interrupts pass through)."""
    try:
        return int(args.func(args) or 0)
    except CryoOpensetError as exc:
        if args.debug:
            raise
        say(f"{PROG}: error: {exc}")
        return 2
    except OSError as exc:
        if args.debug or exc.errno not in USER_ERRNOS:
            return _internal_error(args, exc)
        say(f"{PROG}: error: {_os_error_line(exc)}")
        return 2
    except Exception as exc:  # an unexpected failure: say what and how to get details
        return _internal_error(args, exc)


def _internal_error(args: argparse.Namespace, exc: Exception) -> int:
    if args.debug:
        raise exc
    say(f"{PROG}: internal error: {type(exc).__name__}: {exc} (run with --debug for details)")
    return 1


def _os_error_line(exc: OSError) -> str:
    """A file-system error the user can fix, naming the file (never a hidden temporary name)."""
    from ..io._atomic import os_reason, user_path

    if exc.filename is None:
        return os_reason(exc)
    return f"'{user_path(exc.filename)}': {os_reason(exc)}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
