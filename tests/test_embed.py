"""embed: t-SNE map, clusters of unknown picks, unaligned group averages, and the picks pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cryo_openset.embed import (
    EmbedParams,
    cluster_unknowns,
    embed_picks,
    embed_predictions,
    fill_embedding,
    group_averages,
    group_names,
    tsne_map,
)
from napari_cryo_openset.errors import CryoOpensetError, ParameterError
from napari_cryo_openset.progress import Progress, run_to_completion

VOXEL = 10.0


def _blobs(seed=0, sizes=(60, 60, 60, 25, 18), dim=32, spread=4.0):
    """Gaussian blobs in ``dim``-D; the last two are the 'unknown' structures."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * spread
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[labels] + rng.normal(size=(len(labels), dim))
    return x, labels, labels >= len(sizes) - 2


def test_unknown_clusters_recover_the_two_novel_structures():
    x, labels, unknown = _blobs()
    cluster = cluster_unknowns(x, unknown, min_cluster_size=5)
    assert np.all(cluster[~unknown] == -1)
    # each novel structure is one cluster, numbered by decreasing size (25 → U0, 18 → U1)
    assert set(cluster[labels == 3]) == {0}
    assert set(cluster[labels == 4]) == {1}


def test_too_few_unknowns_make_no_cluster():
    x, _, _ = _blobs()
    unknown = np.zeros(len(x), bool)
    unknown[:3] = True
    assert np.all(cluster_unknowns(x, unknown, min_cluster_size=5) == -1)


def test_tsne_is_seeded_separates_classes_and_reports_progress():
    x, labels, unknown = _blobs(sizes=(40, 40, 40, 20, 20))
    params = EmbedParams(iterations=250, threads=2, chunk=50)
    events = []
    emb = run_to_completion(embed_predictions(x, unknown, params), events.append)
    again = run_to_completion(embed_predictions(x, unknown, params))
    assert emb.method == "t-SNE" and emb.xy.shape == (len(x), 2)
    np.testing.assert_array_equal(emb.xy, again.xy)
    assert all(isinstance(e, Progress) for e in events) and len(events) >= 10  # one per chunk: Cancel points
    # every point's nearest neighbour on the map is of its own structure
    d = np.linalg.norm(emb.xy[:, None] - emb.xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(labels[d.argmin(1)] == labels) > 0.97
    assert emb.cluster_sizes == {0: 20, 1: 20}
    assert "U0 20" in emb.summary()


def test_small_sets_get_a_pca_map_and_perplexity_is_capped():
    x, _, _ = _blobs(sizes=(3, 2, 1, 0, 0))
    xy, method, perplexity = run_to_completion(tsne_map(x))
    assert method == "PCA" and xy.shape == (6, 2) and perplexity is None
    x, _, _ = _blobs(sizes=(10, 10, 10, 0, 0))
    _, method, perplexity = run_to_completion(tsne_map(x, EmbedParams(iterations=10, threads=1)))
    assert method == "t-SNE" and perplexity == pytest.approx(29 / 3)


@pytest.mark.parametrize("kwargs", [{"perplexity": 0}, {"iterations": -1}, {"min_cluster_size": 1}, {"chunk": 0},
                                    {"threads": 0}])
def test_bad_parameters_are_named(kwargs):
    with pytest.raises(ParameterError, match=next(iter(kwargs))):
        EmbedParams(**kwargs)


def test_nan_features_are_refused():
    x, _, unknown = _blobs()
    x[3, 2] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        run_to_completion(embed_predictions(x, unknown))


def test_group_averages_are_means_and_skip_unclassified():
    rng = np.random.default_rng(0)
    boxes = rng.normal(size=(7, 4, 4, 4)).astype(np.float32)
    groups = np.array(["a", "a", "b", "", "unknown U0", "unknown U0", "unknown U0"], dtype=object)
    avg = group_averages(boxes, groups)
    assert set(avg) == {"a", "b", "unknown U0"}
    np.testing.assert_allclose(avg["a"][0], boxes[:2].mean(0), rtol=1e-6)
    assert avg["unknown U0"][1] == 3
    capped = group_averages(boxes, groups, max_per_group=2, seed=0)
    assert capped["unknown U0"][1] == 2


def test_group_names_label_unknown_clusters():
    names = group_names(["1bxn", "unknown", "unknown", "empty"], [-1, 0, -1, -1])
    assert list(names) == ["1bxn", "unknown U0", "unknown", "empty"]


def test_fill_embedding_leaves_rejected_rows_unset():
    from napari_cryo_openset.embed import Embedding
    from napari_cryo_openset.picks import make_picks

    picks = make_picks(np.arange(12, dtype=float).reshape(4, 3))
    mask = np.array([True, False, True, True])
    emb = Embedding(xy=np.ones((3, 2)), cluster=np.array([0, -1, 1]), method="PCA", perplexity=None, seconds=0.0)
    out = fill_embedding(picks, mask, emb)
    assert np.isnan(out.loc[1, "tsne_x"]) and out.loc[1, "cluster"] == -1
    assert list(out.loc[mask, "cluster"]) == [0, -1, 1]
    with pytest.raises(ParameterError, match="3 rows"):
        fill_embedding(picks, np.ones(4, bool), emb)


# --------------------------------------------------------------------------------------------
# embed_picks: a tiny model on a simulated scene
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_and_scene(templates, simulate, train, simulate_scene):
    from napari_cryo_openset.checkpoint import bundle_from_training
    from napari_cryo_openset.io.tomogram import Tomogram
    from napari_cryo_openset.simulate import ImagingCondition

    cond = ImagingCondition(voxel_size=VOXEL, snr=1.0)
    data = simulate(templates, box=24, per_class=10, decoys=10, empty=5, condition=cond, seed=0)
    trained = train(data, epochs=1, batch_size=8, threads=2, seed=1)
    volume, truth = simulate_scene(templates, shape=(48, 96, 96), condition=cond, n_particles=24, unknown_fraction=0.25,
                                   seed=1)
    return bundle_from_training(trained), Tomogram(volume, (VOXEL,) * 3), truth.reset_index(drop=True)


def test_embed_picks_maps_classified_picks_and_averages_sit_on_particles(model_and_scene):
    bundle, tomo, truth = model_and_scene
    picks = truth.copy()  # ground-truth classes stand in for predictions
    picks["is_unknown"] = picks["class_name"] == "unknown"
    picks.loc[0, "curation"] = "rejected"
    picks.loc[1, "class_name"] = ""  # not classified: left out
    done = run_to_completion(embed_picks(bundle, tomo, picks, polarity="dark",
                                         params=EmbedParams(iterations=100, threads=2, min_cluster_size=3)))
    out = done.picks
    assert len(out) == len(picks) and list(out["curation"]) == list(picks["curation"])  # nothing dropped
    assert np.isnan(out.loc[0, "tsne_x"]) and np.isnan(out.loc[1, "tsne_x"])
    assert out.loc[2:, "tsne_x"].notna().all()
    assert list(done.active_index) == list(range(2, len(picks)))
    assert set(out.loc[picks["class_name"] != "unknown", "cluster"]) == {-1}
    # class averages: the particle is at the box centre (protein bright after normalisation)
    for name in ("1bxn", "1qvr", "2cg9"):
        avg, count = done.averages[name]
        assert count == int(((out["class_name"] == name) & (out.index >= 2)).sum())
        b = avg.shape[0]
        centre = avg[b // 2 - 2:b // 2 + 2, b // 2 - 2:b // 2 + 2, b // 2 - 2:b // 2 + 2].mean()
        assert centre > avg.mean() + 0.3 * avg.std(), name
    assert done.voxel_size == VOXEL


def test_embed_picks_needs_predictions(model_and_scene):
    bundle, tomo, truth = model_and_scene
    with pytest.raises(CryoOpensetError, match="no predictions"):
        run_to_completion(embed_picks(bundle, tomo, truth.drop(columns=["class_name"])))
    empty = truth.assign(class_name="")
    with pytest.raises(CryoOpensetError, match="no classified picks"):
        run_to_completion(embed_picks(bundle, tomo, empty))


def test_embed_picks_keeps_unknown_columns(model_and_scene):
    bundle, tomo, truth = model_and_scene
    picks = truth.assign(my_note="x")
    done = run_to_completion(embed_picks(bundle, tomo, picks, params=EmbedParams(iterations=10, threads=1)))
    assert (done.picks["my_note"] == "x").all()
    assert isinstance(done.picks, pd.DataFrame)
