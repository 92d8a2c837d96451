"""napari writers: Points → STAR/CSV picks, Image → MRC tomogram.

Both keep what napari knows about the data: the picks' ``features`` (every column, including
curation, so nothing curated is lost) and the layer ``scale`` as voxel size (Å) — saving a
tomogram never drops its pixel size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import CryoOpensetError
from .io.picks_io import write_picks
from .io.tomogram import write_tomogram
from .layers import picks_from_layer


def _voxel_size(meta: dict[str, Any]):
    md = meta.get("metadata") or {}
    if md.get("voxel_size"):
        return tuple(float(v) for v in md["voxel_size"])[-3:]
    scale = meta.get("scale")
    if scale is None:
        return None
    return tuple(float(s) for s in scale)[-3:]


def write_points(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Points layer (voxel Z Y X coordinates + features) as STAR or CSV.

    Every curated pick is written (rejected ones marked ``rejected``); candidates below the
    Pick widget's live threshold are not.
    """
    picks = picks_from_layer(data, meta.get("features"), meta.get("metadata"))
    vs = _voxel_size(meta)
    if vs is not None and not np.allclose(vs, vs[0]):
        vs = None  # anisotropic: not representable in cosVoxelSizeAngst
    write_picks(path, picks, voxel_size=None if vs is None else vs[0])
    return [path]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write a 3-D Image layer as MRC with its scale as voxel size (Å)."""
    if isinstance(data, list):  # multiscale: write the full-resolution level
        data = data[0]
    if getattr(data, "ndim", 0) != 3:
        raise CryoOpensetError(
            f"'{path}': only 3-D image layers (Z, Y, X) can be saved as MRC; this one has shape "
            f"{getattr(data, 'shape', None)}"
        )
    vs = _voxel_size(meta) or (1.0, 1.0, 1.0)
    md = meta.get("metadata") or {}
    write_tomogram(path, np.asarray(data), vs, origin=md.get("origin"))
    return [path]
