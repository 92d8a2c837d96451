"""``napari-cryo-openset export PICKS.star … --tomo TOMO.mrc … --format relion5|warp|copick -o OUT``.

Picks or predictions (our STAR/CSV, voxel coordinates) of one or several tomograms written in a
format of the ecosystem (:mod:`napari_cryo_openset.io.relion5`, :mod:`~napari_cryo_openset.io.warp`,
:mod:`~napari_cryo_openset.io.copick_io`):

- ``relion5`` — one RELION 5 particles STAR (``rlnTomoName``, centred Å, an optics group per
  tomogram) at ``-o PARTICLES.star``, and its ``tomograms.star`` beside it (``--tomograms-star``
  to name it, or ``-`` for none);
- ``warp`` — one Warp/M particles STAR (absolute voxel coordinates, ``rlnMicrographName``);
- ``copick`` — into the copick project whose config is ``-o CONFIG.json`` (created with an overlay
  folder beside it if missing): one run per tomogram, one copick object per class.

Tomogram names are the MRC stems unless ``--name`` gives one per tomogram.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CryoOpensetError, ParameterError
from ._args import input_file, say

FORMATS = ("relion5", "warp", "copick")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="write picks/predictions as RELION 5 or Warp/M STAR, or into a copick project",
        description=(
            "Write the picks or predictions (STAR/CSV in voxels) of one or several tomograms in a format of the "
            "ecosystem: relion5 (one particles STAR with rlnTomoName and rlnCenteredCoordinateX/Y/ZAngst, plus a "
            "tomograms.star beside it), warp (Warp/M particles STAR: absolute rlnCoordinateX/Y/Z in voxels, "
            "rlnMicrographName, no centred columns) or copick (points in the project of -o CONFIG.json, one "
            "object per class, 'unknown' its own). Give one --tomo per picks file, in the same order."
        ),
    )
    p.add_argument("picks", nargs="+", metavar="PICKS.star", help="picks/predictions files (.star or .csv), voxels")
    p.add_argument("--tomo", nargs="+", required=True, metavar="TOMO.mrc",
                   help="the tomogram of each picks file, same order (its shape and voxel size)")
    p.add_argument("--format", required=True, choices=FORMATS, help="output format")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="PARTICLES.star (relion5, warp) or a copick CONFIG.json (copick)")
    p.add_argument("--name", nargs="+", default=None, metavar="NAME",
                   help="tomogram names (rlnTomoName / copick run), one per tomogram (default: the MRC stems)")
    p.add_argument("--tilt-series-pixel-size", type=float, default=None, metavar="Å",
                   help="relion5: the tilt series' unbinned pixel size (default: the tomogram's voxel size, bin 1)")
    p.add_argument("--tomograms-star", default=None, metavar="TOMOGRAMS.star",
                   help="relion5: where to write the tomograms.star (default: tomograms.star beside -o; '-' for none)")
    p.set_defaults(func=cmd_export)
    return p


def _names(args) -> list[str]:
    if args.name is None:
        names = [Path(t).stem for t in args.tomo]
    else:
        if len(args.name) != len(args.tomo):
            raise ParameterError(f"--name: {len(args.name)} names for {len(args.tomo)} tomograms; give one per --tomo")
        names = list(args.name)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ParameterError(f"--name: tomogram names must be unique ({', '.join(dupes)} repeats); give --name")
    return names


def cmd_export(args: argparse.Namespace) -> int:
    from ..io import read_picks, read_tomogram
    from ..io.relion5 import TomogramInfo
    from ._args import check_picks_inside
    from ._outputs import output_file

    if len(args.tomo) != len(args.picks):
        raise ParameterError(f"--tomo: {len(args.tomo)} tomograms for {len(args.picks)} picks files; give one per "
                             "picks file, in the same order")
    if args.tilt_series_pixel_size is not None and not args.tilt_series_pixel_size > 0:
        raise ParameterError(f"--tilt-series-pixel-size must be > 0 Å, got {args.tilt_series_pixel_size:g}")
    names = _names(args)
    if args.format == "copick":
        out = Path(args.output)
        if out.suffix.lower() != ".json":
            raise CryoOpensetError(f"-o '{out}': a copick project is named by its config JSON (e.g. config.json)")
        if not out.parent.is_dir():
            raise CryoOpensetError(f"-o '{out}': the folder '{out.parent}' does not exist")
    else:
        out = output_file(args.output, (".star",), "the particles file", "particles.star", command="export")
    items = []
    for name, picks_arg, tomo_arg in zip(names, args.picks, args.tomo):
        tomo_path = input_file(tomo_arg, "--tomo", "a tomogram (.mrc)")
        picks_path = input_file(picks_arg, "PICKS.star", "a picks file (.star or .csv)")
        tomo = read_tomogram(tomo_path)
        vs = tomo.voxel_size
        if max(vs) - min(vs) > 1e-3 * max(vs):
            raise ParameterError(f"--tomo '{tomo_path}': voxels are not cubic ({'/'.join(f'{v:g}' for v in vs)} Å)")
        picks = read_picks(picks_path, tomogram_shape=tomo.shape, voxel_size=vs)
        check_picks_inside(picks, tomo.shape, picks_path, tomo_path)
        info = TomogramInfo(name, path=tomo_path.absolute(), shape=tomo.shape, voxel_size=float(vs[0]),
                            tilt_series_pixel_size=args.tilt_series_pixel_size)
        items.append((info, picks))
    n = sum(len(p) for _, p in items)
    if args.format == "relion5":
        from ..io.relion5 import write_relion5_particles, write_tomograms_star

        write_relion5_particles(out, items)
        say(f"export: {n} picks of {len(items)} tomogram(s) → {out} (RELION 5: centred Å, rlnTomoName)")
        if args.tomograms_star != "-":
            tomos = Path(args.tomograms_star) if args.tomograms_star else out.with_name("tomograms.star")
            if tomos.resolve() == out.resolve():
                raise ParameterError(f"--tomograms-star '{tomos}' is -o; write it to another file")
            write_tomograms_star(tomos, [t for t, _ in items])
            say(f"export: tomograms → {tomos}")
    elif args.format == "warp":
        from ..io.warp import write_warp_star

        write_warp_star(out, [(t.name, p) for t, p in items])
        say(f"export: {n} picks of {len(items)} tomogram(s) → {out} (Warp/M: voxels of "
            f"{'/'.join(sorted({f'{t.voxel_size:g}' for t, _ in items}))} Å, rlnMicrographName)")
    else:
        from ..io import copick_io

        root = copick_io.open_project(out) if out.exists() else copick_io.new_project(out, out.parent / "overlay")
        for info, picks in items:
            counts = copick_io.write_copick_picks(root, info.name, picks, info.voxel_size, config_path=out)
            shown = ", ".join(f"{k} {v}" for k, v in counts.items())
            say(f"export: copick run {info.name}: {shown}")
        say(f"export: {n} picks of {len(items)} tomogram(s) → copick project {out} "
            f"(user {copick_io.USER_ID}, session {copick_io.SESSION_ID})")
    return 0
