"""File input/output without Qt: tomograms (MRC) and picks (STAR/CSV), atomic writes."""

from ._atomic import atomic_path
from .picks_io import PICKS_EXTENSIONS, read_picks, write_picks
from .tomogram import (
    TOMOGRAM_EXTENSIONS,
    Tomogram,
    contrast_limits,
    read_tomogram,
    sample_voxels,
    write_tomogram,
)

__all__ = [
    "PICKS_EXTENSIONS",
    "TOMOGRAM_EXTENSIONS",
    "Tomogram",
    "atomic_path",
    "contrast_limits",
    "read_picks",
    "read_tomogram",
    "sample_voxels",
    "write_picks",
    "write_tomogram",
]
