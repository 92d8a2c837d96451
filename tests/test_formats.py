"""The formats of the ecosystem: RELION 5 particles/tomograms STAR, Warp/M STAR, copick projects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from napari_cryo_openset.errors import PicksError
from napari_cryo_openset.io import read_picks, write_tomogram
from napari_cryo_openset.io.relion5 import (
    CENTRED_COLUMNS,
    TomogramInfo,
    centred_to_voxels,
    read_relion5_particles,
    read_tomograms_star,
    voxels_to_centred,
    write_relion5_particles,
    write_tomograms_star,
)
from napari_cryo_openset.io.warp import micrograph_name, read_warp_star, write_warp_star
from napari_cryo_openset.picks import make_picks


def _picks(n=5, seed=0, shape=(20, 31, 40)):
    rng = np.random.default_rng(seed)
    zyx = rng.uniform(0, 1, (n, 3)) * (np.asarray(shape) - 1)
    names = np.array(["3j9i", "unknown", "my_map", "4v4r", "unknown"])[np.arange(n) % 5]
    return make_picks(zyx, score=rng.normal(size=n), class_name=names, confidence=rng.uniform(size=n),
                      unknown_score=rng.normal(size=n), curation=["unreviewed"] * n)


# --------------------------------------------------------------------------------------------
# the centre convention (RELION 5: centre = size / 2.0, 0-based pixels; see io/relion5.py)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 65])
def test_centred_convention_odd_and_even(size):
    vs = 2.5
    shape = (size, size, size)
    # the centre of the axis is size / 2.0 voxels: 32.0 for 64, 32.5 for 65 (float division, as
    # TomogramSet::loadTomogram); voxel 0 is -size/2 * vs Å, the last voxel (size-1 - size/2) * vs
    zyx = np.array([[size / 2.0] * 3, [0.0, 0.0, 0.0], [size - 1.0, 0.0, size / 2.0]])
    c = voxels_to_centred(zyx, shape, vs)
    np.testing.assert_array_equal(c[0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(c[1], [-size / 2 * vs] * 3)
    np.testing.assert_array_equal(c[2], [(size - 1 - size / 2) * vs, -size / 2 * vs, 0.0])
    if size % 2:  # odd: the central voxel 32 is half a voxel off the centre
        np.testing.assert_allclose(voxels_to_centred([[32, 32, 32]], shape, vs), [[-0.5 * vs] * 3])
    else:
        np.testing.assert_allclose(voxels_to_centred([[32, 32, 32]], shape, vs), [[0.0] * 3])
    back = centred_to_voxels(c, shape, vs)
    np.testing.assert_allclose(back, zyx, atol=1e-12)


def test_centred_anisotropic_shape_axes_order():
    shape, vs = (10, 21, 40), (3.0, 3.0, 3.0)  # Z, Y, X
    c = voxels_to_centred([[0, 0, 0]], shape, vs)
    np.testing.assert_array_equal(c, [[-15.0, -31.5, -60.0]])


# --------------------------------------------------------------------------------------------
# RELION 5 particles and tomograms STAR
# --------------------------------------------------------------------------------------------


def test_relion5_round_trip_exact_via_starfile(tmp_path):
    a = TomogramInfo("TS_01", shape=(20, 31, 40), voxel_size=10.0, tilt_series_pixel_size=2.5, voltage=300.0,
                     cs=2.7, amplitude_contrast=0.1)
    b = TomogramInfo("TS_02", shape=(21, 32, 41), voxel_size=10.0, tilt_series_pixel_size=2.5)
    pa, pb = _picks(5, 0, a.shape), _picks(4, 1, b.shape)
    pa["rot"], pa["tilt"], pa["psi"] = 10.0, 20.0, 30.0
    path = write_relion5_particles(tmp_path / "particles.star", [(a, pa), (b, pb)])

    blocks = starfile.read(path, always_dict=True)
    assert list(blocks) == ["optics", "particles"]
    optics, parts = blocks["optics"], blocks["particles"]
    assert optics["rlnOpticsGroupName"].tolist() == ["TS_01", "TS_02"]
    assert optics["rlnTomoTiltSeriesPixelSize"].tolist() == [2.5, 2.5]
    for col in ("rlnTomoName", *CENTRED_COLUMNS, "rlnOpticsGroup", "cosClassName", "rlnAutopickFigureOfMerit"):
        assert col in parts.columns
    assert "rlnCoordinateX" not in parts.columns
    assert parts["rlnTomoName"].tolist() == ["TS_01"] * 5 + ["TS_02"] * 4
    # coordinates exactly the convention's, as floats read back by starfile
    expect = voxels_to_centred(pa[["z", "y", "x"]].to_numpy(), a.shape, a.voxel_size)
    got = parts.loc[:4, list(CENTRED_COLUMNS)].to_numpy()
    assert np.array_equal(got, expect[:, ::-1])
    assert parts.loc[:4, "rlnAngleRot"].tolist() == [10.0] * 5
    assert parts["rlnAutopickFigureOfMerit"].tolist() == pa["score"].tolist() + pb["score"].tolist()

    back = read_relion5_particles(path, [a, b])
    assert list(back) == ["TS_01", "TS_02"]
    for orig, got in ((pa, back["TS_01"]), (pb, back["TS_02"])):
        np.testing.assert_allclose(got[["z", "y", "x"]].to_numpy(), orig[["z", "y", "x"]].to_numpy(), atol=1e-12)
        assert got["class_name"].tolist() == orig["class_name"].tolist()
        assert got["confidence"].tolist() == orig["confidence"].tolist()
    assert back["TS_01"]["psi"].tolist() == [30.0] * 5
    # the package's own picks reader reads a one-tomogram file the same way
    single = write_relion5_particles(tmp_path / "one.star", [(b, pb)])
    again = read_picks(single, tomogram_shape=b.shape, voxel_size=b.voxel_size)
    np.testing.assert_allclose(again[["z", "y", "x"]].to_numpy(), pb[["z", "y", "x"]].to_numpy(), atol=1e-12)


def test_relion5_centred_needs_the_tomogram(tmp_path):
    a = TomogramInfo("TS_01", shape=(20, 31, 40), voxel_size=10.0)
    path = write_relion5_particles(tmp_path / "p.star", [(a, _picks(3))])
    with pytest.raises(PicksError, match="TS_01.*shape and voxel size"):
        read_relion5_particles(path)


def test_tomograms_star_round_trip_and_missing_files(tmp_path):
    vol = np.zeros((20, 31, 40), np.float32)
    write_tomogram(tmp_path / "TS_01.mrc", vol, voxel_size=10.0)
    a = TomogramInfo("TS_01", path=tmp_path / "TS_01.mrc", shape=(20, 31, 40), voxel_size=10.0,
                     tilt_series_pixel_size=2.5, voltage=300.0, cs=2.7, amplitude_contrast=0.1)
    path = write_tomograms_star(tmp_path / "tomograms.star", [a])
    table = starfile.read(path)
    assert table["rlnTomoSizeX"].tolist() == [160] and table["rlnTomoTomogramBinning"].tolist() == [4.0]
    (back,) = read_tomograms_star(path)
    assert back == a
    # a tomograms.star naming a missing MRC: one message naming the tomogram and the file
    b = TomogramInfo("TS_02", path=tmp_path / "nowhere.mrc", shape=(20, 31, 40), voxel_size=10.0)
    bad = write_tomograms_star(tmp_path / "bad.star", [a, b])
    with pytest.raises(PicksError, match=r"1 of 2 tomograms.*TS_02 \(.*nowhere.mrc\)"):
        read_tomograms_star(bad)
    with pytest.raises(PicksError, match="not a tomograms.star"):
        read_tomograms_star(write_relion5_particles(tmp_path / "p.star", [(a, _picks(2))]))


# --------------------------------------------------------------------------------------------
# Warp/M
# --------------------------------------------------------------------------------------------


def test_warp_has_no_centred_columns_and_round_trips(tmp_path):
    pa, pb = _picks(5, 0), _picks(3, 1)
    path = write_warp_star(tmp_path / "warp.star", [("TS_01_10.00Apx", pa), ("TS_02", pb)])
    table = starfile.read(path)
    assert isinstance(table, pd.DataFrame)
    assert not any("Centered" in c for c in table.columns) and "rlnTomoName" not in table.columns
    for col in ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnMicrographName", "rlnAngleRot",
                "rlnAngleTilt", "rlnAnglePsi", "rlnAutopickFigureOfMerit", "cosClassName"):
        assert col in table.columns
    assert set(table["rlnMicrographName"]) == {"TS_01.tomostar", "TS_02.tomostar"}
    assert table["rlnCoordinateX"].tolist()[:5] == pa["x"].tolist()  # absolute voxels, exact
    back = read_warp_star(path)
    assert list(back) == ["TS_01", "TS_02"]
    assert back["TS_01"][["z", "y", "x"]].to_numpy().tolist() == pa[["z", "y", "x"]].to_numpy().tolist()
    assert back["TS_02"]["class_name"].tolist() == pb["class_name"].tolist()
    assert micrograph_name("TS_03.mrc") == "TS_03.tomostar"


# --------------------------------------------------------------------------------------------
# copick
# --------------------------------------------------------------------------------------------


def test_copick_project_round_trip(tmp_path):
    pytest.importorskip("copick")
    from napari_cryo_openset.io import copick_io

    config = tmp_path / "copick" / "config.json"
    root = copick_io.new_project(config, tmp_path / "copick" / "overlay")
    vol = np.random.default_rng(0).normal(size=(16, 24, 32)).astype(np.float32)
    root.new_run("TS_01").new_voxel_spacing(10.0).new_tomogram("wbp").from_numpy(vol)

    root = copick_io.open_project(config)
    (ref,) = copick_io.project_tomograms(root)
    assert (ref.run, ref.voxel_size, ref.tomo_type, ref.shape) == ("TS_01", 10.0, "wbp", (16, 24, 32))
    tomo = copick_io.read_copick_tomogram(root, ref)
    assert tomo.voxel_size == (10.0, 10.0, 10.0)
    np.testing.assert_array_equal(np.asarray(tomo.data), vol)

    picks = _picks(10, 3, (16, 24, 32))
    counts = copick_io.write_copick_picks(root, "TS_01", picks, 10.0, config_path=config, radius=60.0)
    assert counts == {"3j9i": 2, "4v4r": 2, "my-map": 2, "unknown": 4}
    # a fresh project object, read through copick: every pick and class is back
    again = copick_io.open_project(config)
    assert {o.name for o in again.pickable_objects} == {"3j9i", "4v4r", "my-map", "unknown"}
    back = copick_io.read_copick_picks(again, "TS_01", 10.0)
    assert len(back) == len(picks)
    key = ["class_name", "z", "y", "x"]
    a = picks.sort_values(key).reset_index(drop=True)
    b = back.sort_values(key).reset_index(drop=True)
    assert b["class_name"].tolist() == a["class_name"].tolist()  # my_map, not my-map
    np.testing.assert_allclose(b[["z", "y", "x"]].to_numpy(), a[["z", "y", "x"]].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(b["confidence"].to_numpy(), a["confidence"].to_numpy())
    # writing again replaces (no duplicates)
    copick_io.write_copick_picks(again, "TS_01", picks, 10.0, config_path=config)
    assert len(copick_io.read_copick_picks(copick_io.open_project(config), "TS_01", 10.0)) == len(picks)


def test_copick_bad_config(tmp_path):
    pytest.importorskip("copick")
    from napari_cryo_openset.io import copick_io

    with pytest.raises(PicksError, match="does not exist"):
        copick_io.open_project(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PicksError, match="not JSON"):
        copick_io.open_project(bad)
    bad.write_text('{"name": "x"}')
    with pytest.raises(PicksError, match="not a valid copick project"):
        copick_io.open_project(bad)


# --------------------------------------------------------------------------------------------
# the command line: export
# --------------------------------------------------------------------------------------------


def _cli(*args):
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "napari-cryo-openset")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=120)


def _inputs(tmp_path):
    from napari_cryo_openset.io import write_picks

    out = []
    for i, shape in enumerate([(20, 31, 40), (21, 30, 40)]):
        tomo = write_tomogram(tmp_path / f"TS_0{i + 1}.mrc", np.zeros(shape, np.float32), voxel_size=10.0)
        picks = write_picks(tmp_path / f"p{i + 1}.star", _picks(5, i, shape), voxel_size=10.0)
        out.append((tomo, picks, shape))
    return out


def test_cli_export_relion5_and_warp(tmp_path):
    (t1, p1, s1), (t2, p2, s2) = _inputs(tmp_path)
    r = _cli("export", p1, p2, "--tomo", t1, t2, "--format", "relion5", "-o", tmp_path / "particles.star",
             "--tilt-series-pixel-size", "2.5")
    assert r.returncode == 0, r.stderr
    tomos = read_tomograms_star(tmp_path / "tomograms.star")
    assert [t.name for t in tomos] == ["TS_01", "TS_02"] and tomos[1].shape == s2 and tomos[0].voxel_size == 10.0
    back = read_relion5_particles(tmp_path / "particles.star", tomos)
    np.testing.assert_allclose(back["TS_02"][["z", "y", "x"]].to_numpy(),
                               read_picks(p2)[["z", "y", "x"]].to_numpy(), atol=1e-12)
    r = _cli("export", p1, p2, "--tomo", t1, t2, "--format", "warp", "-o", tmp_path / "warp.star")
    assert r.returncode == 0, r.stderr
    assert list(read_warp_star(tmp_path / "warp.star")) == ["TS_01", "TS_02"]


def test_cli_export_copick(tmp_path):
    pytest.importorskip("copick")
    from napari_cryo_openset.io import copick_io

    (t1, p1, _), _ = _inputs(tmp_path)
    config = tmp_path / "proj" / "config.json"
    config.parent.mkdir()
    r = _cli("export", p1, "--tomo", t1, "--format", "copick", "-o", config)
    assert r.returncode == 0, r.stderr
    back = copick_io.read_copick_picks(copick_io.open_project(config), "TS_01", 10.0)
    assert sorted(back["class_name"]) == sorted(read_picks(p1)["class_name"])


@pytest.mark.parametrize("case, pattern", [
    ("count", "--tomo: 1 tomograms for 2 picks files"),
    ("format", "invalid choice"),
    ("missing", "--tomo '.*nope.mrc' does not exist"),
    ("suffix", "-o '.*out.txt': unknown extension"),
    ("names", "--name: 1 names for 2 tomograms"),
])
def test_cli_export_bad_input(tmp_path, case, pattern):
    (t1, p1, _), (t2, p2, _) = _inputs(tmp_path)
    out = tmp_path / "o.star"
    args = {"count": ("export", p1, p2, "--tomo", t1, "--format", "relion5", "-o", out),
            "format": ("export", p1, "--tomo", t1, "--format", "dynamo", "-o", out),
            "missing": ("export", p1, "--tomo", tmp_path / "nope.mrc", "--format", "warp", "-o", out),
            "suffix": ("export", p1, "--tomo", t1, "--format", "warp", "-o", tmp_path / "out.txt"),
            "names": ("export", p1, p2, "--tomo", t1, t2, "--name", "a", "--format", "warp", "-o", out)}[case]
    r = _cli(*args)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    import re

    assert re.search(pattern, r.stderr), r.stderr
    assert "Traceback" not in r.stderr and (case == "format" or len(lines) == 1)
    assert not out.exists()
