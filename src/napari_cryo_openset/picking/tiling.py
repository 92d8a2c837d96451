"""Split a tomogram into overlapping tiles that fit a memory budget.

Each tile has a *core* (the tiles' cores partition the volume) and a *window* = core + halo on
every side, extended on the high side to a fast FFT length. Windows are read from the
(memory-mapped) volume; where a window runs past a face of the volume it is filled by
reflection. A peak belongs to the tile whose core holds its response sample, so nothing is found
twice; the halo (≥ 4 σ2 for the Gaussians + the local-maximum cube + 1 sample) makes every
core sample's response and neighbourhood the same as in an untiled run. The min-distance
suppression then runs once on all candidates, so tiled and untiled runs agree.

Core boundaries and windows start on multiples of the decimation ``bin``, so every tile samples
the response on the same global lattice (voxel indices ≡ 0 mod bin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .dog import fast_length
from .params import PickingGeometry

#: Working memory per window voxel, bytes (float32 block + half-spectrum + small arrays),
#: measured with the decimated path; the full-resolution path (bin 1) needs
#: :data:`BYTES_PER_VOXEL_FULL`.
BYTES_PER_VOXEL = 10.0
BYTES_PER_VOXEL_FULL = 28.0


@dataclass(frozen=True)
class Tile:
    """One tile: core ``[core_start, core_stop)`` and window ``[window_start, +window_shape)``,
    in voxels (Z, Y, X) of the volume (window_start may be negative)."""

    core_start: tuple[int, int, int]
    core_stop: tuple[int, int, int]
    window_start: tuple[int, int, int]
    window_shape: tuple[int, int, int]


def bytes_per_voxel(geometry: PickingGeometry) -> float:
    """Working-memory estimate per window voxel."""
    return BYTES_PER_VOXEL if math.prod(geometry.bin) >= 4 else BYTES_PER_VOXEL_FULL


def _bounds(n: int, parts: int, b: int) -> list[int]:
    """``parts`` + 1 boundaries splitting [0, n) at multiples of ``b`` (first 0, last n)."""
    cuts = [0]
    for j in range(1, parts):
        c = int(round(n * j / parts / b)) * b
        cuts.append(min(max(c, cuts[-1] + b), n))
    cuts.append(n)
    return [c for i, c in enumerate(cuts) if i == 0 or c > cuts[i - 1]]


def _window(core_start: int, core_stop: int, halo: int, b: int) -> tuple[int, int]:
    start = core_start - halo
    return start, fast_length(core_stop + halo - start, b)


def plan_tiles(shape: tuple[int, int, int], geometry: PickingGeometry, budget_bytes: float) -> list[Tile]:
    """Tiles covering ``shape`` whose windows fit ``budget_bytes`` (as far as possible).

    Starts with one tile and adds a cut on the axis with the longest cores until the largest
    window fits; cores never get shorter than max(halo, 8·bin) voxels (tiny budgets give
    many tiles, not absurdly many).
    """
    b, halo = geometry.bin, geometry.halo
    per_voxel = bytes_per_voxel(geometry)
    parts = [1, 1, 1]
    min_core = [max(halo[a], 8 * b[a]) for a in range(3)]

    def largest_window() -> tuple[int, list[int]]:
        longest = []
        for a in range(3):
            cuts = _bounds(shape[a], parts[a], b[a])
            longest.append(max(cuts[i + 1] - cuts[i] for i in range(len(cuts) - 1)))
        size = math.prod(_window(0, longest[a], halo[a], b[a])[1] for a in range(3))
        return size, longest

    while True:
        size, longest = largest_window()
        if size * per_voxel <= budget_bytes:
            break
        order = sorted(range(3), key=lambda a: (-longest[a], -a))
        for a in order:
            if longest[a] / 2 >= min_core[a]:
                parts[a] += 1
                break
        else:
            break  # cannot cut further: run over the budget rather than fail
    cuts = [_bounds(shape[a], parts[a], b[a]) for a in range(3)]
    tiles = []
    for z0, z1 in zip(cuts[0][:-1], cuts[0][1:]):
        for y0, y1 in zip(cuts[1][:-1], cuts[1][1:]):
            for x0, x1 in zip(cuts[2][:-1], cuts[2][1:]):
                core = ((z0, z1), (y0, y1), (x0, x1))
                win = [_window(c0, c1, halo[a], b[a]) for a, (c0, c1) in enumerate(core)]
                tiles.append(
                    Tile(
                        core_start=(z0, y0, x0),
                        core_stop=(z1, y1, x1),
                        window_start=tuple(w[0] for w in win),
                        window_shape=tuple(w[1] for w in win),
                    )
                )
    return tiles
