"""Reading a tomogram for the estimates: input checks and bounded-memory reads."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..picking.dog import release_pages


#: File bytes touched per read of a memory-mapped volume (pages are dropped after each read).
_READ_CHUNK_BYTES = 16 * 1024**2
#: Smallest size along every axis (voxels): below it neither wedge nor slab can be read.
MIN_SIZE = 32
#: Values a caller may give (header or user): tilt range (degrees), slab thickness (Å, voxels
#: without a voxel size), polarity ('dark'/'bright').
GIVEN_KEYS = ("tilt_range", "slab_thickness", "polarity")


def _check_volume(volume) -> np.ndarray:
    """The (Z, Y, X) array, or one :class:`ParameterError` saying what is wrong."""
    if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
        volume = np.asarray(volume)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise ParameterError(
            f"the volume has shape {shape} ({len(shape)}-D); estimating the imaging condition needs a "
            "3-D tomogram (Z, Y, X)")
    if np.dtype(volume.dtype).kind not in "fiu":
        raise ParameterError(f"the volume must be numeric, got dtype {volume.dtype}")
    if min(shape) < MIN_SIZE:
        raise ParameterError(
            f"the volume {shape[0]}×{shape[1]}×{shape[2]} (Z×Y×X) is too small to estimate the imaging "
            f"condition; every axis needs at least {MIN_SIZE} voxels")
    return volume


def _check_given(given: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in (given or {}).items():
        if name not in GIVEN_KEYS:
            raise ParameterError(f"unknown given value {name!r}; expected one of {', '.join(GIVEN_KEYS)}")
        if value is None:
            continue
        if name == "tilt_range":
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ParameterError(f"given tilt_range must be (min, max) degrees, got {value!r}") from None
            if not (-90 <= lo <= hi <= 90):
                raise ParameterError(f"given tilt_range must satisfy −90 ≤ min ≤ max ≤ 90 degrees, got {value!r}")
            value = (lo, hi)
        elif name == "slab_thickness":
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = math.nan
            if not (math.isfinite(value) and value > 0):
                raise ParameterError(f"given slab_thickness must be a positive length, got {given[name]!r}")
        elif value not in ("dark", "bright"):
            raise ParameterError(f"given polarity must be 'dark' or 'bright', got {value!r}")
        out[name] = value
    return out


def _read(volume, zs: slice, ys: slice, xs: slice, chunk_bytes: int = _READ_CHUNK_BYTES) -> np.ndarray:
    """float32 copy of ``volume[zs, ys, xs]``, refusing non-finite voxels with one clear message.

    A memory map is read a few slices at a time — sized by the file bytes the rows touch — and
    its pages are dropped after each, so the resident memory stays bounded whatever the file.
    """
    z0, z1 = zs.start, zs.stop
    out = np.empty((z1 - z0, ys.stop - ys.start, xs.stop - xs.start), dtype=np.float32)
    row_bytes = (ys.stop - ys.start) * volume.shape[2] * np.dtype(volume.dtype).itemsize
    step = max(1, int(chunk_bytes // row_bytes))
    for z in range(z0, z1, step):
        out[z - z0 : min(z1, z + step) - z0] = volume[z : min(z1, z + step), ys, xs]
        release_pages(volume)
    if not np.isfinite(out).all():
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        raise ParameterError(
            f"the volume has non-finite voxels (NaN or inf; {bad} in the region read); replace them "
            "(e.g. by the mean) before estimating the imaging condition")
    return out


