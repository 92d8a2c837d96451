"""Large pick sets (issue 17): boxes are cut batch by batch (memory bounded by a batch, not by the
number of picks) and the streamed results equal the all-at-once ones; multi-block STAR files are
merged or refused; the fast STAR reader reads our files exactly as starfile does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from napari_cryo_openset import embed as embed_mod
from napari_cryo_openset.adapt import AdaptParams, adapt_boxes, adapt_to_tomogram
from napari_cryo_openset.adapt.run import adaptation_subset
from napari_cryo_openset.boxes import PickBoxes, cache_if_small, iter_batches
from napari_cryo_openset.embed import cluster_unknowns, group_averages, tsne_map
from napari_cryo_openset.errors import PicksError
from napari_cryo_openset.extract import SubtomogramSet, extract_subtomograms
from napari_cryo_openset.io import picks_io
from napari_cryo_openset.io.picks_io import read_picks, write_picks
from napari_cryo_openset.io.tomogram import Tomogram
from napari_cryo_openset.params import EmbedParams
from napari_cryo_openset.picks import validate_picks
from napari_cryo_openset.predict import (
    PredictParams,
    classify_boxes,
    extract_pick_boxes,
    guess_polarity_at_picks,
    pick_boxes,
    predict_picks,
)
from napari_cryo_openset.progress import run_to_completion

CPU = dict(device="cpu", threads=1)


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(3)
    return rng.normal(size=(40, 64, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def coords():
    rng = np.random.default_rng(4)
    return rng.uniform(0, 1, (53, 3)) * (np.array([40, 64, 64]) - 1)


@pytest.fixture
def counted_takes(monkeypatch):
    """The number of boxes of every :meth:`SubtomogramSet.take` call."""
    sizes: list[int] = []
    take = SubtomogramSet.take

    def counting(self, rows):
        sizes.append(int(np.size(rows)))
        return take(self, rows)

    monkeypatch.setattr(SubtomogramSet, "take", counting)
    return sizes


# ----------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("target", [None, 13.0])
def test_batches_hold_at_most_b_boxes_and_equal_the_whole(volume, coords, target):
    whole = extract_subtomograms(volume, coords, 12, voxel_size=10.0, target_voxel_size=target)
    boxes = SubtomogramSet(volume, coords, 12, voxel_size=10.0, target_voxel_size=target)
    seen = 0
    for start, batch in boxes.batches(8):
        assert start == seen and 1 <= len(batch) <= 8 and batch.dtype == np.float32
        np.testing.assert_array_equal(batch, whole[start:start + len(batch)])
        seen += len(batch)
    assert seen == len(coords)
    rows = np.array([50, 3, 3, 17])
    np.testing.assert_array_equal(boxes.take(rows), whole[rows])
    np.testing.assert_array_equal(boxes.subset(rows).take(np.arange(4)), whole[rows])


def test_pick_boxes_index_like_a_tensor(volume, coords):
    lazy = PickBoxes(SubtomogramSet(volume, coords, 10, polarity="bright"))
    whole = torch.from_numpy(extract_subtomograms(volume, coords, 10, polarity="bright"))[:, None]
    assert lazy.shape == whole.shape and lazy.ndim == 5 and len(lazy) == len(coords)
    assert torch.equal(lazy[5:9], whole[5:9])
    idx = torch.tensor([7, 0, 52])
    assert torch.equal(lazy[idx], whole[idx])
    assert torch.equal(lazy[np.array([True] * 3 + [False] * 50)], whole[:3])
    assert torch.equal(lazy[-1], whole[-1])
    assert torch.equal(lazy.materialise(batch_size=7), whole)
    assert torch.equal(torch.cat([b for _, b in iter_batches(lazy, 16)]), whole)
    assert isinstance(cache_if_small(lazy), torch.Tensor)
    assert cache_if_small(lazy, max_bytes=10) is lazy


def test_polarity_guess_from_batches_equals_the_whole(volume, coords):
    raw = extract_subtomograms(volume, coords, 12, normalise=False)
    guess, contrast = guess_polarity_at_picks(raw)
    g2, c2 = guess_polarity_at_picks(iter(np.array_split(raw, 5)))
    assert g2 == guess and c2 == pytest.approx(contrast, rel=1e-9)


# ----------------------------------------------------------------------------- prediction
@pytest.fixture(scope="module")
def scene_tomo(small_scene):
    volume, picks = small_scene
    return Tomogram(data=volume, voxel_size=(10.0,) * 3), picks.drop(columns=["class_name"])


def test_streamed_prediction_equals_all_at_once(source_bundle, scene_tomo, counted_takes):
    tomo, picks = scene_tomo
    boxes, _, _ = extract_pick_boxes(source_bundle, tomo, picks)
    expected = classify_boxes(source_bundle, boxes, "cpu")
    counted_takes.clear()
    result = run_to_completion(predict_picks(source_bundle, tomo, picks, PredictParams(batch_size=5, **CPU)))
    assert counted_takes and max(counted_takes) <= 5  # never more than one batch of boxes at a time
    assert list(result.picks["class_name"]) == list(expected.class_name)
    np.testing.assert_allclose(result.picks["confidence"], expected.confidence, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.picks["unknown_score"], expected.unknown_score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.features, expected.features, rtol=1e-5, atol=1e-5)
    assert result.features.dtype == np.float32


def test_auto_polarity_is_guessed_on_a_bounded_subset(source_bundle, scene_tomo, monkeypatch, counted_takes):
    import napari_cryo_openset.predict as predict_mod

    tomo, picks = scene_tomo
    monkeypatch.setattr(predict_mod, "MAX_POLARITY_PICKS", 10)
    counted_takes.clear()
    _, polarity, _ = pick_boxes(source_bundle, tomo, picks, "auto")
    assert polarity in ("dark", "bright") and counted_takes == [10]


# ----------------------------------------------------------------------------- adaptation
def test_adaptation_subset_is_seeded_and_capped():
    x = torch.arange(40, dtype=torch.float32).reshape(40, 1, 1, 1, 1)
    assert adaptation_subset(x, 40) is x
    a, b = adaptation_subset(x, 16, seed=3), adaptation_subset(x, 16, seed=3)
    assert len(a) == 16 and torch.equal(a, b)
    assert torch.all(a.flatten()[1:] > a.flatten()[:-1])  # rows keep their order


def test_lazy_target_adaptation_equals_the_tensor_one(source_bundle, source_set, scene_tomo):
    tomo, picks = scene_tomo
    params = AdaptParams(method="mluda", iterations=3, eval_every=2, batch_size=8, **CPU)
    lazy = run_to_completion(adapt_to_tomogram(source_bundle, source_set, tomo, picks, params))
    boxes, _, _ = extract_pick_boxes(source_bundle, tomo, picks)
    eager = run_to_completion(adapt_boxes(source_bundle, source_set, boxes, params))
    assert list(lazy.picks["class_name"]) == list(eager.predictions.class_name)
    np.testing.assert_allclose(lazy.picks["unknown_score"], eager.predictions.unknown_score, rtol=1e-5, atol=1e-6)


def test_capped_adaptation_predicts_every_pick(source_bundle, source_set, scene_tomo):
    tomo, picks = scene_tomo
    params = AdaptParams(method="ada", iterations=2, eval_every=2, batch_size=8, max_target_picks=16, **CPU)
    boxes, _, _ = pick_boxes(source_bundle, tomo, picks)
    result = run_to_completion(adapt_boxes(source_bundle, source_set, cache_if_small(boxes, 0), params))
    assert len(result.predictions.class_name) == len(picks)
    prov = result.bundle.provenance["adaptation"]
    assert prov["adaptation_picks"] == 16 and prov["target_picks"] == len(picks)


# ----------------------------------------------------------------------------- map, clusters, averages
def test_averages_of_lazy_boxes_equal_those_of_the_array(volume, coords, counted_takes):
    lazy = PickBoxes(SubtomogramSet(volume, coords, 8, polarity="dark"))
    array = extract_subtomograms(volume, coords, 8, polarity="dark")
    groups = np.array(["a", "b", ""] * 17 + ["a", "b"], dtype=object)
    expected = group_averages(array, groups, max_per_group=12, seed=2)
    counted_takes.clear()
    got = group_averages(lazy, groups, max_per_group=12, seed=2)
    assert max(counted_takes) <= embed_mod.AVERAGE_BATCH
    assert sorted(got) == sorted(expected) == ["a", "b"]
    for name in expected:
        np.testing.assert_allclose(got[name][0], expected[name][0], rtol=1e-6, atol=1e-6)
        assert got[name][1] == expected[name][1] == 12


def test_tsne_and_clusters_fit_a_subset_of_large_sets(monkeypatch):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.05, (40, 8)) + 1, rng.normal(0, 0.05, (40, 8)) - 1]).astype(np.float32)
    monkeypatch.setattr(embed_mod, "MAX_TSNE_FIT", 30)
    monkeypatch.setattr(embed_mod, "MAX_CLUSTER_FIT", 30)
    params = EmbedParams(iterations=20, chunk=20, threads=1)
    xy, method, _ = run_to_completion(tsne_map(x, params))
    assert method == "t-SNE" and xy.shape == (80, 2) and np.isfinite(xy).all()
    again, _, _ = run_to_completion(tsne_map(x, params))
    np.testing.assert_array_equal(xy, again)
    labels = cluster_unknowns(x, np.ones(80, bool), min_cluster_size=5)
    assert labels.shape == (80,)
    # the two blobs: each in one cluster, the clusters different
    assert len(set(labels[:40])) == 1 and len(set(labels[40:])) == 1 and labels[0] != labels[40]


# ----------------------------------------------------------------------------- STAR files
def _picks(n, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.uniform(0, 90, n), "y": rng.uniform(0, 90, n), "z": rng.uniform(0, 60, n),
                       "score": rng.uniform(0, 1, n)})
    df["class_name"] = np.array(["3j9i", "unknown", "my class", ""], dtype=object)[np.arange(n) % 4]
    df["confidence"] = np.where(np.arange(n) % 5 == 0, np.nan, rng.uniform(0, 1, n))
    df["is_unknown"] = df["class_name"] == "unknown"
    df["cluster"] = (np.arange(n) % 3) - 1
    df["note"] = np.array(["plain", "with space", "it's"], dtype=object)[np.arange(n) % 3]
    return validate_picks(df)


def _starfile_table(path):
    return picks_io._starfile_loops(path)


def test_fast_star_reader_equals_starfile_on_our_files(tmp_path):
    path = write_picks(tmp_path / "p.star", _picks(37), voxel_size=10.0)
    fast = picks_io._star_loops(path, path.read_text(), picks_io._scan_star(path, path.read_text()))
    slow = _starfile_table(path)
    assert [n for n, _ in fast] == [n for n, _ in slow] == ["particles"]
    pd.testing.assert_frame_equal(fast[0][1], slow[0][1])
    # and the picks tables read through each path are the same
    back = read_picks(path)
    pd.testing.assert_frame_equal(back, read_picks(write_picks(tmp_path / "q.csv", back)), check_like=True)


def test_unusual_star_goes_through_starfile(tmp_path, monkeypatch):
    text = ("data_general\n\n_rlnTomoName TS_01\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"
            "_rlnCoordinateZ #3\n1 2 3\n")
    path = tmp_path / "u.star"
    path.write_text(text)
    layout = picks_io._scan_star(path, text)
    assert layout.unusual is not None
    called = []
    monkeypatch.setattr(picks_io, "_starfile_loops", lambda p: called.append(p) or [])
    with pytest.raises(PicksError, match="no data loop"):
        read_picks(path)
    assert called == [path]


def test_chunked_writing_gives_the_same_bytes(tmp_path, monkeypatch):
    picks = _picks(23)
    for suffix in (".star", ".csv"):
        one = write_picks(tmp_path / f"one{suffix}", picks).read_bytes()
        monkeypatch.setattr(picks_io, "_WRITE_ROWS", 5)
        many = write_picks(tmp_path / f"many{suffix}", picks).read_bytes()
        monkeypatch.undo()
        assert one == many


def _two_blocks(second_header="_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n"):
    rows_a = "".join(f"{i} {i + 1} {i + 2}\n" for i in range(5))
    rows_b = "".join(f"{i} {i + 1} {i + 2}\n" for i in range(5, 20))
    header = "loop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n"
    if second_header.count("\n") != 3:
        rows_b = "".join(f"{i} {i + 1} {i + 2} 1\n" for i in range(5, 20))
    return f"data_first\n\n{header}{rows_a}\ndata_second\n\nloop_\n{second_header}{rows_b}\n"


def test_two_compatible_blocks_are_read_whole(tmp_path):
    path = tmp_path / "two.star"
    path.write_text(_two_blocks())
    df = read_picks(path)
    assert len(df) == 20
    np.testing.assert_array_equal(df["x"].to_numpy(), np.arange(20))
    assert df.attrs["block"] == "first+second"


def test_two_incompatible_blocks_are_refused_by_name(tmp_path):
    path = tmp_path / "two.star"
    path.write_text(_two_blocks("_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n_rlnAngleRot #4\n"))
    with pytest.raises(PicksError, match=r"2 blocks of picks: data_first \(5 picks\), data_second \(15 picks\).*"
                                         r"rlnAngleRot"):
        read_picks(path)


def test_blocks_of_different_tomograms_are_refused(tmp_path):
    text = ("data_a\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n_rlnCoordinateZ #4\n"
            "TS_01 1 2 3\n\ndata_b\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
            "_rlnCoordinateZ #4\nTS_02 1 2 3\n")
    path = tmp_path / "tomos.star"
    path.write_text(text)
    with pytest.raises(PicksError, match="different tomograms"):
        read_picks(path)


# ----------------------------------------------------------------------------- the real command, in its own process
@pytest.mark.slow
def test_predict_100k_picks_peak_rss_under_2gb(tmp_path, source_bundle):
    """``predict`` on 100,000 picks of a small tomogram: peak RSS of the process < 2 GB (~1 min)."""
    import os
    import subprocess
    import sys

    from napari_cryo_openset.checkpoint import save_bundle
    from napari_cryo_openset.io import write_tomogram

    rng = np.random.default_rng(0)
    write_tomogram(tmp_path / "t.mrc", rng.normal(size=(32, 64, 64)).astype(np.float32), 10.0)
    n = 100_000
    zyx = rng.uniform(0, 1, (n, 3)) * (np.array([32, 64, 64]) - 1)
    write_picks(tmp_path / "p.csv", pd.DataFrame({"x": zyx[:, 2], "y": zyx[:, 1], "z": zyx[:, 0]}))
    save_bundle(source_bundle, tmp_path / "m.pt")
    cmd = [sys.executable, "-c", "import sys; from napari_cryo_openset.cli import main; sys.exit(main())",
           "predict", str(tmp_path / "m.pt"), "--tomo", str(tmp_path / "t.mrc"), "--picks", str(tmp_path / "p.csv"),
           "-o", str(tmp_path / "out.star"), "--device", "cpu", "--threads", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read().decode()[-2000:]
    assert usage.ru_maxrss / 1024**2 < 2.0, f"peak RSS {usage.ru_maxrss / 1024:.0f} MB"
    assert len(read_picks(tmp_path / "out.star")) == n
