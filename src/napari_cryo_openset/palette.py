"""The class palette: one colour per class name, defined once for viewer, plots and exports.

Known classes get colours from a fixed, colour-blind-aware categorical list in the order of the
*model's* sorted class list (``model_classes``: the network's outputs), not of the classes
present in one set of predictions — so a class keeps its colour after source-only Predict, after
adaptation, after moving the unknown threshold, in the Results dock and in ``run``'s PNG. Class
names the model does not know (picks opened from a file) follow, sorted. ``unknown`` and
``empty`` have reserved colours (magenta, grey) that no known class uses; each cluster of unknown
picks ``unknown U<k>`` gets its own shade of the unknown (magenta/purple) family; picks with no
class yet use :data:`PICK_COLOR`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .picks import UNKNOWN_CLASS

#: Reserved for the open-set label ``unknown`` (unknown picks in no cluster): never given to a known class.
UNKNOWN_COLOR = "#ff00ff"
#: The model's ``empty`` class (boxes of ice, no particle): reserved, never given to a known class.
EMPTY_COLOR = "#9a9a9a"
EMPTY_CLASS = "empty"
#: Picks without a class (fresh picks, ground-truth markers).
PICK_COLOR = "#ffd700"

#: Shades of the unknown family for the clusters U0, U1, … (cycled); none equals UNKNOWN_COLOR
#: and none is close to a known-class colour.
CLUSTER_COLORS = (
    "#ff80ff",  # light magenta
    "#a000c8",  # violet
    "#ff3cb4",  # pink-magenta
    "#c878ff",  # lavender
    "#b4006e",  # dark raspberry
    "#e6b4ff",  # pale lilac
    "#7800a0",  # deep purple
    "#ffb4e6",  # pale pink
)

# Okabe-Ito + Tol bright/muted, without magenta-like hues (kept for "unknown") or greys (kept for "empty").
_CATEGORICAL = (
    "#56b4e9",
    "#e69f00",
    "#009e73",
    "#f0e442",
    "#0072b2",
    "#d55e00",
    "#44aa99",
    "#88ccee",
    "#ddcc77",
    "#117733",
    "#332288",
    "#999933",
    "#66ccee",
    "#228833",
    "#ccbb44",
    "#ee6677",
    "#4477aa",
    "#aa7744",
)

_RESERVED = {UNKNOWN_CLASS, EMPTY_CLASS, ""}


def class_colors(class_names: Iterable[str] = (), model_classes: Iterable[str] | None = None) -> dict[str, str]:
    """Map each class name to a hex colour.

    ``model_classes``: the model's class list (``bundle.class_names``); colours follow its sorted
    known classes, whatever subset ``class_names`` (the classes present) holds. Names in
    ``class_names`` the model does not have come after, sorted. ``unknown``, ``empty`` and the
    empty name (no class) get their reserved colours.
    """
    model = sorted({str(n) for n in (model_classes or ())} - _RESERVED)
    extra = sorted({str(n) for n in class_names} - _RESERVED - set(model))
    colors = {n: _CATEGORICAL[i % len(_CATEGORICAL)] for i, n in enumerate(model + extra)}
    colors[UNKNOWN_CLASS] = UNKNOWN_COLOR
    colors[EMPTY_CLASS] = EMPTY_COLOR
    colors[""] = PICK_COLOR
    return colors


def cluster_index(group: str) -> int | None:
    """k of a cluster group ``unknown U<k>`` (None for any other group)."""
    prefix = f"{UNKNOWN_CLASS} U"
    group = str(group)
    if group.startswith(prefix) and group[len(prefix):].isdigit():
        return int(group[len(prefix):])
    return None


def cluster_color(k: int) -> str:
    """The shade of cluster ``U<k>`` in the unknown family."""
    return CLUSTER_COLORS[int(k) % len(CLUSTER_COLORS)]


def group_color(group: str, palette: dict[str, str]) -> str:
    """The colour of a group of picks: a cluster ``unknown U<k>`` in its shade (:func:`cluster_color`),
    ``unknown`` in :data:`UNKNOWN_COLOR`, a class as in ``palette`` (from :func:`class_colors`),
    else :data:`PICK_COLOR`."""
    k = cluster_index(group)
    if k is not None:
        return cluster_color(k)
    if str(group) == UNKNOWN_CLASS:
        return UNKNOWN_COLOR
    return palette.get(str(group), PICK_COLOR)


def group_colors(groups, model_classes: Iterable[str] | None = None) -> np.ndarray:
    """(N,) hex colours of N picks' groups (see :func:`napari_cryo_openset.layers.pick_groups`)."""
    groups = np.asarray(groups, dtype=object).astype(str)
    palette = class_colors(groups, model_classes)
    lookup = {g: group_color(g, palette) for g in set(groups.tolist())}
    return np.array([lookup[g] for g in groups], dtype=object)
