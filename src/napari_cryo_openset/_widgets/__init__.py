"""napari dock widgets (Qt side). Each is thin: parameters in, a core generator in a worker,
results into layers."""
