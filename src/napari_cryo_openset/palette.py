"""The class palette: one colour per class name, defined once for viewer, plots and exports.

Known classes get colours from a fixed, colour-blind-aware categorical list in the order of the
*sorted* class names (so a class keeps its colour between runs). ``unknown`` has a reserved
colour (magenta) that no known class uses; picks with no class yet use :data:`PICK_COLOR`.
"""

from __future__ import annotations

from collections.abc import Iterable

from .picks import UNKNOWN_CLASS

#: Reserved for the open-set label ``unknown``: never given to a known class.
UNKNOWN_COLOR = "#ff00ff"
#: Picks without a class (fresh picks, ground-truth markers).
PICK_COLOR = "#ffd700"

# Okabe-Ito + Tol bright/muted, without magenta-like hues (kept for "unknown").
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
    "#bbbbbb",
    "#66ccee",
    "#228833",
    "#ccbb44",
    "#ee6677",
    "#4477aa",
)


def class_colors(class_names: Iterable[str]) -> dict[str, str]:
    """Map each class name to a hex colour; ``unknown`` (and empty names) get reserved colours."""
    names = sorted({str(n) for n in class_names})
    known = [n for n in names if n and n != UNKNOWN_CLASS]
    colors = {n: _CATEGORICAL[i % len(_CATEGORICAL)] for i, n in enumerate(known)}
    colors[UNKNOWN_CLASS] = UNKNOWN_COLOR
    colors[""] = PICK_COLOR
    return colors


def group_color(group: str, palette: dict[str, str]) -> str:
    """The colour of a group of picks: ``unknown`` and its clusters ``unknown U<k>`` in
    :data:`UNKNOWN_COLOR`, a class as in ``palette`` (from :func:`class_colors`), else :data:`PICK_COLOR`."""
    if str(group).startswith(UNKNOWN_CLASS):
        return UNKNOWN_COLOR
    return palette.get(str(group), PICK_COLOR)
