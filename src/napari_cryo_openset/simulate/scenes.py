"""Whole synthetic tomograms with ground truth: particles in a slab, imaged by the full chain.

:func:`make_scene` places particles of the chosen templates (and optionally procedural decoys,
labelled ``unknown``) at random non-overlapping positions (centres at least ``r_i + r_j +
gap`` apart, every particle entirely inside the volume) with orientations uniform on SO(3), adds
an optional smooth crowding background, and images the **whole volume** with the same chain as
the subtomograms (:func:`~.imaging.image_volumes`: tilt-series projection about Y, −CTF × MTF,
Gaussian noise at the requested per-projection SNR over the whole projection, weighted
back-projection) — or with the documented approximate 3D mode (``mode='approximate'``).

The volume comes back float32 (Z, Y, X), normalised to zero mean and unit variance, in the
raw-reconstruction convention (**protein dark**). The picks table (:mod:`napari_cryo_openset.picks`)
holds the particle centres (centre of mass, voxels Z Y X) with ``class_name`` (template name or
``unknown``); ``picks.attrs`` records the voxel size, the defocus and the SNR used.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..errors import ParameterError
from ..picks import UNKNOWN_CLASS, make_picks
from ..progress import Progress, run_to_completion
from ..params import ImagingCondition
from .decoys import derived_decoys, make_decoys
from .generate import crowding_background
from .imaging import approximate_image_volumes, image_volumes
from .placement import add_into, random_rotations, rotate_into_boxes
from .templates import Template, builtin_templates


@dataclass(frozen=True)
class SceneParams:
    """A synthetic tomogram.

    Attributes
    ----------
    shape
        (Z, Y, X) voxels; Z is the slab thickness along the beam.
    condition
        Imaging condition (voxel size, optics, tilts, SNR — one value drawn per scene from a
        range).
    templates
        Known templates (None = the built-in library), resampled to the condition's voxel size.
    n_particles
        Particles to place (fewer if they do not fit; the picks table has the real count).
    unknown_fraction
        Fraction of the particles that are procedural decoys, labelled ``unknown``.
    background
        Standard deviation of the smooth crowding background (protein density units; 0 = off).
    gap
        Minimum free space between particle surfaces, voxels.
    mode
        ``full`` (tilt series → WBP of the whole volume) or ``approximate`` (3D shortcut).
    supersample
        Projector sub-voxels per axis (1 keeps large scenes fast).
    seed
        Everything random derives from it.
    slab
        ``(z0, z1)`` Z edges in voxels of the sample: every particle lies whole inside it, the
        rest of the volume is empty (ice). None = the whole volume is the slab.
    weights
        Relative frequency of each known template (sorted by name; None = equal).
    decoy_structures
        Distinct decoy structures (at most; fewer when fewer decoys are placed).
    decoy_max_diameter
        Largest decoy, nm.
    near_miss
        Fraction of the decoy structures derived from the known templates (rescaled, cut, or two
        halves joined: :func:`~.decoys.derived_decoys`); the rest are procedural.
    """

    shape: tuple[int, int, int] = (128, 256, 256)
    condition: ImagingCondition = field(default_factory=ImagingCondition)
    templates: tuple[Template, ...] | None = None
    n_particles: int = 100
    unknown_fraction: float = 0.0
    background: float = 0.0
    gap: float = 1.0
    mode: str = "full"
    supersample: int = 1
    seed: int = 0
    slab: tuple[float, float] | None = None
    weights: tuple[float, ...] | None = None
    decoy_structures: int = 8
    decoy_max_diameter: float = 30.0
    near_miss: float = 0.0

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 16:
            raise ParameterError(f"shape must be three sizes (Z, Y, X) of at least 16 voxels, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        if int(self.n_particles) < 0:
            raise ParameterError(f"n_particles must be ≥ 0, got {self.n_particles!r}")
        if not 0.0 <= float(self.unknown_fraction) <= 1.0:
            raise ParameterError(f"unknown_fraction must be in [0, 1], got {self.unknown_fraction!r}")
        if float(self.background) < 0 or float(self.gap) < 0:
            raise ParameterError("background and gap must be ≥ 0")
        if self.mode not in ("full", "approximate"):
            raise ParameterError(f"mode must be 'full' or 'approximate', got {self.mode!r}")
        if self.templates is not None:
            object.__setattr__(self, "templates", tuple(self.templates))
        if self.slab is not None:
            try:
                z0, z1 = (float(v) for v in self.slab)
            except (TypeError, ValueError):
                raise ParameterError(f"slab must be a (z0, z1) pair of voxels, got {self.slab!r}") from None
            if not (0 <= z0 < z1 <= shape[0]):
                raise ParameterError(f"slab must satisfy 0 ≤ z0 < z1 ≤ {shape[0]} (the Z size), got {self.slab!r}")
            object.__setattr__(self, "slab", (z0, z1))
        if self.weights is not None:
            w = tuple(float(v) for v in self.weights)
            if not w or min(w) < 0 or not sum(w) > 0 or not all(np.isfinite(w)):
                raise ParameterError(f"weights must be finite, ≥ 0 and not all zero, got {self.weights!r}")
            object.__setattr__(self, "weights", w)
        if not 0.0 <= float(self.near_miss) <= 1.0:
            raise ParameterError(f"near_miss must be in [0, 1], got {self.near_miss!r}")
        if int(self.decoy_structures) < 1 or not float(self.decoy_max_diameter) > 0:
            raise ParameterError("decoy_structures must be ≥ 1 and decoy_max_diameter > 0 nm")


def place_particles(
    shape: Sequence[int], radii: np.ndarray, rng: np.random.Generator, gap: float = 1.0, tries: int = 300,
    slab: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random non-overlapping centres for particles of ``radii`` (voxels), largest first.

    Returns (indices of the placed particles, (n, 3) Z Y X centres). A particle is dropped
    when ``tries`` random positions all collide (or it does not fit in the ``slab``, Z edges in voxels).
    """
    shape = np.asarray(shape, dtype=np.float64)
    z0, z1 = (0.0, shape[0] - 1) if slab is None else (max(0.0, slab[0]), min(shape[0] - 1, slab[1]))
    order = np.argsort(-np.asarray(radii), kind="stable")
    placed_idx, centres, rads = [], [], []
    for i in order:
        r = float(radii[i])
        lo, hi = np.full(3, r + 0.5), shape - 1 - r - 0.5
        lo[0], hi[0] = z0 + r + 0.5, z1 - r - 0.5
        if np.any(hi < lo):
            continue
        cand = rng.uniform(lo, hi, size=(tries, 3))
        if centres:
            c = np.asarray(centres)
            d = np.sqrt(((cand[:, None, :] - c[None]) ** 2).sum(-1))
            ok = np.all(d >= np.asarray(rads)[None] + r + gap, axis=1)
        else:
            ok = np.ones(tries, bool)
        if ok.any():
            k = int(np.argmax(ok))
            placed_idx.append(int(i))
            centres.append(cand[k])
            rads.append(r)
    return np.asarray(placed_idx, dtype=np.int64), np.asarray(centres, dtype=np.float64).reshape(-1, 3)


def make_scene(params: SceneParams = SceneParams(), device: str | torch.device = "cpu") -> tuple[np.ndarray, pd.DataFrame]:
    """Build a synthetic tomogram and its ground-truth picks (see the module docstring)."""
    return run_to_completion(generate_scene(params, device))


def generate_scene(
    params: SceneParams = SceneParams(), device: str | torch.device = "cpu"
) -> Generator[Progress, None, tuple[np.ndarray, pd.DataFrame]]:
    """:func:`make_scene` as a job generator: yields :class:`Progress`, returns (volume, picks)."""
    volume, picks, _ = yield from generate_scene_truth(params, device)
    return volume, picks


def generate_scene_truth(
    params: SceneParams = SceneParams(), device: str | torch.device = "cpu"
) -> Generator[Progress, None, tuple[np.ndarray, pd.DataFrame, dict]]:
    """:func:`generate_scene` plus the rest of the ground truth: returns (volume, picks, truth).

    ``truth`` (one row per particle, the picks' order): ``structure`` (template or decoy
    name), ``radius`` (voxels), ``rotations`` ((n, 3, 3), acting on z y x).
    """
    t0 = time.perf_counter()
    total = 4
    yield Progress("scene", 0, total, "templates")
    cond = params.condition
    vs = cond.voxel_size
    known = list(params.templates) if params.templates is not None else builtin_templates(vs)
    known = sorted((t.at_voxel_size(vs) for t in known), key=lambda t: t.name)
    if not known:
        raise ParameterError("a scene needs at least one template")
    rng = np.random.default_rng([int(params.seed), 0x5CE4E])
    n = int(params.n_particles)
    n_unknown = int(round(n * params.unknown_fraction))
    n_struct = max(1, min(int(params.decoy_structures), n_unknown))
    n_near = int(round(n_struct * float(params.near_miss))) if n_unknown else 0
    decoys = (make_decoys(n_struct - n_near, vs, params.seed, max_diameter=float(params.decoy_max_diameter))
              if n_unknown and n_struct > n_near else [])
    decoys += derived_decoys(known, n_near, params.seed)
    pool = known + decoys
    if params.weights is None:
        known_choice = rng.integers(len(known), size=n - n_unknown)
    else:
        if len(params.weights) != len(known):
            raise ParameterError(f"weights has {len(params.weights)} values for {len(known)} templates")
        p = np.asarray(params.weights) / sum(params.weights)
        known_choice = rng.choice(len(known), size=n - n_unknown, p=p)
    choice = np.concatenate([known_choice,
                             len(known) + rng.integers(max(len(decoys), 1), size=n_unknown)]).astype(np.int64)
    radii = np.array([pool[k].radius_voxels for k in choice])
    yield Progress("scene", 1, total, f"placing {n} particles")
    placed, centres = place_particles(params.shape, radii, rng, params.gap, slab=params.slab)
    choice = choice[placed]
    rotations = random_rotations(rng, len(choice))

    volume = torch.zeros(params.shape, dtype=torch.float32, device=device)
    for k in np.unique(choice):
        idx = np.flatnonzero(choice == k)
        tpl = pool[k]
        corner_centre = np.round(centres[idx]).astype(np.int64)
        frac = centres[idx] - corner_centre
        patches = rotate_into_boxes(tpl.density, rotations[idx], frac, tpl.shape, device)
        for j, c in enumerate(corner_centre):
            add_into(volume, patches[j], c - np.asarray(tpl.shape) // 2)
    if params.background > 0:
        background = crowding_background(params.shape, [int(rng.integers(2**62))], vs, device)[0]
        if params.slab is not None:  # the crowd is in the sample, not in the ice/vacuum around it
            z = torch.arange(params.shape[0], device=device, dtype=torch.float32)
            inside = ((z >= params.slab[0]) & (z <= params.slab[1])).to(torch.float32)
            background = background * inside[:, None, None]
        volume += params.background * background

    yield Progress("scene", 2, total, f"imaging {len(choice)} particles ({params.mode})")
    defocus = float(cond.sample_defocus(rng))
    snr = float(cond.sample_snr(rng))
    noise_seed = int(rng.integers(2**62))
    kwargs = dict(defocus=[defocus], snr=[snr], noise_seeds=[noise_seed])
    if params.mode == "approximate":
        out = approximate_image_volumes(volume[None], cond, **kwargs)[0]
    else:
        out = image_volumes(volume[None], cond, snr_window=params.shape[1:], supersample=params.supersample,
                            **kwargs)[0]
    out = (out - out.mean()) / out.std().clamp_min(1e-12)
    yield Progress("scene", 3, total, "ground truth")
    names = [pool[k].name if k < len(known) else UNKNOWN_CLASS for k in choice]
    picks = make_picks(centres, class_name=names)
    picks.attrs.update(voxel_size=vs, defocus_um=defocus, snr=snr, seed=int(params.seed),
                       seconds=round(time.perf_counter() - t0, 3), polarity="dark")
    yield Progress("scene", total, total, f"{len(picks)} particles")
    truth = {"structure": [pool[k].name for k in choice], "radius": radii[placed].astype(np.float64),
             "rotations": rotations}
    return out.cpu().numpy().astype(np.float32), picks, truth


#: The napari sample: 128×256×256 at 10 Å, ~100 particles of the built-in library (10 % decoys).
SAMPLE_SCENE = SceneParams(
    shape=(128, 256, 256),
    condition=ImagingCondition(voxel_size=10.0, defocus=5.0, snr=0.5),
    n_particles=100,
    unknown_fraction=0.1,
    background=0.05,
    seed=0,
)


def sample_scene(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """The sample-data scene (:data:`SAMPLE_SCENE`, seeded): (volume, picks); small enough to open at once."""
    params = SAMPLE_SCENE if seed == SAMPLE_SCENE.seed else SceneParams(**{**SAMPLE_SCENE.__dict__, "seed": seed})
    return make_scene(params)
