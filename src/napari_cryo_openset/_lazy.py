"""Names a module exports but imports only when first used (PEP 562).

``import napari_cryo_openset.simulate`` (or ``.adapt``, ``.picking``) must not load torch,
gemmi or scipy: the CLI parser and the napari plugin manifest import these packages at
start-up. :func:`lazy_exports` gives such a module its ``__getattr__`` and ``__dir__``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(namespace: dict, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for the module whose ``globals()`` is ``namespace``.

    ``exports`` maps a name to the submodule (relative to the module's package, with or
    without the leading dot) that defines it; a name is imported on first access and then
    kept in the module's namespace.
    """
    module_name, package = namespace["__name__"], namespace["__package__"]

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module("." + module.lstrip("."), package), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
