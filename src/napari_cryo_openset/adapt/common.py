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



def source_mismatch(bundle, source) -> str | None:
    """Why ``source`` (a simulated set) is not the set ``bundle`` was trained on (None if it fits)."""
    if bundle is None or source is None:
        return None
    if list(source.class_names) != list(bundle.class_names):
        return (f"the source set's classes ({', '.join(source.class_names)}) are not the model's "
                f"({', '.join(bundle.class_names)})")
    if int(source.box) != int(bundle.box_size):
        return f"the source set has {source.box}³ boxes but the model expects {bundle.box_size}³"
    return None


def is_adapted(bundle) -> bool:
    """Whether ``bundle`` is the result of an adaptation (adapt the source model, not this one)."""
    return bundle is not None and bundle.openset.get("method") == "centre" and "adaptation" in bundle.provenance


# load_source, re-exported without loading torch here
__getattr__, __dir__ = lazy_exports(globals(), {"load_source": "source"})
