"""The ``simulate`` subcommand: the contract's options, output, and one-line errors."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from napari_cryo_openset.errors import CryoOpensetError, ParameterError
from napari_cryo_openset.cli.simulate import register
from napari_cryo_openset.simulate.datasets import load_dataset


@pytest.fixture
def parser():
    p = argparse.ArgumentParser(prog="napari-cryo-openset")
    register(p.add_subparsers(dest="command"))
    return p


def _run(parser, argv):
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


def test_simulate_builtin_writes_a_labelled_source(parser, tmp_path, capsys):
    out = tmp_path / "source.npz"
    rc = _run(parser, ["--templates", "builtin", "--voxel-size", "12", "--box", "16", "--per-class", "2",
                       "--decoys", "3", "--empty", "1", "--snr-range", "0.05", "0.5", "--defocus-range", "3", "6",
                       "--cs", "2.7", "--voltage", "300", "--tilt-range", "-50", "50", "--tilt-step", "5",
                       "--seed", "4", "-o", str(out)])
    assert rc == 0
    d = load_dataset(out)
    assert d.class_names == ["1bxn", "1qvr", "2cg9", "3j9i", "4cr2", "4v4r", "empty", "unknown"]
    assert len(d) == 6 * 2 + 3 + 1 and d.box == 16 and d.voxel_size == 12.0 and d.seed == 4
    assert d.condition.tilt_range == (-50.0, 50.0) and d.condition.n_tilts == 21
    assert d.condition.snr == (0.05, 0.5) and d.condition.defocus == (3.0, 6.0)
    err = capsys.readouterr().err
    assert "wrote" in err
    # a 16-voxel box at 12 Å (192 Å) cannot hold the ribosome and the other large ones: said once, nothing lost
    assert "warning: " in err and "4v4r" in err and "cut by the box" in err and err.count("warning") == 1


def test_simulate_from_a_template_file(parser, tmp_path):
    import mrcfile

    from napari_cryo_openset.simulate.templates import builtin_templates

    t = builtin_templates(10.0)[0]
    with mrcfile.new(tmp_path / "rubisco.mrc") as m:
        m.set_data(t.density)
        m.voxel_size = 10.0
    out = tmp_path / "s.npz"
    assert _run(parser, ["--templates", str(tmp_path / "rubisco.mrc"), "--voxel-size", "10", "--box", "16",
                         "--per-class", "3", "--snr", "1", "--defocus", "4", "-o", str(out)]) == 0
    d = load_dataset(out)
    assert d.class_names == ["rubisco"] and np.all(d.labels == 0)


@pytest.mark.parametrize(
    "argv, error, words",
    [
        (["--box", "8"], ParameterError, "--box"),
        (["--per-class", "0"], ParameterError, "--per-class"),
        (["--voxel-size", "0"], ParameterError, "--voxel-size"),
        (["--snr", "0"], ParameterError, "--snr"),
        (["--snr-range", "0", "1"], ParameterError, "--snr-range"),
        (["--tilt-range", "-95", "60"], ParameterError, "--tilt-range"),
        (["--defocus", "-2"], ParameterError, "--defocus"),
        (["--templates", "missing_map.mrc"], CryoOpensetError, "missing_map.mrc"),
    ],
)
def test_bad_input_gives_one_clear_error(parser, tmp_path, argv, error, words):
    base = {"--templates": ["builtin"], "--voxel-size": ["10"], "--box": ["16"], "--per-class": ["1"]}
    flag = argv[0]
    base.pop(flag, None)
    full = [a for k, v in base.items() for a in (k, *v)] + argv + ["-o", str(tmp_path / "x.npz")]
    with pytest.raises(error, match=words):
        _run(parser, full)
    assert not (tmp_path / "x.npz").exists()


def test_unreadable_template_names_the_file(parser, tmp_path):
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CryoOpensetError, match="broken.mrc"):
        _run(parser, ["--templates", str(bad), "--voxel-size", "10", "--box", "16", "--per-class", "1",
                      "-o", str(tmp_path / "x.npz")])


def test_snr_and_snr_range_are_exclusive(parser, tmp_path):
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--templates", "builtin", "--voxel-size", "10", "--box", "16",
                           "--per-class", "1", "--snr", "1", "--snr-range", "0.1", "1", "-o", "x.npz"])
