"""The scene source: crowded scenes picked with the target's picker, labelled by the nearest true particle."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.params import DatasetParams, ImagingCondition, PickingParams
from napari_cryo_openset.progress import run_to_completion
from napari_cryo_openset.simulate.scene_source import _label_picks, generate_scene_source

VOXEL = 20.0
NAMES = ("1bxn", "2cg9", "3j9i")
SHAPE = (48, 96, 96)


def _params(seed=0, **kw):
    counts = dict(per_class=12, decoys=8, empty=6)
    counts.update(kw)
    return DatasetParams(box=16, condition=ImagingCondition(voxel_size=VOXEL, snr=1.0), seed=seed, background=0.05,
                         **counts)


@pytest.fixture(scope="module")
def tpl(builtin):
    return builtin(NAMES, VOXEL)


@pytest.fixture(scope="module")
def made(tpl):
    events = []
    data = run_to_completion(generate_scene_source(tpl, _params(), PickingParams(diameter=170.0), shape=SHAPE),
                             events.append)
    return data, events


def test_requested_counts_per_class_in_training_order(made):
    data, events = made
    assert data.class_names == ["1bxn", "2cg9", "3j9i", "empty", "unknown"]
    assert data.counts() == {"1bxn": 12, "2cg9": 12, "3j9i": 12, "empty": 6, "unknown": 8}
    assert data.info["unreached"] == {} and data.info["scenes"] >= 1
    assert sum(e.stage == "scenes" for e in events) == data.info["scenes"] + 1  # one event per scene
    assert data.subtomograms.shape == (50, 16, 16, 16) and data.polarity == "dark"
    assert len(data.template) == len(data.shifts) == len(data.rotations) == len(data.snr) == 50


def test_labels_match_the_nearest_true_particle(made):
    data, _ = made
    info = data.info
    for i in range(len(data)):
        truth = info["truth"][int(info["box_scene"][i])]
        pos = info["box_position"][i]
        d = np.linalg.norm(truth["centres"] - pos, axis=1)
        k = int(d.argmin())
        name = data.class_names[data.labels[i]]
        if name == "empty":  # no particle at (or near) the centre
            assert np.all(d > 0.75 * truth["diameters"]) and data.template[i] == ""
        else:
            assert d[k] <= 0.5 * truth["diameters"][k] + 1e-9
            assert truth["class_name"][k] == name and truth["structure"][k] == data.template[i]
            # shift: the particle's centre relative to the box centre (the set's convention)
            np.testing.assert_allclose(data.shifts[i], truth["centres"][k] - np.floor(pos + 0.5), atol=1e-4)
    unknown = set(data.template[data.labels == data.class_names.index("unknown")])
    assert unknown <= {f"decoy_{j:03d}" for j in range(8)} | {f"near_{j:03d}" for j in range(8)}
    assert any(n.startswith("near_") for n in unknown)  # near misses of the known structures among them


def test_boxes_are_normalised_as_target_boxes(made):
    data, _ = made
    x = data.subtomograms.astype(np.float32)
    assert np.abs(x.mean(axis=(1, 2, 3))).max() < 1e-2
    np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1.0, atol=1e-2)


def test_seeded_reproducible(tpl, made):
    data, _ = made
    again = run_to_completion(generate_scene_source(tpl, _params(), PickingParams(diameter=170.0), shape=SHAPE))
    np.testing.assert_array_equal(again.labels, data.labels)
    np.testing.assert_array_equal(again.subtomograms, data.subtomograms)


def test_a_class_the_picker_cannot_reach_is_reported(tpl):
    data = run_to_completion(generate_scene_source(tpl[:2], _params(per_class=500, decoys=0, empty=0),
                                                   PickingParams(diameter=170.0), shape=SHAPE, max_scenes=1))
    assert data.info["scenes"] == 1 and set(data.info["unreached"]) == {"1bxn", "2cg9"}
    assert "too few boxes" in data.info["message"] and data.class_names == ["1bxn", "2cg9"]


def test_slab_keeps_particles_inside(tpl):
    data = run_to_completion(generate_scene_source(tpl[:2], _params(per_class=4, decoys=0, empty=4),
                                                   PickingParams(diameter=170.0), slab=16, shape=SHAPE))
    z0, z1 = data.info["slab"]
    assert z1 - z0 >= 16
    for truth in data.info["truth"]:
        r = truth["diameters"] / 2
        assert np.all(truth["centres"][:, 0] - r >= z0 - 1e-6) and np.all(truth["centres"][:, 0] + r <= z1 + 1e-6)


def test_label_rule():
    centres = np.array([[10.0, 10, 10], [10, 30, 10]])
    diam = np.array([10.0, 10.0])
    picks = np.array([[10, 12, 10], [10, 20, 10], [10, 30, 17], [10, 50, 10]], dtype=float)
    cat, nearest, _ = _label_picks(picks, centres, diam, ["a", "decoy_000"], ["a", "unknown"], ["a"], 0.5, 0.75)
    # within D/2 of a → a; between two particles (1 D away) → empty; 0.7 D from the decoy → left out; far → empty
    assert cat.tolist() == [0, 2, -1, 2] and nearest[0] == 0


def test_bad_arguments(tpl):
    with pytest.raises(ParameterError, match="polarity"):
        run_to_completion(generate_scene_source(tpl, _params(), PickingParams(diameter=170.0), polarity="auto"))
    with pytest.raises(ParameterError, match="shape"):
        run_to_completion(generate_scene_source(tpl, _params(), PickingParams(diameter=170.0), shape=(8, 96, 96)))
    with pytest.raises(ParameterError, match="slab"):
        run_to_completion(generate_scene_source(tpl, _params(), PickingParams(diameter=170.0), shape=SHAPE,
                                                slab=(30, 10)))


def test_boxes_are_the_target_extraction_of_the_scene(tpl, monkeypatch):
    """Each box is what adaptation cuts from a tomogram at the pick (extract + normalise), stored dark."""
    from napari_cryo_openset.extract import extract_subtomograms
    from napari_cryo_openset.simulate import scene_source

    volumes = []
    real = scene_source.generate_scene_truth

    def keep(params, device="cpu"):
        out = yield from real(params, device)
        volumes.append(out[0])
        return out

    monkeypatch.setattr(scene_source, "generate_scene_truth", keep)
    data = run_to_completion(generate_scene_source(tpl[:2], _params(per_class=4, decoys=2, empty=2),
                                                   PickingParams(diameter=170.0), shape=SHAPE))
    for i in range(len(data)):
        vol = volumes[int(data.info["box_scene"][i])]
        target = extract_subtomograms(vol, data.info["box_position"][i][None], data.box, polarity="dark")[0]
        np.testing.assert_allclose(-data.subtomograms[i].astype(np.float32), target, atol=5e-3)


def test_a_template_the_picker_misses_is_filled_at_its_true_centres(builtin):
    """A structure well below the picking range is rarely picked: after a few scenes its boxes are
    cut at its particles' true centres, so the model still learns every template."""
    tpl = builtin(("1bxn", "4v4r"), VOXEL)  # ~120 Å and ~260 Å
    data = run_to_completion(generate_scene_source(tpl, _params(per_class=10, decoys=4, empty=4),
                                                   PickingParams(diameter=260.0), shape=SHAPE, max_scenes=12))
    assert data.counts()["1bxn"] == 10 and data.info["unreached"] == {}
    assert data.info["filled_at_true_centres"].get("1bxn", 0) > 0
    small = np.flatnonzero(data.template == "1bxn")
    info = data.info
    for i in small:  # each box still sits on a 1bxn particle
        truth = info["truth"][int(info["box_scene"][i])]
        d = np.linalg.norm(truth["centres"] - info["box_position"][i], axis=1)
        assert truth["structure"][int(d.argmin())] == "1bxn" and d.min() <= 0.5 * truth["diameters"][int(d.argmin())]
