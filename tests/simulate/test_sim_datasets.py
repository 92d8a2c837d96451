"""Labelled subtomogram sets: labels, determinism, file format, progress."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_cryo_openset.errors import CryoOpensetError, ParameterError
from napari_cryo_openset.progress import Progress, run_to_completion
from napari_cryo_openset.params import ImagingCondition
from napari_cryo_openset.simulate.datasets import DatasetParams, class_names_for, load_dataset
from napari_cryo_openset.simulate.generate import (
    dataset_layout,
    generate_dataset,
    generate_subtomograms,
    make_spec,
    prepare_library,
    render_specs,
)

torch.set_num_threads(2)
COND = ImagingCondition(voxel_size=10.0, defocus=(4.0, 6.0), snr=(0.05, 0.5))


@pytest.fixture(scope="module")
def small_set(templates):
    params = DatasetParams(box=24, per_class=4, decoys=4, empty=3, condition=COND, seed=11, batch_size=5)
    return run_to_completion(generate_subtomograms(templates, params))


def test_class_names_sorted_then_empty_then_unknown():
    assert class_names_for(["b", "a", "c"], decoys=5, empty=2) == ["a", "b", "c", "empty", "unknown"]
    assert class_names_for(["b", "a"], decoys=0, empty=0) == ["a", "b"]
    assert class_names_for(["b", "a"], decoys=0, empty=2, empty_label="unknown") == ["a", "b", "unknown"]
    with pytest.raises(ParameterError, match="reserved"):
        class_names_for(["unknown", "a"], 0, 0)


def test_labels_counts_and_content(small_set):
    d = small_set
    assert d.class_names == ["1bxn", "1qvr", "2cg9", "empty", "unknown"]
    assert d.counts() == {"1bxn": 4, "1qvr": 4, "2cg9": 4, "empty": 3, "unknown": 4}
    assert d.subtomograms.shape == (19, 24, 24, 24) and d.subtomograms.dtype == np.float16
    x = d.subtomograms.astype(np.float32)
    assert np.allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-2) and np.allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-2)
    for i, lab in enumerate(d.labels):
        name = d.class_names[lab]
        if name in ("1bxn", "1qvr", "2cg9"):
            assert d.template[i] == name
        elif name == "unknown":
            assert d.template[i].startswith("decoy_")
        else:
            assert d.template[i] == ""
    assert np.all((d.defocus >= 4.0) & (d.defocus <= 6.0)) and np.all((d.snr >= 0.05) & (d.snr <= 0.5))
    # protein is dark: averaged over particles the box centre is below the mean, not for empty boxes
    c = slice(9, 15)
    known = x[np.isin(d.labels, [0, 1, 2])][:, c, c, c].mean()
    empty = x[d.labels == 3][:, c, c, c].mean()
    assert known < -0.3 and abs(empty) < 0.2


def test_same_seed_same_arrays_other_seed_other_arrays(templates, small_set):
    again = run_to_completion(generate_subtomograms(templates, small_set.params))
    assert np.array_equal(again.subtomograms, small_set.subtomograms)
    assert np.array_equal(again.labels, small_set.labels)
    other = DatasetParams(**{**small_set.params.__dict__, "seed": 12})
    third = run_to_completion(generate_subtomograms(templates, other))
    assert not np.array_equal(third.subtomograms, small_set.subtomograms)


def test_result_does_not_depend_on_batch_size(templates, small_set):
    params = DatasetParams(**{**small_set.params.__dict__, "batch_size": 1})
    one_by_one = run_to_completion(generate_subtomograms(templates, params))
    # equal up to float rounding: batched FFTs may sum in another order on some CPUs (float16 storage: ~1e-3)
    np.testing.assert_allclose(one_by_one.subtomograms.astype(np.float32), small_set.subtomograms.astype(np.float32),
                               atol=1e-2, rtol=0)
    assert np.array_equal(one_by_one.labels, small_set.labels)


def test_crowding_options_and_approximate_mode_run(templates):
    params = DatasetParams(box=24, per_class=2, empty=1, condition=COND, seed=2, neighbours=2.0, background=0.2)
    d = run_to_completion(generate_subtomograms(templates, params))
    assert np.isfinite(d.subtomograms.astype(np.float32)).all()
    params = DatasetParams(box=24, per_class=2, condition=COND, seed=2, mode="approximate")
    d = run_to_completion(generate_subtomograms(templates, params))
    assert d.subtomograms.shape == (6, 24, 24, 24)


def test_file_round_trip_without_pickle_and_atomic(tmp_path, templates):
    params = DatasetParams(box=16, per_class=2, decoys=2, empty=1, condition=COND, seed=5)
    out = tmp_path / "source.npz"
    gen = generate_dataset(templates, params, out)
    events = []
    data = run_to_completion(gen, events.append)
    assert all(isinstance(e, Progress) for e in events)
    sim = [e for e in events if e.stage == "simulate" and e.total > 1]
    assert sim[-1].step == sim[-1].total == 9 and all(a.step <= b.step for a, b in zip(sim, sim[1:]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.npz"]  # no temporary file left
    with np.load(out, allow_pickle=False) as z:
        assert set(z.files) >= {"subtomograms", "labels", "class_names", "condition", "seed", "params"}
        assert ImagingCondition.from_json(str(z["condition"])) == COND
        assert int(z["seed"]) == 5 and json.loads(str(z["params"]))["box"] == 16
    back = load_dataset(out)
    assert np.array_equal(back.subtomograms, data.subtomograms) and back.class_names == data.class_names
    assert back.polarity == "dark" and back.condition == COND


def test_other_format_version_is_named_not_called_unreadable(tmp_path, templates):
    params = DatasetParams(box=16, per_class=1, decoys=0, empty=1, condition=COND, seed=1)
    out = tmp_path / "source.npz"
    run_to_completion(generate_dataset(templates, params, out))
    with np.load(out, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["format_version"] = np.asarray(arrays["format_version"]) + 1
    newer = tmp_path / "newer.npz"
    np.savez(newer, **arrays)
    with pytest.raises(CryoOpensetError, match=r"newer.npz.*format version \d+; this version reads") as info:
        load_dataset(newer)
    assert "not readable" not in str(info.value)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CryoOpensetError, match="junk.npz.*not readable"):
        load_dataset(tmp_path / "junk.npz")


def test_cancel_leaves_no_file_and_bad_output_is_refused(tmp_path, templates):
    params = DatasetParams(box=16, per_class=3, condition=COND, seed=5, batch_size=2)
    out = tmp_path / "cancelled.npz"
    gen = generate_dataset(templates, params, out)
    for _ in range(3):
        next(gen)
    gen.close()  # Cancel = stop iterating
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(CryoOpensetError, match="does not exist"):
        run_to_completion(generate_dataset(templates, params, tmp_path / "no" / "x.npz"))


@pytest.mark.parametrize(
    "kwargs, word",
    [({"box": 8}, "box"), ({"per_class": 0}, "per_class"), ({"decoys": -1}, "decoys"),
     ({"empty_label": "junk"}, "empty_label"), ({"mode": "fast"}, "mode"), ({"background": -1}, "background")],
)
def test_parameter_errors_name_the_parameter(kwargs, word):
    with pytest.raises(ParameterError, match=word):
        DatasetParams(**kwargs)


def test_render_specs_matches_stored_set(templates, small_set):
    params = small_set.params
    lib = prepare_library(templates, params)
    layout = dataset_layout(len(lib.known), params, small_set.class_names)
    spec = make_spec(7, *layout[7], lib, params)
    one = render_specs([spec], lib, params)[0].numpy().astype(np.float16)
    np.testing.assert_allclose(one.astype(np.float32), small_set.subtomograms[7].astype(np.float32), atol=1e-2, rtol=0)
