"""napari dock widgets (Qt side). Each is thin: parameters in, a core generator in a worker,
results into layers. :func:`show_run_result` shows a finished ``run`` (the demo) in a viewer."""

from .results import show_run_result

__all__ = ["show_run_result"]
