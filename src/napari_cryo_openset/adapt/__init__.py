"""On-the-fly domain adaptation: 3D-ADA (:mod:`.ada`), MLUDA (:mod:`.mluda`), losses (:mod:`.losses`).

Entry points: :func:`adapt_boxes` (canonical target boxes) and :func:`adapt_to_tomogram`
(extract the active picks of a tomogram, adapt, predict). Both are generators yielding
:class:`~napari_cryo_openset.progress.Progress` and returning the result; parameters in
:class:`AdaptParams`. No Qt or napari imports; torch is loaded when a name is first used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AdaptParams": "common",
    "SourceData": "common",
    "load_source": "common",
    "METHODS": "common",
    "AdaptResult": "result",
    "adapt_ada": "ada",
    "adapt_mluda": "mluda",
    "adapt_boxes": "run",
    "adapt_to_tomogram": "run",
    "TomogramAdaptation": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
