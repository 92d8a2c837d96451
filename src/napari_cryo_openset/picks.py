"""The picks table: one row per picked particle, defined once for the whole package.

A picks table is a :class:`pandas.DataFrame` with these columns (the *schema*):

=================  =========  ==========================================================
column             dtype      meaning
=================  =========  ==========================================================
``z``, ``y``, ``x``  float64  position in voxels of the tomogram, 0-based, voxel centres at
                              integers, (Z, Y, X) = numpy axis order
``score``          float64    picking figure of merit (DoG response; NaN if unknown)
``curation``       str        ``unreviewed`` / ``accepted`` / ``rejected``
=================  =========  ==========================================================

Optional picking column: ``diameter`` (float64, Å) — the particle diameter the pick was found at
(the scale of a multi-scale DoG run; the run's diameter for one scale), STAR
``cosDiameterAngst``; files without it read as before (no column).

Optional curation column: ``curated_class`` (str) — the class the *user* gave the pick (a model
class name or ``unknown``; empty = no curated label; NaN reads as empty), STAR/CSV
``cosCuratedClassName``. It sits beside the predicted ``class_name``, which it never replaces;
only the user sets it (:mod:`napari_cryo_openset.curation`), and every stage carries it through
unchanged. Files without it read as before (no column).

Optional prediction columns (written by later stages) are ``class_name`` (str, template name
or ``unknown``), ``confidence`` (0..1), ``unknown_score`` (higher = more likely unknown),
``is_unknown`` (bool), ``template_correlation`` (float, the pick's best correlation with the
chosen class's template, :mod:`napari_cryo_openset.verify`; STAR ``cosTemplateCorrelation``), ``tsne_x``, ``tsne_y`` (float) and ``cluster`` (int, -1 = none). Any
other column is carried along untouched (e.g. ``rlnTomoName`` from a STAR file).

Optional alignment columns (the ``align`` stage of a run, :mod:`napari_cryo_openset.align.groups`;
NaN = the pick was not aligned): ``rot``, ``tilt``, ``psi`` (float, degrees: RELION's ZYZ Euler
angles of the pick, STAR ``rlnAngleRot/Tilt/Psi``) and ``origin_x``, ``origin_y``, ``origin_z``
(float, Å: RELION's ``rlnOriginX/Y/ZAngst``, minus the particle centre's offset from the pick —
RELION subtracts the origin from the coordinate).

The same table is the ``features`` of a napari Points layer (with ``data`` = the Z Y X
coordinates), so the viewer and the core share one representation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import PicksError

COORDINATES = ("z", "y", "x")
CURATION_STATES = ("unreviewed", "accepted", "rejected")
UNKNOWN_CLASS = "unknown"

#: In-memory column → STAR/CSV column (ARCHITECTURE.md § 4.2). One place for the mapping.
STAR_COLUMNS: dict[str, str] = {
    "x": "rlnCoordinateX",
    "y": "rlnCoordinateY",
    "z": "rlnCoordinateZ",
    "score": "rlnAutopickFigureOfMerit",
    "class_name": "cosClassName",
    "confidence": "cosConfidence",
    "unknown_score": "cosUnknownScore",
    "curation": "cosCuration",
    "is_unknown": "cosIsUnknown",
    "tsne_x": "cosTsneX",
    "tsne_y": "cosTsneY",
    "cluster": "cosCluster",
    "diameter": "cosDiameterAngst",
    "template_correlation": "cosTemplateCorrelation",
    "curated_class": "cosCuratedClassName",
    "rot": "rlnAngleRot",
    "tilt": "rlnAngleTilt",
    "psi": "rlnAnglePsi",
    "origin_x": "rlnOriginXAngst",
    "origin_y": "rlnOriginYAngst",
    "origin_z": "rlnOriginZAngst",
}
FROM_STAR: dict[str, str] = {v: k for k, v in STAR_COLUMNS.items()}

_FLOAT_COLUMNS = ("z", "y", "x", "score", "confidence", "unknown_score", "tsne_x", "tsne_y", "diameter",
                  "template_correlation", "rot", "tilt", "psi", "origin_x", "origin_y", "origin_z")
_STRING_COLUMNS = ("class_name", "curation", "curated_class")


def make_picks(
    coordinates: np.ndarray | Sequence[Sequence[float]],
    score: np.ndarray | Sequence[float] | None = None,
    **features: np.ndarray | Sequence,
) -> pd.DataFrame:
    """Build a picks table from (N, 3) Z Y X voxel coordinates, optional scores and features."""
    coords = np.asarray(coordinates, dtype=np.float64)
    if coords.size == 0:
        coords = coords.reshape(0, 3)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise PicksError(f"picks coordinates must be an (N, 3) Z Y X array, got shape {coords.shape}")
    df = pd.DataFrame({"z": coords[:, 0], "y": coords[:, 1], "x": coords[:, 2]})
    df["score"] = np.nan if score is None else np.asarray(score, dtype=np.float64)
    for name, values in features.items():
        df[name] = list(values) if not isinstance(values, np.ndarray) else values
    return validate_picks(df)


def validate_picks(df: pd.DataFrame, source: str = "picks table") -> pd.DataFrame:
    """Check and normalise a picks table; return a new DataFrame in schema order.

    Fills ``score`` with NaN and ``curation`` with ``unreviewed`` when absent, coerces types,
    and refuses missing coordinates, non-finite coordinates or unknown curation values with a
    message naming ``source``.
    """
    missing = [c for c in COORDINATES if c not in df.columns]
    if missing:
        raise PicksError(f"{source}: missing coordinate column(s) {', '.join(missing)}")
    out = df.copy()
    out.index = pd.RangeIndex(len(out))
    for col in _FLOAT_COLUMNS:
        if col in out.columns:
            try:
                out[col] = pd.to_numeric(out[col], errors="raise").astype(np.float64)
            except (ValueError, TypeError) as exc:
                raise PicksError(f"{source}: column '{col}' must be numeric ({exc})") from None
    coords = out[list(COORDINATES)].to_numpy()
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise PicksError(
            f"{source}: {int(bad.sum())} pick(s) have missing or non-finite coordinates "
            f"(first: row {first + 1})"
        )
    if "score" not in out.columns:
        out["score"] = np.nan
    if "curation" not in out.columns:
        out["curation"] = "unreviewed"
    out["curation"] = out["curation"].fillna("unreviewed").astype(str).str.strip().str.lower()
    wrong = ~out["curation"].isin(CURATION_STATES)
    if wrong.any():
        value = out["curation"][wrong].iloc[0]
        raise PicksError(
            f"{source}: curation value '{value}' is not one of {', '.join(CURATION_STATES)}"
        )
    for col in _STRING_COLUMNS:
        if col in out.columns and col != "curation":
            out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    if "is_unknown" in out.columns:
        out["is_unknown"] = out["is_unknown"].map(_to_bool).astype(bool)
    if "cluster" in out.columns:
        out["cluster"] = pd.to_numeric(out["cluster"], errors="coerce").fillna(-1).astype(np.int64)
    first = [*COORDINATES, "score", "curation"]
    return out[first + [c for c in out.columns if c not in first]]


def _to_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "t")
    return bool(value) if value == value else False  # NaN → False


def coordinates(df: pd.DataFrame) -> np.ndarray:
    """(N, 3) float64 array of Z Y X voxel coordinates."""
    return df[list(COORDINATES)].to_numpy(dtype=np.float64)


def active(df: pd.DataFrame) -> pd.DataFrame:
    """Picks that downstream steps use: accepted and unreviewed (rejected ones are skipped)."""
    return df[df["curation"] != "rejected"]


def to_points(df: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Split a picks table into napari Points ``data`` (N, 3 voxel Z Y X) and ``features``."""
    df = validate_picks(df)
    return coordinates(df), df.drop(columns=list(COORDINATES)).reset_index(drop=True)


def from_points(data: np.ndarray, features: pd.DataFrame | Mapping | None = None) -> pd.DataFrame:
    """Rebuild a picks table from napari Points ``data`` and ``features``."""
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] < 3:
        raise PicksError(f"points data must be (N, 3) Z Y X, got shape {data.shape}")
    feats = pd.DataFrame(features if features is not None else {}).reset_index(drop=True)
    if len(feats) not in (0, len(data)):
        raise PicksError(
            f"points have {len(data)} coordinates but {len(feats)} feature rows; they must match"
        )
    df = pd.DataFrame(data[:, -3:], columns=list(COORDINATES))
    for col in feats.columns:
        if col not in COORDINATES:
            df[col] = feats[col].to_numpy()
    return validate_picks(df, "points layer")


def class_counts(names: Sequence[str] | np.ndarray | pd.Series) -> dict[str, int]:
    """How many picks carry each class name, in display order: the known classes by count
    (most first, then by name), ``unknown`` last. The one ordering of every count table."""
    values, freq = np.unique(np.asarray(names, dtype=str), return_counts=True) if len(names) else ([], [])
    order = sorted(zip(values, freq), key=lambda t: (t[0] == UNKNOWN_CLASS, -t[1], t[0]))
    return {str(k): int(v) for k, v in order}


def check_inside(picks: pd.DataFrame, shape, what: str, tomogram: str) -> None:
    """Active picks must lie inside a tomogram of ``shape`` (Z, Y, X voxels): else one
    :class:`~napari_cryo_openset.errors.PicksError` naming the picks (``what``) and the ``tomogram``."""
    active = picks[picks["curation"] != "rejected"]
    coords = active[["z", "y", "x"]].to_numpy(np.float64)
    size = np.asarray(shape, dtype=np.float64)
    outside = np.any((coords < -0.5) | (coords > size - 0.5), axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        z, y, x = (round(float(v), 2) for v in coords[i])
        raise PicksError(
            f"{what}: {int(outside.sum())} of {len(coords)} pick(s) lie outside the tomogram "
            f"{tomogram} of {'×'.join(map(str, shape))} (Z×Y×X) voxels (first: row {int(active.index[i]) + 1} "
            f"at x={x}, y={y}, z={z}); are the picks in voxels of this tomogram?"
        )
