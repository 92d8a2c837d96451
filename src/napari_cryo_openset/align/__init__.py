"""Subtomogram alignment and averaging (core: torch, no Qt): orientations, averages, FSC, "resembles".

What it does
------------
:func:`align_group` aligns a group of boxes (N, D, D, D) — a class or a cluster of unknown
picks — without a reference (start: the unaligned average) or from a given one (the template
of a known class), gold standard:

1. The boxes are split into two half-sets at the start (index parity, or seeded); each is aligned
   to and averaged into its own half-map. Both start from the same reference, low-passed to
   ``initial_lowpass`` (default max(4 voxels, 40 Å)); without a reference, the halves' frames are
   arbitrary after the first global round, so half-map 2 is registered onto half-map 1 (a global
   + local search of one map, its particles' poses composed with it) before the FSC.
2. Each round: a **global search** over a uniform SO(3) grid (super-Fibonacci, :mod:`.so3`,
   ``angular_step``, 4,608 rotations at 15°) on boxes Fourier-cropped to ``global_box`` (16³: lossless
   below its Nyquist, and the reference is low-passed anyway), the translation of every rotation
   by one FFT cross-correlation (peak within ``max_shift``); then ``refine_levels`` **local
   searches** (a cubic grid of rotation vectors around each box's best rotation, step ÷ 3 per
   level, within the previous step; 123 rotations a level) at the box size the current
   resolution needs, with a sub-voxel (parabolic) shift. Later rounds refine locally only.
3. The **score** (``score='wedge'``, the default) is the **constrained cross-correlation**
   (Förster et al. 2008): the rotated reference's spectrum is multiplied by the box's own
   missing-wedge mask (tilt axis Y, the simulator's convention, :func:`.fourier.wedge_of`) and
   the band-pass, and the correlation is normalised by the powers of box and reference over
   that *shared* support only, ``Σ F·conj(G)·W·B² / √(Σ|F|²W·B² · Σ|G|²W·B²)``. The plain CC
   (``score='cc'``) normalises the reference over the whole sphere — orientations that put
   the reference's power into the measured region then win: the wedge bias the tests and the
   benchmark measure.
4. **Averages** are wedge-weighted in Fourier space: each box unshifted, rotated back (``Rᵀ``)
   and its wedge rotated with it, ``avg = F⁻¹[Σ Fᵢ·Wᵢ / (Σ Wᵢ + eps)]``; optional Cn symmetry
   about Z (off: ``C1``) adds each box once per symmetry copy.
5. **FSC** (:func:`.fourier.fsc`, our own, tested against identical maps → 1 and independent
   noise → ~0) of the soft-masked half-maps → the resolution at 0.143 (Å), which sets the
   low-pass of the next round.

Conventions
-----------
Arrays are (Z, Y, X); rotations turn about voxel ``D // 2``. Orientations are RELION's: ZYZ
Euler angles ``rlnAngleRot/Tilt/Psi`` whose matrix ``A`` (:func:`.so3.euler_to_matrix`, acting on
(x, y, z)) maps the reference onto the particle — ``particle(p) = average(Aᵀ p)``; see
:mod:`.so3`. Shifts are the particle centre's offset from the box centre, voxels (z, y, x);
RELION's ``rlnOriginXAngst`` = −shift_x × voxel size (:meth:`AlignmentResult.relion_columns`).

Jobs are generators (:class:`~napari_cryo_openset.progress.Progress` events at least once per
batch of rotations or boxes, then the result): the Results dock runs them in a worker (Cancel =
stop iterating), the CLI with :func:`~napari_cryo_openset.progress.run_with_tqdm`.

Why our own and not ``acryo``
-----------------------------
``benchmarks/bench_align.py`` runs both on the same boxes (``benchmarks/results/align_quick.md``:
24 wedged copies of 4v4r, 32³ at 20 Å, SNR 0.1, 2 CPU threads). Ours, from a 40 Å reference:
4.1° median error, 0.13 voxel shift error, 47 Å gold-standard resolution, 25 s (plain CC:
10.8°, 60 Å). acryo 0.9.1 (BSD-3; ZNCC with its wedge model, scipy ``affine_transform`` per
rotation through dask) did not finish in 300 s even on a 45° Euler grid plus local refinement,
nor in 900 s on a 30° grid. It also searches an Euler-angle box around each molecule's
orientation (no uniform SO(3) grid), masks template and box with one rotated wedge without
normalising over the shared support, has no gold-standard iterations and no GPU path. So the
product uses its own (torch: GPU when present, batched); acryo is only the ``[bench]`` extra.
Known limit: reference-free alignment from the unaligned (blob) average does not converge on
that benchmark (77° median error) — give a reference (a known class's template) where there is one.
"""

from .core import (
    MIN_BOXES,
    AlignmentResult,
    Resemblance,
    align_group,
    align_to_reference,
    fit_box,
    iter_resembles,
    resembles,
    rotate_volumes,
)
from .fourier import FSC, FSC_THRESHOLD, fsc, fsc_curve, resolution_at
from .so3 import (
    euler_to_matrix,
    local_rotations,
    matrix_to_euler,
    orientation_errors,
    rotation_angle,
    uniform_rotations,
    xyz_to_zyx,
)

__all__ = [
    "FSC", "FSC_THRESHOLD", "MIN_BOXES", "AlignmentResult", "Resemblance", "align_group", "align_to_reference",
    "euler_to_matrix", "fit_box", "fsc", "fsc_curve", "iter_resembles", "local_rotations", "matrix_to_euler",
    "orientation_errors", "resembles", "resolution_at", "rotate_volumes", "rotation_angle", "uniform_rotations",
    "xyz_to_zyx",
]
