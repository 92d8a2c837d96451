"""``napari-cryo-openset info FILE …``: validate and describe tomograms (MRC) and picks (STAR/CSV)."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="validate and describe tomograms (MRC) and picks (STAR/CSV)")
    p.add_argument("paths", nargs="+", metavar="FILE")
    p.add_argument("--allow-missing-voxel-size", action="store_true",
                   help="accept a header voxel size of 0 (1 Å is assumed, with a warning)")
    p.add_argument("--no-estimate", action="store_true",
                   help="do not estimate the imaging condition from the volume (tilt range from the missing "
                        "wedge, slab, polarity, noise; about a second for 128×256×256)")
    p.set_defaults(func=cmd_info)
    return p


def cmd_info(args: argparse.Namespace) -> int:
    """Validate and describe each file (tomogram header facts, or picks counts)."""
    from ..io.picks_io import PICKS_EXTENSIONS, read_picks
    from ..io.tomogram import read_tomogram

    reports = []
    for path in args.paths:
        p = Path(path)
        if p.suffix.lower() in PICKS_EXTENSIONS:
            df = read_picks(p)
            report = {
                "file": str(p),
                "kind": "picks",
                "format": df.attrs.get("format"),
                "picks": len(df),
                "curation": df["curation"].value_counts().to_dict(),
                "columns": list(df.columns),
                "voxel_size_A": df.attrs.get("voxel_size"),
            }
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                tomo = read_tomogram(p, allow_missing_voxel_size=args.allow_missing_voxel_size)
            report = {
                "file": str(p),
                "kind": "tomogram",
                "shape_zyx": list(tomo.shape),
                "voxel_size_A_zyx": list(tomo.voxel_size),
                "size_nm_zyx": [round(s / 10.0, 1) for s in tomo.physical_size],
                "origin_A_zyx": list(tomo.origin),
                **{k: v for k, v in tomo.header.items() if k != "labels"},
                "warnings": [str(w.message) for w in caught],
            }
            if not args.no_estimate:
                report["estimate"] = _estimate(tomo)
        reports.append(report)
    print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2, default=str, ensure_ascii=False))
    return 0


def _estimate(tomo) -> dict:
    """The imaging condition read from the volume (:mod:`napari_cryo_openset.estimate`), with its
    summary lines; a volume it cannot read says why instead of failing ``info``."""
    from ..errors import ParameterError
    from ..estimate import estimate_volume

    try:
        found = estimate_volume(tomo)
    except ParameterError as exc:
        return {"error": str(exc)}
    out = found.to_dict()
    out.pop("details", None)
    out["summary"] = found.summary().splitlines()
    return out
