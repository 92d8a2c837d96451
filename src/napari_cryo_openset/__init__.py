"""napari-cryo-openset: find and recognise macromolecules in cryo-electron tomograms.

The core (``io``, ``picks``, ``picking``, ``simulate``, ``models``, ...) imports neither Qt nor
napari; the napari contributions live in ``_reader``, ``_writer``, ``_sample_data`` and
``_widgets``. Arrays are (Z, Y, X); voxel sizes are in Å.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
