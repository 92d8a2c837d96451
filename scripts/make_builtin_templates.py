#!/usr/bin/env python
"""Build the built-in template library shipped in src/napari_cryo_openset/data/templates/.

Run once from the repository root (needs ../shared/data beside the checkout, or --source):

    .venv/bin/python scripts/make_builtin_templates.py

It loads six visually distinct maps of the SHREC'21 / polnet set at 10 Å/voxel (sizes ~12 to
~30 nm; the two-body 4v94 map is deliberately left out), cleans/centres/crops them with the same
code the package uses at run time (``Template.from_density``), and stores them float16 in one
``.npz`` file (read with ``allow_pickle=False``): ``names`` (unicode array), ``voxel_size``
(Å) and ``map_<name>`` (Z, Y, X). The file is written atomically and a NOTICE records the
provenance and licence (polnet, Apache-2.0; PDB entries, CC0).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_cryo_openset.simulate.templates import load_template  # noqa: E402

CLASSES = {
    "1bxn": "RuBisCO (D4, ~12 nm)",
    "1qvr": "ClpB hexamer (~19 nm)",
    "2cg9": "Hsp90 dimer (elongated, ~13 nm)",
    "3j9i": "20S proteasome (barrel, D7, ~17 nm)",
    "4cr2": "26S proteasome (elongated, ~29 nm)",
    "4v4r": "70S ribosome (~29 nm)",
}
VOXEL_SIZE = 10.0
OUT = REPO / "src" / "napari_cryo_openset" / "data" / "templates"

NOTICE = """Built-in template library of napari-cryo-openset
==================================================

builtin_templates.npz holds six density maps at 10 Å/voxel, float16, cropped to their support,
protein positive, background 0, mean density inside the support = 1:

{classes}

Source: the polnet project (https://github.com/anmartinezs/polnet, data/templates/mrcs_10A),
Apache License 2.0; the maps are computed from PDB entries (wwPDB, CC0). Regenerate with
scripts/make_builtin_templates.py.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "templates_10A")
    ap.add_argument("--output", type=Path, default=OUT)
    args = ap.parse_args(argv)
    arrays: dict[str, np.ndarray] = {}
    names = sorted(CLASSES)
    for name in names:
        t = load_template(args.source / f"{name}.mrc", VOXEL_SIZE)
        arrays[f"map_{name}"] = t.density.astype(np.float16)
        print(f"{name}: {t.shape} voxels, radius {t.radius / 10:.1f} nm", file=sys.stderr)
    arrays["names"] = np.array(names)
    arrays["voxel_size"] = np.array(VOXEL_SIZE)
    args.output.mkdir(parents=True, exist_ok=True)
    target = args.output / "builtin_templates.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    tmp = target.with_name(f".{target.name}.part")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, target)
    (args.output / "NOTICE.txt").write_text(
        NOTICE.format(classes="\n".join(f"- {k}: {v}" for k, v in CLASSES.items())), encoding="utf-8"
    )
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
