"""Shared test fixtures: the ../shared data folder (optional), --runslow, and small simulated data.

Simulated data (all on the CPU, one torch thread — other jobs share the CPUs, and one thread
keeps the FFT bits the same from run to run):

Factories (session scope; call them in a fixture of your own for a set of your own)
    ``builtin(names=None, voxel_size=10.0)`` → the built-in templates named (library order,
    i.e. sorted), all of them for None; the library is read once per voxel size.
    ``simulate(templates, **dataset_params)`` → a :class:`SimulatedSet`
    (``generate_subtomograms`` with ``DatasetParams(**dataset_params)``).
    ``train(data, **train_params)`` → a :class:`TrainResult` (``device='cpu'``, ``threads=1``
    unless given).
    ``simulate_scene(templates, **scene_params)`` → ``(volume, picks)`` of ``make_scene``
    (``templates`` becomes the tuple ``SceneParams`` wants).

Ready-made data (session scope: shared by every module that asks — do not modify them; copy
first, e.g. ``copy.deepcopy(bundle.model)``)
    ``templates`` (module scope) → ``builtin(TEMPLATE_NAMES, TEMPLATE_VOXEL)`` with the test
    module's ``TEMPLATE_NAMES`` / ``TEMPLATE_VOXEL`` if it sets them, else
    :data:`DEFAULT_TEMPLATES` at 10 Å; ``@pytest.mark.parametrize("templates", [names],
    indirect=True)`` picks the names per test.
    ``source_set`` → the default templates × 16, 12 decoys, 8 empty boxes, 24³, SNR 2, seed 0:
    classes ``1bxn 1qvr 2cg9 empty unknown`` (a source for adaptation).
    ``source_bundle`` → a :class:`ModelBundle` trained on ``source_set`` for 3 epochs
    (batch 8, seed 1).
    ``easy_set`` → 2cg9 and 3j9i × 32 and 32 empty boxes, 24³, SNR 5, seed 0: well separated.
    ``easy_model`` → the :class:`TrainResult` of 6 epochs on ``easy_set`` (:data:`EASY_TRAINING`).
    ``small_scene`` → ``(volume, picks)``: a 48×96×96 tomogram at 10 Å of the default
    templates, 24 particles, 20 % decoys, SNR 1, seed 1 (protein dark, picks with ``class_name``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: How every CLI error line starts.
PREFIX = "napari-cryo-openset: error:"


def rgb(hex_color: str) -> np.ndarray:
    """``#rrggbb`` → (r, g, b) floats 0–255 (to find a palette colour on a screenshot)."""
    h = hex_color.lstrip("#")
    return np.array([int(h[i:i + 2], 16) for i in (0, 2, 4)], dtype=float)


def one_error_line(stderr: str) -> str:
    """The CLI's error line: there must be exactly one, and no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith(PREFIX)]
    assert len(errors) == 1, stderr
    return errors[0]

#: Template names of the ``templates`` fixture unless a test module sets ``TEMPLATE_NAMES``.
DEFAULT_TEMPLATES = ("1bxn", "1qvr", "2cg9")
#: Training settings of ``easy_model``: small and fast (~0.1 s per epoch for 96 boxes of 24³).
EASY_TRAINING = dict(epochs=6, seed=0, batch_size=16, width=8, embedding_dim=32, validation_fraction=0.25,
                     learning_rate=3e-3)


def shared_data_dir() -> Path | None:
    """../shared/data beside the checkout (or $CRYO_OPENSET_SHARED/data), if present."""
    root = Path(os.environ.get("CRYO_OPENSET_SHARED", REPO.parent / "shared"))
    data = root / "data"
    return data if data.is_dir() else None


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests using it skip cleanly when it is absent."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not beside this checkout")
    return data


@pytest.fixture
def small_volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((12, 20, 24)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# simulated data: factories
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_torch_thread():
    """Run the block with one torch thread (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a whole test module (other jobs share the CPUs)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def builtin():
    """``builtin(names=None, voxel_size=10.0)``: built-in templates by name (library order)."""
    from napari_cryo_openset.simulate import builtin_templates

    library: dict[float, list] = {}

    def make(names=None, voxel_size: float = 10.0) -> list:
        key = float(voxel_size)
        if key not in library:
            library[key] = builtin_templates(key)
        return [t for t in library[key] if names is None or t.name in names]

    return make


@pytest.fixture(scope="session")
def simulate():
    """``simulate(templates, **dataset_params)``: a simulated labelled set (one torch thread)."""
    from napari_cryo_openset.progress import run_to_completion
    from napari_cryo_openset.simulate import DatasetParams, generate_subtomograms

    def make(templates, **params):
        with one_torch_thread():
            return run_to_completion(generate_subtomograms(list(templates), DatasetParams(**params)))

    return make


@pytest.fixture(scope="session")
def simulated(simulate):
    """``simulated(templates, per_class=10, seed=0, **counts)``: a small 24³ set at 10 Å and SNR 1
    (the sets the CLI tests write and train on)."""
    from napari_cryo_openset.params import ImagingCondition

    def make(templates, per_class=10, seed=0, **counts):
        return simulate(templates, box=24, per_class=per_class, seed=seed, **counts,
                        condition=ImagingCondition(voxel_size=10.0, snr=1.0))

    return make


@pytest.fixture(scope="session")
def train():
    """``train(data, **train_params)``: a :class:`TrainResult` (CPU, one thread unless given)."""
    from napari_cryo_openset.progress import run_to_completion
    from napari_cryo_openset.train import TrainParams, train_source

    def make(data, **params):
        return run_to_completion(train_source(data, TrainParams(**{"device": "cpu", "threads": 1, **params})))

    return make


@pytest.fixture(scope="session")
def simulate_scene():
    """``simulate_scene(templates, **scene_params)``: ``(volume, picks)`` of a simulated tomogram."""
    from napari_cryo_openset.simulate import SceneParams, make_scene

    def make(templates, **params):
        with one_torch_thread():
            return make_scene(SceneParams(templates=tuple(templates), **params))

    return make


# --------------------------------------------------------------------------------------------
# simulated data: ready-made
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def templates(request, builtin):
    """The module's templates: ``TEMPLATE_NAMES`` at ``TEMPLATE_VOXEL`` Å (or the defaults)."""
    names = getattr(request, "param", None) or getattr(request.module, "TEMPLATE_NAMES", DEFAULT_TEMPLATES)
    return builtin(tuple(names), getattr(request.module, "TEMPLATE_VOXEL", 10.0))


@pytest.fixture(scope="session")
def source_set(builtin, simulate):
    """Default templates × 16, 12 decoys, 8 empty, 24³, SNR 2, seed 0 (do not modify)."""
    from napari_cryo_openset.simulate import ImagingCondition

    return simulate(builtin(DEFAULT_TEMPLATES), box=24, per_class=16, decoys=12, empty=8,
                    condition=ImagingCondition(snr=2.0), seed=0)


@pytest.fixture(scope="session")
def source_bundle(source_set, train):
    """A :class:`ModelBundle` trained on ``source_set`` for 3 epochs (do not modify)."""
    from napari_cryo_openset.checkpoint import bundle_from_training

    return bundle_from_training(train(source_set, epochs=3, batch_size=8, seed=1))


@pytest.fixture(scope="session")
def easy_set(builtin, simulate):
    """Two well separated templates (Hsp90, 20S proteasome) + empty boxes, SNR 5: 96 boxes of 24³."""
    from napari_cryo_openset.simulate import ImagingCondition

    return simulate(builtin(("2cg9", "3j9i")), box=24, per_class=32, empty=32, seed=0,
                    condition=ImagingCondition(voxel_size=10.0, snr=5.0))


@pytest.fixture(scope="session")
def easy_model(easy_set, train):
    """6 epochs on ``easy_set`` (:data:`EASY_TRAINING`): a :class:`TrainResult` (do not modify)."""
    return train(easy_set, **EASY_TRAINING)


@pytest.fixture(scope="session")
def small_scene(builtin, simulate_scene):
    """48×96×96 at 10 Å: 24 particles of the default templates, 20 % decoys, SNR 1, seed 1."""
    from napari_cryo_openset.simulate import ImagingCondition

    return simulate_scene(builtin(DEFAULT_TEMPLATES), shape=(48, 96, 96), condition=ImagingCondition(voxel_size=10.0, snr=1.0),
                          n_particles=24, unknown_fraction=0.2, seed=1)
