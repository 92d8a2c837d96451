"""Subtomogram extraction and the one normalisation of every box fed to a network.

Conventions (ARCHITECTURE.md § 3)
---------------------------------
- Arrays (Z, Y, X); coordinates in voxels of the tomogram, 0-based, voxel centres at integers.
- A box of size ``box`` has its centre at index ``box // 2`` on every axis (for even boxes the
  voxel just past the geometric middle, as RELION does).
- Without resampling, sub-voxel coordinates are **rounded to the nearest voxel** (halves up):
  boxes are exact copies of tomogram voxels, no interpolation.
- With resampling (``target_voxel_size`` ≠ ``voxel_size``), the box is sampled at the exact
  (sub-voxel) position with a separable cubic-convolution resampler (Keys kernel, a = −0.5;
  stretched by the scale factor s = target/source when the voxels grow, which is the
  antialiasing filter — Pillow's bicubic ``resize`` does the same), applied as one small weight
  matrix per axis on a local block: a few small matrix products per box instead of a Gaussian
  prefilter + ``scipy.ndimage.map_coordinates`` (order 3) over the block, which it equals to
  within the interpolation error (tests check the scale of the box content).
- Voxels outside the tomogram are filled with the **mean of the box's voxels inside the
  tomogram** (never ``None``, never a smaller box); NaN/inf voxels likewise.
- :func:`normalise_subtomograms` brings every box to the canonical polarity — **protein
  bright (positive)**, like density maps: dark data are multiplied by −1 — then to zero mean
  and unit variance per box. Simulation and real data both go through it.

Memory-mapped tomograms are read box by box (a sub-block each), never whole; pages read are
dropped from the process as it goes. :class:`SubtomogramSet` cuts the boxes of many picks on
demand, batch by batch, so memory is bounded by a batch and not by the number of picks.
"""

from __future__ import annotations


import numpy as np

from .errors import ParameterError
from .picking.dog import release_pages
from .picking.polarity import CANONICAL_POLARITY, polarity_sign

__all__ = ["CANONICAL_POLARITY", "SubtomogramSet", "extract_subtomograms", "normalise_subtomograms"]

#: Boxes read between two releases of memory-mapped pages.
_RELEASE_EVERY = 256
#: A box whose standard deviation is at most this fraction of its mean magnitude (or zero) is
#: constant up to float32 rounding: it becomes all zeros instead of amplified rounding noise.
_REL_EPS = 1e-6


def normalise_subtomograms(x: np.ndarray, polarity: str) -> np.ndarray:
    """Canonical polarity and per-box zero mean, unit variance (float32, a new array).

    Parameters
    ----------
    x
        Boxes (N, Z, Y, X), or one box (Z, Y, X).
    polarity
        ``dark`` (protein darker than background: multiplied by −1) or ``bright`` (kept).
        ``auto`` must be resolved first.

    Returns
    -------
    numpy.ndarray
        float32, same shape: protein positive, each box with mean 0 and standard deviation 1
        (population SD). A constant box becomes zeros. NaN/inf voxels are set to the box's
        finite mean first.
    """
    sign = polarity_sign(polarity)
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ParameterError(f"subtomograms must be (N, Z, Y, X) or (Z, Y, X), got shape {x.shape}")
    single = x.ndim == 3
    boxes = np.array(x[None] if single else x, dtype=np.float32, copy=True)
    if boxes.size == 0:
        return boxes[0] if single else boxes
    if not np.isfinite(boxes).all():
        _fill_nonfinite(boxes)
    axes = (1, 2, 3)
    mean = boxes.mean(axis=axes, dtype=np.float64, keepdims=True)
    boxes -= mean.astype(np.float32)
    sd = np.sqrt(np.square(boxes, dtype=np.float32).mean(axis=axes, dtype=np.float64, keepdims=True))
    varying = (sd > 0) & (sd > _REL_EPS * np.abs(mean))
    scale = np.where(varying, sign / np.where(varying, sd, 1.0), 0.0)
    boxes *= scale.astype(np.float32)
    return boxes[0] if single else boxes


def _fill_nonfinite(boxes: np.ndarray) -> None:
    for b in boxes:
        bad = ~np.isfinite(b)
        if bad.any():
            good = b[~bad]
            b[bad] = good.mean() if good.size else 0.0


def extract_subtomograms(
    volume,
    coords_zyx,
    box: int,
    *,
    voxel_size=None,
    target_voxel_size=None,
    polarity: str = "dark",
    normalise: bool = True,
) -> np.ndarray:
    """Cut cubic boxes centred on picks; float32 (N, box, box, box), all at once.

    Holds every box in memory (N × box³ × 4 bytes): for many picks use
    :class:`SubtomogramSet` (the same boxes, cut on demand, in batches) instead.

    Parameters
    ----------
    volume
        (Z, Y, X) tomogram (numpy or memory-mapped; read box by box) or a
        :class:`~napari_cryo_openset.io.Tomogram` (its voxel size is then the default).
    coords_zyx
        (N, 3) Z Y X voxel coordinates, or a picks table (``z``, ``y``, ``x`` columns).
        Every coordinate must lie inside the tomogram (−0.5 … size − 0.5).
    box
        Box edge in voxels of the output (of ``target_voxel_size`` when resampling).
    voxel_size
        Tomogram voxel size in Å (one number or Z, Y, X); needed only to resample.
    target_voxel_size
        Voxel size in Å of the output boxes (e.g. a model's). None or equal to ``voxel_size``:
        no resampling (coordinates rounded to the nearest voxel).
    polarity
        ``dark`` or ``bright``: the tomogram's protein contrast, used by the normalisation.
    normalise
        True: return :func:`normalise_subtomograms` of the boxes (canonical polarity, zero
        mean, unit variance). False: raw voxel values (polarity ignored).
    """
    boxes = SubtomogramSet(volume, coords_zyx, box, voxel_size=voxel_size, target_voxel_size=target_voxel_size,
                           polarity=polarity, normalise=normalise)
    return boxes.read_all()


class SubtomogramSet:
    """The boxes at a set of picks, cut on demand: a lazy float32 array (N, box, box, box).

    Same parameters and boxes as :func:`extract_subtomograms`, validated once here; nothing is
    extracted until asked. :meth:`take` cuts the boxes of some rows (Z, Y, X voxels of the
    tomogram, read sub-block by sub-block from the memory map) and :meth:`batches` walks all
    rows in order, so memory is bounded by one batch (``batch × box³ × 4`` bytes), not by the
    number of picks. A box depends only on its own pick: any batching gives the same boxes.
    """

    def __init__(self, volume, coords_zyx, box: int, *, voxel_size=None, target_voxel_size=None,
                 polarity: str = "dark", normalise: bool = True) -> None:
        if hasattr(volume, "data") and hasattr(volume, "voxel_size") and not isinstance(volume, np.ndarray):
            voxel_size = volume.voxel_size if voxel_size is None else voxel_size
            volume = volume.data
        if not hasattr(volume, "shape"):
            volume = np.asarray(volume)
        if volume.ndim != 3 or min(volume.shape) < 1:
            raise ParameterError(f"extraction needs a 3-D (Z, Y, X) tomogram, got shape {tuple(volume.shape)}")
        if isinstance(box, bool) or not float(box).is_integer() or int(box) < 1:
            raise ParameterError(f"box must be a whole number of voxels ≥ 1, got {box!r}")
        if normalise:
            polarity_sign(polarity)  # validate early
        coords = _coords(coords_zyx)
        _check_inside(coords, np.asarray(volume.shape))
        self.volume, self.coords, self.box = volume, coords, int(box)
        self.polarity, self.normalise = polarity, bool(normalise)
        self.voxel_size, self.target_voxel_size = voxel_size, target_voxel_size
        self.scale = _scale(voxel_size, target_voxel_size)

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, box, box, box)."""
        return (len(self.coords), self.box, self.box, self.box)

    @property
    def box_bytes(self) -> int:
        """Bytes of one float32 box."""
        return 4 * self.box**3

    def _copy(self, **changes) -> SubtomogramSet:
        out = object.__new__(SubtomogramSet)
        out.__dict__.update(self.__dict__, **changes)
        return out

    def subset(self, rows) -> SubtomogramSet:
        """The set of the picks ``rows`` (indices into this set, in that order); nothing is cut."""
        return self._copy(coords=self.coords[np.asarray(rows, dtype=np.int64)])

    def normalised(self, polarity: str) -> SubtomogramSet:
        """The same picks, cut as canonical boxes (:func:`normalise_subtomograms` with ``polarity``)."""
        polarity_sign(polarity)
        return self._copy(normalise=True, polarity=polarity)

    def take(self, rows) -> np.ndarray:
        """float32 boxes (len(rows), box, box, box) of the picks ``rows``, in that order.

        Boxes are cut in Z order (neighbouring boxes share pages of the memory map) and the
        mapped pages are released every :data:`_RELEASE_EVERY` boxes and at the end.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        b = self.box
        out = np.empty((len(rows), b, b, b), dtype=np.float32)
        coords = self.coords[rows]
        order = np.argsort(coords[:, 0], kind="stable")  # Z order: neighbouring boxes share pages
        for n, i in enumerate(order):
            if self.scale is None:
                out[i] = _box_nearest(self.volume, coords[i], b)
            else:
                out[i] = _box_resampled(self.volume, coords[i], b, self.scale)
            if (n + 1) % _RELEASE_EVERY == 0:
                release_pages(self.volume)
        release_pages(self.volume)
        return normalise_subtomograms(out, self.polarity) if self.normalise else out

    def read_all(self, batch_size: int = 256) -> np.ndarray:
        """Every box, (N, box, box, box) float32, filled batch by batch (no second full-size copy)."""
        out = np.empty(self.shape, dtype=np.float32)
        for start, boxes in self.batches(batch_size):
            out[start:start + len(boxes)] = boxes
        return out

    def batches(self, batch_size: int):
        """Yield ``(start, boxes)`` for rows ``start … start + len(boxes) − 1``, at most ``batch_size`` each."""
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ParameterError(f"batch size must be ≥ 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield start, self.take(np.arange(start, min(start + batch_size, len(self))))


def _check_inside(coords: np.ndarray, shape: np.ndarray) -> None:
    outside = np.any((coords < -0.5) | (coords > shape - 0.5), axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ParameterError(
            f"{int(outside.sum())} pick(s) lie outside the tomogram of shape {tuple(int(v) for v in shape)} "
            f"(Z, Y, X voxels); first: pick {i} at {tuple(round(float(v), 2) for v in coords[i])}. Are the "
            "picks in voxels of this tomogram?"
        )


def _coords(coords_zyx) -> np.ndarray:
    if hasattr(coords_zyx, "columns"):
        missing = [c for c in ("z", "y", "x") if c not in coords_zyx.columns]
        if missing:
            raise ParameterError(f"the picks table has no column(s) {', '.join(missing)}")
        coords = coords_zyx[["z", "y", "x"]].to_numpy(dtype=np.float64)
    else:
        coords = np.asarray(coords_zyx, dtype=np.float64)
        if coords.size == 0:
            coords = coords.reshape(0, 3)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ParameterError(f"coordinates must be an (N, 3) Z Y X array, got shape {coords.shape}")
    if not np.isfinite(coords).all():
        raise ParameterError("coordinates contain NaN or infinite values")
    return coords


def _scale(voxel_size, target_voxel_size) -> np.ndarray | None:
    """target / source voxel size per axis, or None when no resampling is needed."""
    if target_voxel_size is None:
        return None
    if voxel_size is None:
        raise ParameterError(
            "target_voxel_size needs the tomogram's voxel_size (Å) to resample the boxes"
        )
    from .io.tomogram import voxel_size_zyx

    src = np.asarray(voxel_size_zyx(voxel_size, "voxel_size"))
    dst = np.asarray(voxel_size_zyx(target_voxel_size, "target_voxel_size"))
    s = dst / src
    return None if np.allclose(s, 1.0, rtol=1e-6) else s


def _read_block(volume, start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """float32 block ``[start, start + size)``; outside voxels and NaN/inf = mean of the rest."""
    n = np.asarray(volume.shape)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + size, n)
    block = np.empty(tuple(int(s) for s in size), dtype=np.float32)
    inner = tuple(slice(int(lo[a] - start[a]), int(hi[a] - start[a])) for a in range(3))
    if np.all(hi > lo):
        block[inner] = volume[int(lo[0]) : int(hi[0]), int(lo[1]) : int(hi[1]), int(lo[2]) : int(hi[2])]
        part = block[inner]
        finite = np.isfinite(part)
        all_finite = bool(finite.all())
        fill = float(part.mean(dtype=np.float64)) if all_finite else (
            float(part[finite].mean(dtype=np.float64)) if finite.any() else 0.0
        )
        if not all_finite:
            part[~finite] = fill
    else:  # pragma: no cover - coordinates are checked to be inside
        fill = 0.0
    if block[inner].size != block.size:
        mask = np.ones(block.shape, dtype=bool)
        mask[inner] = False
        block[mask] = fill
    return block


def _box_nearest(volume, coord: np.ndarray, box: int) -> np.ndarray:
    centre = np.floor(coord + 0.5).astype(np.int64)
    return _read_block(volume, centre - box // 2, np.full(3, box, dtype=np.int64))


def _keys_cubic(t: np.ndarray) -> np.ndarray:
    """Keys cubic-convolution kernel (a = −0.5), support [−2, 2]."""
    t = np.abs(t)
    return np.where(
        t < 1.0,
        (1.5 * t - 2.5) * t * t + 1.0,
        np.where(t < 2.0, ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0, 0.0),
    )


def _resampling_matrix(positions: np.ndarray, first: int, length: int, scale: float) -> np.ndarray:
    """(len(positions), length) weights of source voxels ``first … first+length−1``.

    Keys cubic kernel, stretched by ``scale`` when the voxels grow (antialiasing, as Pillow's
    bicubic resize does), each row normalised to sum 1.
    """
    stretch = max(1.0, float(scale))
    src = first + np.arange(length)
    w = _keys_cubic((positions[:, None] - src[None, :]) / stretch)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _box_resampled(volume, coord: np.ndarray, box: int, scale: np.ndarray) -> np.ndarray:
    """Separable resampling: one weight matrix per axis, applied with three tensordots."""
    offsets = (np.arange(box) - box // 2)[None, :] * scale[:, None]  # (3, box), source voxels
    positions = coord[:, None] + offsets
    reach = 2.0 * np.maximum(1.0, scale)  # kernel support in source voxels
    first = np.floor(positions[:, 0] - reach).astype(np.int64)
    last = np.ceil(positions[:, -1] + reach).astype(np.int64)
    size = last - first + 1
    block = _read_block(volume, first, size)
    w = [_resampling_matrix(positions[a], int(first[a]), int(size[a]), scale[a]) for a in range(3)]
    out = np.tensordot(w[0], block, axes=(1, 0))  # (box, Ly, Lx)
    out = np.tensordot(out, w[1], axes=(1, 1))  # (box, Lx, box)
    out = np.tensordot(out, w[2], axes=(1, 1))  # (box, box, box)
    return out.astype(np.float32, copy=False)
