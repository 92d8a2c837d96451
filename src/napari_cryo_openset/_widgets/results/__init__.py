"""The Results dock (:class:`ResultsWidget`) and :func:`show_run_result`, which shows a finished
``run`` (the demo) in a viewer."""

from __future__ import annotations

from .dock import ResultsWidget

__all__ = ["ResultsWidget", "show_run_result"]

#: Point size of the predictions layer: a typical particle of the built-in library (Å).
RUN_DIAMETER = 200.0


def show_run_result(viewer, result, voxel_size: float) -> ResultsWidget:
    """Show a :class:`~napari_cryo_openset.pipeline.RunResult` in ``viewer``; return its Results dock.

    Adds the run's predictions as a Points layer ``predictions`` (class colours, the polarity and
    method in its metadata, at ``voxel_size`` Å), publishes the source model (with the set it was
    trained on) and the adapted model for the viewer's widgets, docks a Results widget on the
    right (the workflow panel at its Results step) and shows the run's map, clusters and averages in
it. The layer is made active.
    """
    from ...layers import MODEL_CLASSES_KEY, PREDICTION_KEY, picks_layer
    from ..state import viewer_state

    data, kwargs, _ = picks_layer(result.predictions, voxel_size=voxel_size, name="predictions",
                                  diameter=RUN_DIAMETER,
                                  metadata={MODEL_CLASSES_KEY: [str(c) for c in result.adapted.class_names]})
    kwargs.setdefault("metadata", {})[PREDICTION_KEY] = {"polarity": result.adaptation.polarity,
                                                         "method": result.params.method}
    layer = viewer.add_points(data, **kwargs)
    state = viewer_state(viewer)
    state.publish_source(result.model, data=result.trained.data, origin="the demo's run")
    state.publish_adapted(result.adapted, origin="the demo's run")
    from ..panel import dock_panel

    widget = dock_panel(viewer, "Results").results  # the workflow panel, at its Results step
    widget.show_embedding(layer, result.embedded)
    viewer.layers.selection.active = layer
    return widget
