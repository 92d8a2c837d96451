"""One place for every default: the parameter dataclasses, the CLI options generated from them.

Every option of a subcommand whose destination is a documented field must (1) leave the parser's
default unset (``None``: the dataclass default applies) and (2) show the dataclass's default in
``--help``; parsing a command line without the option must give the dataclass default.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import subprocess
import sys

import pytest

from napari_cryo_openset import params as P
from napari_cryo_openset.cli import _args, build_parser, run, simulate
from napari_cryo_openset.errors import ParameterError

#: subcommand → the parameter set (class or the instance holding the command's defaults) per option.
SOURCES = {
    "pick": [P.PickingParams],
    "simulate": [P.ImagingCondition, P.DatasetParams],
    "train": [P.TrainParams],
    "predict": [P.PredictParams],
    "adapt": [P.AdaptParams],
    "run": [run._DEFAULTS, run._DEFAULTS.source, run._DEFAULTS.source.condition, P.PickingParams],
    "batch": [run._DEFAULTS, run._DEFAULTS.source, run._DEFAULTS.source.condition, P.PickingParams],
}


def _subparser(name: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[name]


def _field_actions(command: str):
    """(action, spec, default) for each option of ``command`` that is a documented field."""
    out = []
    for action in _subparser(command)._actions:
        for base in SOURCES[command]:
            cls = base if isinstance(base, type) else type(base)
            if action.dest in P.specs(cls):
                out.append((action, P.spec(cls, action.dest), _args._default(base, action.dest)))
                break
    return out


@pytest.mark.parametrize("command", sorted(SOURCES))
def test_cli_help_shows_the_dataclass_default(command):
    actions = _field_actions(command)
    assert len(actions) >= 3, command
    for action, spec, default in actions:
        assert action.default is None, (command, action.dest)  # unset → the dataclass default applies
        if action.required or default is None or spec.kind == "bool":
            continue
        shown = " ".join(f"{v:g}" for v in default) if spec.kind == "pair" else (
            f"{default:g}" if isinstance(default, float) else str(default))
        assert f"default {shown}" in action.help.replace("%%", "%"), (command, action.dest, action.help)


def test_unset_options_build_the_dataclass_defaults():
    args = _subparser("train").parse_args(["s.npz", "-o", "m.pt"])
    assert _args.build(P.TrainParams, args, ("epochs", "batch_size", "learning_rate", "amp")) == P.TrainParams()
    ns = build_parser().parse_args(["simulate", "--templates", "builtin", "--voxel-size", "10", "--box", "32",
                                    "--per-class", "100", "-o", "/tmp/x.npz"])
    data, _ = simulate.params_from_args(ns)
    assert data == P.DatasetParams()
    ns = build_parser().parse_args(["run", "--tomo", "t.mrc", "--templates", "builtin", "--diameter", "150",
                                    "--method", "mluda", "-o", "out"])
    params = run.run_params_from_args(ns)
    # the command line says which condition values the user gave (here: none but the header's voxel size)
    assert params.given == ("voxel_size",)
    assert replace(params, given=None) == P.RunParams(P.PickingParams(150.0))
    assert (params.source.neighbours, params.source.background, params.source.max_shift) == (1.0, 0.05, 2.0)


def test_core_messages_name_the_option_on_the_command_line():
    ns = build_parser().parse_args(["train", "s.npz", "-o", "m.pt", "--epochs", "0"])
    with pytest.raises(ParameterError, match="^--epochs must be a whole number ≥ 1, got 0$"):
        _args.build(P.TrainParams, ns, ("epochs",))


@pytest.mark.parametrize("cls", [P.PickingParams, P.DatasetParams, P.TrainParams, P.AdaptParams, P.PredictParams,
                                 P.EmbedParams, P.RunParams, P.ImagingCondition])
def test_every_field_is_documented(cls):
    documented = P.specs(cls)
    nested = {"picking", "source", "train", "adapt", "embed", "condition"}
    for name in cls.__dataclass_fields__:
        assert name in documented or name in nested, f"{cls.__name__}.{name} has no param() metadata"
        if name in documented:
            assert documented[name].help, name


def test_widget_options_carry_default_range_and_help():
    opts = P.widget_options(P.TrainParams, "epochs")
    assert opts["value"] == P.TrainParams().epochs and opts["min"] == 1 and opts["tooltip"]
    assert P.widget_options(P.AdaptParams, "method")["choices"] == list(P.METHODS)


def test_params_import_neither_torch_nor_qt():
    code = ("import sys; import napari_cryo_openset.params as p; p.RunParams(p.PickingParams(150)); "
            "sys.exit(1 if {'torch', 'qtpy', 'napari'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.gui
def test_widget_fields_show_the_dataclass_defaults(make_napari_viewer):
    """Every dock field built from a parameter (``_widgets._form.param_spin``) starts at the dataclass default,
    within the dataclass's range; the docks have such fields for the parameters the CLI also takes."""
    from qtpy.QtWidgets import QAbstractSpinBox

    from napari_cryo_openset._widgets._form import PARAM_PROPERTY
    from napari_cryo_openset._widgets.adapt import AdaptWidget
    from napari_cryo_openset._widgets.model import ModelWidget
    from napari_cryo_openset._widgets.pick import PickWidget
    from napari_cryo_openset._widgets.results import ResultsWidget

    viewer = make_napari_viewer()
    seen = set()
    for dock in (PickWidget, ModelWidget, AdaptWidget, ResultsWidget):
        widget = dock(viewer)
        for box in widget.findChildren(QAbstractSpinBox):
            tag = box.property(PARAM_PROPERTY)
            if not tag:
                continue
            cls_name, name = tag.split(".")
            s = P.spec(getattr(P, cls_name), name)
            assert box.value() == pytest.approx(s.default), tag
            if s.low is not None:
                assert box.minimum() >= s.low, tag
            if s.high is not None:
                assert box.maximum() <= s.high, tag
            assert box.toolTip(), tag
            seen.add(tag)
    assert {"PickingParams.k_mad", "DatasetParams.per_class", "DatasetParams.box", "TrainParams.epochs",
            "TrainParams.batch_size", "ImagingCondition.defocus", "ImagingCondition.snr", "AdaptParams.iterations",
            "AdaptParams.label_iterations", "EmbedParams.perplexity", "EmbedParams.min_cluster_size"} <= seen
