"""Labelled simulated subtomogram sets: on disk (one ``.npz``) and on the fly (a DataLoader).

**Classes and labels.** ``class_names`` = the *sorted* template names, then ``empty`` (if any
empty boxes are made and ``empty_label='empty'``), then ``unknown`` (if any decoys are made)
— so the known classes keep the indices of their sorted names and the open-set label
``unknown`` (ARCHITECTURE.md § 3) is always last. Decoys (procedural pseudo-proteins,
:mod:`.decoys`) are labelled ``unknown``. Empty boxes (noise through the same chain, with the
noise level a random known particle would have) are their own class ``empty`` by default —
useful to recognise junk picks — or folded into ``unknown`` with ``empty_label='unknown'``.

**Subtomograms** are reconstructions of the full chain of :mod:`.imaging` (or the
approximate 3D mode), ``box³`` voxels (Z, Y, X), the particle's centre of mass on voxel
``box // 2`` (± the small random shift), in the raw-reconstruction convention (**protein
dark**), each normalised to zero mean and unit variance. Networks take protein bright
(``picking.polarity.CANONICAL_POLARITY``): multiply by −1 (``polarity='dark'`` → canonical).

**Randomness.** Sample ``i`` of a set is a pure function of ``(seed, i)`` — its class, template,
rotation (uniform on SO(3)), shift, defocus, SNR, neighbours, background and noise — so the
result does not depend on the batch size or on the number of DataLoader workers. The same seed
gives identical arrays on the CPU with the same thread count; with another thread count (e.g.
single-threaded DataLoader workers) FFT vectorisation can change the last float32 bits
(differences ~1e-7).

**File format** (``.npz``, read with ``allow_pickle=False``; written atomically):
``subtomograms`` float16 (N, box, box, box), ``labels`` int64 (N,), ``class_names`` (K,) str,
``condition`` (JSON of the :class:`~.condition.ImagingCondition`), ``params`` (JSON of the
:class:`DatasetParams` plus template names/sources), ``seed``, ``voxel_size`` (Å), ``box``,
``polarity`` (``dark``), ``normalisation``, ``format_version``, and per sample ``template``
(the structure imaged; ``''`` for empty boxes), ``defocus`` (µm), ``snr``, ``rotations``
(N, 3, 3; acting on z y x) and ``shifts`` (N, 3; voxels z y x).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CryoOpensetError, ParameterError
from ..picks import UNKNOWN_CLASS
from ..progress import Progress
from ..params import EMPTY_CLASS, DatasetParams, ImagingCondition  # noqa: F401 (re-exported)
from .decoys import make_decoys
from .imaging import approximate_image_volumes, gaussian_noise, image_volumes
from .placement import random_rotations, random_unit_vectors, rotate_into_boxes
from .templates import RESERVED_NAMES, Template

FORMAT_VERSION = 1
POLARITY = "dark"
NORMALISATION = "per-box zero mean, unit variance"
_MAX_NEIGHBOURS = 4


def class_names_for(template_names: Sequence[str], decoys: int, empty: int, empty_label: str = EMPTY_CLASS) -> list[str]:
    """Sorted known names, then ``empty`` (if it is its own class and used), then ``unknown``."""
    names = sorted(template_names)
    for n in names:
        if n.lower() in RESERVED_NAMES:
            raise ParameterError(f"template name '{n}' is reserved for the {n.lower()} class; rename the template")
    if len(set(names)) != len(names):
        raise ParameterError("template names must be unique")
    if empty > 0 and empty_label == EMPTY_CLASS:
        names.append(EMPTY_CLASS)
    if decoys > 0 or (empty > 0 and empty_label == UNKNOWN_CLASS):
        names.append(UNKNOWN_CLASS)
    return names


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


def _spec_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(stream), int(index)])


def make_spec(index: int, label: int, kind: str, library: Library, params: DatasetParams, stream: int = 1,
              rng: np.random.Generator | None = None) -> SampleSpec:
    """The random choices of sample ``index`` (template, pose, optics, neighbours, seeds)."""
    rng = rng or _spec_rng(params.seed, stream, index)
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

    Normalised per box (zero mean, unit variance), protein dark.
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
    return normalise_boxes(out)


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


def normalise_boxes(x: torch.Tensor) -> torch.Tensor:
    """Per-box zero mean and unit variance (over the last three axes).

    The statistics are accumulated in float64 so that the result does not depend on how many
    threads split the reduction (DataLoader workers run single-threaded).
    """
    x64 = x.double()
    mean = x64.mean(dim=(-3, -2, -1), keepdim=True)
    std = x64.std(dim=(-3, -2, -1), keepdim=True, unbiased=False).clamp_min(1e-12)
    return ((x64 - mean) / std).to(x.dtype)


# --------------------------------------------------------------------------------------------
# a labelled set in memory and on disk
# --------------------------------------------------------------------------------------------


@dataclass
class SimulatedSet:
    """A labelled set of subtomograms (see the module docstring for the conventions)."""

    subtomograms: np.ndarray  # (N, B, B, B) float16 or float32
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    condition: ImagingCondition
    params: DatasetParams
    seed: int
    template: np.ndarray  # (N,) str
    defocus: np.ndarray
    snr: np.ndarray
    rotations: np.ndarray
    shifts: np.ndarray
    templates: list[dict] = field(default_factory=list)
    polarity: str = POLARITY

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def box(self) -> int:
        return int(self.subtomograms.shape[-1])

    @property
    def voxel_size(self) -> float:
        return self.condition.voxel_size

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}


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


def write_dataset(data: SimulatedSet, path: str | os.PathLike) -> Path:
    """Write a set to ``path`` (``.npz`` layout, any file name) atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CryoOpensetError(f"output '{path}': the folder '{path.parent}' does not exist")
    params = data.params.to_dict()
    params["templates"] = data.templates
    arrays = {
        "subtomograms": data.subtomograms.astype(np.float16, copy=False),
        "labels": data.labels.astype(np.int64),
        "class_names": np.array(data.class_names, dtype=str),
        "condition": np.array(data.condition.to_json()),
        "params": np.array(json.dumps(params, sort_keys=True)),
        "seed": np.array(int(data.seed), dtype=np.int64),
        "voxel_size": np.array(float(data.voxel_size)),
        "box": np.array(int(data.box), dtype=np.int64),
        "polarity": np.array(data.polarity),
        "normalisation": np.array(NORMALISATION),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "template": np.asarray(data.template, dtype=str),
        "defocus": data.defocus.astype(np.float32),
        "snr": data.snr.astype(np.float32),
        "rotations": data.rotations.astype(np.float32),
        "shifts": data.shifts.astype(np.float32),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path


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


def load_dataset(path: str | os.PathLike) -> SimulatedSet:
    """Read a set written by :func:`write_dataset` (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise CryoOpensetError(f"simulated set '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format_version"])
            if version != FORMAT_VERSION:
                raise _VersionMismatch(version)
            params_dict = json.loads(str(z["params"]))
            templates = params_dict.pop("templates", [])
            return SimulatedSet(
                subtomograms=z["subtomograms"],
                labels=z["labels"],
                class_names=[str(c) for c in z["class_names"]],
                condition=ImagingCondition.from_json(str(z["condition"])),
                params=DatasetParams.from_dict(params_dict),
                seed=int(z["seed"]),
                template=z["template"],
                defocus=z["defocus"],
                snr=z["snr"],
                rotations=z["rotations"],
                shifts=z["shifts"],
                templates=templates,
                polarity=str(z["polarity"]),
            )
    except _VersionMismatch as exc:
        raise CryoOpensetError(f"simulated set '{path}' has format version {exc.args[0]}; this version reads "
                               f"{FORMAT_VERSION}: simulate it again with this version") from None
    except (OSError, ValueError, KeyError) as exc:
        raise CryoOpensetError(f"simulated set '{path}' is not readable ({type(exc).__name__}: {exc})") from None


class _VersionMismatch(Exception):
    """Internal: a set written by another format version (kept apart from read errors)."""


class SubtomogramSet(torch.utils.data.Dataset):
    """Map-style torch dataset over a :class:`SimulatedSet`: ``(float32 (1, B, B, B), label)``.

    ``sign`` multiplies every box (``-1`` turns the stored dark convention into protein
    bright).
    """

    def __init__(self, data: SimulatedSet | str | os.PathLike, sign: float = 1.0) -> None:
        self.data = data if isinstance(data, SimulatedSet) else load_dataset(data)
        self.sign = float(sign)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.asarray(self.data.subtomograms[i], dtype=np.float32))[None]
        return x * self.sign, int(self.data.labels[i])


# --------------------------------------------------------------------------------------------
# on the fly
# --------------------------------------------------------------------------------------------


class SubtomogramStream(torch.utils.data.IterableDataset):
    """Subtomograms simulated on the fly for a torch ``DataLoader``: ``(float32 (1,B,B,B), label)``.

    Sample ``i`` is a pure function of ``(params.seed, i)``; its class is drawn with weights
    ``per_class`` for each known template, ``decoys`` for ``unknown`` and ``empty`` for the
    empty class. Samples are produced in chunks of ``params.batch_size`` (one batched
    simulation per chunk); with ``W`` workers, worker ``w`` makes chunks ``w, w + W, …``, so no
    two workers repeat a sample. ``length`` = total samples per pass (None = endless).
    ``sign`` multiplies every box (−1 → protein bright).
    """

    def __init__(self, templates: Sequence[Template], params: DatasetParams, length: int | None = None,
                 sign: float = 1.0, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.params = params
        self.library = prepare_library(templates, params)
        self.class_names = class_names_for([t.name for t in self.library.known], params.decoys, params.empty,
                                           params.empty_label)
        weights = [float(params.per_class)] * len(self.library.known)
        kinds = ["particle"] * len(self.library.known)
        labels = list(range(len(self.library.known)))
        if params.empty:
            weights.append(float(params.empty))
            kinds.append("empty")
            labels.append(self.class_names.index(params.empty_label))
        if params.decoys:
            weights.append(float(params.decoys))
            kinds.append("decoy")
            labels.append(self.class_names.index(UNKNOWN_CLASS))
        self._p = np.asarray(weights) / np.sum(weights)
        self._kinds = kinds
        self._labels = labels
        self.length = None if length is None else int(length)
        self.sign = float(sign)
        self.device = device

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an endless SubtomogramStream has no length")
        return self.length

    def spec(self, index: int) -> SampleSpec:
        rng = _spec_rng(self.params.seed, 2, index)
        j = int(rng.choice(len(self._p), p=self._p))
        return make_spec(index, self._labels[j], self._kinds[j], self.library, self.params, rng=rng)

    def chunks(self, worker: int = 0, workers: int = 1) -> Iterator[list[int]]:
        chunk = self.params.batch_size
        c = worker
        while True:
            start = c * chunk
            if self.length is not None and start >= self.length:
                return
            stop = start + chunk if self.length is None else min(start + chunk, self.length)
            yield list(range(start, stop))
            c += workers

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for indices in self.chunks(worker, workers):
            specs = [self.spec(i) for i in indices]
            boxes = render_specs(specs, self.library, self.params, self.device) * self.sign
            for s, x in zip(specs, boxes):
                yield x[None].cpu().clone(), s.label  # own storage: cheap to send between processes
