"""Small viewer helpers shared by the demo and the dock widgets (napari side)."""

from __future__ import annotations


def show_particles_across_slices(viewer, diameter_angstrom: float, axis: int = 0) -> str:
    """Make picks visible on every slice that cuts the particle; return what changed, for the user.

    Points layers use ``projection_mode='rescale_spherical'``: a pick is drawn, shrinking, on
    slices within its radius. napari 0.9 takes that range from the dims margins (a thick slice),
    and image layers would average that slab (their default projection is ``mean``): the
    tomograms are set to ``projection_mode='none'`` so they still show a single plane.
    """
    radius = max(0.0, float(diameter_angstrom) / 2.0)
    left = list(viewer.dims.margin_left)
    right = list(viewer.dims.margin_right)
    left[axis] = right[axis] = radius
    viewer.dims.margin_left = tuple(left)
    viewer.dims.margin_right = tuple(right)
    from napari.layers import Image

    for layer in viewer.layers:
        if isinstance(layer, Image) and layer.ndim >= 3 and layer.projection_mode != "none":
            layer.projection_mode = "none"  # one plane, not the mean of the slab
    return (f"picks are drawn on every slice within ±{radius:.0f} Å of their centre (dims margins); "
            "tomograms still show a single plane")


def go_to_pick(viewer, layer, row: int) -> None:
    """Centre the view on point ``row`` of the Points ``layer``: the slice through it and the camera.

    Goes through the layer's own transform (``scale`` = voxel size in Å, ``translate``), so a
    picks layer shifted against its tomogram still lands on its point. Selects the point.
    """
    import numpy as np

    layer.selected_data = {int(row)}
    world = np.asarray(layer.data_to_world(np.asarray(layer.data[row], dtype=float)), dtype=float)
    dims = viewer.dims
    point = np.asarray(dims.point, dtype=float)
    point[-len(world):] = world
    for axis in dims.not_displayed:
        dims.set_point(axis, point[axis])
    camera_of(viewer).center = tuple(point[list(dims.displayed)])


def camera_of(viewer):
    """The viewer's camera: ``viewer.scene.camera`` in napari ≥ 0.9 (``viewer.camera`` is deprecated there)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
