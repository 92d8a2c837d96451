"""Atomic models (PDB / mmCIF) → electron-scattering density on a voxel grid, with gemmi.

The recipe (ALGORITHMS.md § 2; the 3D-ADA paper used Situs PDB2VOL):

- ``gemmi.DensityCalculatorE`` (electron scattering factors, Peng 1998 parametrisation),
  ``d_min = 2 · voxel`` (Nyquist of the target grid) and ``blur = 8π²·(voxel/2)²`` Å² (an extra
  B-factor that band-limits the atoms to the grid and prevents aliasing);
- the structure is put in an artificial P1 cubic cell big enough to hold it with a margin (no
  wrap-around), atoms are translated so that their **mass-weighted centre** lies on voxel
  ``n // 2`` of every axis, and ``add_model_density_to_grid`` sums every atom;
- gemmi grids are indexed (x, y, z): the array is transposed to numpy (Z, Y, X).

Rotating atoms is exact (no interpolation), so :func:`density_from_atoms` accepts a rotation.
Waters are removed; hydrogens are kept when the model has them. Only the first model is used
and the file's chains are used as they are (no biological-assembly expansion).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

ATOMIC_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")


def is_atomic_model(path: str | os.PathLike) -> bool:
    """True if the file name looks like a PDB or mmCIF model (optionally gzipped)."""
    name = Path(path).name.lower()
    return any(name.endswith(s) for s in ATOMIC_SUFFIXES)


def read_atoms(path: str | os.PathLike):
    """Read a structure with gemmi (first model, waters removed). Returns ``gemmi.Structure``."""
    import gemmi

    st = gemmi.read_structure(str(path))
    st.remove_waters()
    st.remove_empty_chains()
    if len(st) == 0 or st[0].count_atom_sites() == 0:
        raise ValueError("the model has no atoms")
    while len(st) > 1:  # keep only the first model (NMR ensembles)
        del st[len(st) - 1]
    return st


def density_from_atoms(
    path_or_structure,
    voxel_size: float,
    rotation: np.ndarray | None = None,
    *,
    margin: float = 4.0,
) -> np.ndarray:
    """Electron-scattering density of an atomic model, (Z, Y, X) float32, protein positive.

    Parameters
    ----------
    path_or_structure
        A PDB/mmCIF path or a ``gemmi.Structure``.
    voxel_size
        Å per voxel of the output grid.
    rotation
        Optional (3, 3) rotation matrix acting on **(x, y, z)** atom coordinates about the
        mass-weighted centre (applied exactly to the atoms before gridding).
    margin
        Empty voxels kept around the outermost atom (the blur needs ~3).

    Returns
    -------
    numpy.ndarray
        Cube of odd size ``n`` with the mass-weighted centre of the atoms on voxel ``n // 2``;
        background 0. Units are gemmi's (electron scattering potential per Å³, arbitrary
        overall scale).
    """
    import gemmi

    st = path_or_structure if isinstance(path_or_structure, gemmi.Structure) else read_atoms(path_or_structure)
    st = st.clone()
    model = st[0]
    pos = []
    mass = []
    for chain in model:
        for res in chain:
            for atom in res:
                pos.append((atom.pos.x, atom.pos.y, atom.pos.z))
                mass.append(atom.element.weight)
    xyz = np.asarray(pos, dtype=np.float64)
    w = np.asarray(mass, dtype=np.float64)
    centre = (xyz * w[:, None]).sum(0) / w.sum()
    rel = xyz - centre
    if rotation is not None:
        rot = np.asarray(rotation, dtype=np.float64)
        if rot.shape != (3, 3):
            raise ValueError(f"rotation must be a (3, 3) matrix, got shape {rot.shape}")
        rel = rel @ rot.T
    r_max = float(np.sqrt((rel**2).sum(1)).max())
    half = int(math.ceil(r_max / voxel_size + margin))
    n = 2 * half + 1
    length = n * voxel_size
    new = rel + half * voxel_size  # mass centre → voxel `half` (= n // 2)
    k = 0
    for chain in model:
        for res in chain:
            for atom in res:
                atom.pos = gemmi.Position(*new[k])
                k += 1
    st.cell = gemmi.UnitCell(length, length, length, 90.0, 90.0, 90.0)
    st.spacegroup_hm = "P 1"

    dc = gemmi.DensityCalculatorE()
    dc.d_min = 2.0 * voxel_size
    dc.blur = 8.0 * math.pi**2 * (voxel_size / 2.0) ** 2
    dc.set_grid_cell_and_spacegroup(st)
    dc.grid.set_size(n, n, n)
    dc.add_model_density_to_grid(model)
    dc.grid.symmetrize_sum()  # P1: folds nothing, but keeps gemmi's documented order
    arr = np.array(dc.grid, copy=True).transpose(2, 1, 0)  # (x, y, z) → (z, y, x)
    return np.ascontiguousarray(arr, dtype=np.float32)
