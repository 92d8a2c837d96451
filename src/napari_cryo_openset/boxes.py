"""Canonical boxes at picks as a lazy torch tensor: what prediction and adaptation iterate over.

A :class:`PickBoxes` looks like the ``(N, 1, B, B, B)`` float32 tensor of canonical boxes
(protein positive, per-box zero mean and unit variance; axes Z, Y, X) that
:func:`~napari_cryo_openset.models.forward_batches`, the adaptation loops and the samplers
index into — ``len``, ``shape``, ``ndim``, slicing and integer-array indexing — but holds only
the picks' coordinates and the memory-mapped tomogram: each index cuts its boxes on the spot
(:class:`~napari_cryo_openset.extract.SubtomogramSet`). Memory is bounded by the batch being
indexed, not by the number of picks, and the boxes are the same as those cut all at once.

Helpers that work on a real tensor and on a :class:`PickBoxes` alike: :func:`take_rows`,
:func:`iter_batches`, :func:`cache_if_small` (hold a small set in memory: re-cutting costs time).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .extract import SubtomogramSet

#: Sets up to this many bytes are held in memory by :func:`cache_if_small` (256 MiB: ~4,800
#: boxes of 24³, ~1,000 of 40³); larger ones stay lazy.
CACHE_BYTES = 256 * 2**20


class PickBoxes:
    """Lazy ``(N, 1, B, B, B)`` float32 tensor of the normalised boxes of a :class:`SubtomogramSet`."""

    ndim = 5
    dtype = torch.float32

    def __init__(self, subtomograms: SubtomogramSet) -> None:
        if not subtomograms.normalise:
            raise ValueError("PickBoxes holds canonical (normalised) boxes")  # internal misuse
        self.subtomograms = subtomograms

    def __len__(self) -> int:
        return len(self.subtomograms)

    @property
    def shape(self) -> torch.Size:
        b = self.subtomograms.box
        return torch.Size((len(self), 1, b, b, b))

    @property
    def nbytes(self) -> int:
        """Bytes the whole set would take in memory."""
        return len(self) * self.subtomograms.box_bytes

    def float(self) -> PickBoxes:
        return self

    def __getitem__(self, key) -> torch.Tensor:
        rows = _rows(key, len(self))
        out = torch.from_numpy(self.subtomograms.take(rows))[:, None]
        return out[0] if isinstance(key, (int, np.integer)) else out

    def subset(self, rows) -> PickBoxes:
        """The lazy set of ``rows`` (indices into this set, in that order)."""
        return PickBoxes(self.subtomograms.subset(rows))

    def materialise(self, batch_size: int = 256) -> torch.Tensor:
        """All boxes as one tensor (N, 1, B, B, B), filled batch by batch."""
        out = torch.empty(tuple(self.shape), dtype=torch.float32)
        for start, xb in iter_batches(self, batch_size):
            out[start:start + len(xb)] = xb
        return out


def _rows(key, n: int) -> np.ndarray:
    if isinstance(key, slice):
        return np.arange(n)[key]
    if isinstance(key, (int, np.integer)):
        if not -n <= int(key) < n:
            raise IndexError(f"index {key} is out of range for {n} boxes")
        return np.array([int(key) % n])
    if isinstance(key, torch.Tensor):
        key = key.cpu().numpy()
    rows = np.asarray(key)
    if rows.dtype == bool:
        return np.flatnonzero(rows)
    rows = rows.astype(np.int64).reshape(-1)
    if rows.size and (rows.min() < -n or rows.max() >= n):
        raise IndexError(f"indices out of range for {n} boxes")
    return rows % n if rows.size else rows


def take_rows(boxes, rows) -> torch.Tensor | PickBoxes:
    """``boxes[rows]`` of a tensor (a copy) or a :class:`PickBoxes` (a lazy subset)."""
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(boxes, PickBoxes):
        return boxes.subset(rows)
    return boxes[torch.from_numpy(rows)]


def iter_batches(boxes, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, boxes[start:start + batch_size])`` over a tensor or a :class:`PickBoxes`."""
    for start in range(0, len(boxes), int(batch_size)):
        yield start, boxes[start:start + int(batch_size)]


def cache_if_small(boxes, max_bytes: int = CACHE_BYTES):
    """A :class:`PickBoxes` of at most ``max_bytes`` as a tensor in memory; anything else as it is."""
    if isinstance(boxes, PickBoxes) and boxes.nbytes <= max_bytes:
        return boxes.materialise()
    return boxes


class PooledBoxes(PickBoxes):
    """Lazy ``(N, 1, B, B, B)`` boxes of several :class:`PickBoxes` end to end (e.g. the picks of
    several tomograms, ``batch --joint``): rows of the first part, then of the second, …

    Each index cuts its rows from the part (tomogram) they belong to; a part may also be a tensor
    already in memory. Parts must share the box edge.
    """

    def __init__(self, parts) -> None:
        self.parts = list(parts)
        if not self.parts:
            raise ValueError("PooledBoxes needs at least one part")  # internal misuse
        edges = {tuple(p.shape[-3:]) for p in self.parts}
        if len(edges) != 1:
            raise ValueError(f"pooled boxes must share one box edge, got {sorted(edges)}")  # internal misuse
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.parts[0].shape[1:]))

    @property
    def nbytes(self) -> int:
        return int(sum(p.nbytes for p in self.parts))

    def _split(self, rows: np.ndarray):
        """(part index, rows of the output, rows within that part) for every part ``rows`` touch."""
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for p in np.unique(which):
            at = np.flatnonzero(which == p)
            yield int(p), at, rows[at] - self.offsets[p]

    def __getitem__(self, key) -> torch.Tensor:
        rows = _rows(key, len(self))
        out = torch.empty((len(rows), *self.shape[1:]), dtype=torch.float32)
        for p, at, local in self._split(rows):
            part = self.parts[p]
            out[torch.from_numpy(at)] = part[torch.from_numpy(local) if isinstance(part, torch.Tensor) else local]
        return out[0] if isinstance(key, (int, np.integer)) else out

    def subset(self, rows) -> PooledBoxes:
        """The lazy set of ``rows`` (in that order when they are sorted; :func:`adaptation_subset` sorts)."""
        rows = _rows(rows, len(self))
        if rows.size and np.any(np.diff(rows) < 0):
            raise ValueError("PooledBoxes.subset needs sorted rows")  # internal misuse
        parts = [take_rows(self.parts[p], local) for p, _, local in self._split(rows)]
        return PooledBoxes(parts) if parts else PooledBoxes([take_rows(self.parts[0], rows[:0])])
