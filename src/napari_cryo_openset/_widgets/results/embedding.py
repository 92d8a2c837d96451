"""Results: the Embed & cluster settings, and writing a finished embedding into the picks layer."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QGroupBox, QPushButton

from ...layers import EMBEDDING_KEY, HIDDEN_GROUPS_KEY, PREDICTION_KEY, is_cluster
from .._choice import PICKS, TOMOGRAMS, LayerCombo, polarity_combo
from .._form import param_spin
from .._layout import form
from .groups import hidden_groups

_POLARITY_TIP = "Is protein dark (raw reconstruction) or bright (inverted) in this tomogram?"


def prediction_snapshot(layer) -> tuple:
    """The predictions of a layer, to tell whether they changed while embedding."""
    features = layer.features
    names = tuple(features["class_name"].astype(str)) if "class_name" in features.columns else ()
    unknown = tuple(features["is_unknown"].astype(bool)) if "is_unknown" in features.columns else ()
    return names, unknown


def prediction_polarity(layer) -> str | None:
    """The polarity the layer's predictions were made with (None if not recorded)."""
    meta = (layer.metadata or {}).get(PREDICTION_KEY) if layer is not None else None
    polarity = meta.get("polarity") if isinstance(meta, dict) else None
    return polarity if polarity in ("dark", "bright") else None


class EmbedSettings(QGroupBox):
    """Tomogram, picks layer, polarity and the t-SNE / clustering settings, and the button."""

    def __init__(self, viewer) -> None:
        from ...embed import EmbedParams

        super().__init__("Embed && cluster")
        defaults = EmbedParams()
        self.image_combo = LayerCombo(viewer, TOMOGRAMS, "The tomogram the picks are in")
        self.picks_combo = LayerCombo(viewer, PICKS, "Picks with predictions (class_name, from Predict or "
                                                     "Adapt & predict); the map and clusters go into its features")
        self.polarity = polarity_combo(_POLARITY_TIP)
        self.perplexity = param_spin(defaults, "perplexity", low=2.0, high=500.0, decimals=0,
                                     tip="t-SNE neighbourhood size (capped at (picks − 1) / 3)")
        self.min_cluster = param_spin(defaults, "min_cluster_size", high=100_000,
                                      tip="The fewest unknown picks reported as a cluster (a candidate new structure)")
        self.iterations = param_spin(defaults, "iterations", high=100_000, step=100,
                                     tip="t-SNE rounds after the 250 early-exaggeration ones")
        self.embed_button = QPushButton("Embed && cluster")
        self.embed_button.setToolTip("Map the classified picks with t-SNE, cluster the unknown ones and average "
                                     "every class and cluster (in the background)")
        form([("Tomogram", self.image_combo), ("Picks layer", self.picks_combo), ("Polarity", self.polarity),
              ("Perplexity", self.perplexity), ("t-SNE rounds", self.iterations),
              ("Min cluster size", self.min_cluster), self.embed_button], self)

    def params(self):
        """The :class:`~napari_cryo_openset.embed.EmbedParams` the settings describe."""
        from ...embed import EmbedParams

        return EmbedParams(perplexity=float(self.perplexity.value()), iterations=int(self.iterations.value()),
                           min_cluster_size=int(self.min_cluster.value()))

    def set_state(self, layer, busy: bool, have_model: bool) -> None:
        """Enable what can be used; the polarity the layer's predictions were made with is fixed."""
        polarity = prediction_polarity(layer)
        if polarity is not None:
            self.polarity.setCurrentText(polarity)
            self.polarity.setToolTip(f"{polarity}: the polarity the predictions of this layer were made with")
        else:
            self.polarity.setToolTip(_POLARITY_TIP)
        self.polarity.setEnabled(polarity is None and not busy)
        self.embed_button.setEnabled(not busy and have_model)


def write_embedding(layer, result, rows) -> list[str]:
    """Write ``result`` (a :class:`~napari_cryo_openset.embed.PicksEmbedding` of the points ``rows``)
    into ``layer``: ``tsne_x``, ``tsne_y``, ``cluster`` for every point (none for the others), the
    run in its metadata. Returns the groups still hidden (clusters of an earlier run mean nothing now).
    """
    import pandas as pd

    from ...layers import pick_feature_defaults
    from ...predictions import color_picks

    n = len(layer.data)
    features = layer.features.copy().reset_index(drop=True)
    for column, empty, dtype in (("tsne_x", np.nan, float), ("tsne_y", np.nan, float), ("cluster", -1, np.int64)):
        values = np.full(n, empty, dtype=dtype)
        values[rows] = result.picks[column].to_numpy(dtype=dtype)
        features[column] = pd.Series(values, dtype=dtype)
    hidden = sorted(g for g in hidden_groups(layer) if not is_cluster(g))
    layer.metadata[HIDDEN_GROUPS_KEY] = hidden
    layer.metadata[EMBEDDING_KEY] = {"method": result.embedding.method, "perplexity": result.embedding.perplexity,
                                     "clusters": result.embedding.cluster_sizes, "polarity": result.polarity,
                                     "voxel_size": result.voxel_size}
    layer.features = features
    layer.feature_defaults = pick_feature_defaults(features)  # hand-added points: no map, no cluster
    color_picks(layer)  # each cluster its shade of the unknown family
    return hidden
