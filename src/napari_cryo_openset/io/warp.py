"""Warp/M-compatible particle STAR files (core, no Qt).

Warp and M read particles as RELION ≤ 3 style STAR: *absolute* ``rlnCoordinateX/Y/Z`` in pixels
of the tomogram, ``rlnMicrographName`` naming the tilt series (Warp matches it against its
``.tomostar`` items), orientations ``rlnAngleRot/Tilt/Psi`` (ZYZ, degrees; 0 where not known, e.g.
a pick the ``align`` stage did not align; ``rlnOriginX/Y/ZAngst`` with them when known) and optionally
``rlnAutopickFigureOfMerit``. They do not understand RELION 5's ``rlnCenteredCoordinate*Angst``
columns, so this variant never writes them (nor ``rlnTomoName``). The coordinate convention is
the package's own (0-based voxel indices, X = last array axis, voxel centres at integers), in
voxels of ``voxel_size`` Å — tell Warp that pixel size when importing (WarpTools:
``--coords_angpix``).

``rlnMicrographName`` defaults to ``<name>.tomostar``, where ``name`` is the tomogram's name with
a Warp reconstruction suffix ``_<pixel>Apx`` removed (``TS_01_10.00Apx`` → ``TS_01.tomostar``).
Our class columns (``cosClassName``, ``cosConfidence``, ``cosUnknownScore``, …) are carried along;
Warp ignores columns it does not use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PicksError
from ..picks import FROM_STAR, STAR_COLUMNS, validate_picks
from .relion5 import ANGLE_COLUMNS, CENTRED_COLUMNS, VOXEL_COLUMNS, fill_poses, read_star_blocks, write_star_blocks

_APX = re.compile(r"_\d+(?:\.\d+)?Apx$")


def micrograph_name(tomogram_name: str) -> str:
    """The ``rlnMicrographName`` Warp expects for a tomogram: ``TS_01_10.00Apx`` → ``TS_01.tomostar``."""
    stem = _APX.sub("", Path(str(tomogram_name)).stem if str(tomogram_name).endswith((".mrc", ".rec"))
                    else str(tomogram_name))
    return stem if stem.endswith(".tomostar") else f"{stem}.tomostar"


def warp_table(picks: pd.DataFrame, name: str) -> pd.DataFrame:
    """The Warp rows of one tomogram's picks table: absolute voxel coordinates, no centred columns."""
    df = validate_picks(picks, source=f"picks of '{name}'")
    out = pd.DataFrame({VOXEL_COLUMNS[0]: df["x"].to_numpy(np.float64), VOXEL_COLUMNS[1]: df["y"].to_numpy(np.float64),
                        VOXEL_COLUMNS[2]: df["z"].to_numpy(np.float64)})
    for ours, theirs in ANGLE_COLUMNS.items():  # Warp wants angles: 0 when not known
        out[theirs] = df[ours].to_numpy(np.float64) if ours in df.columns else 0.0
    out["rlnMicrographName"] = micrograph_name(name)
    skip = {"x", "y", "z", *ANGLE_COLUMNS, "rlnMicrographName", "rlnTomoName", *CENTRED_COLUMNS, "cosVoxelSizeAngst"}
    for col in df.columns:
        if col not in skip and STAR_COLUMNS.get(col, col) not in out.columns:
            out[STAR_COLUMNS.get(col, col)] = df[col].to_numpy()
    return out


def write_warp_star(path: str | os.PathLike, items: Sequence[tuple[str, pd.DataFrame]]) -> Path:
    """Write ``(tomogram name, picks)`` pairs as one Warp/M particles STAR (one block ``data_particles``)."""
    if not items:
        raise PicksError(f"'{path}': no tomograms to write")
    table = fill_poses(pd.concat([warp_table(p, n) for n, p in items], ignore_index=True))
    assert not any(c in table.columns for c in CENTRED_COLUMNS)  # Warp rejects them
    return write_star_blocks(path, {"particles": table})


def read_warp_star(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Read a Warp/M (or RELION ≤ 4) particles STAR: ``{rlnMicrographName without .tomostar: picks}``."""
    path = Path(path)
    blocks = read_star_blocks(path)
    table = next((t for t in blocks.values() if all(c in t.columns for c in VOXEL_COLUMNS)), None)
    if table is None:
        raise PicksError(f"'{path}': no block with rlnCoordinateX/Y/Z columns (a Warp particles STAR has them)")
    names = (table["rlnMicrographName"].astype(str).str.replace(r"\.tomostar$", "", regex=True)
             if "rlnMicrographName" in table.columns else pd.Series([""] * len(table)))
    out = {}
    for name in dict.fromkeys(names.tolist()):
        rows = table.loc[(names == name).to_numpy()].reset_index(drop=True)
        rows = rows.rename(columns={**FROM_STAR, **{v: k for k, v in ANGLE_COLUMNS.items()}})
        if "score" not in rows.columns:
            rows["score"] = np.nan
        df = validate_picks(rows, source=f"'{path}' (tomogram '{name}')")
        df.attrs.update(source=str(path), format="warp", tomogram=name)
        out[name] = df
    return out
