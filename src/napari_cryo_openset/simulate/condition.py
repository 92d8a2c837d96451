"""The imaging condition (defined with every other parameter set in :mod:`napari_cryo_openset.params`)."""

from ..params.simulation import ImagingCondition, Range

__all__ = ["ImagingCondition", "Range"]
