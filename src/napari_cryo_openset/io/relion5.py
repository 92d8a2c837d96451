"""RELION 5 STAR files: particles (centred coordinates in Å) and tomograms (``tomograms.star``). Core, no Qt.

Centre convention (checked against RELION's own source, 3dem/relion, ``src/jaz/tomography``)
    RELION 5 stores a particle position as ``rlnCenteredCoordinateX/Y/ZAngst``: Å from the centre
    of its tomogram. ``ParticleSet::getParticleCoordDecenteredPixel`` (``particle_set.cpp``)
    turns it back into RELION's internal, 0-based pixel position with
    ``pixel = centred_Å / rlnTomoTiltSeriesPixelSize + centre``, and ``setParticleCoordDecenteredPixel``
    does the inverse; ``TomogramSet::loadTomogram`` (``tomogram_set.cpp``) sets
    ``centre = (rlnTomoSizeX / 2.0, rlnTomoSizeY / 2.0, rlnTomoSizeZ / 2.0)`` — a *floating-point*
    half size, so the centre of a 64-voxel axis is 32.0 and of a 65-voxel axis 32.5 (not the
    integer ``size // 2`` of RELION's 2-D image centre). ``ParticleSet::getPosition`` no longer adds
    1 (the ``+1`` of RELION 4 was taken out in 2024): the pixel positions are 0-based, the same
    convention as our voxel coordinates (voxel centres at integers). Hence, per axis, for a
    tomogram of ``size`` voxels of ``voxel_size`` Å (Z, Y, X = array axes 0, 1, 2; X = last)::

        centred_Å = (voxel - size / 2) * voxel_size        voxel = centred_Å / voxel_size + size / 2

    RELION's ``rlnTomoSizeX/Y/Z`` are in unbinned tilt-series pixels; for a tomogram reconstructed
    at binning ``b`` (voxel size ``b`` × tilt-series pixel size) the same field gives the same Å, so the
    conversion uses the tomogram's own shape and voxel size. :func:`voxels_to_centred` and
    :func:`centred_to_voxels` are the one place the formula lives.

Files
    *Particles* (:func:`write_relion5_particles`): ``data_optics`` (one optics group per tomogram:
    ``rlnOpticsGroup``, ``rlnOpticsGroupName``, ``rlnTomoTiltSeriesPixelSize`` and the microscope
    when known) and ``data_particles`` (``rlnTomoName``, ``rlnCenteredCoordinateX/Y/ZAngst``,
    ``rlnOpticsGroup``, ``rlnAngleRot/Tilt/Psi`` and ``rlnOriginX/Y/ZAngst`` when the picks carry
    orientations — columns ``rot``, ``tilt``, ``psi`` in degrees, ZYZ as RELION, and ``origin_x/y/z``
    in Å, from the ``align`` stage of a run; picks without one (NaN, or another tomogram's picks
    without the columns) get 0, the identity, as RELION needs a number — plus our columns: ``rlnAutopickFigureOfMerit``,
    ``cosClassName``, ``cosConfidence``, … which RELION carries along). *Tomograms*
    (:func:`read_tomograms_star`, :func:`write_tomograms_star`): ``data_global`` with
    ``rlnTomoName``, ``rlnTomoReconstructedTomogram``, ``rlnTomoTiltSeriesPixelSize``,
    ``rlnTomoTomogramBinning``, ``rlnTomoSizeX/Y/Z``, ``rlnVoltage``, ``rlnSphericalAberration``,
    ``rlnAmplitudeContrast``.

Every file is written through ``starfile`` with floats as their shortest exact text, so
``starfile.read`` gives back the very numbers written; writes are atomic.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PicksError
from ..picks import FROM_STAR, STAR_COLUMNS, validate_picks
from ._atomic import atomic_path

CENTRED_COLUMNS = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
VOXEL_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ANGLE_COLUMNS = {"rot": "rlnAngleRot", "tilt": "rlnAngleTilt", "psi": "rlnAnglePsi"}
#: Pose columns (STAR names) a particle without a pose gets as 0: RELION and Warp need a number.
POSE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
#: STAR columns read as text, never as numbers (names of tomograms, files, classes).
STRING_COLUMNS = ("rlnTomoName", "rlnMicrographName", "rlnTomoReconstructedTomogram", "rlnOpticsGroupName",
                  "rlnTomoTiltSeriesStarFile", "rlnMtfFileName", "cosClassName", "cosCuration", "rlnImageName",
                  "rlnTomoParticleName")


@dataclass(frozen=True)
class TomogramInfo:
    """One tomogram of a data set, as a ``tomograms.star`` row describes it.

    ``shape`` (Z, Y, X) voxels and ``voxel_size`` (Å) are the reconstructed tomogram's;
    ``tilt_series_pixel_size`` (Å) the unbinned pixel of its tilt series (RELION's
    ``rlnTomoTiltSeriesPixelSize``; None = unknown, written as the voxel size, i.e. binning 1);
    ``voltage`` kV, ``cs`` mm, ``amplitude_contrast`` (0..1) when known; ``extra``: the row's
    other columns, kept for writing back.
    """

    name: str
    path: Path | None = None
    shape: tuple[int, int, int] | None = None
    voxel_size: float | None = None
    tilt_series_pixel_size: float | None = None
    voltage: float | None = None
    cs: float | None = None
    amplitude_contrast: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def pixel_size(self) -> float | None:
        """The tilt-series pixel size, or the voxel size when that is unknown (Å)."""
        return self.tilt_series_pixel_size if self.tilt_series_pixel_size else self.voxel_size

    @property
    def binning(self) -> float | None:
        """Tomogram voxel size / tilt-series pixel size (1 when the latter is unknown)."""
        if self.voxel_size is None or self.pixel_size is None:
            return None
        return float(self.voxel_size) / float(self.pixel_size)


# --------------------------------------------------------------------------------------------
# the convention
# --------------------------------------------------------------------------------------------


def _axes(shape, voxel_size) -> tuple[np.ndarray, np.ndarray]:
    size = np.asarray(shape, dtype=np.float64).reshape(3)
    vs = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    if not np.all(vs > 0) or not np.all(size > 0):
        raise PicksError(f"centred coordinates need a positive shape and voxel size, got {tuple(shape)} and {voxel_size}")
    return size, vs


def voxels_to_centred(zyx, shape, voxel_size) -> np.ndarray:
    """(N, 3) Z Y X voxel positions (0-based) → (N, 3) Z Y X Å from the tomogram centre (RELION 5).

    ``shape``: the tomogram's (Z, Y, X) voxels; ``voxel_size``: Å (one number or Z, Y, X).
    ``centred = (voxel - size / 2) * voxel_size`` (see the module docstring for RELION's source).
    """
    size, vs = _axes(shape, voxel_size)
    return (np.asarray(zyx, dtype=np.float64).reshape(-1, 3) - size / 2.0) * vs


def centred_to_voxels(centred_zyx, shape, voxel_size) -> np.ndarray:
    """(N, 3) Z Y X Å from the tomogram centre → (N, 3) Z Y X voxels: ``centred / voxel_size + size / 2``."""
    size, vs = _axes(shape, voxel_size)
    return np.asarray(centred_zyx, dtype=np.float64).reshape(-1, 3) / vs + size / 2.0


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _exact(df: pd.DataFrame) -> pd.DataFrame:
    """Float columns as their shortest exact text (``repr``); starfile writes the text as is."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = [("nan" if math.isnan(v) else repr(float(v))) for v in out[col].tolist()]
        elif pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].astype(int)
    return out


def write_star_blocks(path: str | os.PathLike, blocks: Mapping[str, pd.DataFrame]) -> Path:
    """Write ``{block name: table}`` through ``starfile``, atomically, floats exact."""
    import starfile

    path = Path(path)
    if path.suffix.lower() != ".star":
        raise PicksError(f"'{path}': a STAR file must end in .star")
    if not path.parent.is_dir():
        raise PicksError(f"'{path}': the folder '{path.parent}' does not exist")
    with atomic_path(path) as tmp:
        starfile.write({name: _exact(df) for name, df in blocks.items()}, tmp, quote_all_strings=False)
    return path


def particles_table(picks: pd.DataFrame, tomogram: TomogramInfo, optics_group: int = 1) -> pd.DataFrame:
    """The RELION 5 ``data_particles`` rows of one tomogram's picks table (centred Å, our columns kept)."""
    if tomogram.shape is None or tomogram.voxel_size is None:
        raise PicksError(f"tomogram '{tomogram.name}': RELION 5 coordinates need its shape and voxel size")
    df = validate_picks(picks, source=f"picks of '{tomogram.name}'")
    centred = voxels_to_centred(df[["z", "y", "x"]].to_numpy(np.float64), tomogram.shape, tomogram.voxel_size)
    out = pd.DataFrame({"rlnTomoName": [str(tomogram.name)] * len(df)})
    out[CENTRED_COLUMNS[0]] = centred[:, 2]
    out[CENTRED_COLUMNS[1]] = centred[:, 1]
    out[CENTRED_COLUMNS[2]] = centred[:, 0]
    for ours, theirs in ANGLE_COLUMNS.items():
        if ours in df.columns:
            out[theirs] = df[ours].to_numpy(np.float64)
    out["rlnOpticsGroup"] = int(optics_group)
    skip = {"x", "y", "z", *ANGLE_COLUMNS, "rlnTomoName", *CENTRED_COLUMNS, *VOXEL_COLUMNS, "rlnOpticsGroup",
            "cosVoxelSizeAngst"}
    for col in df.columns:
        if col not in skip and STAR_COLUMNS.get(col, col) not in out.columns:
            out[STAR_COLUMNS.get(col, col)] = df[col].to_numpy()
    return out


def fill_poses(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with NaN in its pose columns (:data:`POSE_COLUMNS`, the ones present) set to 0."""
    for col in POSE_COLUMNS:
        if col in table.columns:
            table[col] = pd.to_numeric(table[col], errors="coerce").fillna(0.0).astype(np.float64)
    return table


def optics_row(tomogram: TomogramInfo, optics_group: int) -> dict:
    row = {"rlnOpticsGroup": int(optics_group), "rlnOpticsGroupName": str(tomogram.name),
           "rlnTomoTiltSeriesPixelSize": float(tomogram.pixel_size)}
    for key, value in (("rlnVoltage", tomogram.voltage), ("rlnSphericalAberration", tomogram.cs),
                       ("rlnAmplitudeContrast", tomogram.amplitude_contrast)):
        if value is not None:
            row[key] = float(value)
    return row


def write_relion5_particles(path: str | os.PathLike, items: Sequence[tuple[TomogramInfo, pd.DataFrame]]) -> Path:
    """Write the picks of one or several tomograms as one RELION 5 particles STAR (optics + particles).

    ``items``: ``(tomogram, picks table)`` pairs; each tomogram is its own optics group (named
    after it, as RELION names groups made from a tomogram set). Returns the path.
    """
    if not items:
        raise PicksError(f"'{path}': no tomograms to write")
    names = [t.name for t, _ in items]
    if len(set(names)) != len(names):
        raise PicksError(f"'{path}': tomogram names must be unique, got {', '.join(names)}")
    optics = pd.DataFrame([optics_row(t, i + 1) for i, (t, _) in enumerate(items)])
    optics = optics[[c for c in optics.columns]]  # rows may lack microscope columns: NaN where unknown
    tables = [particles_table(p, t, i + 1) for i, (t, p) in enumerate(items)]
    particles = fill_poses(pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
    return write_star_blocks(path, {"optics": optics, "particles": particles})


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_star_blocks(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """All loops of a STAR file through ``starfile`` (names as text), with one clear error on failure."""
    import starfile

    path = Path(path)
    if not path.is_file():
        raise PicksError(f"'{path}' does not exist or is not a file (expected a .star file)")
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=list(STRING_COLUMNS))
    except Exception as exc:  # starfile raises many kinds of errors on bad input
        raise PicksError(f"'{path}' is not a readable STAR file ({type(exc).__name__}: {exc})") from None
    out = {}
    for name, block in blocks.items():
        if isinstance(block, pd.DataFrame):
            out[name] = block
        elif isinstance(block, dict):  # key-value block: one row
            out[name] = pd.DataFrame([block])
    return out


def _particles_block(path: Path, blocks: dict[str, pd.DataFrame]) -> pd.DataFrame:
    for name in ("particles", *blocks):
        table = blocks.get(name)
        if table is not None and (all(c in table.columns for c in CENTRED_COLUMNS)
                                  or all(c in table.columns for c in VOXEL_COLUMNS)):
            return table
    raise PicksError(f"'{path}': no block with rlnCenteredCoordinateX/Y/ZAngst or rlnCoordinateX/Y/Z columns "
                     f"(blocks: {', '.join(f'data_{n}' for n in blocks) or 'none'})")


def read_relion5_particles(path: str | os.PathLike,
                           tomograms: Mapping[str, TomogramInfo] | Sequence[TomogramInfo] | None = None,
                           ) -> dict[str, pd.DataFrame]:
    """Read a RELION particles STAR (5: centred Å; ≤ 4: voxels) into one picks table per tomogram.

    ``tomograms``: the shape and voxel size of each ``rlnTomoName`` (e.g. from
    :func:`read_tomograms_star`), needed for centred coordinates; files without ``rlnTomoName``
    hold one tomogram, named ``''``. Returns ``{tomogram name: picks table}`` in file order,
    coordinates in voxels (Z, Y, X columns), orientations as ``rot``/``tilt``/``psi`` degrees,
    our STAR columns under their table names, the others kept as they are.
    """
    path = Path(path)
    table = _particles_block(path, read_star_blocks(path))
    if isinstance(tomograms, Mapping):
        by_name = dict(tomograms)
    else:
        by_name = {t.name: t for t in (tomograms or ())}
    names = table["rlnTomoName"].astype(str) if "rlnTomoName" in table.columns else pd.Series([""] * len(table))
    centred = all(c in table.columns for c in CENTRED_COLUMNS)
    out: dict[str, pd.DataFrame] = {}
    for name in dict.fromkeys(names.tolist()):
        rows = table.loc[(names == name).to_numpy()].reset_index(drop=True)
        if centred:
            info = by_name.get(name)
            if info is None or info.shape is None or info.voxel_size is None:
                raise PicksError(
                    f"'{path}': tomogram '{name}' has RELION 5 centred coordinates; reading them needs its shape and "
                    "voxel size (give the tomograms.star that lists it, or the tomogram)")
            xyz = rows[list(CENTRED_COLUMNS)].to_numpy(np.float64)
            zyx = centred_to_voxels(xyz[:, ::-1], info.shape, info.voxel_size)
            rows = rows.drop(columns=list(CENTRED_COLUMNS) + [c for c in VOXEL_COLUMNS if c in rows.columns])
            rows.insert(0, "rlnCoordinateX", zyx[:, 2])
            rows.insert(1, "rlnCoordinateY", zyx[:, 1])
            rows.insert(2, "rlnCoordinateZ", zyx[:, 0])
        rows = rows.rename(columns={**FROM_STAR, **{v: k for k, v in ANGLE_COLUMNS.items()}})
        if "score" not in rows.columns:
            rows["score"] = np.nan
        df = validate_picks(rows, source=f"'{path}' (tomogram '{name}')")
        df.attrs.update(source=str(path), format="relion5" if centred else "relion4", tomogram=name)
        out[name] = df
    return out


def _optional(row: Mapping, key: str, kind=float):
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def resolve_path(name: str, star_path: Path) -> Path:
    """A path named in a STAR file: absolute as is; relative ones against the STAR file's folder, its
    parents (RELION writes paths relative to the project folder, 2 levels above ``Job/jobNNN/``), or the
    current folder — the first where the file exists (else against the STAR file's folder)."""
    p = Path(name)
    if p.is_absolute():
        return p
    bases = [star_path.parent, *list(star_path.absolute().parents)[1:3], Path.cwd()]
    for base in bases:
        if (base / p).exists():
            return base / p
    return star_path.parent / p


def read_tomograms_star(path: str | os.PathLike, *, check_files: bool = True) -> list[TomogramInfo]:
    """The tomograms of a RELION 5 ``tomograms.star`` (block ``data_global``), in file order.

    Each needs ``rlnTomoName``; ``rlnTomoReconstructedTomogram`` names its MRC (resolved by
    :func:`resolve_path`; with ``check_files`` every named file must exist — one message lists the
    missing ones). Shape and voxel size come from ``rlnTomoSizeX/Y/Z`` (tilt-series pixels) and
    ``rlnTomoTiltSeriesPixelSize`` × ``rlnTomoTomogramBinning`` when given (else from the MRC,
    later, by the caller).
    """
    path = Path(path)
    blocks = read_star_blocks(path)
    table = blocks.get("global")
    if table is None:
        table = next((t for t in blocks.values() if "rlnTomoName" in t.columns
                      and not any(c in t.columns for c in (*CENTRED_COLUMNS, *VOXEL_COLUMNS))), None)
    if table is None or "rlnTomoName" not in table.columns:
        raise PicksError(f"'{path}' is not a tomograms.star: no data_global block with rlnTomoName "
                         f"(blocks: {', '.join(f'data_{n}' for n in blocks) or 'none'})")
    known = {"rlnTomoName", "rlnTomoReconstructedTomogram", "rlnTomoTiltSeriesPixelSize", "rlnTomoTomogramBinning",
             "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ", "rlnVoltage", "rlnSphericalAberration",
             "rlnAmplitudeContrast"}
    out, missing = [], []
    for row in table.to_dict("records"):
        name = str(row["rlnTomoName"])
        mrc = row.get("rlnTomoReconstructedTomogram")
        tomo_path = resolve_path(str(mrc), path) if isinstance(mrc, str) and mrc else None
        if check_files and (tomo_path is None or not tomo_path.is_file()):
            missing.append(f"{name} ({mrc if mrc else 'no rlnTomoReconstructedTomogram'})")
        pixel = _optional(row, "rlnTomoTiltSeriesPixelSize")
        binning = _optional(row, "rlnTomoTomogramBinning") or 1.0
        sizes = [_optional(row, f"rlnTomoSize{a}") for a in "ZYX"]
        shape = voxel_size = None
        if pixel is not None:
            voxel_size = pixel * binning
            if all(s is not None for s in sizes):
                shape = tuple(int(round(s / binning)) for s in sizes)
        out.append(TomogramInfo(
            name=name, path=tomo_path, shape=shape, voxel_size=voxel_size, tilt_series_pixel_size=pixel,
            voltage=_optional(row, "rlnVoltage"), cs=_optional(row, "rlnSphericalAberration"),
            amplitude_contrast=_optional(row, "rlnAmplitudeContrast"),
            extra={k: v for k, v in row.items() if k not in known}))
    names = [t.name for t in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PicksError(f"'{path}': tomogram names are not unique: {', '.join(dupes)}")
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise PicksError(f"'{path}': {len(missing)} of {len(out)} tomograms name no existing MRC file: {shown}")
    if not out:
        raise PicksError(f"'{path}' lists no tomograms")
    return out


def write_tomograms_star(path: str | os.PathLike, tomograms: Sequence[TomogramInfo]) -> Path:
    """Write a RELION 5 ``tomograms.star`` (``data_global``) for ``tomograms`` (shape and voxel size needed).

    ``rlnTomoSizeX/Y/Z`` are in tilt-series pixels (shape × binning), as RELION expects.
    """
    rows = []
    for t in tomograms:
        if t.shape is None or t.voxel_size is None:
            raise PicksError(f"tomogram '{t.name}': tomograms.star needs its shape and voxel size")
        binning = t.binning or 1.0
        row = {"rlnTomoName": t.name,
               "rlnTomoReconstructedTomogram": str(t.path) if t.path is not None else "",
               "rlnTomoTiltSeriesPixelSize": float(t.pixel_size), "rlnTomoTomogramBinning": float(binning),
               "rlnTomoSizeX": int(round(t.shape[2] * binning)), "rlnTomoSizeY": int(round(t.shape[1] * binning)),
               "rlnTomoSizeZ": int(round(t.shape[0] * binning))}
        for key, value in (("rlnVoltage", t.voltage), ("rlnSphericalAberration", t.cs),
                           ("rlnAmplitudeContrast", t.amplitude_contrast)):
            if value is not None:
                row[key] = float(value)
        row.update({k: v for k, v in t.extra.items() if k not in row})
        rows.append(row)
    return write_star_blocks(path, {"global": pd.DataFrame(rows)})
