"""Tomogram (MRC) input and output.

- :func:`read_tomogram` memory-maps the data (a 2 GB file opens in milliseconds and only the
  voxels you touch are read), returns voxel size (Å, per axis, Z Y X), origin (Å, Z Y X) and
  header facts, and refuses unusable files with one clear message naming the file.
- :func:`write_tomogram` writes atomically (temporary name, then rename), streaming large
  arrays through ``mrcfile.new_mmap`` slab by slab.

Supported data modes: 0 (int8; IMOD's unsigned-byte flag is honoured → uint8), 1 (int16),
2 (float32), 6 (uint16) and 12 (float16). Arrays are (Z, Y, X).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, TomogramError
from ._atomic import atomic_path

#: File extensions read and written as MRC tomograms.
TOMOGRAM_EXTENSIONS = (".mrc", ".rec", ".map", ".st", ".mrcs", ".ali")

#: MRC header size in bytes (the extended header, if any, follows it).
_HEADER_BYTES = 1024
_IMOD_STAMP = 1146047817
_SUPPORTED_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
#: Arrays above this size are written through a memory map, slab by slab.
_STREAM_WRITE_BYTES = 64 * 1024**2
#: Voxels looked at for the quick finiteness check and contrast percentiles.
_SAMPLE_VOXELS = 1_000_000


@dataclass(frozen=True)
class Tomogram:
    """A tomogram opened from disk (or built in memory).

    Attributes
    ----------
    data
        The voxels, shape (Z, Y, X). Memory-mapped read-only when read from a file.
    voxel_size
        Voxel size in Å along (Z, Y, X).
    origin
        Header origin in Å along (Z, Y, X) (MRC ``origin`` field).
    path
        The file it came from, if any.
    header
        Facts from the header: ``mode``, ``dtype``, ``nstart`` (voxels, Z Y X), ``dmin``,
        ``dmax``, ``dmean``, ``rms``, ``space_group``, ``extended_header_bytes``, ``labels``,
        ``nonfinite_in_sample`` (non-finite voxels found by the quick check), and
        ``voxel_size_assumed`` (True when the header had no voxel size and 1 Å was used).
    """

    data: np.ndarray
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    path: Path | None = None
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape in voxels (Z, Y, X)."""
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """File stem, or ``'tomogram'`` for an in-memory volume."""
        return self.path.stem if self.path is not None else "tomogram"

    @property
    def physical_size(self) -> tuple[float, float, float]:
        """Extent in Å along (Z, Y, X)."""
        return tuple(n * v for n, v in zip(self.shape, self.voxel_size))  # type: ignore[return-value]


def _describe(path: Path) -> str:
    return f"'{path}'"


def _read_raw_header(path: Path) -> tuple[np.recarray, str]:
    """Read the 1024-byte header with mrcfile's header dtype; return it and the byte order."""
    import mrcfile.utils
    from mrcfile.dtypes import HEADER_DTYPE

    size = path.stat().st_size
    if size < _HEADER_BYTES:
        raise TomogramError(
            f"{_describe(path)} is not an MRC file: it has {size} bytes, fewer than the "
            f"{_HEADER_BYTES}-byte MRC header"
        )
    with open(path, "rb") as fh:
        raw = fh.read(_HEADER_BYTES)
    header = np.frombuffer(raw, dtype=HEADER_DTYPE).view(np.recarray)[0]  # little-endian guess
    try:
        byte_order = mrcfile.utils.byte_order_from_machine_stamp(header.machst)
    except ValueError:
        byte_order = "<"
        # Old files have no valid machine stamp: detect byte order from the mode value.
        if int(header.mode) not in _SUPPORTED_MODES and 0 < int(np.int32(header.mode).byteswap()) < 20:
            byte_order = ">"
    if byte_order != "<":
        header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(">")).view(np.recarray)[0]
    return header, byte_order


def _check_header(path: Path, header, byte_order: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Validate an MRC header; return (data shape, dtype, data offset in bytes)."""
    mode = int(header.mode)
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    map_id = bytes(header.map)
    looks_like_mrc = map_id in (b"MAP ", b"MAP\x00", b"MAP") or (
        mode in _SUPPORTED_MODES | {3: "", 4: "", 101: ""}
        and 0 < nx < 2**20
        and 0 < ny < 2**20
        and 0 < nz < 2**20
    )
    if not looks_like_mrc:
        raise TomogramError(
            f"{_describe(path)} is not an MRC file (no 'MAP ' identifier and an implausible "
            f"header: mode {mode}, size {nx}×{ny}×{nz})"
        )
    if mode not in _SUPPORTED_MODES:
        raise TomogramError(
            f"{_describe(path)} uses MRC mode {mode}, which is not supported; expected one of "
            + ", ".join(f"{m} ({d})" for m, d in _SUPPORTED_MODES.items())
        )
    if min(nx, ny, nz) <= 0:
        raise TomogramError(f"{_describe(path)} has an invalid size {nx}×{ny}×{nz} in its header")
    mz = int(header.mz)
    ispg = int(header.ispg)
    if 401 <= ispg <= 630 and mz > 0 and nz // mz > 1:
        raise TomogramError(
            f"{_describe(path)} is a stack of {nz // mz} volumes (4-D data); expected one 3-D "
            "tomogram"
        )
    if nz == 1:
        raise TomogramError(
            f"{_describe(path)} holds a 2-D image ({ny}×{nx}); expected a 3-D tomogram (Z, Y, X)"
        )
    dtype = np.dtype(_SUPPORTED_MODES[mode]).newbyteorder(byte_order)
    if mode == 0:
        stamp, flags = _imod_stamp_and_flags(header, byte_order)
        if stamp == _IMOD_STAMP and not (flags & 1):
            dtype = np.dtype(np.uint8)  # IMOD writes unsigned bytes unless flag bit 0 is set
    nsymbt = int(header.nsymbt)
    if nsymbt < 0:
        raise TomogramError(f"{_describe(path)} has a negative extended-header size ({nsymbt})")
    offset = _HEADER_BYTES + nsymbt
    expected = offset + nx * ny * nz * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected and nsymbt > actual:
        raise TomogramError(
            f"{_describe(path)} is not a valid MRC file: its header claims an extended header of "
            f"{nsymbt:,} bytes (nsymbt) but the file has {actual:,} bytes"
        )
    if actual < expected:
        raise TomogramError(
            f"{_describe(path)} is truncated: its header describes {nz}×{ny}×{nx} voxels of "
            f"{dtype.name} ({expected:,} bytes with the header) but the file has {actual:,} bytes"
        )
    return (nz, ny, nx), dtype, offset


def check_mrc_file(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
    """Validate an MRC file's header against its size without reading the data.

    Map ID or a plausible header, a supported mode, positive sizes, an extended header
    (``nsymbt``) and data that fit in the file. Returns (shape Z Y X, dtype, data offset);
    raises :class:`TomogramError` naming the file. Run it before any permissive reader, which
    would trust a garbage header's sizes.
    """
    path = Path(path)
    header, byte_order = _read_raw_header(path)
    return _check_header(path, header, byte_order)


def _imod_stamp_and_flags(header, byte_order: str) -> tuple[int, int]:
    extra2 = bytes(header.extra2)
    stamp, flags = np.frombuffer(extra2[40:48], dtype=np.dtype(f"{byte_order}i4"))
    return int(stamp), int(flags)


def sample_voxels(data: np.ndarray, n: int = _SAMPLE_VOXELS) -> np.ndarray:
    """A deterministic, spread-out sample of about ``n`` voxels (as float32).

    Reads a handful of whole Z slices (strided in Y and X), so a memory-mapped volume is only
    touched where it is sampled.
    """
    nz, ny, nx = data.shape
    n_slices = int(min(nz, 16))
    zs = np.unique(np.linspace(0, nz - 1, n_slices).round().astype(int))
    per_slice = max(1, n // len(zs))
    stride = max(1, int(math.sqrt(ny * nx / per_slice)))
    return np.concatenate(
        [np.asarray(data[z, ::stride, ::stride], dtype=np.float32).ravel() for z in zs]
    )


def contrast_limits(data: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """Display contrast limits from percentiles of a voxel sample (never loads the volume)."""
    sample = sample_voxels(data)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, percentiles)
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
        if not hi > lo:
            hi = lo + 1.0
    return float(lo), float(hi)


def read_tomogram(
    path: str | os.PathLike,
    *,
    allow_missing_voxel_size: bool = False,
    check_finite: bool = True,
) -> Tomogram:
    """Open an MRC tomogram, memory-mapped, read-only.

    Parameters
    ----------
    path
        An MRC file (``.mrc .rec .map .st .mrcs .ali``; the content decides, not the suffix).
    allow_missing_voxel_size
        A header voxel size of 0 is an error unless this is True; then 1 Å is used with a
        warning and ``header['voxel_size_assumed']`` is set.
    check_finite
        Look for NaN/inf in a sample of about a million voxels; if any are found, warn (naming
        the file) and record the count in ``header['nonfinite_in_sample']``. Never raises.

    Returns
    -------
    Tomogram
        ``data`` is a read-only ``numpy.memmap`` of shape (Z, Y, X).

    Raises
    ------
    TomogramError
        Missing file, not an MRC, truncated, not 3-D, unsupported mode, or no voxel size.
    """
    path = Path(path)
    if not path.exists():
        raise TomogramError(f"{_describe(path)} does not exist")
    if not path.is_file():
        raise TomogramError(f"{_describe(path)} is not a file (expected an MRC tomogram)")
    header, byte_order = _read_raw_header(path)
    shape, dtype, offset = _check_header(path, header, byte_order)

    vx, vy, vz = _voxel_size_xyz(header, shape)
    voxel_size = (vz, vy, vx)
    assumed = False
    if not all(np.isfinite(voxel_size)) or min(voxel_size) <= 0:
        if not allow_missing_voxel_size:
            raise TomogramError(
                f"{_describe(path)} has no voxel size in its header (found {voxel_size} Å); "
                "set it in the file (e.g. IMOD `alterheader -del`) or allow a placeholder of 1 Å"
            )
        warnings.warn(
            f"{path}: the header has no voxel size; using 1 Å per voxel", UserWarning, stacklevel=2
        )
        voxel_size = (1.0, 1.0, 1.0)
        assumed = True

    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="C")
    origin = (float(header.origin.z), float(header.origin.y), float(header.origin.x))
    info: dict[str, Any] = {
        "mode": int(header.mode),
        "dtype": dtype.name,
        "nstart": (int(header.nzstart), int(header.nystart), int(header.nxstart)),
        "dmin": float(header.dmin),
        "dmax": float(header.dmax),
        "dmean": float(header.dmean),
        "rms": float(header.rms),
        "space_group": int(header.ispg),
        "extended_header_bytes": int(header.nsymbt),
        "labels": _labels(header),
        "voxel_size_assumed": assumed,
        "nonfinite_in_sample": 0,
    }
    if check_finite and dtype.kind == "f":
        sample = sample_voxels(data)
        bad = int(sample.size - np.count_nonzero(np.isfinite(sample)))
        info["nonfinite_in_sample"] = bad
        if bad:
            warnings.warn(
                f"{path}: {bad:,} of {sample.size:,} sampled voxels are NaN or infinite; they "
                "will be treated as the mean value by picking and extraction",
                UserWarning,
                stacklevel=2,
            )
    return Tomogram(data=data, voxel_size=voxel_size, origin=origin, path=path, header=info)


def voxel_size_zyx(voxel_size, what: str = "voxel_size", error: type[Exception] = ParameterError,
                   ) -> tuple[float, float, float]:
    """Voxel size in Å as (Z, Y, X) from one number (isotropic) or three.

    Raises ``error`` (naming ``what``) unless every size is a finite number > 0.
    """
    message = f"{what} must be a positive number of Å or three (Z, Y, X); got {voxel_size!r}"
    try:
        vs = np.atleast_1d(np.asarray(voxel_size, dtype=np.float64))
    except (TypeError, ValueError):
        raise error(message) from None
    if vs.size == 1:
        vs = np.repeat(vs, 3)
    if vs.size != 3 or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise error(message)
    return tuple(float(v) for v in vs)  # type: ignore[return-value]


def _voxel_size_xyz(header: np.ndarray, shape: tuple[int, ...]) -> tuple[float, float, float]:
    """Voxel size (Å) along X, Y, Z from cell dimensions / sampling (mx, my, mz)."""
    out = []
    for cell, m in (
        (header.cella.x, header.mx),
        (header.cella.y, header.my),
        (header.cella.z, header.mz),
    ):
        m = int(m)
        out.append(float(cell) / m if m > 0 else 0.0)
    return tuple(out)  # type: ignore[return-value]


def _labels(header: np.ndarray) -> list[str]:
    n = max(0, min(10, int(header.nlabl)))
    return [
        bytes(header.label[i]).rstrip(b"\x00 ").decode("ascii", errors="replace") for i in range(n)
    ]


def _output_dtype(dtype: np.dtype, path: Path) -> np.dtype:
    """The dtype written for ``dtype`` (MRC has no float64/bool/uint8 mode)."""
    if dtype == np.float64:
        return np.dtype(np.float32)
    if dtype == np.bool_:
        return np.dtype(np.int8)
    if dtype == np.uint8:
        return np.dtype(np.uint16)  # lossless; MRC mode 0 is signed
    if dtype.name in _SUPPORTED_MODES.values():
        return dtype.newbyteorder("=")
    raise TomogramError(
        f"'{path}': cannot write {dtype.name} data as MRC; expected float32, float16, int8, int16, "
        "uint8 or uint16 (float64 is stored as float32)"
    )


def write_tomogram(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size: float | tuple[float, float, float],
    *,
    origin: tuple[float, float, float] | None = None,
    overwrite: bool = True,
    label: str | None = None,
) -> Path:
    """Write a (Z, Y, X) volume as MRC, atomically.

    Parameters
    ----------
    path
        Output file; its suffix must be one of :data:`TOMOGRAM_EXTENSIONS`.
    data
        3-D array (Z, Y, X); float64 is stored as float32, bool as int8, uint8 as uint16.
        Large arrays (including memory maps) are streamed slab by slab.
    voxel_size
        Å, one number or (Z, Y, X).
    origin
        Header origin in Å (Z, Y, X); default 0.
    overwrite
        If False, an existing file is an error.
    label
        Optional text for the first header label (80 characters at most are kept).

    Returns
    -------
    Path
        The written file. On any error nothing is left at ``path`` (an older file stays intact).
    """
    import mrcfile

    path = Path(path)
    if path.suffix.lower() not in TOMOGRAM_EXTENSIONS:
        raise TomogramError(
            f"'{path}': unknown tomogram file extension '{path.suffix}'; expected one of "
            + " ".join(TOMOGRAM_EXTENSIONS)
        )
    if not path.parent.is_dir():
        raise TomogramError(f"'{path}': the folder '{path.parent}' does not exist")
    if path.exists() and not overwrite:
        raise TomogramError(f"'{path}' exists; refusing to overwrite it")
    if getattr(data, "ndim", None) != 3:
        raise TomogramError(
            f"'{path}': expected a 3-D array (Z, Y, X), got shape {getattr(data, 'shape', None)}"
        )
    if min(data.shape) < 1:
        raise TomogramError(f"'{path}': cannot write an empty volume of shape {data.shape}")
    vz, vy, vx = voxel_size_zyx(voxel_size, f"'{path}': voxel_size", TomogramError)
    out_dtype = _output_dtype(np.dtype(data.dtype), path)
    oz, oy, ox = (0.0, 0.0, 0.0) if origin is None else (float(o) for o in origin)

    nz, ny, nx = data.shape
    nbytes = nz * ny * nx * out_dtype.itemsize
    with atomic_path(path) as tmp:
        if nbytes <= _STREAM_WRITE_BYTES:
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(np.ascontiguousarray(data, dtype=out_dtype))
                _finish_header(mrc, (vx, vy, vz), (ox, oy, oz), label)
        else:
            mode = mrcfile.utils.mode_from_dtype(out_dtype)
            with mrcfile.new_mmap(tmp, shape=(nz, ny, nx), mrc_mode=mode, overwrite=True) as mrc:
                slab = max(1, _STREAM_WRITE_BYTES // (ny * nx * out_dtype.itemsize))
                stats = _RunningStats()
                for z0 in range(0, nz, slab):
                    block = np.asarray(data[z0 : z0 + slab], dtype=out_dtype)
                    mrc.data[z0 : z0 + slab] = block
                    stats.add(block)
                _finish_header(mrc, (vx, vy, vz), (ox, oy, oz), label, stats=stats)
    return path


class _RunningStats:
    """Min, max, mean and RMS deviation accumulated over slabs (float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.lo = math.inf
        self.hi = -math.inf

    def add(self, block: np.ndarray) -> None:
        b = np.asarray(block, dtype=np.float64)
        finite = b[np.isfinite(b)] if b.dtype.kind == "f" else b.ravel()
        if finite.size:
            self.n += finite.size
            self.total += float(finite.sum())
            self.total_sq += float(np.square(finite).sum())
            self.lo = min(self.lo, float(finite.min()))
            self.hi = max(self.hi, float(finite.max()))

    def values(self) -> tuple[float, float, float, float]:
        if self.n == 0:
            return 0.0, 0.0, 0.0, 0.0
        mean = self.total / self.n
        var = max(0.0, self.total_sq / self.n - mean * mean)
        return self.lo, self.hi, mean, math.sqrt(var)


def _finish_header(mrc, voxel_size_xyz, origin_xyz, label, stats: _RunningStats | None = None) -> None:
    mrc.voxel_size = voxel_size_xyz
    mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = origin_xyz
    if stats is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN data
            mrc.update_header_stats()
    else:
        lo, hi, mean, rms = stats.values()
        mrc.header.dmin, mrc.header.dmax, mrc.header.dmean, mrc.header.rms = lo, hi, mean, rms
    from .. import __version__

    text = label if label is not None else f"napari-cryo-openset {__version__}"
    mrc.add_label(text[:80])
