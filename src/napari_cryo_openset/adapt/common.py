"""The constants both adaptation methods share, and their parameters (no torch import).

:class:`~napari_cryo_openset.params.AdaptParams` (re-exported here) is defined with every other
parameter set in :mod:`napari_cryo_openset.params`. The data (:mod:`.source`), the shared
optimisation loop (:mod:`.loop`) and the open-set calibration (:mod:`.calibrate`) live in their
own modules.
"""

from __future__ import annotations

from .._lazy import lazy_exports
from ..params import DEFAULT_LEARNING_RATE, METHODS, AdaptParams  # noqa: F401 (re-exported)

#: Fewer active picks than this are refused: the target batch statistics would be noise.
MIN_TARGET_PICKS = 16

# load_source, re-exported without loading torch here
__getattr__, __dir__ = lazy_exports(globals(), {"load_source": "source"})
