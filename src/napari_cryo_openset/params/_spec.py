"""Field metadata for the parameter dataclasses: unit, range, choices, help and CLI flag.

A parameter field is declared once with :func:`param`; the command line (``cli._args``), the
napari widgets (:func:`widget_options`) and the tests read its default, range and help from
here, and :func:`check_fields` validates it, so no front end repeats a default or a check.

Messages of :func:`check_fields` start with the field name (``epochs must be …``) so that a
front end can name its own option instead (``--epochs must be …``, see :func:`flag_of`).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from ..errors import ParameterError


@dataclass(frozen=True)
class Spec:
    """What a front end needs to know of one parameter field."""

    name: str
    default: Any
    help: str
    kind: str  # "int", "float", "bool", "str", "pair" (two floats) or "other"
    optional: bool  # None is allowed
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    flag: str | None = None
    expect: str | None = None  # wording of the expectation when the generic one reads badly
    metavar: str | None = None  # the value's name in --help (default: the unit, N or X)

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def expectation(self) -> str:
        """``a whole number ≥ 1``, ``> 0 Å``, ``in [0.05, 0.5]``, ``one of a, b``…"""
        if self.expect:
            return self.expect
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        unit = f" {self.unit}" if self.unit else ""
        lo = None if self.low is None else f"{'>' if self.low_open else '≥'} {self.low:g}"
        hi = None if self.high is None else f"{'<' if self.high_open else '≤'} {self.high:g}"
        if lo and hi:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            bounds = f"in {left}{self.low:g}, {self.high:g}{right}{unit}"
        elif lo or hi:
            bounds = f"{lo or hi}{unit}"
        else:
            bounds = ""
        if self.kind == "int":
            return "a whole number" + (f" {bounds}" if bounds else "")
        if self.kind == "float":
            return bounds or "a finite number"
        return bounds or f"a {self.kind}"


def param(default: Any = MISSING, *, help: str, unit: str | None = None, low: float | None = None,
          high: float | None = None, low_open: bool = False, high_open: bool = False,
          choices: tuple | None = None, flag: str | None = None, expect: str | None = None,
          metavar: str | None = None, default_factory: Any = MISSING) -> Field:
    """A dataclass field with its metadata (see :class:`Spec`); ranges are inclusive unless ``*_open``."""
    meta = {"help": help, "unit": unit, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "choices": tuple(choices) if choices is not None else None, "flag": flag, "expect": expect,
            "metavar": metavar}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={"param": meta})
    return field(default=default, metadata={"param": meta})


def _kind(annotation: str) -> tuple[str, bool]:
    text = str(annotation).replace(" ", "")
    optional = "None" in text.split("|")
    base = [t for t in text.split("|") if t != "None"]
    head = base[0] if len(base) == 1 else "other"
    if head in ("int", "float", "bool", "str"):
        return head, optional
    if head.startswith("tuple[float,float]") or head == "Range":
        return "pair", optional
    return "other", optional


def spec(cls, name: str) -> Spec:
    """The :class:`Spec` of field ``name`` of the parameter dataclass ``cls``."""
    try:
        f = cls.__dataclass_fields__[name]
    except KeyError:
        raise KeyError(f"{cls.__name__} has no field {name!r}") from None
    meta = f.metadata.get("param")
    if meta is None:
        raise KeyError(f"{cls.__name__}.{name} is not a documented parameter field")
    if f.default is not MISSING:
        default = f.default
    elif f.default_factory is not MISSING:
        default = f.default_factory()
    else:
        default = MISSING
    kind, optional = _kind(f.type)
    return Spec(name=name, default=default, kind=kind, optional=optional, **meta)


def specs(cls) -> dict[str, Spec]:
    """Every documented field of ``cls`` by name (declaration order)."""
    return {f.name: spec(cls, f.name) for f in fields(cls) if "param" in f.metadata}


def flag_of(cls, name: str) -> str:
    """The command-line option of a field (``--per-class`` for ``per_class``)."""
    return spec(cls, name).cli_flag


def widget_options(cls, name: str, **overrides) -> dict:
    """magicgui widget options (``value``, ``min``, ``max``, ``tooltip``, ``choices``) of one field."""
    s = spec(cls, name)
    opts: dict[str, Any] = {"tooltip": s.help + (f" ({s.unit})" if s.unit and s.unit not in s.help else "")}
    if s.default is not MISSING and s.default is not None:
        opts["value"] = s.default
    if s.choices is not None:
        opts["choices"] = list(s.choices)
    if s.kind in ("int", "float"):
        if s.low is not None:
            step = 1 if s.kind == "int" else 0.0
            opts["min"] = s.low + (step if s.low_open and s.kind == "int" else 0)
        if s.high is not None:
            opts["max"] = s.high
    opts.update(overrides)
    return opts


def _finite(value) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_value(s: Spec, value: Any) -> Any:
    """``value`` checked against ``s`` and converted (whole floats → int); raises ParameterError."""
    if value is None:
        if s.optional:
            return None
        raise ParameterError(f"{s.name} must be {s.expectation()}, got None")
    if s.choices is not None:
        if value not in s.choices:
            raise ParameterError(f"{s.name} must be {s.expectation()}, got {value!r}")
        return value
    if s.kind == "bool":
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise ParameterError(f"{s.name} must be True or False, got {value!r}")
        return bool(value)
    if s.kind not in ("int", "float"):
        return value
    if not _finite(value):
        raise ParameterError(f"{s.name} must be {s.expectation()}, got {value!r}")
    v = float(value)
    if s.kind == "int":
        if not v.is_integer():
            raise ParameterError(f"{s.name} must be {s.expectation()}, got {value!r}")
        v = int(v)
    too_low = s.low is not None and (v <= s.low if s.low_open else v < s.low)
    too_high = s.high is not None and (v >= s.high if s.high_open else v > s.high)
    if too_low or too_high:
        raise ParameterError(f"{s.name} must be {s.expectation()}, got {value!r}")
    return v


def check_fields(obj) -> None:
    """Validate (and normalise in place) every documented scalar field of a frozen dataclass."""
    for name, s in specs(type(obj)).items():
        if s.kind in ("int", "float", "bool") or s.choices is not None:
            object.__setattr__(obj, name, check_value(s, getattr(obj, name)))


def as_params(cls, value, name: str):
    """``value`` as an instance of the parameter dataclass ``cls`` (dicts from JSON are converted)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        from ..errors import known_fields

        return cls(**known_fields(cls, value))
    raise ParameterError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
