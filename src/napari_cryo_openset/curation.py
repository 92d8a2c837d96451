"""The user's class labels on picks: set, clear, check and merge them (no Qt, no napari, no torch).

A curated label lives in the picks table's ``curated_class`` column (STAR/CSV
``cosCuratedClassName``; :mod:`napari_cryo_openset.picks`): a class name of the model (a template
name, ``empty``) or ``unknown``; the empty string means "no curated label". It sits beside the
predicted ``class_name`` and is only ever changed by the user, through :func:`set_curated_class`
— predictions, adaptation and refinement (:mod:`napari_cryo_openset.adapt.refine`) copy it
through untouched.

Rules every front end shares (each failure is one :class:`~napari_cryo_openset.errors.PicksError`
naming what is wrong):

- a label must be one of the model's class names or ``unknown`` (the message names the
  unexpected labels, lists the model's classes and offers ``unknown`` for a structure the model
  does not have);
- a rejected pick carries no label (reject *or* label a pick: a rejected pick is left out of
  every stage; clear the label or set the pick back to accepted);
- labelling a pick accepts it (an unreviewed pick the user labelled has been reviewed).

:func:`merge_labels` brings the labels of one picks file onto another picks table of the same
tomogram (matched by position, voxels), and :func:`check_labels_fit_tomogram` refuses labels
that belong to another tomogram (positions outside it, or another voxel size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import PicksError
from .picks import UNKNOWN_CLASS, validate_picks

CURATED_COLUMN = "curated_class"
#: Default distance (voxels) within which a labelled pick of another table is the same pick.
MATCH_TOLERANCE = 1.0


def curated_labels(picks: pd.DataFrame) -> pd.Series:
    """The curated label of every pick (``""`` = none; a table without the column has none)."""
    if CURATED_COLUMN not in picks.columns:
        return pd.Series([""] * len(picks), index=picks.index, dtype=object)
    values = picks[CURATED_COLUMN]
    return values.astype(object).where(values.notna(), "").astype(str)


def is_curated(picks: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the picks that carry a curated label."""
    return (curated_labels(picks) != "").to_numpy()


def allowed_labels(class_names: Sequence[str]) -> list[str]:
    """The labels a user may give with a model of ``class_names``: its classes, and ``unknown``."""
    names = [str(c) for c in class_names]
    return names if UNKNOWN_CLASS in names else [*names, UNKNOWN_CLASS]


def _unexpected_message(bad: Sequence[str], class_names: Sequence[str], where: str) -> str:
    listed = ", ".join(f"'{b}'" for b in bad)
    known = ", ".join(c for c in allowed_labels(class_names) if c != UNKNOWN_CLASS)
    return (f"{where}: curated label(s) {listed} are not classes of the model (its classes: {known}); "
            f"label a structure the model does not have '{UNKNOWN_CLASS}'")


def check_curated_labels(picks: pd.DataFrame, class_names: Sequence[str], where: str = "picks table") -> None:
    """Refuse labels that are not classes of the model, and labels on rejected picks.

    ``where`` names the table in the message (e.g. ``--labels 'curated.star'``).
    """
    labels = curated_labels(picks)
    labelled = labels != ""
    allowed = set(allowed_labels(class_names))
    bad = sorted(set(labels[labelled]) - allowed)
    if bad:
        raise PicksError(_unexpected_message(bad, class_names, where))
    rejected = labelled & (picks["curation"].astype(str) == "rejected")
    if rejected.any():
        rows = np.flatnonzero(rejected.to_numpy())
        first = ", ".join(str(r + 1) for r in rows[:5]) + (", …" if len(rows) > 5 else "")
        raise PicksError(f"{where}: {len(rows)} rejected pick(s) carry a curated label (row(s) {first}); a rejected "
                         "pick is left out of every stage — clear its label, or accept the pick")


def set_curated_class(picks: pd.DataFrame, rows, class_name: str | None,
                      class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy of ``picks`` with the curated label of ``rows`` set to ``class_name`` (None/"": cleared).

    ``rows``: positions (0-based, as napari's point indices) of the picks to label; ``class_names``:
    the model's classes, to check ``class_name`` against (None: any name). Labelling a pick marks it
    ``accepted``; clearing a label leaves its curation as it is. The predicted ``class_name`` is
    never touched. Raises :class:`PicksError` for a name the model lacks, a rejected pick or a row
    out of range; ``picks`` itself is never changed (undo = keep the old table).
    """
    out = validate_picks(picks)
    rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    if rows.size and (rows.min() < 0 or rows.max() >= len(out)):
        raise PicksError(f"pick row {int(rows.max() if rows.max() >= len(out) else rows.min())} is out of range "
                         f"(the table has {len(out)} picks)")
    label = "" if class_name is None else str(class_name).strip()
    if CURATED_COLUMN not in out.columns:
        out[CURATED_COLUMN] = ""
    if label:
        if class_names is not None and label not in allowed_labels(class_names):
            raise PicksError(_unexpected_message([label], class_names, "label"))
        rejected = rows[out["curation"].to_numpy()[rows] == "rejected"]
        if rejected.size:
            raise PicksError(f"pick {int(rejected[0]) + 1} is rejected: a rejected pick cannot carry a label "
                             "(accept it first, or leave it rejected)")
        out.loc[rows, "curation"] = "accepted"
    out.loc[rows, CURATED_COLUMN] = label
    return out


def label_summary(picks: pd.DataFrame) -> dict[str, int]:
    """How many active picks carry each curated label (known classes by name, ``unknown`` last)."""
    labels = curated_labels(picks)
    active = (picks["curation"].astype(str) != "rejected") & (labels != "")
    values, counts = np.unique(labels[active].to_numpy(dtype=str), return_counts=True)
    order = sorted(zip(values, counts), key=lambda t: (t[0] == UNKNOWN_CLASS, t[0]))
    return {str(k): int(v) for k, v in order}


def check_labels_fit_tomogram(labels: pd.DataFrame, shape: Sequence[int], voxel_size: float | None,
                              where: str = "labels", tomogram: str = "the tomogram") -> None:
    """Refuse labels that belong to another tomogram.

    Every labelled pick must lie inside the volume of ``shape`` (Z, Y, X voxels), and a voxel size
    the labels file records (``labels.attrs['voxel_size']``, Å) must agree with ``voxel_size``
    (Å) within 2 %.
    """
    file_vs = labels.attrs.get("voxel_size") if hasattr(labels, "attrs") else None
    if file_vs is not None and voxel_size is not None:
        a, b = float(np.asarray(file_vs, dtype=float).ravel()[0]), float(np.asarray(voxel_size, float).ravel()[0])
        if abs(a - b) > 0.02 * b:
            raise PicksError(f"{where} records {a:g} Å voxels but {tomogram} has {b:g} Å: these labels belong to "
                             "another tomogram (or another binning of it)")
    mask = is_curated(labels)
    coords = labels.loc[mask, ["z", "y", "x"]].to_numpy(np.float64)
    size = np.asarray(shape, dtype=np.float64)
    outside = np.any((coords < -0.5) | (coords > size - 0.5), axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        z, y, x = (round(float(v), 2) for v in coords[i])
        row = int(np.flatnonzero(mask)[i]) + 1
        raise PicksError(f"{where}: {int(outside.sum())} of {len(coords)} labelled pick(s) lie outside {tomogram} of "
                         f"{'×'.join(str(int(s)) for s in shape)} (Z×Y×X) voxels (first: row {row} at x={x}, y={y}, "
                         f"z={z}); these labels belong to another tomogram")


def merge_labels(picks: pd.DataFrame, labels: pd.DataFrame, tolerance: float = MATCH_TOLERANCE,
                 where: str = "labels") -> tuple[pd.DataFrame, dict]:
    """``picks`` with the curated labels of ``labels`` (another table of the same tomogram).

    Each labelled row of ``labels`` is matched to the nearest pick of ``picks`` within
    ``tolerance`` voxels (Euclidean, Z Y X) — the same pick, e.g. ``labels`` is the predictions
    file the user curated; a labelled row with no pick that near is added as a new ``accepted``
    pick. A matched pick takes the label and becomes ``accepted``; a labelled row on a pick that is
    rejected in ``picks`` is refused (:class:`PicksError`, naming ``where``), as is a labelled row
    that is rejected in ``labels`` itself. Labels already in ``picks`` are replaced where ``labels``
    has one and kept elsewhere. Returns (the merged table, ``{"matched": n, "added": n}``).
    """
    from scipy.spatial import cKDTree

    out = validate_picks(picks)
    lab = validate_picks(labels, source=where)
    mask = is_curated(lab)
    if CURATED_COLUMN not in out.columns:
        out[CURATED_COLUMN] = ""
    rej = mask & (lab["curation"].to_numpy() == "rejected")
    if rej.any():
        raise PicksError(f"{where}: {int(rej.sum())} rejected pick(s) carry a curated label (first: row "
                         f"{int(np.flatnonzero(rej)[0]) + 1}); a rejected pick is left out — clear its label or "
                         "accept it")
    labelled = lab.loc[mask]
    info = {"matched": 0, "added": 0}
    if not len(labelled):
        return out, info
    coords = labelled[["z", "y", "x"]].to_numpy(np.float64)
    names = curated_labels(labelled).to_numpy()
    if len(out):
        dist, idx = cKDTree(out[["z", "y", "x"]].to_numpy(np.float64)).query(coords, k=1)
    else:
        dist, idx = np.full(len(coords), np.inf), np.zeros(len(coords), dtype=np.int64)
    hit = dist <= tolerance
    if hit.any():
        rows = idx[hit]
        dup = np.unique(rows, return_counts=True)
        if (dup[1] > 1).any():
            row = int(dup[0][dup[1] > 1][0])
            raise PicksError(f"{where}: several labelled picks lie within {tolerance:g} voxels of pick {row + 1}; "
                             "each pick takes one label")
        on_rejected = out["curation"].to_numpy()[rows] == "rejected"
        if on_rejected.any():
            row = int(rows[on_rejected][0])
            raise PicksError(f"{where}: {int(on_rejected.sum())} label(s) fall on rejected picks (first: pick "
                             f"{row + 1}); a rejected pick is left out — accept it, or clear the label")
        out.loc[rows, CURATED_COLUMN] = names[hit]
        out.loc[rows, "curation"] = "accepted"
        info["matched"] = int(hit.sum())
    if (~hit).any():
        extra = labelled.loc[~hit, ["z", "y", "x"]].copy()
        extra["score"] = np.nan
        extra["curation"] = "accepted"
        extra[CURATED_COLUMN] = names[~hit]
        out = validate_picks(pd.concat([out, extra], ignore_index=True))
        for col in out.columns:  # columns the added rows lack: empty strings for text, NaN otherwise
            if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
                out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
        info["added"] = int((~hit).sum())
    return validate_picks(out), info
