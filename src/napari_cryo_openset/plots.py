"""The embedding map (t-SNE of the picks), drawn once for the ``run`` PNG and the Results dock.

Matplotlib ``Figure``/``Axes`` only (no Qt, no pyplot): the caller owns the figure — an Agg
figure saved as ``embedding.png`` by ``run`` (:func:`plot_embedding`), or the Qt canvas of the
Results widget. Colours come from the one palette (:mod:`napari_cryo_openset.palette`):
unknown picks and their clusters in the reserved unknown colour, each cluster ``U<k>`` labelled
at its centre, so a candidate new structure looks the same in the file and in the viewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Colour of points in a group hidden in the Results table (still on the map, greyed).
HIDDEN_COLOR = "#808080"


@dataclass(frozen=True)
class MapStyle:
    """How the map looks: background and text colours, point size (points²), the legend and
    rings around the members of each cluster (the Results dock leaves both out: its table is the
    legend, and its ring marks the selected picks)."""

    background: str = "#ffffff"
    foreground: str = "#222222"
    point_size: float = 10.0
    label_size: float = 9.0
    legend: bool = True
    ring_clusters: bool = True


def draw_embedding(ax, xy: np.ndarray, groups, *, hidden=None, style: MapStyle = MapStyle(),
                   model_classes=None) -> np.ndarray:
    """Draw the map of picks on ``ax``; return the indices of the points drawn in colour.

    ``xy``: (N, 2) map coordinates (NaN rows are not drawn: picks with no place on the map);
    ``groups``: the group of every pick (its class, ``unknown U<k>``, ``unknown`` or ``""``, as
    :func:`napari_cryo_openset.layers.pick_groups` gives them); ``hidden``: optional (N,) mask of
    picks drawn grey (their group is hidden in the Results table) and not returned. Known
    classes are drawn first, unknowns on top, each cluster in its own shade of the unknown
    family; the legend (``style.legend``) counts the picks of each group. ``model_classes``: the
    model's class list, which orders the palette (so colours match the viewer's).
    """
    from .layers import NO_CLASS, group_order, is_cluster
    from .palette import UNKNOWN_COLOR, class_colors, group_color

    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    groups = np.asarray(groups, dtype=object).astype(str)
    mapped = np.isfinite(xy).all(axis=1)
    hidden = np.zeros(len(xy), bool) if hidden is None else np.asarray(hidden, bool)
    grey = mapped & hidden
    shown = mapped & ~hidden
    palette = class_colors([g for g in set(groups.tolist()) if not is_cluster(g)], model_classes)

    ax.set_facecolor(style.background)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(style.foreground)
    if grey.any():
        ax.scatter(xy[grey, 0], xy[grey, 1], s=style.point_size / 2, c=HIDDEN_COLOR, alpha=0.3, linewidths=0)
    for name in group_order(groups[shown]):
        sel = shown & (groups == name)
        label = f"{'unclassified' if name == NO_CLASS else name} ({int(sel.sum())})"
        ax.scatter(xy[sel, 0], xy[sel, 1], s=style.point_size, c=group_color(name, palette), linewidths=0,
                   label=label)
    for group in group_order(groups[mapped]):
        if not is_cluster(group):
            continue
        members = mapped & (groups == group)
        if style.ring_clusters:
            ax.scatter(xy[members, 0], xy[members, 1], s=style.point_size * 1.6, facecolors="none",
                       edgecolors=style.foreground, linewidths=0.6)
        cx, cy = xy[members].mean(axis=0)
        ax.annotate(group.split(" ")[-1], (cx, cy), color=style.foreground, fontsize=style.label_size,
                    ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.2", "fc": style.background, "ec": UNKNOWN_COLOR, "alpha": 0.8})
    if style.legend and shown.any():
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, markerscale=1.5,
                  labelcolor=style.foreground)
    # points in the order they were drawn (known classes first), for looking up a click
    return np.concatenate([np.flatnonzero(shown & (groups == name)) for name in group_order(groups[shown])]
                          or [np.zeros(0, dtype=int)]).astype(int)


def plot_embedding(picks: pd.DataFrame, path, title: str = "", model_classes=None) -> Path:
    """Save the t-SNE map of ``picks`` (``tsne_x/y``, ``class_name``, ``cluster``) as a PNG, atomically;
    colours as in the viewer (classes ordered by the model's ``model_classes``)."""
    from matplotlib.figure import Figure

    from .errors import PicksError
    from .io import atomic_path
    from .layers import pick_groups

    if "tsne_x" not in picks.columns:
        raise PicksError("the picks have no map coordinates (tsne_x, tsne_y) to plot")
    fig = Figure(figsize=(6.4, 5.2), dpi=120)
    ax = fig.add_subplot(111)
    draw_embedding(ax, picks[["tsne_x", "tsne_y"]].to_numpy(dtype=float), pick_groups(picks),
                   model_classes=model_classes)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
