"""Picks files: STAR (RELION) and CSV, read and written with exact round trips.

Coordinates
    STAR ``rlnCoordinateX/Y/Z`` are voxels of the tomogram they refer to, X = last array axis,
    0-based with voxel centres at integers, exactly as the in-memory picks table (no offset is
    added or removed). RELION 5 ``rlnCenteredCoordinateX/Y/ZAngst`` (Å from the tomogram centre)
    are read when the tomogram's shape and voxel size are given:
    ``voxel = centred_Å / voxel_size + size / 2``.

Columns
    The picks-table columns map to STAR names through :data:`~napari_cryo_openset.picks.STAR_COLUMNS`
    (``score`` ↔ ``rlnAutopickFigureOfMerit``, ``class_name`` ↔ ``cosClassName``, ...). Every
    other column is kept under its own name, in both directions. CSV files use the same column
    names as STAR; reading CSV also accepts ``x,y,z`` headers and napari's ``axis-0,axis-1,axis-2``
    (Z, Y, X).

Exactness
    Floats are written with the shortest text that reads back to the same float64, so
    write → read gives identical values and write → read → write identical bytes.

The voxel size, when known, is stored in an extra column ``cosVoxelSizeAngst`` (readers that do
not know it ignore it) and returned in ``df.attrs['voxel_size']``.
"""

from __future__ import annotations

import io as _io
import math
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import PicksError
from ..picks import FROM_STAR, STAR_COLUMNS, validate_picks
from ._atomic import atomic_path

PICKS_EXTENSIONS = (".star", ".csv")
VOXEL_SIZE_COLUMN = "cosVoxelSizeAngst"
_CENTRED = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
_VOXEL = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
_BLOCK = "particles"


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_picks(
    path: str | os.PathLike,
    *,
    tomogram_shape: Sequence[int] | None = None,
    voxel_size: float | Sequence[float] | None = None,
) -> pd.DataFrame:
    """Read a STAR or CSV picks file into a picks table (see :mod:`napari_cryo_openset.picks`).

    Parameters
    ----------
    path
        ``.star`` (RELION ≤ 4 voxel coordinates, or RELION 5 centred Å coordinates) or ``.csv``.
    tomogram_shape
        (Z, Y, X) voxels of the tomogram; needed only for RELION 5 centred coordinates.
    voxel_size
        Å (one number or Z, Y, X); needed only for RELION 5 centred coordinates.

    Returns
    -------
    pandas.DataFrame
        The picks table. ``attrs`` holds ``source`` (path), ``format`` (``relion4``,
        ``relion5``, ``csv``), ``voxel_size`` (Å, Z Y X, if the file records it, else None) and
        ``block`` (the STAR data block used).

    Raises
    ------
    PicksError
        Missing/unreadable file, no coordinate columns (the message names the missing column and
        lists those found), a row with the wrong number of fields (the message names the line),
        non-numeric or non-finite coordinates.
    """
    path = Path(path)
    if not path.exists():
        raise PicksError(f"'{path}' does not exist")
    if not path.is_file():
        raise PicksError(f"'{path}' is not a file (expected a .star or .csv picks file)")
    suffix = path.suffix.lower()
    if suffix == ".star":
        table, fmt, block = _read_star_table(path)
    elif suffix == ".csv":
        table, fmt, block = _read_csv_table(path), "csv", None
    else:
        raise PicksError(f"'{path}': unknown picks file extension '{path.suffix}'; expected .star or .csv")

    file_voxel_size = None
    if VOXEL_SIZE_COLUMN in table.columns:
        values = pd.to_numeric(table[VOXEL_SIZE_COLUMN], errors="coerce").dropna().unique()
        if len(values) == 1 and values[0] > 0:
            file_voxel_size = (float(values[0]),) * 3
        table = table.drop(columns=[VOXEL_SIZE_COLUMN])

    if fmt == "relion5":
        table = _centred_to_voxels(path, table, tomogram_shape, voxel_size or file_voxel_size)
    df = table.rename(columns=FROM_STAR)
    df = validate_picks(df, source=f"'{path}'")
    df.attrs.update(source=str(path), format=fmt, voxel_size=file_voxel_size, block=block)
    return df


def _read_star_table(path: Path) -> tuple[pd.DataFrame, str, str | None]:
    import starfile

    _check_star_rows(path)
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=list(_STRING_STAR_COLUMNS))
    except Exception as exc:  # starfile raises many kinds of errors on bad input
        raise PicksError(f"'{path}' is not a readable STAR file ({type(exc).__name__}: {exc})") from None
    tables = {name: b for name, b in blocks.items() if isinstance(b, pd.DataFrame)}
    if not tables:
        raise PicksError(f"'{path}' has no data loop (expected a 'loop_' with rlnCoordinateX/Y/Z columns)")
    for name, table in tables.items():
        if any(c in table.columns for c in _VOXEL):
            _require(path, name, table, _VOXEL)
            return table, "relion4", name
        if any(c in table.columns for c in _CENTRED):
            _require(path, name, table, _CENTRED)
            return table, "relion5", name
    found = "; ".join(f"data_{n}: {', '.join(map(str, t.columns)) or '(none)'}" for n, t in tables.items())
    raise PicksError(
        f"'{path}': no coordinate columns; expected rlnCoordinateX/Y/Z (voxels) or "
        f"rlnCenteredCoordinateX/Y/ZAngst (RELION 5). Found {found}"
    )


_STRING_STAR_COLUMNS = ("cosClassName", "cosCuration", "rlnClassName", "rlnTomoName", "rlnMicrographName")


def _require(path: Path, block: str, table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PicksError(
            f"'{path}': data block 'data_{block}' is missing column {', '.join(missing)} "
            f"(found: {', '.join(map(str, table.columns))})"
        )


def _check_star_rows(path: Path) -> None:
    """Scan every loop and name the first line whose field count differs from the header's."""
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise PicksError(f"'{path}' is not a text STAR file (it contains binary data)") from None
    n_columns = 0
    in_header = False
    in_rows = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if in_rows and not line:
                in_rows = False
            continue
        if line.startswith("data_"):
            in_header = in_rows = False
            continue
        if line.startswith("loop_"):
            in_header, in_rows, n_columns = True, False, 0
            continue
        if line.startswith("_"):
            if in_rows:  # a key-value pair after a loop ends the loop
                in_rows = False
            if in_header:
                n_columns += 1
            continue
        if in_header:
            in_header, in_rows = False, True
        if in_rows:
            try:
                fields = shlex.split(line, comments=False, posix=True)
            except ValueError:
                fields = line.split()
            if len(fields) != n_columns:
                raise PicksError(
                    f"'{path}', line {lineno}: expected {n_columns} fields, found {len(fields)}: "
                    f"{line[:80]!r}"
                )
        elif not in_header:
            raise PicksError(f"'{path}', line {lineno}: not valid STAR syntax: {line[:80]!r}")


def _read_csv_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={c: str for c in _STRING_STAR_COLUMNS}, keep_default_na=False, na_values=["", "nan", "NaN"])
    except pd.errors.EmptyDataError:
        raise PicksError(f"'{path}' is empty (expected a header line with x, y, z columns)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PicksError(f"'{path}' is not a readable CSV file ({exc})") from None
    for name in _STRING_STAR_COLUMNS:
        if name in table.columns:
            table[name] = table[name].astype(str)
    lower = {str(c).lower(): c for c in table.columns}
    if all(c in table.columns for c in _VOXEL):
        return table
    if all(a in lower for a in ("x", "y", "z")):
        return table.rename(columns={lower["x"]: _VOXEL[0], lower["y"]: _VOXEL[1], lower["z"]: _VOXEL[2]})
    if all(a in table.columns for a in ("axis-0", "axis-1", "axis-2")):  # napari's own CSV
        table = table.drop(columns=[c for c in ("index",) if c in table.columns])
        return table.rename(columns={"axis-0": _VOXEL[2], "axis-1": _VOXEL[1], "axis-2": _VOXEL[0]})
    missing = [c for c in ("x", "y", "z") if c not in lower]
    raise PicksError(
        f"'{path}': no coordinate columns; expected rlnCoordinateX/Y/Z or x, y, z "
        f"(missing {', '.join(missing) or 'some'}; found {', '.join(map(str, table.columns))})"
    )


def _centred_to_voxels(path, table, tomogram_shape, voxel_size) -> pd.DataFrame:
    if tomogram_shape is None or voxel_size is None:
        raise PicksError(
            f"'{path}' has RELION 5 centred coordinates (Å from the tomogram centre); reading "
            "them needs the tomogram's shape and voxel size (open the tomogram first, or pass "
            "tomogram_shape and voxel_size)"
        )
    shape = np.asarray(tomogram_shape, dtype=np.float64)
    vs = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    out = table.copy()
    for axis, (centred, voxel) in enumerate(zip(_CENTRED, _VOXEL)):
        zyx = 2 - axis  # X is the last array axis
        values = pd.to_numeric(out[centred], errors="coerce").to_numpy(np.float64)
        out[voxel] = values / vs[zyx] + shape[zyx] / 2.0
    return out.drop(columns=list(_CENTRED))


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_picks(
    path: str | os.PathLike,
    picks: pd.DataFrame,
    *,
    voxel_size: float | Sequence[float] | None = None,
) -> Path:
    """Write a picks table to ``.star`` or ``.csv`` atomically (temporary name, then rename).

    Every column is written: schema columns under their STAR names, other columns as they are.
    ``voxel_size`` (Å; isotropic) is recorded in a ``cosVoxelSizeAngst`` column when given.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PICKS_EXTENSIONS:
        raise PicksError(f"'{path}': unknown picks file extension '{path.suffix}'; expected .star or .csv")
    if not path.parent.is_dir():
        raise PicksError(f"'{path}': the folder '{path.parent}' does not exist")
    df = validate_picks(picks, source=f"picks for '{path}'")
    table = _to_star_table(df)
    if voxel_size is not None:
        vs = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
        if not np.allclose(vs, vs[0]) or not vs[0] > 0:
            raise PicksError(f"'{path}': voxel_size must be one positive isotropic value in Å, got {voxel_size!r}")
        table[VOXEL_SIZE_COLUMN] = float(vs[0])
    text = _format_star(table) if suffix == ".star" else _format_csv(table)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _to_star_table(df: pd.DataFrame) -> pd.DataFrame:
    order = ["x", "y", "z", "score"]
    rest = [c for c in df.columns if c not in order]
    return df[order + rest].rename(columns=STAR_COLUMNS)


_SAFE_TOKEN = re.compile(r"^[^\s\"']+$")


def _format_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        return repr(v)  # shortest text that round-trips exactly
    text = "" if value is None else str(value)
    if text and _SAFE_TOKEN.match(text) and not text.startswith(("_", "data_", "loop_", "#")):
        return text
    return '"' + text.replace('"', "'") + '"'


def _format_columns(table: pd.DataFrame) -> list[list[str]]:
    return [[_format_value(v) for v in table[c].tolist()] for c in table.columns]


def _format_star(table: pd.DataFrame) -> str:
    out = _io.StringIO()
    out.write(f"# written by napari-cryo-openset {__version__}\n\n")
    out.write(f"data_{_BLOCK}\n\nloop_\n")
    for i, name in enumerate(table.columns, start=1):
        out.write(f"_{name} #{i}\n")
    columns = _format_columns(table)
    for row in zip(*columns):
        out.write("\t".join(row))
        out.write("\n")
    out.write("\n")
    return out.getvalue()


def _format_csv(table: pd.DataFrame) -> str:
    out = _io.StringIO()
    formatted = pd.DataFrame(
        {c: [_csv_value(v) for v in table[c].tolist()] for c in table.columns}, columns=table.columns
    )
    formatted.to_csv(out, index=False, lineterminator="\n")
    return out.getvalue()


def _csv_value(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(float(value)) else repr(float(value))
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    return str(value)
