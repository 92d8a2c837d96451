"""Picks files: STAR (RELION) and CSV, read and written with exact round trips.

Coordinates
    STAR ``rlnCoordinateX/Y/Z`` are voxels of the tomogram they refer to, X = last array axis,
    0-based with voxel centres at integers, exactly as the in-memory picks table (no offset is
    added or removed). RELION 5 ``rlnCenteredCoordinateX/Y/ZAngst`` (Å from the tomogram centre)
    are read when the tomogram's shape and voxel size are given:
    ``voxel = centred_Å / voxel_size + size / 2`` (RELION's own convention, see
    :mod:`napari_cryo_openset.io.relion5`, which also writes them).

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
    """The picks table of a STAR file: its one block of picks, or several compatible ones merged."""
    text = _read_star_text(path)
    blocks = _scan_star(path, text)
    tables = _star_loops(path, text, blocks)
    if not tables:
        raise PicksError(f"'{path}' has no data loop (expected a 'loop_' with rlnCoordinateX/Y/Z columns)")
    picks = []
    for name, table in tables:
        if any(c in table.columns for c in _VOXEL):
            _require(path, name, table, _VOXEL)
            picks.append((name, table, "relion4"))
        elif any(c in table.columns for c in _CENTRED):
            _require(path, name, table, _CENTRED)
            picks.append((name, table, "relion5"))
    if not picks:
        found = "; ".join(f"data_{n}: {', '.join(map(str, t.columns)) or '(none)'}" for n, t in tables)
        raise PicksError(
            f"'{path}': no coordinate columns; expected rlnCoordinateX/Y/Z (voxels) or "
            f"rlnCenteredCoordinateX/Y/ZAngst (RELION 5). Found {found}"
        )
    if len(picks) == 1:
        return picks[0][1], picks[0][2], picks[0][0]
    return _merge_pick_blocks(path, picks)


_STRING_STAR_COLUMNS = ("cosClassName", "cosCuration", "cosCuratedClassName", "rlnClassName", "rlnTomoName", "rlnMicrographName")
#: Columns that name the tomogram a pick belongs to: blocks of different tomograms are not merged.
_TOMOGRAM_COLUMNS = ("rlnTomoName", "rlnMicrographName")


def _merge_pick_blocks(path: Path, picks: list) -> tuple[pd.DataFrame, str, str]:
    """Several blocks of picks: one table (rows in file order) when they are compatible, else refuse.

    Compatible: the same columns (in any order), the same coordinate kind, and — when they name
    their tomogram (``rlnTomoName``/``rlnMicrographName``) — the same tomogram.
    """
    names = [n for n, _, _ in picks]
    listing = ", ".join(f"data_{n} ({len(t)} picks)" for n, t, _ in picks)
    first = picks[0][1]
    why = None
    for name, table, fmt in picks[1:]:
        if fmt != picks[0][2]:
            why = f"data_{name} has {fmt} coordinates, data_{names[0]} {picks[0][2]}"
        elif set(table.columns) != set(first.columns):
            diff = sorted(set(table.columns) ^ set(first.columns))
            why = f"data_{name} and data_{names[0]} have different columns ({', '.join(map(str, diff))})"
        else:
            for col in _TOMOGRAM_COLUMNS:
                if col in first.columns and set(table[col].astype(str)) != set(first[col].astype(str)):
                    why = f"data_{name} and data_{names[0]} hold picks of different tomograms ({col})"
        if why:
            raise PicksError(
                f"'{path}' has {len(picks)} blocks of picks: {listing}; they cannot be read as one table ({why}). "
                "Split the file into one picks file per block, or keep only the block you mean"
            )
    merged = pd.concat([t[list(first.columns)] for _, t, _ in picks], ignore_index=True)
    return merged, picks[0][2], "+".join(names)


def _require(path: Path, block: str, table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PicksError(
            f"'{path}': data block 'data_{block}' is missing column {', '.join(missing)} "
            f"(found: {', '.join(map(str, table.columns))})"
        )


def _read_star_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise PicksError(f"'{path}' is not a text STAR file (it contains binary data)") from None


class _Loop:
    """A ``loop_`` of a STAR file: its block, column names, and the lines of its rows (0-based, end exclusive)."""

    def __init__(self, block: str) -> None:
        self.block = block
        self.columns: list[str] = []
        self.first = self.last = -1  # row lines [first, last)

    def add_row(self, index: int) -> None:
        if self.first < 0:
            self.first = index
        self.last = index + 1


class _StarLayout:
    """What :func:`_scan_star` found: the loops, and whether anything needs the general parser."""

    def __init__(self) -> None:
        self.loops: list[_Loop] = []
        self.unusual: str | None = None  # why the fast loop reader is not used
        self.lines: list[str] = []


def _scan_star(path: Path, text: str) -> _StarLayout:
    """One pass over the lines: the layout of the loops, and the first ragged or invalid line.

    Raises a :class:`PicksError` naming the first line whose field count differs from its loop
    header's, or that is not STAR syntax. Marks the layout ``unusual`` (parsed by starfile) for
    constructs the fast reader does not handle: ``save_``/``global_`` frames, multi-line text
    fields, key–value pairs in the same block as a loop.
    """
    layout = _StarLayout()
    lines = layout.lines = text.splitlines()
    loop: _Loop | None = None
    block: str | None = None
    pairs_in_block = False
    in_header = in_rows = False
    index, n_lines = 0, len(lines)
    while index < n_lines:
        if in_rows:  # the fast path: a run of rows
            index = _scan_rows(path, lines, index, loop)
            in_rows = False
            continue
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            block, pairs_in_block, loop = line[5:], False, None
            in_header = False
            continue
        if line.startswith(("save_", "global_", "stop_", ";")):
            layout.unusual = layout.unusual or f"line {index}: {line[:20]!r}"
        if line.startswith("loop_"):
            if pairs_in_block or (loop is not None and loop.block == block):
                layout.unusual = layout.unusual or f"line {index}: a loop after other items of data_{block}"
            loop = _Loop(block if block is not None else "")
            layout.loops.append(loop)
            in_header = True
            continue
        if line.startswith("_"):
            if in_header and loop is not None:
                loop.columns.append(line.split()[0][1:])
            else:
                pairs_in_block = True
                if loop is not None and loop.block == block:
                    layout.unusual = layout.unusual or f"line {index}: a key-value pair after a loop"
            continue
        if in_header and loop is not None:
            in_header, in_rows = False, True
            index -= 1  # this line is the first row
            continue
        raise PicksError(f"'{path}', line {index}: not valid STAR syntax: {line[:80]!r}")
    if block is None and layout.loops:
        layout.unusual = layout.unusual or "a loop outside any data_ block"
    return layout


def _scan_rows(path: Path, lines: list[str], index: int, loop: _Loop) -> int:
    """Check the rows of ``loop`` from line ``index`` (0-based) on; return the line after them.

    Rows end at a blank line or a line starting with ``_``, ``data_`` or ``loop_``; ``#``
    comment lines between rows are skipped.
    """
    n_columns = len(loop.columns)
    while index < len(lines):
        raw = lines[index]
        fields = raw.split()
        if not fields:
            return index + 1
        head = fields[0]
        if head[0] == "#":
            index += 1
            continue
        if head[0] == "_" or head.startswith(("data_", "loop_")):
            return index
        n_fields = _count_fields(raw) if ('"' in raw or "'" in raw) else len(fields)
        if n_fields != n_columns:
            line = raw.strip()
            raise PicksError(
                f"'{path}', line {index + 1}: expected {n_columns} fields, found {n_fields}: {line[:80]!r}"
            )
        loop.add_row(index)
        index += 1
    return index


def _count_fields(line: str) -> int:
    if '"' not in line and "'" not in line:
        return len(line.split())
    try:
        return len(shlex.split(line, comments=False, posix=True))
    except ValueError:
        return len(line.split())


def _star_loops(path: Path, text: str, layout: _StarLayout) -> list[tuple[str, pd.DataFrame]]:
    """``(block name, table)`` of every loop, in file order.

    Usual files (all this package writes, RELION's picks) are read by :func:`_read_loop`, which
    parses the rows with pandas' C reader exactly as starfile does, in a few seconds for a
    million rows; anything :func:`_scan_star` marks unusual goes through starfile itself.
    """
    if layout.unusual is not None:
        return _starfile_loops(path)
    names = [loop.block for loop in layout.loops]
    if len(set(names)) != len(names):  # starfile keeps the last of blocks with one name: name them all
        counts: dict[str, int] = {}
        for i, name in enumerate(names):
            counts[name] = counts.get(name, 0) + 1
            names[i] = name if names.count(name) == 1 else f"{name}#{counts[name]}"
    try:
        return [(name, _read_loop(loop, layout.lines)) for name, loop in zip(names, layout.loops)]
    except PicksError:
        raise
    except Exception as exc:  # pandas raises many kinds of errors on bad input
        raise PicksError(f"'{path}' is not a readable STAR file ({type(exc).__name__}: {exc})") from None


def _read_loop(loop: _Loop, lines: list[str]) -> pd.DataFrame:
    """The rows of one loop as starfile reads them (same C reader options, same numeric conversion)."""
    if loop.first < 0:
        return pd.DataFrame(np.zeros(shape=(0, len(loop.columns))), columns=list(loop.columns))
    body = ("\n".join(lines[loop.first:loop.last]) + "\n").replace("'", '"').encode("utf-8")
    index = {name: i for i, name in enumerate(loop.columns)}
    df = pd.read_csv(
        _io.BytesIO(body), delimiter=r"\s+", header=None, comment="#",
        dtype={index[k]: str for k in _STRING_STAR_COLUMNS if k in index},
        keep_default_na=False, na_values=["nan", "NaN", "<NA>"], engine="c",
    )
    df.columns = list(loop.columns)
    return _numeric_columns(df)


def _numeric_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Every column that parses as numbers becomes numeric, except the string columns (as starfile)."""
    for col in df.columns:
        if col in _STRING_STAR_COLUMNS:
            continue
        try:
            values = pd.to_numeric(df[col])
        except (ValueError, TypeError):
            continue
        if not values.isna().all():
            df[col] = values
    return df


def _starfile_loops(path: Path) -> list[tuple[str, pd.DataFrame]]:
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=list(_STRING_STAR_COLUMNS))
    except Exception as exc:  # starfile raises many kinds of errors on bad input
        raise PicksError(f"'{path}' is not a readable STAR file ({type(exc).__name__}: {exc})") from None
    return [(name, b) for name, b in blocks.items() if isinstance(b, pd.DataFrame)]


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
    from .relion5 import centred_to_voxels  # the one place of RELION 5's centre convention

    out = table.copy()
    xyz = np.stack([pd.to_numeric(out[c], errors="coerce").to_numpy(np.float64) for c in _CENTRED], axis=1)
    zyx = centred_to_voxels(xyz[:, ::-1], tomogram_shape, voxel_size)
    for axis, voxel in enumerate(_VOXEL):  # X is the last array axis
        out[voxel] = zyx[:, 2 - axis]
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
    chunks = _star_chunks(table) if suffix == ".star" else _csv_chunks(table)
    with atomic_path(path) as tmp:
        with Path(tmp).open("w", encoding="utf-8", newline="") as f:
            for chunk in chunks:  # a few thousand rows at a time: memory does not grow with the rows
                f.write(chunk)
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


#: Rows formatted per chunk of text when writing.
_WRITE_ROWS = 20_000


def _format_columns(table: pd.DataFrame) -> list[list[str]]:
    return [[_format_value(v) for v in table[c].tolist()] for c in table.columns]


def _row_chunks(table: pd.DataFrame):
    for start in range(0, len(table), _WRITE_ROWS):
        yield table.iloc[start:start + _WRITE_ROWS]


def _star_chunks(table: pd.DataFrame):
    """The STAR text of ``table`` in pieces: the header, then the rows a chunk at a time."""
    head = _io.StringIO()
    head.write(f"# written by napari-cryo-openset {__version__}\n\n")
    head.write(f"data_{_BLOCK}\n\nloop_\n")
    for i, name in enumerate(table.columns, start=1):
        head.write(f"_{name} #{i}\n")
    yield head.getvalue()
    for part in _row_chunks(table):
        yield "".join("\t".join(row) + "\n" for row in zip(*_format_columns(part)))
    yield "\n"


def _format_star(table: pd.DataFrame) -> str:
    return "".join(_star_chunks(table))


def _csv_chunks(table: pd.DataFrame):
    """The CSV text of ``table`` in pieces (header with the first chunk)."""
    if not len(table):
        yield _csv_text(table, header=True)
        return
    for n, part in enumerate(_row_chunks(table)):
        yield _csv_text(part, header=n == 0)


def _csv_text(table: pd.DataFrame, header: bool) -> str:
    out = _io.StringIO()
    formatted = pd.DataFrame(
        {c: [_csv_value(v) for v in table[c].tolist()] for c in table.columns}, columns=table.columns
    )
    formatted.to_csv(out, index=False, header=header, lineterminator="\n")
    return out.getvalue()


def _format_csv(table: pd.DataFrame) -> str:
    return "".join(_csv_chunks(table))


def _csv_value(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(float(value)) else repr(float(value))
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    return str(value)
