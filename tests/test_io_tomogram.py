"""Tomogram I/O: memory-mapped reading, atomic writing, and clear refusals of bad files."""

from __future__ import annotations

import os

import mrcfile
import numpy as np
import pytest

from napari_cryo_openset.errors import TomogramError
from napari_cryo_openset.io import contrast_limits, read_tomogram, write_tomogram

DTYPES = [np.float32, np.float16, np.int8, np.int16, np.uint8, np.uint16, np.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_mode(tmp_path, dtype):
    rng = np.random.default_rng(1)
    data = (rng.random((6, 7, 8)) * 100).astype(dtype)
    path = write_tomogram(tmp_path / "t.mrc", data, (2.0, 3.0, 4.5), origin=(1.0, 2.0, 3.0))
    tomo = read_tomogram(path)
    assert isinstance(tomo.data, np.memmap)
    assert tomo.shape == (6, 7, 8)
    assert tomo.voxel_size == (2.0, 3.0, 4.5)  # Z, Y, X
    assert tomo.origin == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(np.asarray(tomo.data), data.astype(tomo.data.dtype))
    assert not tomo.data.flags.writeable
    assert os.listdir(tmp_path) == ["t.mrc"]  # no temporary left behind


@pytest.mark.parametrize("suffix", [".mrc", ".rec", ".map", ".st"])
def test_extensions(tmp_path, small_volume, suffix):
    path = write_tomogram(tmp_path / f"vol{suffix}", small_volume, 7.5)
    tomo = read_tomogram(path)
    assert tomo.voxel_size == (7.5, 7.5, 7.5)
    assert tomo.name == "vol"


def test_voxel_size_axis_order_matches_mrcfile(tmp_path):
    """mrcfile reports (x, y, z); we report (Z, Y, X)."""
    path = tmp_path / "aniso.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((4, 5, 6), np.float32))
        mrc.voxel_size = (1.5, 2.5, 3.5)  # x, y, z
    assert read_tomogram(path).voxel_size == (3.5, 2.5, 1.5)


def test_imod_unsigned_bytes(tmp_path):
    """IMOD writes mode 0 as unsigned unless its 'signed' flag is set."""
    path = tmp_path / "imod.mrc"
    values = np.array([0, 100, 200, 255], dtype=np.uint8)
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.tile(values.view(np.int8), (2, 3, 1)))
        mrc.voxel_size = 1.0
    raw = bytearray(path.read_bytes())
    raw[152:156] = np.int32(1146047817).tobytes()  # IMOD stamp
    raw[156:160] = np.int32(0).tobytes()  # flags: unsigned
    path.write_bytes(bytes(raw))
    tomo = read_tomogram(path)
    assert tomo.data.dtype == np.uint8
    np.testing.assert_array_equal(tomo.data[0, 0], values)


def test_big_endian_file(tmp_path):
    path = tmp_path / "be.mrc"
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    with mrcfile.new(path) as mrc:
        mrc.set_data(data.astype(">f4"))
        mrc.voxel_size = 4.0
    tomo = read_tomogram(path)
    np.testing.assert_array_equal(np.asarray(tomo.data), data)


def test_large_write_is_streamed_and_stats_right(tmp_path, monkeypatch):
    from napari_cryo_openset.io import tomogram as mod

    monkeypatch.setattr(mod, "_STREAM_WRITE_BYTES", 4096)  # force the memory-mapped path
    rng = np.random.default_rng(2)
    data = rng.standard_normal((10, 30, 40)).astype(np.float32)
    path = write_tomogram(tmp_path / "big.mrc", data, 10.0)
    tomo = read_tomogram(path)
    np.testing.assert_array_equal(np.asarray(tomo.data), data)
    assert tomo.header["dmin"] == pytest.approx(float(data.min()))
    assert tomo.header["dmax"] == pytest.approx(float(data.max()))
    assert tomo.header["dmean"] == pytest.approx(float(data.mean()), abs=1e-5)
    assert tomo.header["rms"] == pytest.approx(float(data.std()), rel=1e-4)


def test_contrast_limits_from_sample(small_volume):
    lo, hi = contrast_limits(small_volume)
    assert lo < 0 < hi
    assert lo >= small_volume.min() and hi <= small_volume.max()


# --- refusals: one clear message naming the file, no partial output -------------------------


def test_missing_file(tmp_path):
    with pytest.raises(TomogramError, match="does not exist"):
        read_tomogram(tmp_path / "nope.mrc")


def test_directory(tmp_path):
    with pytest.raises(TomogramError, match="not a file"):
        read_tomogram(tmp_path)


def test_not_an_mrc(tmp_path):
    path = tmp_path / "picture.mrc"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(4000))
    with pytest.raises(TomogramError, match=r"picture\.mrc.*not an MRC"):
        read_tomogram(path)


def test_tiny_file(tmp_path):
    path = tmp_path / "tiny.mrc"
    path.write_text("hello")
    with pytest.raises(TomogramError, match="fewer than the 1024-byte MRC header"):
        read_tomogram(path)


def test_truncated(tmp_path, small_volume):
    path = write_tomogram(tmp_path / "cut.mrc", small_volume, 5.0)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 500])
    with pytest.raises(TomogramError, match=r"cut\.mrc.*truncated"):
        read_tomogram(path)


def test_two_dimensional(tmp_path):
    path = tmp_path / "image.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((16, 16), np.float32))
        mrc.voxel_size = 1.0
    with pytest.raises(TomogramError, match="2-D image"):
        read_tomogram(path)


def test_volume_stack(tmp_path):
    path = tmp_path / "stack.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((2, 4, 5, 6), np.float32))
        mrc.voxel_size = 1.0
    with pytest.raises(TomogramError, match="4-D"):
        read_tomogram(path)


def test_zero_voxel_size(tmp_path, small_volume):
    path = tmp_path / "novs.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(small_volume)
        mrc.voxel_size = 0.0
    with pytest.raises(TomogramError, match="no voxel size"):
        read_tomogram(path)
    with pytest.warns(UserWarning, match="using 1 Å"):
        tomo = read_tomogram(path, allow_missing_voxel_size=True)
    assert tomo.voxel_size == (1.0, 1.0, 1.0)
    assert tomo.header["voxel_size_assumed"] is True


def test_nan_and_inf_are_reported_not_fatal(tmp_path, small_volume):
    vol = small_volume.copy()
    vol[::2, ::3, ::2] = np.nan
    vol[1, 1, 1] = np.inf
    path = write_tomogram(tmp_path / "nan.mrc", vol, 3.0)
    with pytest.warns(UserWarning, match=r"nan\.mrc.*NaN or infinite"):
        tomo = read_tomogram(path)
    assert tomo.header["nonfinite_in_sample"] > 0
    lo, hi = contrast_limits(tomo.data)
    assert np.isfinite([lo, hi]).all()


def test_write_refusals_leave_nothing(tmp_path, small_volume):
    with pytest.raises(TomogramError, match="3-D"):
        write_tomogram(tmp_path / "a.mrc", small_volume[0], 1.0)
    with pytest.raises(TomogramError, match="voxel_size"):
        write_tomogram(tmp_path / "a.mrc", small_volume, 0.0)
    with pytest.raises(TomogramError, match="extension"):
        write_tomogram(tmp_path / "a.tif", small_volume, 1.0)
    with pytest.raises(TomogramError, match="complex64"):
        write_tomogram(tmp_path / "a.mrc", small_volume.astype(np.complex64), 1.0)
    with pytest.raises(TomogramError, match="does not exist"):
        write_tomogram(tmp_path / "missing" / "a.mrc", small_volume, 1.0)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_old_file(tmp_path, small_volume, monkeypatch):
    path = write_tomogram(tmp_path / "keep.mrc", small_volume, 2.0)
    before = path.read_bytes()

    import napari_cryo_openset.io.tomogram as mod

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mod, "_finish_header", boom)
    from napari_cryo_openset.errors import OutputError

    with pytest.raises(OutputError, match=r"cannot write '.*keep\.mrc': disk full"):  # the user's path
        write_tomogram(path, small_volume * 2, 2.0)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.mrc"]
    with pytest.raises(TomogramError, match="refusing to overwrite"):
        write_tomogram(path, small_volume, 2.0, overwrite=False)


def test_real_tomogram_header(shared_data):
    tomo = read_tomogram(shared_data / "real" / "hiv_vlp_40A.mrc")
    assert tomo.shape == (101, 135, 135)
    assert tomo.voxel_size == (40.0, 40.0, 40.0)
    assert tomo.header["nonfinite_in_sample"] == 0
