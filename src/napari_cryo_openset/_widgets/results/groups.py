"""The groups of a picks layer as the Results dock shows them (no Qt): one snapshot per refresh.

A *group* is a class, a cluster of unknown picks ``unknown U<k>``, the unknowns in no cluster
(``unknown``) or the picks with no class (``""``); see :func:`napari_cryo_openset.layers.pick_groups`.
Only *active* picks count (not rejected, above the Pick widget's live threshold). The groups the
user hid are in the layer's metadata (:data:`~napari_cryo_openset.layers.HIDDEN_GROUPS_KEY`),
so the Pick widget's slider keeps them hidden too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...layers import HIDDEN_GROUPS_KEY, NO_CLASS, SCORE_THRESHOLD_KEY, group_order, is_cluster, pick_groups


#: What to do with picks that have no predictions.
NO_PREDICTIONS = "classify its picks first (Model ▸ Predict, or Adapt & predict)"


def hidden_groups(layer) -> set[str]:
    """The groups whose picks are hidden in ``layer`` (a Points layer, or None)."""
    if layer is None:
        return set()
    return {str(g) for g in layer.metadata.get(HIDDEN_GROUPS_KEY, ())}


def hide_groups(layer, hidden) -> None:
    """Hide the picks of the ``hidden`` groups of ``layer``: ``shown`` = active (not rejected,
    above the live threshold) and in no hidden group; the groups go into its metadata."""
    from ...layers import visible_picks_mask

    layer.shown = visible_picks_mask(layer.features, layer.metadata.get(SCORE_THRESHOLD_KEY), sorted(hidden))
    # a new metadata dict: its event tells the legend (``shown`` has no event of its own)
    layer.metadata = {**layer.metadata, HIDDEN_GROUPS_KEY: sorted(hidden)}


@dataclass
class PicksGroups:
    """Group, active state and map position of every point of a picks layer, as it is now."""

    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # (N,) str
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (N,)
    xy: np.ndarray | None = None  # (N, 2) tsne_x, tsne_y (NaN where none); None: no map
    hidden: set = field(default_factory=set)  # groups hidden by the user
    palette: dict = field(default_factory=dict)  # class name → colour, as the layer's borders
    order: list = field(default_factory=list)  # the groups of the active picks, table order
    model_classes: list | None = None  # the class list of the model that predicted (palette order)

    @classmethod
    def of(cls, layer) -> PicksGroups:
        """The snapshot of a Points ``layer`` (an empty one for None)."""
        from ...layers import visible_picks_mask
        from ...palette import class_colors

        if layer is None:
            return cls(palette=class_colors([]))
        features = layer.features
        groups = pick_groups(features).astype(str).astype(object)
        active = visible_picks_mask(features, layer.metadata.get(SCORE_THRESHOLD_KEY))
        xy = None
        if {"tsne_x", "tsne_y"} <= set(features.columns):
            xy = features[["tsne_x", "tsne_y"]].to_numpy(dtype=float)
            xy = xy if np.isfinite(xy).all(axis=1).any() else None
        from ...layers import MODEL_CLASSES_KEY

        names = features["class_name"].astype(str) if "class_name" in features.columns else []
        model_classes = layer.metadata.get(MODEL_CLASSES_KEY)
        palette = class_colors(names, model_classes)
        return cls(groups, active, xy, hidden_groups(layer), palette, group_order(groups[active]), model_classes)

    def count(self, group: str) -> int:
        """Active picks in ``group``."""
        return int(np.sum(self.active & (self.groups == group)))

    @property
    def classified(self) -> int:
        """Active picks with a class."""
        return int(np.sum(self.active & (self.groups != NO_CLASS)))

    @property
    def hidden_mask(self) -> np.ndarray:
        """Points in a hidden group."""
        return np.isin(self.groups.astype(str), sorted(self.hidden))

    def members(self, group: str) -> np.ndarray:
        """Active points of ``group``."""
        return self.active & (self.groups.astype(str) == group)

    def label(self, group: str) -> str:
        """The group's name in the table: ``no class``, ``other unknowns`` beside clusters, else itself."""
        from ...picks import UNKNOWN_CLASS

        if group == NO_CLASS:
            return "no class"
        if group == UNKNOWN_CLASS and any(is_cluster(g) for g in self.order):
            return "other unknowns"  # in no cluster (HDBSCAN noise)
        return group

    def describe(self, group: str) -> str:
        """What the group is, for a tooltip."""
        from ...picks import UNKNOWN_CLASS

        if is_cluster(group):
            return f"{group}: a cluster of unknown picks (a candidate new structure)"
        if group == UNKNOWN_CLASS:
            return "unknown picks in no cluster" if self.label(group) != group else "unknown picks"
        return "picks without a class" if group == NO_CLASS else f"picks classified as {group}"


def summary_text(layer, view: PicksGroups, result=None) -> str:
    """One line on the picks layer: how many active picks have a class, and the embedding
    ``result`` made for it (None: none yet)."""
    if layer is None:
        return "Choose a picks layer with predictions (Model ▸ Predict, or Adapt & predict)."
    if "class_name" not in layer.features.columns or view.classified == 0:
        return f"'{layer.name}' has no predictions yet: {NO_PREDICTIONS}."
    text = f"'{layer.name}': {view.classified} of {int(view.active.sum())} active picks classified."
    if result is not None:
        text += f" {result.summary()}; polarity {result.polarity}."
    elif view.xy is None:
        text += " Embed & cluster to map them and find groups among the unknowns."
    return text
