"""palette.py: a class keeps its colour whatever classes are present; reserved colours; cluster shades."""

from __future__ import annotations

import numpy as np

from napari_cryo_openset.palette import (
    CLUSTER_COLORS,
    EMPTY_COLOR,
    PICK_COLOR,
    UNKNOWN_COLOR,
    class_colors,
    group_color,
    group_colors,
)

MODEL = ["1bxn", "1qvr", "2cg9", "3j9i", "4v4r", "empty", "unknown"]


def _hue(hex_color: str) -> float:
    import colorsys

    r, g, b = (int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


def test_a_class_keeps_its_colour_whatever_classes_are_present():
    full = class_colors(MODEL, MODEL)
    for present in (["4v4r"], ["4v4r", "empty"], ["1qvr", "4v4r", "unknown"], ["2cg9", "4v4r", "1bxn"]):
        colors = class_colors(present, MODEL)
        for name in present:
            assert colors[name] == full[name], (present, name)
    # empty and unknown: reserved, never a known class's colour
    assert full["empty"] == EMPTY_COLOR and full["unknown"] == UNKNOWN_COLOR and full[""] == PICK_COLOR
    known = [full[c] for c in MODEL if c not in ("empty", "unknown")]
    assert len(set(known)) == len(known) and not {EMPTY_COLOR, UNKNOWN_COLOR, PICK_COLOR} & set(known)
    # a class the model does not know (a file's picks) follows the model's ones, not among them
    assert class_colors(["zzz"], MODEL)["zzz"] not in known


def test_each_cluster_has_its_own_shade_of_the_unknown_family():
    palette = class_colors(MODEL, MODEL)
    u = [group_color(f"unknown U{k}", palette) for k in range(len(CLUSTER_COLORS))]
    assert len(set(u)) == len(u) and UNKNOWN_COLOR not in u
    assert group_color("unknown U0", palette) != group_color("unknown U1", palette)
    known = {palette[c] for c in MODEL if c not in ("empty", "unknown")}
    assert not known & set(u)
    for shade in u:  # magenta / purple / pink family: hue 270–335°
        assert 270 <= _hue(shade) <= 335, shade
    colors = group_colors(np.array(["4v4r", "unknown U1", "unknown", ""], dtype=object), MODEL)
    assert list(colors) == [palette["4v4r"], CLUSTER_COLORS[1], UNKNOWN_COLOR, PICK_COLOR]
