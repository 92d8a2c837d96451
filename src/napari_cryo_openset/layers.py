"""napari layer-data tuples for tomograms and picks, built without importing napari.

Readers, sample data, widgets and the demo all build their layers here, so a tomogram always
gets ``scale`` = voxel size (Å), ``units`` = Å and sampled contrast limits, and picks always
get the same scale, features, palette and curation visibility.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .io.tomogram import Tomogram, contrast_limits
from .palette import PICK_COLOR, group_colors
from .picks import from_points, to_points

LayerDataTuple = tuple[Any, dict[str, Any], str]
ANGSTROM = ("angstrom", "angstrom", "angstrom")

# ``layer.metadata`` keys the readers, widgets and the demo share (spelled here only)
#: Points: the Pick widget's live score threshold (candidates below it are left out).
SCORE_THRESHOLD_KEY = "score_threshold"
#: Points: how their predictions were made (model, polarity, counts, threshold …).
PREDICTION_KEY = "prediction"
#: Points: the map and clusters the Results widget wrote (method, perplexity, cluster sizes …).
EMBEDDING_KEY = "embedding"
#: Points: the groups (classes, ``unknown U<k>`` clusters) the Results widget hides.
HIDDEN_GROUPS_KEY = "hidden_groups"
#: Points: the particle diameter (Å) the picks were made with.
DIAMETER_KEY = "diameter"
#: Image: the group an average layer (added by the Results widget) is the average of.
AVERAGE_OF_KEY = "average_of"
#: Points: the class list of the model the predictions came from (the palette follows it).
MODEL_CLASSES_KEY = "model_classes"


def tomogram_layer(tomo: Tomogram, name: str | None = None) -> LayerDataTuple:
    """An Image layer tuple: scale = voxel size (Å, Z Y X), units Å, sampled contrast limits.

    ``metadata`` carries ``voxel_size`` (Å, Z Y X), ``origin`` (Å), ``path`` and ``header``.
    """
    kwargs = {
        "name": name or tomo.name,
        "scale": tuple(float(v) for v in tomo.voxel_size),
        "units": ANGSTROM,
        "contrast_limits": contrast_limits(tomo.data),
        "colormap": "gray",
        "projection_mode": "none",  # one plane, also when the dims margins are thick (for the picks)
        "metadata": {
            "voxel_size": tuple(float(v) for v in tomo.voxel_size),
            "origin": tuple(float(v) for v in tomo.origin),
            "path": str(tomo.path) if tomo.path is not None else None,
            "header": dict(tomo.header),
        },
    }
    return tomo.data, kwargs, "image"


def picks_layer(
    picks: pd.DataFrame,
    *,
    voxel_size: Sequence[float] | float | None,
    name: str = "picks",
    diameter: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> LayerDataTuple:
    """A Points layer tuple for a picks table.

    Coordinates stay in voxels (Z, Y, X) and the layer gets the tomogram's ``scale`` so the
    picks overlay the image. Point size is the particle ``diameter`` (Å) when given. Colour
    comes from ``class_name`` through the one palette; rejected picks are hidden (``shown``),
    never deleted.
    """
    data, features = to_points(picks)
    vs = np.broadcast_to(np.asarray(voxel_size if voxel_size is not None else 1.0, dtype=float), (3,))
    size_vox = (diameter / float(np.mean(vs))) if diameter else 8.0
    meta = dict(metadata or {})
    meta.setdefault("voxel_size", tuple(float(v) for v in vs) if voxel_size is not None else None)
    if diameter:
        meta[DIAMETER_KEY] = float(diameter)
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(float(v) for v in vs),
        "units": ANGSTROM,
        "features": features,
        "size": _point_sizes(features, size_vox, float(np.mean(vs))),
        "face_color": "transparent",
        "border_width": 0.12,
        "border_width_is_relative": True,
        "projection_mode": "rescale_spherical",  # sphere ∩ slice; needs dims margins
        "shown": (features["curation"] != "rejected").to_numpy(),
        # points added by hand start unreviewed, with no score or class
        "feature_defaults": pick_feature_defaults(features),
        "metadata": meta,
    }
    if "class_name" in features.columns and len(features):
        kwargs["border_color"] = pick_colors(features, meta.get(MODEL_CLASSES_KEY))
    else:
        kwargs["border_color"] = PICK_COLOR
    return data, kwargs, "points"


def pick_colors(features: pd.DataFrame, model_classes: Sequence[str] | None = None) -> list[str]:
    """The border colour of every pick: its group's colour in the one palette
    (:func:`napari_cryo_openset.palette.group_colors`, classes ordered by ``model_classes``)."""
    return list(group_colors(pick_groups(features), model_classes))


def _point_sizes(features: pd.DataFrame, default_vox: float, voxel: float):
    """One size (voxels) for all points, or one per point from a ``diameter`` column (Å)."""
    if "diameter" not in features.columns or not len(features):
        return float(default_vox)
    d = pd.to_numeric(features["diameter"], errors="coerce").to_numpy(dtype=float) / voxel
    return np.where(np.isfinite(d) & (d > 0), d, default_vox)


def pick_feature_defaults(features: pd.DataFrame) -> dict[str, Any]:
    """Feature values for a pick added by hand: unreviewed, no score, no class."""
    defaults: dict[str, Any] = {}
    for column in features.columns:
        dtype = features[column].dtype
        if column == "curation":
            defaults[column] = "unreviewed"
        elif column == "cluster":
            defaults[column] = -1
        elif column == "is_unknown":
            defaults[column] = False
        elif pd.api.types.is_float_dtype(dtype):
            defaults[column] = np.nan
        elif pd.api.types.is_integer_dtype(dtype):
            defaults[column] = 0
        else:
            defaults[column] = ""
    return defaults


def above_threshold(features: pd.DataFrame, threshold: float | None) -> np.ndarray:
    """Picks kept by a score threshold: score ≥ threshold, no score (added by hand), or accepted."""
    n = len(features)
    if threshold is None or "score" not in features.columns:
        return np.ones(n, dtype=bool)
    score = features["score"].to_numpy(dtype=float)
    keep = ~(score < float(threshold))  # NaN scores are kept
    if "curation" in features.columns:
        keep |= features["curation"].to_numpy() == "accepted"
    return keep


#: The group of picks without a class (not predicted, added by hand).
NO_CLASS = ""


def pick_groups(features: pd.DataFrame) -> np.ndarray:
    """The group of every point: its class, ``unknown U<k>`` (cluster k), ``unknown`` or ``""``."""
    from .embed import group_names
    from .picks import UNKNOWN_CLASS

    n = len(features)
    if "class_name" not in features.columns:
        return np.full(n, NO_CLASS, dtype=object)
    names = features["class_name"].astype(object).where(features["class_name"].notna(), "").astype(str).to_numpy()
    if "is_unknown" in features.columns:
        unknown = features["is_unknown"].fillna(False).astype(bool).to_numpy() & (names != "")
        names = np.where(unknown, UNKNOWN_CLASS, names)
    cluster = (features["cluster"].fillna(-1).to_numpy(dtype=np.int64) if "cluster" in features.columns
               else np.full(n, -1, dtype=np.int64))
    return group_names(names, cluster)


def group_order(groups) -> list[str]:
    """Table order of groups: known classes (sorted), clusters ``unknown U0``, ``U1``, …, the
    unclustered ``unknown``, then :data:`NO_CLASS`."""
    from .picks import UNKNOWN_CLASS

    present = {str(g) for g in groups}
    clusters = sorted((g for g in present if g.startswith(f"{UNKNOWN_CLASS} U")), key=lambda g: int(g.split("U")[-1]))
    known = sorted(present - set(clusters) - {UNKNOWN_CLASS, NO_CLASS})
    tail = [g for g in (UNKNOWN_CLASS, NO_CLASS) if g in present]
    return known + clusters + tail


def is_cluster(group: str) -> bool:
    """Is ``group`` a cluster of unknown picks (``unknown U<k>``)?"""
    from .picks import UNKNOWN_CLASS

    return str(group).startswith(f"{UNKNOWN_CLASS} U")


def visible_picks_mask(features: pd.DataFrame, threshold: float | None = None,
                       hidden_groups: Sequence[str] | None = None) -> np.ndarray:
    """``shown`` for a picks layer: above the threshold, not rejected, and not in a hidden group."""
    keep = above_threshold(features, threshold)
    if "curation" in features.columns:
        keep &= features["curation"].to_numpy() != "rejected"
    if hidden_groups:
        keep &= ~np.isin(pick_groups(features).astype(str), sorted(map(str, hidden_groups)))
    return keep


def picks_from_layer(data, features, metadata: dict | None = None) -> pd.DataFrame:
    """The picks table a Points layer stands for.

    Candidates below the layer's live score threshold (``metadata['score_threshold']``, set by
    the Pick widget's slider) are left out; rejected picks stay in, marked ``rejected``.
    """
    picks = from_points(np.asarray(data), features)
    threshold = (metadata or {}).get(SCORE_THRESHOLD_KEY)
    return picks[above_threshold(picks, threshold)].reset_index(drop=True)


def pick_summary(features: pd.DataFrame, index: int, diameter: float | None = None) -> str:
    """One line on pick ``index`` for a user hovering it: its group (class, ``unknown U<k>``),
    confidence, unknown score, curation and diameter (Å; the layer's when the pick has none)."""
    row = features.iloc[int(index)]
    group = str(pick_groups(features.iloc[[int(index)]])[0]) if "class_name" in features.columns else ""
    parts = [f"pick #{int(index)}", group or "no class"]
    for column, label in (("confidence", "confidence"), ("unknown_score", "unknown score"), ("score", "score")):
        value = row.get(column) if column in features.columns else None
        if value is not None and np.isfinite(float(value)):
            parts.append(f"{label} {float(value):.3g}")
    if "curation" in features.columns:
        parts.append(str(row["curation"]))
    d = float(row["diameter"]) if "diameter" in features.columns and np.isfinite(float(row["diameter"])) else diameter
    if d:
        parts.append(f"Ø {float(d):.0f} Å")
    return " · ".join(parts)
