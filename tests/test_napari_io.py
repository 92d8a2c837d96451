"""napari integration: the plugin's reader/writer in a real viewer, with screenshots.

Run under a display (scripts/test.sh uses ``xvfb-run -a``). A screenshot must show the tomogram
(not a blank canvas), and picks must land where the STAR file says, on the right voxels.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryo_openset._writer import write_image, write_points
from napari_cryo_openset.io import read_picks, read_tomogram, write_picks, write_tomogram
from napari_cryo_openset.synthetic import BlobTomogramParams, blob_tomogram

pytestmark = pytest.mark.gui
PLUGIN = "napari-cryo-openset"


def _screenshot(viewer, qtbot):
    qtbot.wait(50)
    return viewer.screenshot(canvas_only=True, flash=False)


def _not_blank(img: np.ndarray) -> bool:
    rgb = img[..., :3].astype(float)
    return rgb.std() > 5 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50


@pytest.fixture
def sample_files(tmp_path):
    params = BlobTomogramParams(shape=(32, 64, 64), n_particles=8, voxel_size=12.5, diameter=150.0)
    volume, truth = blob_tomogram(params)
    tomo = write_tomogram(tmp_path / "TS_01.mrc", volume, params.voxel_size)
    star = write_picks(tmp_path / "TS_01_picks.star", truth)  # no voxel size inside
    return tomo, star, params


def test_open_tomogram_with_plugin(make_napari_viewer, qtbot, sample_files):
    tomo_path, _, params = sample_files
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(tomo_path), plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    np.testing.assert_allclose(layer.scale, [12.5, 12.5, 12.5])
    assert all(str(u) == "angstrom" for u in layer.units)
    assert layer.metadata["voxel_size"] == (12.5, 12.5, 12.5)
    assert layer.metadata["path"] == str(tomo_path)
    assert isinstance(layer.data, np.memmap)  # opened memory-mapped, not loaded
    lo, hi = layer.contrast_limits
    assert lo < 0 < hi
    viewer.dims.set_point(0, 16 * 12.5)
    assert _not_blank(_screenshot(viewer, qtbot))


def test_picks_take_the_tomogram_scale_and_land_on_particles(make_napari_viewer, qtbot, sample_files):
    tomo_path, star_path, params = sample_files
    viewer = make_napari_viewer(show=True)
    viewer.open(str(tomo_path), plugin=PLUGIN)
    (points,) = viewer.open(str(star_path), plugin=PLUGIN)
    np.testing.assert_allclose(points.scale, [12.5] * 3)
    assert points.metadata["voxel_size_source"].startswith("tomogram beside it")
    assert {"score", "curation", "class_name"} <= set(points.features.columns)
    # world coordinates of the points map back to dark voxels of the image
    image = viewer.layers[0]
    world = points.data * points.scale
    idx = np.round(world / image.scale).astype(int)
    values = np.asarray(image.data)[tuple(idx.T)]
    assert values.mean() < np.asarray(image.data).mean() - 1.0
    img = _screenshot(viewer, qtbot)
    assert _not_blank(img)


def test_writers_keep_scale_and_features(make_napari_viewer, tmp_path, sample_files):
    tomo_path, star_path, params = sample_files
    viewer = make_napari_viewer()
    viewer.open([str(tomo_path), str(star_path)], plugin=PLUGIN)
    image, points = viewer.layers
    points.features.loc[0, "curation"] = "rejected"
    out_star = tmp_path / "saved.star"
    out_mrc = tmp_path / "saved.mrc"
    write_points(str(out_star), points.data, points._get_state())
    write_image(str(out_mrc), image.data, image._get_state())
    back = read_picks(out_star)
    assert len(back) == len(points.data)
    assert back.loc[0, "curation"] == "rejected"  # curated state survives, nothing deleted
    assert back.attrs["voxel_size"] == (12.5, 12.5, 12.5)
    saved = read_tomogram(out_mrc)
    assert saved.voxel_size == (12.5, 12.5, 12.5)  # pixel size not lost on save
    np.testing.assert_array_equal(np.asarray(saved.data), np.asarray(image.data))


def test_save_through_napari_writer_contribution(make_napari_viewer, tmp_path, sample_files):
    import napari

    tomo_path, star_path, _ = sample_files
    viewer = make_napari_viewer()
    viewer.open([str(tomo_path), str(star_path)], plugin=PLUGIN)
    out = tmp_path / "via_napari.star"
    napari.save_layers(str(out), [viewer.layers[1]], plugin=PLUGIN)
    assert len(read_picks(out)) == len(viewer.layers[1].data)


@pytest.mark.parametrize("key", ["synthetic-tomogram", "simulated-scene"])
def test_sample_data(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    image, points = viewer.layers
    assert image.data.ndim == 3
    np.testing.assert_allclose(points.scale, image.scale)
    assert len(points.data) > 20


def test_simulated_scene_shows_unknown_colour(make_napari_viewer, qtbot):
    """The sample scene's decoys carry the reserved unknown colour on the canvas."""
    from napari_cryo_openset._viewer import show_particles_across_slices
    from napari_cryo_openset.palette import UNKNOWN_COLOR

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "simulated-scene")
    image, points = viewer.layers
    unknown = points.features["class_name"].to_numpy() == "unknown"
    assert unknown.any()
    rgb = (np.array([int(UNKNOWN_COLOR[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0)
    np.testing.assert_allclose(points.border_color[unknown][:, :3], np.tile(rgb, (unknown.sum(), 1)), atol=1e-6)
    show_particles_across_slices(viewer, 200.0)
    z = float(points.data[unknown][0, 0])
    viewer.dims.set_point(0, z * image.scale[0])
    img = _screenshot(viewer, qtbot)
    magenta = (np.abs(img[..., :3].astype(int) - [255, 0, 255]).sum(-1) < 60).sum()
    assert magenta > 20


@pytest.mark.shared_data
def test_real_tomogram_and_lattice_overlay(make_napari_viewer, qtbot, shared_data, tmp_path):
    """The real HIV VLP tomogram opens at 40 Å and its lattice STAR sits on the bright lattice."""
    from napari_cryo_openset._viewer import show_particles_across_slices

    mrc = shared_data / "real" / "hiv_vlp_40A.mrc"
    star = shared_data / "real" / "hiv_vlp_40A_lattice.star"
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(mrc), plugin=PLUGIN)
    (points,) = viewer.open(str(star), plugin=PLUGIN)
    np.testing.assert_allclose(image.scale, [40, 40, 40])
    np.testing.assert_allclose(points.scale, image.scale)
    assert len(points.data) == 5377
    # "right place": the lattice sits on protein, bright in this (inverted) tomogram. Smooth
    # lightly and compare intensities at the lattice positions with random positions.
    from scipy import ndimage

    vol = ndimage.gaussian_filter(np.asarray(image.data, dtype=np.float32), 1.0)
    vol = (vol - vol.mean()) / vol.std()
    idx = np.round(points.data).astype(int)
    at_lattice = vol[tuple(idx.T)]
    rng = np.random.default_rng(0)
    random_idx = rng.integers(0, vol.shape, size=(5000, 3))
    assert at_lattice.mean() > vol[tuple(random_idx.T)].mean() + 1.0
    # a 3-voxel (120 Å) shift along X lowers the match (coordinates are not transposed or offset)
    shifted = vol[tuple(np.clip(idx + [0, 0, 3], 0, np.array(vol.shape) - 1).T)]
    assert at_lattice.mean() > shifted.mean()
    show_particles_across_slices(viewer, 160.0)
    viewer.reset_view()
    viewer.dims.set_point(0, 52 * 40.0)
    img = _screenshot(viewer, qtbot)
    assert _not_blank(img)
    # the pick colour (gold) is on the canvas
    gold = np.array([255, 215, 0])
    assert (np.abs(img[..., :3].astype(int) - gold).sum(-1) < 60).sum() > 200
    from skimage.io import imsave

    imsave(tmp_path / "hiv_overlay.png", img, check_contrast=False)
