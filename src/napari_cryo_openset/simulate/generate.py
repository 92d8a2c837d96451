"""Simulating a labelled subtomogram set (the set and its file: :mod:`.datasets`).

Sample ``i`` is a pure function of ``(seed, i)``: :func:`make_spec` draws everything random
about it (class, template, rotation, shift, defocus, SNR, neighbours, seeds) and
:func:`render_specs` images many samples in one batched pass through the chain of
:mod:`.imaging` (or its approximate 3D mode). :func:`generate_subtomograms` makes a set in
memory, :func:`generate_dataset` also writes it. Arrays (Z, Y, X), voxel sizes in Å, defocus in µm.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CryoOpensetError, ParameterError
from ..extract import normalise_subtomograms
from ..picks import UNKNOWN_CLASS
from ..progress import Progress
from .datasets import DatasetParams, SimulatedSet, class_names_for, write_dataset
from .decoys import make_decoys
from .imaging import approximate_image_volumes, gaussian_noise, image_volumes
from .placement import random_rotations, random_unit_vectors, rotate_into_boxes
from .templates import Template

_MAX_NEIGHBOURS = 4


# --------------------------------------------------------------------------------------------
# sample specifications (pure functions of (seed, index))
# --------------------------------------------------------------------------------------------


@dataclass
class SampleSpec:
    """Everything random about one subtomogram (``template`` indexes the library)."""

    index: int
    label: int
    kind: str  # "particle", "decoy" or "empty"
    template: int  # for "empty": the known template whose noise level is used
    rotation: np.ndarray
    shift: np.ndarray
    defocus: float
    snr: float
    noise_seed: int
    context_seed: int
    neighbours: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)


@dataclass
class Library:
    """Known templates (sorted) followed by the decoy pool, at one voxel size."""

    known: list[Template]
    decoys: list[Template]

    @property
    def all(self) -> list[Template]:
        return self.known + self.decoys


def make_spec(index: int, label: int, kind: str, library: Library, params: DatasetParams) -> SampleSpec:
    """The random choices of sample ``index`` (template, pose, optics, neighbours, seeds)."""
    rng = np.random.default_rng([int(params.seed), 1, int(index)])
    n_known, n_decoy = len(library.known), len(library.decoys)
    if kind == "particle":
        template = label
    elif kind == "decoy":
        template = n_known + int(rng.integers(n_decoy))
    else:
        template = int(rng.integers(n_known))
    rotation = random_rotations(rng, 1)[0]
    shift = rng.uniform(-params.max_shift, params.max_shift, 3) if params.max_shift > 0 else np.zeros(3)
    defocus = float(params.condition.sample_defocus(rng))
    snr = float(params.condition.sample_snr(rng))
    noise_seed, context_seed = (int(v) for v in rng.integers(0, 2**62, 2))
    neighbours = []
    if params.neighbours > 0:
        pool = library.all
        r_c = pool[template].radius_voxels
        for _ in range(min(_MAX_NEIGHBOURS, int(rng.poisson(params.neighbours)))):
            k = int(rng.integers(len(pool)))
            r_n = pool[k].radius_voxels
            direction = random_unit_vectors(rng, 1)[0]
            distance = (r_c + r_n) * rng.uniform(1.0, 1.25) + 1.0
            neighbours.append((k, random_rotations(rng, 1)[0], direction * distance))
    return SampleSpec(index, int(label), kind, int(template), rotation, shift, defocus, snr,
                      noise_seed, context_seed, neighbours)


def dataset_layout(n_known: int, params: DatasetParams, class_names: Sequence[str]) -> list[tuple[int, str]]:
    """(label, kind) of every sample of a fixed-size set, in a seeded shuffled order."""
    items = [(c, "particle") for c in range(n_known) for _ in range(params.per_class)]
    if params.empty:
        items += [(class_names.index(params.empty_label), "empty")] * params.empty
    if params.decoys:
        items += [(class_names.index(UNKNOWN_CLASS), "decoy")] * params.decoys
    order = np.random.default_rng([params.seed, 0]).permutation(len(items))
    return [items[i] for i in order]


# --------------------------------------------------------------------------------------------
# rendering (batched)
# --------------------------------------------------------------------------------------------


def context_margin(params: DatasetParams) -> int:
    """Voxels simulated around the box on each side when neighbours/background are on."""
    return int(math.ceil(params.box / 4)) if (params.neighbours > 0 or params.background > 0) else 0


def render_specs(specs: Sequence[SampleSpec], library: Library, params: DatasetParams,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """Simulate the subtomograms of ``specs`` in one batched pass → (N, box, box, box) float32.

    Normalised per box (zero mean, unit variance:
    :func:`~napari_cryo_openset.extract.normalise_subtomograms`), protein dark, on the CPU.
    """
    n = len(specs)
    box = params.box
    size = box + 2 * context_margin(params)
    shape = (size, size, size)
    pool = library.all
    particles = torch.zeros((n, *shape), dtype=torch.float32, device=device)
    by_template: dict[int, list[int]] = {}
    for i, s in enumerate(specs):
        by_template.setdefault(s.template, []).append(i)
    for k, idx in by_template.items():
        rot = np.stack([specs[i].rotation for i in idx])
        sh = np.stack([specs[i].shift for i in idx])
        particles[idx] = rotate_into_boxes(pool[k].density, rot, sh, shape, device)

    context = None
    if any(s.neighbours for s in specs) or params.background > 0:
        context = torch.zeros_like(particles)
        groups: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for i, s in enumerate(specs):
            for k, rot, offset in s.neighbours:
                groups.setdefault(k, []).append((i, rot, offset + s.shift))
        for k, items in groups.items():
            rendered = rotate_into_boxes(pool[k].density, np.stack([r for _, r, _ in items]),
                                         np.stack([o for _, _, o in items]), shape, device)
            for j, (i, _, _) in enumerate(items):
                context[i] += rendered[j]
        if params.background > 0:
            context += params.background * crowding_background(shape, [s.context_seed for s in specs],
                                                               params.voxel_size, device)

    kwargs = dict(defocus=[s.defocus for s in specs], snr=[s.snr for s in specs],
                  noise_seeds=[s.noise_seed for s in specs], context=context,
                  include=[s.kind != "empty" for s in specs], recon_shape=(box, box, box))
    if params.mode == "approximate":
        out = approximate_image_volumes(particles, params.condition, **kwargs)
    else:
        out = image_volumes(particles, params.condition, **kwargs)
    # the one per-box normalisation of simulated and extracted boxes; "bright" keeps the sign (protein dark)
    return torch.from_numpy(normalise_subtomograms(out.cpu().numpy(), "bright"))


def crowding_background(shape: Sequence[int], seeds: Sequence[int], voxel_size: float,
                        device: str | torch.device = "cpu", correlation: float = 20.0) -> torch.Tensor:
    """Smooth Gaussian random density (N, *shape), unit standard deviation per box.

    White noise low-passed with a Gaussian of σ = ``correlation`` Å (molecular crowding at
    cryo-ET resolution), one seed per box.
    """
    noise = gaussian_noise(shape, seeds, device)
    sigma = max(correlation / voxel_size, 0.5)
    kz = torch.fft.fftfreq(shape[0], device=device)
    ky = torch.fft.fftfreq(shape[1], device=device)
    kx = torch.fft.rfftfreq(shape[2], device=device)
    kz, ky, kx = torch.meshgrid(kz, ky, kx, indexing="ij")
    g = torch.exp(-2 * (math.pi * sigma) ** 2 * (kz**2 + ky**2 + kx**2))
    field_ = torch.fft.irfftn(torch.fft.rfftn(noise, dim=(-3, -2, -1)) * g, s=tuple(shape), dim=(-3, -2, -1))
    return field_ / field_.std(dim=(-3, -2, -1), keepdim=True).clamp_min(1e-12)


def prepare_library(templates: Sequence[Template], params: DatasetParams) -> Library:
    """Templates at the condition's voxel size (sorted) plus the decoy pool (if decoys > 0)."""
    if not templates:
        raise ParameterError("at least one template is needed")
    vs = params.voxel_size
    known = sorted((t.at_voxel_size(vs) for t in templates), key=lambda t: t.name)
    class_names_for([t.name for t in known], params.decoys, params.empty, params.empty_label)  # validates names
    decoys = []
    if params.decoys > 0:
        decoys = make_decoys(params.decoy_structures, vs, params.seed, max_diameter=0.9 * params.box * vs / 10.0)
    return Library(known, decoys)


def generate_subtomograms(
    templates: Sequence[Template], params: DatasetParams, device: str | torch.device = "cpu"
) -> Generator[Progress, None, SimulatedSet]:
    """Simulate a labelled set in memory. A generator: yields :class:`Progress`, returns the set.

    Stop iterating to cancel (nothing is kept).
    """
    yield Progress("simulate", 0, 1, "preparing templates")
    library = prepare_library(templates, params)
    names = class_names_for([t.name for t in library.known], params.decoys, params.empty, params.empty_label)
    layout = dataset_layout(len(library.known), params, names)
    total = len(layout)
    specs = [make_spec(i, label, kind, library, params) for i, (label, kind) in enumerate(layout)]
    box = params.box
    out = np.empty((total, box, box, box), dtype=np.float16)
    done = 0
    t0 = time.perf_counter()
    yield Progress("simulate", 0, total, f"{total} subtomograms of {box}³ voxels")
    for start in range(0, total, params.batch_size):
        batch = specs[start : start + params.batch_size]
        out[start : start + len(batch)] = render_specs(batch, library, params, device).cpu().numpy().astype(np.float16)
        done += len(batch)
        rate = done / max(time.perf_counter() - t0, 1e-9)
        yield Progress("simulate", done, total, f"{rate:.0f} subtomograms/s")
    pool = library.all
    return SimulatedSet(
        subtomograms=out,
        labels=np.array([s.label for s in specs], dtype=np.int64),
        class_names=names,
        condition=params.condition,
        params=params,
        seed=params.seed,
        template=np.array([pool[s.template].name if s.kind != "empty" else "" for s in specs]),
        defocus=np.array([s.defocus for s in specs], dtype=np.float32),
        snr=np.array([s.snr for s in specs], dtype=np.float32),
        rotations=np.stack([s.rotation for s in specs]).astype(np.float32) if specs else np.zeros((0, 3, 3), np.float32),
        shifts=np.stack([s.shift for s in specs]).astype(np.float32) if specs else np.zeros((0, 3), np.float32),
        templates=[{"name": t.name, "source": t.source, "radius_A": round(t.radius, 2)} for t in pool],
    )


def generate_dataset(
    templates: Sequence[Template], params: DatasetParams, output: str | os.PathLike,
    device: str | torch.device = "cpu",
) -> Generator[Progress, None, SimulatedSet]:
    """Simulate a labelled set and write it to ``output`` (atomic). Yields progress, returns the set."""
    output = Path(output)
    if not output.parent.is_dir():
        raise CryoOpensetError(f"output '{output}': the folder '{output.parent}' does not exist")
    data = yield from generate_subtomograms(templates, params, device)
    yield Progress("write", 0, 1, str(output))
    write_dataset(data, output)
    yield Progress("write", 1, 1, str(output))
    return data
