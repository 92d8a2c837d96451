"""Form fields built from the parameter dataclasses: default, range and tooltip come from
:mod:`napari_cryo_openset.params`, so a widget cannot disagree with the CLI or the core.

Each field remembers the parameter it shows (Qt property ``param``: ``"TrainParams.epochs"``);
``tests/test_params.py`` walks the docks and checks every such field against the dataclass.
"""

from __future__ import annotations

from qtpy.QtWidgets import QDoubleSpinBox, QSpinBox

from ..params import spec

#: Qt property naming the parameter a field shows.
PARAM_PROPERTY = "param"


def spin(lo: float, hi: float, value: float, *, integer: bool = False, decimals: int | None = None,
         suffix: str = "", step: float | None = None, special: str = "", tip: str = ""):
    """A QSpinBox (``integer``) or QDoubleSpinBox with its range, value, suffix, step and tooltip."""
    box = QSpinBox() if integer else QDoubleSpinBox()
    if not integer and decimals is not None:
        box.setDecimals(decimals)
    box.setRange(int(lo) if integer else float(lo), int(hi) if integer else float(hi))
    box.setValue(int(value) if integer else float(value))
    if suffix:
        box.setSuffix(suffix)
    if step is not None:
        box.setSingleStep(step)
    if special:
        box.setSpecialValueText(special)
    if tip:
        box.setToolTip(tip)
    return box


def param_spin(base, name: str, *, high: float | None = None, low: float | None = None, decimals: int | None = None,
               suffix: str = "", step: float | None = None, special: str = "", tip: str = ""):
    """A spin box for field ``name`` of the parameter dataclass ``base`` (a class, or an instance whose
    value is the default): integer fields get a QSpinBox, the others a QDoubleSpinBox. ``high`` (and
    ``low``) bound what the dataclass leaves open; ``special`` names the minimum (e.g. "auto")."""
    cls = base if isinstance(base, type) else type(base)
    s = spec(cls, name)
    default = s.default if isinstance(base, type) else getattr(base, name)
    is_int = s.kind == "int"
    lo = low if low is not None else (s.low if s.low is not None else (-1e9 if not is_int else -(2**31 - 1)))
    if s.low_open and low is None:
        lo = lo + 1 if is_int else lo + 10 ** -(decimals if decimals is not None else 2)
    hi = high if high is not None else (s.high if s.high is not None else (2**31 - 1 if is_int else 1e9))
    box = spin(lo, hi, 0 if default is None else default, integer=is_int, decimals=decimals, suffix=suffix, step=step,
               special=special,
               tip=tip or (s.help[:1].upper() + s.help[1:] + (f" ({s.unit})" if s.unit and s.unit not in s.help else "")))
    box.setProperty(PARAM_PROPERTY, f"{cls.__name__}.{name}")
    return box
