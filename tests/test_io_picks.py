"""Picks I/O: exact STAR/CSV round trips, RELION 5 coordinates, and clear messages."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from napari_cryo_openset.errors import PicksError
from napari_cryo_openset.io import read_picks, write_picks
from napari_cryo_openset.picks import (
    active,
    from_points,
    make_picks,
    to_points,
    validate_picks,
)


@pytest.fixture
def picks() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    df = make_picks(
        rng.random((7, 3)) * [50, 200, 300],
        score=rng.standard_normal(7),
        class_name=["1bxn", "unknown", "4v4r", "3000", "1bxn", "unknown", "4v4r"],
        confidence=rng.random(7),
        unknown_score=rng.random(7) * 3,
        is_unknown=[False, True, False, False, False, True, False],
        cluster=[-1, 0, -1, -1, -1, 1, -1],
    )
    df.loc[1, "curation"] = "accepted"
    df.loc[2, "curation"] = "rejected"
    df["rlnTomoName"] = "TS 01"  # an unknown column with a space: preserved, quoted
    df["rot"] = np.linspace(-180, 180, 7)  # an orientation (STAR rlnAngleRot), NaN where not aligned
    df.loc[3, "rot"] = np.nan
    return df


@pytest.mark.parametrize("suffix", [".star", ".csv"])
def test_exact_round_trip(tmp_path, picks, suffix):
    path = write_picks(tmp_path / f"p{suffix}", picks, voxel_size=13.7)
    back = read_picks(path)
    pd.testing.assert_frame_equal(back, picks, check_exact=True)
    assert back.attrs["voxel_size"] == (13.7, 13.7, 13.7)
    # write → read → write is byte-identical
    again = write_picks(tmp_path / f"q{suffix}", back, voxel_size=13.7)
    assert again.read_bytes() == path.read_bytes()


def test_star_columns_follow_the_contract(tmp_path, picks):
    import starfile

    path = write_picks(tmp_path / "p.star", picks)
    table = starfile.read(path)
    for column in (
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnCoordinateZ",
        "rlnAutopickFigureOfMerit",
        "cosClassName",
        "cosConfidence",
        "cosUnknownScore",
        "cosCuration",
    ):
        assert column in table.columns
    # X is the last array axis
    np.testing.assert_array_equal(table["rlnCoordinateX"], picks["x"])
    np.testing.assert_array_equal(table["rlnCoordinateZ"], picks["z"])
    assert set(table["cosCuration"]) == {"unreviewed", "accepted", "rejected"}


def test_numeric_looking_class_name_stays_a_string(tmp_path, picks):
    back = read_picks(write_picks(tmp_path / "p.star", picks))
    assert back.loc[3, "class_name"] == "3000"


def test_rejected_are_kept_and_marked(tmp_path, picks):
    back = read_picks(write_picks(tmp_path / "p.star", picks))
    assert len(back) == 7
    assert (back["curation"] == "rejected").sum() == 1
    assert len(active(back)) == 6


def test_empty_picks_round_trip(tmp_path):
    back = read_picks(write_picks(tmp_path / "empty.star", make_picks(np.zeros((0, 3)))))
    assert len(back) == 0
    assert list(back.columns[:5]) == ["z", "y", "x", "score", "curation"]


def test_relion5_centred_coordinates(tmp_path):
    shape, vs = (100, 200, 300), 10.0
    text = (
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n"
        "_rlnCenteredCoordinateYAngst #3\n_rlnCenteredCoordinateZAngst #4\n"
        "TS_01 0.0 0.0 0.0\nTS_01 -1500.0 -1000.0 -500.0\nTS_01 100.0 20.0 -30.0\n"
    )
    path = tmp_path / "r5.star"
    path.write_text(text)
    with pytest.raises(PicksError, match="RELION 5 centred coordinates.*shape and voxel size"):
        read_picks(path)
    df = read_picks(path, tomogram_shape=shape, voxel_size=vs)
    assert df.attrs["format"] == "relion5"
    np.testing.assert_allclose(df[["z", "y", "x"]].to_numpy()[0], [50, 100, 150])
    np.testing.assert_allclose(df[["z", "y", "x"]].to_numpy()[1], [0, 0, 0])
    np.testing.assert_allclose(df[["z", "y", "x"]].to_numpy()[2], [47, 102, 160])
    assert list(df["rlnTomoName"]) == ["TS_01"] * 3


def test_relion31_two_blocks(tmp_path):
    text = (
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n1 10.0\n\n"
        "data_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n"
        "_rlnOpticsGroup #4\n1.5 2.5 3.5 1\n4 5 6 1\n"
    )
    path = tmp_path / "r31.star"
    path.write_text(text)
    df = read_picks(path)
    assert df.attrs["block"] == "particles"
    np.testing.assert_array_equal(df[["z", "y", "x"]].to_numpy()[0], [3.5, 2.5, 1.5])
    assert "rlnOpticsGroup" in df.columns


@pytest.mark.parametrize(
    "header,column", [(("x", "y", "z"), None), (("X", "Y", "Z"), None), (("axis-0", "axis-1", "axis-2"), None)]
)
def test_csv_header_variants(tmp_path, header, column):
    path = tmp_path / "c.csv"
    path.write_text(",".join(header) + "\n1,2,3\n")
    df = read_picks(path)
    zyx = df[["z", "y", "x"]].to_numpy()[0]
    if header[0] == "axis-0":  # napari's CSV is already Z, Y, X
        np.testing.assert_array_equal(zyx, [1, 2, 3])
    else:
        np.testing.assert_array_equal(zyx, [3, 2, 1])


def test_points_conversion(picks):
    data, features = to_points(picks)
    assert data.shape == (7, 3)
    assert "z" not in features.columns
    pd.testing.assert_frame_equal(from_points(data, features), picks)


# --- malformed input: one clear message naming the column or line ---------------------------


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_coordinate_column(tmp_path):
    path = _write(
        tmp_path, "nz.star", "data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\n3 4\n"
    )
    with pytest.raises(PicksError, match=r"nz\.star.*missing column rlnCoordinateZ"):
        read_picks(path)


def test_no_coordinates_at_all(tmp_path):
    path = _write(tmp_path, "nc.star", "data_\nloop_\n_rlnAngleRot #1\n1\n2\n")
    with pytest.raises(PicksError, match="no coordinate columns.*Found data_: rlnAngleRot"):
        read_picks(path)


def test_ragged_row_names_the_line(tmp_path):
    text = "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n1 2 3\n4 5\n7 8 9\n"
    path = _write(tmp_path, "ragged.star", text)
    with pytest.raises(PicksError, match=r"ragged\.star', line 8: expected 3 fields, found 2"):
        read_picks(path)


def test_non_numeric_coordinate(tmp_path):
    text = "data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n1 2 3\n4 five 6\n"
    path = _write(tmp_path, "text.star", text)
    with pytest.raises(PicksError, match=r"text\.star.*(numeric|non-finite)"):
        read_picks(path)


def test_binary_file(tmp_path):
    path = tmp_path / "bin.star"
    path.write_bytes(b"\x00\xff\xfe" * 100)
    with pytest.raises(PicksError, match=r"bin\.star"):
        read_picks(path)


def test_empty_files(tmp_path):
    with pytest.raises(PicksError, match="no data loop"):
        read_picks(_write(tmp_path, "e.star", ""))
    with pytest.raises(PicksError, match="empty"):
        read_picks(_write(tmp_path, "e.csv", ""))


def test_csv_without_coordinates(tmp_path):
    with pytest.raises(PicksError, match=r"no coordinate columns.*missing z"):
        read_picks(_write(tmp_path, "c.csv", "x,y,score\n1,2,3\n"))


def test_bad_curation_value(tmp_path):
    text = (
        "data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n_cosCuration #4\n"
        "1 2 3 accepted\n4 5 6 maybe\n"
    )
    with pytest.raises(PicksError, match="curation value 'maybe'"):
        read_picks(_write(tmp_path, "cur.star", text))


def test_missing_and_wrong_paths(tmp_path, picks):
    with pytest.raises(PicksError, match="does not exist"):
        read_picks(tmp_path / "none.star")
    with pytest.raises(PicksError, match="extension"):
        read_picks(_write(tmp_path, "p.txt", "x"))
    with pytest.raises(PicksError, match="extension"):
        write_picks(tmp_path / "p.txt", picks)
    with pytest.raises(PicksError, match="does not exist"):
        write_picks(tmp_path / "no" / "p.star", picks)


def test_invalid_table_is_not_written(tmp_path, picks):
    bad = picks.copy()
    bad.loc[0, "x"] = np.nan
    with pytest.raises(PicksError, match="non-finite coordinates.*row 1"):
        write_picks(tmp_path / "p.star", bad)
    assert os.listdir(tmp_path) == []


def test_validate_fills_defaults():
    df = validate_picks(pd.DataFrame({"x": [1.0], "y": [2.0], "z": [3.0]}))
    assert df.loc[0, "curation"] == "unreviewed"
    assert np.isnan(df.loc[0, "score"])


def test_real_lattice_star(shared_data):
    df = read_picks(shared_data / "real" / "hiv_vlp_40A_lattice.star")
    assert len(df) == 5377
    assert set(df["rlnClassName"]) == {"hiv_gag_lattice"}
    zyx = df[["z", "y", "x"]].to_numpy()
    assert (zyx >= 0).all() and (zyx < [101, 135, 135]).all()
