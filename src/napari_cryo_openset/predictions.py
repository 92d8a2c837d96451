"""Predictions in a picks layer, and the unknown threshold moved after a run (no Qt, no napari).

The Model and Adapt & predict widgets classify the *active* picks of a Points layer (not
rejected, above the Pick widget's live threshold); the layer keeps every point, so the results
go back row by row (:func:`prediction_features`, :func:`write_predictions`). A user who moves
the unknown threshold re-decides ``unknown`` from the stored outputs without re-running the
network (:func:`redecide_unknowns`, :func:`picks_at_threshold`) and gets a *new* bundle that
records it (:func:`with_threshold`): bundles another widget holds are never changed under it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

#: Prediction columns written back into a picks layer (with their "not predicted" values).
PREDICTION_COLUMNS = {"class_name": "", "confidence": np.nan, "unknown_score": np.nan, "is_unknown": False}


def prediction_features(features: pd.DataFrame, predicted: pd.DataFrame, rows) -> pd.DataFrame:
    """``features`` of a layer's N points with the prediction columns of ``predicted`` at ``rows``.

    ``predicted`` holds one row per entry of ``rows`` (indices into the N points); points not
    in ``rows`` get no prediction (empty class, NaN confidence and score, not unknown).
    """
    n = len(features)
    out = features.copy().reset_index(drop=True)
    rows = np.asarray(rows, dtype=int)
    for column, empty in PREDICTION_COLUMNS.items():
        dtype = {"class_name": object, "is_unknown": bool}.get(column, float)
        values = np.full(n, empty, dtype=dtype)
        values[rows] = predicted[column].to_numpy()
        out[column] = pd.Series(values, dtype=str if column == "class_name" else dtype)
    return out


def write_predictions(layer, predicted: pd.DataFrame, rows, model_classes=None) -> None:
    """Write prediction columns into a Points ``layer`` for every point; colour its borders by class.

    ``layer`` is a napari Points layer (used through its attributes: this module imports no
    napari). See :func:`prediction_features` for ``predicted`` and ``rows``. ``model_classes``:
    the class list of the model that predicted (kept in the layer's metadata; the palette's
    order). Points added by hand later start with no class.
    """
    from .layers import pick_feature_defaults

    features = prediction_features(layer.features, predicted, rows)
    layer.features = features
    layer.feature_defaults = pick_feature_defaults(features)
    color_picks(layer, model_classes)


def color_picks(layer, model_classes=None) -> None:
    """Colour the borders of a Points ``layer`` by group through the one palette: classes in the
    order of the model's class list (``model_classes``, else the one kept in its metadata),
    each unknown cluster its shade, ``unknown``/``empty`` their reserved colours."""
    from .layers import MODEL_CLASSES_KEY, pick_colors

    if model_classes is not None:
        layer.metadata[MODEL_CLASSES_KEY] = [str(c) for c in model_classes]
    if not len(layer.data):
        return
    layer.border_color = pick_colors(layer.features, layer.metadata.get(MODEL_CLASSES_KEY))
    layer.refresh()


def redecide_unknowns(bundle, predictions, threshold: float):
    """Class names and unknown flags of ``predictions`` under another unknown ``threshold``.

    Re-applies the bundle's one open-set rule (:func:`napari_cryo_openset.predict.score_outputs`)
    to the stored outputs: the calibrated probabilities p = softmax(z / T) give back logits
    T·log p up to a constant, which leaves the softmax — and so class and confidence — as it
    was; only the threshold changes.
    """
    import torch

    from .predict import score_outputs

    temperature = float(bundle.openset.get("temperature") or 1.0)
    probs = torch.as_tensor(np.asarray(predictions.probabilities, dtype=np.float64))
    logits = torch.log(probs.clamp_min(1e-300)) * temperature
    out = score_outputs(bundle, logits, torch.as_tensor(np.asarray(predictions.features)), float(threshold))
    return out.class_name, out.is_unknown


def picks_at_threshold(adaptation, bundle, threshold: float | None) -> pd.DataFrame:
    """The picks of an :class:`~napari_cryo_openset.adapt.run.TomogramAdaptation` with classes decided
    at ``threshold`` (None: as the run decided them, at the calibrated threshold)."""
    picks = adaptation.picks.copy()
    if threshold is None:
        return picks
    active = (picks["curation"] != "rejected").to_numpy()
    names, unknown = redecide_unknowns(bundle, adaptation.result.predictions, threshold)
    picks.loc[active, "class_name"] = names
    picks.loc[active, "is_unknown"] = unknown
    return picks


def with_threshold(bundle, threshold: float, calibrated: float | None = None):
    """A copy of ``bundle`` that calls ``unknown`` above ``threshold``; ``bundle`` is left as it is.

    ``calibrated``: the threshold the adaptation calibrated, recorded beside an overriding one
    (None: ``threshold`` *is* the calibrated one, and no override is recorded). The network and
    everything else are shared, not copied.
    """
    openset = {**bundle.openset, "threshold": float(threshold)}
    openset.pop("calibrated_threshold", None)
    if calibrated is not None:
        openset["calibrated_threshold"] = float(calibrated)
    return replace(bundle, openset=openset)
