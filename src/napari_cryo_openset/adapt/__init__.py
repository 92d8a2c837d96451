"""On-the-fly domain adaptation: 3D-ADA (:mod:`.ada`), MLUDA (:mod:`.mluda`), losses (:mod:`.losses`).

Entry points: :func:`adapt_boxes` (canonical target boxes) and :func:`adapt_to_tomogram`
(extract the active picks of a tomogram, adapt, predict); :func:`adapt_to_tomograms` (one
adaptation to the pooled picks of several tomograms) and :func:`apply_adaptation` (predict a
tomogram with an adaptation made elsewhere); :func:`refine_with_labels` (the same
with the user's curated picks as labelled targets, :mod:`.refine`). Both are generators yielding
:class:`~napari_cryo_openset.progress.Progress` and returning the result; parameters in
:class:`AdaptParams`. No Qt or napari imports; torch is loaded when a name is first used.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "AdaptParams": "common",
    "SourceData": "source",
    "load_source": "source",
    "METHODS": "common",
    "AdaptResult": "result",
    "adapt_ada": "ada",
    "adapt_mluda": "mluda",
    "adapt_boxes": "run",
    "adapt_to_tomogram": "run",
    "adapt_to_tomograms": "run",
    "apply_adaptation": "run",
    "TomogramAdaptation": "run",
    "refine_with_labels": "refine",
    "Refinement": "refine",
    "LabelledTargets": "loop",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
