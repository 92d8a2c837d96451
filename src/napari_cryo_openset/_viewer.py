"""Small viewer helpers shared by the demo and the dock widgets (napari side)."""

from __future__ import annotations


def show_particles_across_slices(viewer, diameter_angstrom: float, axis: int = 0) -> None:
    """Make picks visible on every slice that cuts the particle.

    Points layers use ``projection_mode='rescale_spherical'``: a pick is drawn, shrinking, on
    slices within its radius. napari 0.9 takes that range from the dims margins (a thick slice);
    image layers keep ``projection_mode='none'`` and still show a single plane.
    """
    radius = max(0.0, float(diameter_angstrom) / 2.0)
    left = list(viewer.dims.margin_left)
    right = list(viewer.dims.margin_right)
    left[axis] = right[axis] = radius
    viewer.dims.margin_left = tuple(left)
    viewer.dims.margin_right = tuple(right)
