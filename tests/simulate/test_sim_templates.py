"""Templates: maps at any voxel size, atomic models, folders, the built-in library."""

from __future__ import annotations

from importlib.resources import files

import mrcfile
import numpy as np
import pytest

from napari_cryo_openset.errors import CryoOpensetError
from napari_cryo_openset.simulate.templates import (
    Template,
    TemplateError,
    builtin_template_names,
    builtin_templates,
    centre_of_mass,
    load_template,
    load_templates,
    resample_density,
)


def radius_of_gyration(density: np.ndarray, voxel_size: float = 1.0) -> float:
    """Radius of gyration of the positive density, in Å (voxels × voxel_size): the measure the
    resampling tests check (no product code needs it)."""
    w = np.clip(density, 0, None).astype(np.float64)
    com = centre_of_mass(w)
    zz, yy, xx = np.indices(w.shape, sparse=True)
    r2 = (zz - com[0]) ** 2 + (yy - com[1]) ** 2 + (xx - com[2]) ** 2
    return float(np.sqrt((w * r2).sum() / w.sum()) * voxel_size)


BUILTIN = ["1bxn", "1qvr", "2cg9", "3j9i", "4cr2", "4v4r"]


def _write_map(path, data, voxel_size):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = voxel_size
    return path


@pytest.fixture(scope="module")
def library():
    return builtin_templates(10.0)


def test_builtin_library_is_small_sorted_and_pickle_free(library):
    resource = files("napari_cryo_openset") / "data" / "templates" / "builtin_templates.npz"
    assert resource.is_file()
    assert len(resource.read_bytes()) < 3 * 1024**2
    with resource.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    assert builtin_template_names() == BUILTIN
    assert [t.name for t in library] == BUILTIN
    assert "4v94" not in builtin_template_names()  # the two-body TRiC map is not shipped
    # visually distinct sizes: from ~12 nm (RuBisCO) to ~30 nm (ribosome)
    diam = {t.name: t.diameter / 10 for t in library}
    assert 10 < diam["1bxn"] < 16 and 26 < diam["4v4r"] < 33


def test_template_invariants(library):
    for t in library:
        d = t.density
        assert d.dtype == np.float32 and d.ndim == 3 and len(set(d.shape)) == 1 and d.shape[0] % 2 == 1
        assert d.min() >= 0
        border = np.concatenate([d[[0, -1]].ravel(), d[:, [0, -1]].ravel(), d[:, :, [0, -1]].ravel()])
        assert border.max() < 0.02 * d.max()  # background 0 at the box edge
        com = centre_of_mass(d)
        assert np.all(np.abs(com - np.array(d.shape) // 2) <= 0.5 + 1e-6)
        inside = d[d > 0.5 * np.percentile(d[d > 0], 99)]
        assert abs(inside.mean() - 1.0) < 1e-3  # normalised: mean density inside the support = 1


def test_resample_10_to_13_7_keeps_centre_of_mass_and_radius_of_gyration():
    t = builtin_templates(10.0)[4]  # 4cr2, elongated
    d = np.pad(t.density, ((6, 2), (1, 7), (4, 4)))  # make the centre of mass off-centre
    com_in = (centre_of_mass(d) - np.array(d.shape) // 2) * 10.0
    rg_in = radius_of_gyration(d, 10.0)
    r = resample_density(d, 10.0, 13.7)
    com_out = (centre_of_mass(r) - np.array(r.shape) // 2) * 13.7
    rg_out = radius_of_gyration(r, 13.7)
    assert abs(rg_out - rg_in) / rg_in < 0.02
    assert np.linalg.norm(com_out - com_in) < 0.02 * rg_in
    assert np.linalg.norm(com_in) > 20  # the test is not trivial


def test_mrc_at_another_voxel_size_is_resampled_to_the_target(tmp_path, library):
    t = library[3]  # 3j9i at 10 Å
    fine = resample_density(t.density, 10.0, 5.0)  # the same particle at 5 Å
    path = _write_map(tmp_path / "prot.mrc", fine * 37.0 + 0.0, 5.0)
    loaded = load_template(path, 10.0)
    assert loaded.name == "prot" and loaded.voxel_size == 10.0
    assert abs(loaded.radius - t.radius) <= 10.0  # within one voxel
    assert abs(radius_of_gyration(loaded.density, 10) - radius_of_gyration(t.density, 10)) / radius_of_gyration(t.density, 10) < 0.03


def test_inverted_map_with_background_is_cleaned(tmp_path, library):
    t = library[0]
    inv = 5.0 - 3.0 * np.pad(t.density, 4)  # protein negative on a background of 5
    with pytest.warns(UserWarning, match="inverted"):
        loaded = load_template(_write_map(tmp_path / "inv.mrc", inv, 10.0), 10.0)
    c = np.corrcoef(loaded.density.ravel(), np.pad(t.density, (loaded.shape[0] - t.shape[0]) // 2).ravel())[0, 1]
    assert c > 0.99


def test_directories_sorted_and_errors_name_the_file(tmp_path, library):
    for t in library[:3][::-1]:
        _write_map(tmp_path / f"{t.name}.mrc", t.density, 10.0)
    loaded = load_templates([tmp_path], 10.0)
    assert [t.name for t in loaded] == ["1bxn", "1qvr", "2cg9"]
    assert [t.name for t in load_templates(["builtin"], 10.0)] == BUILTIN

    with pytest.raises(TemplateError, match="missing.mrc"):
        load_templates([tmp_path / "missing.mrc"], 10.0)
    bad = tmp_path / "bad" / "junk.mrc"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not an MRC file" * 10)
    with pytest.raises(CryoOpensetError, match="junk.mrc"):
        load_templates([bad], 10.0)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(TemplateError, match="empty_dir"):
        load_templates([tmp_path / "empty_dir"], 10.0)
    with pytest.raises(TemplateError, match="two templates"):
        load_templates([tmp_path, tmp_path / "1bxn.mrc"], 10.0)
    _write_map(tmp_path / "unknown.mrc", library[0].density, 10.0)
    with pytest.raises(TemplateError, match="reserved"):
        load_template(tmp_path / "unknown.mrc", 10.0)


def test_template_from_density_measures_radius():
    z, y, x = np.indices((41, 41, 41)) - 20
    ball = (np.sqrt(z**2 + y**2 + x**2) <= 10).astype(np.float32)
    t = Template.from_density("ball", ball, 5.0)
    assert abs(t.radius - 50.0) <= 5.0  # 10 voxels of 5 Å


@pytest.mark.shared_data
def test_apoferritin_atomic_model_has_a_6_nm_radius(shared_data):
    path = shared_data / "structures" / "4v1w.cif"
    if not path.exists():
        pytest.skip("4v1w.cif not in shared data")
    t = load_template(path, 10.0)
    assert t.name == "4v1w"
    assert 54.0 <= t.radius <= 68.0, t.radius  # ~12 nm outer diameter
    # apoferritin is a hollow shell: the centre is empty
    c = t.shape[0] // 2
    assert t.density[c - 1 : c + 2, c - 1 : c + 2, c - 1 : c + 2].mean() < 0.1 * t.density.max()


@pytest.mark.shared_data
def test_atoms_are_rotated_exactly(shared_data):
    from napari_cryo_openset.simulate.atomic import density_from_atoms

    path = shared_data / "structures" / "4v1w.cif"
    if not path.exists():
        pytest.skip("4v1w.cif not in shared data")
    base = density_from_atoms(path, 12.0)
    # 90° about the z axis of (x, y, z) atom coordinates: (x, y) → (−y, x)
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rotated = density_from_atoms(path, 12.0, rotation=rot)
    n = min(base.shape[0], rotated.shape[0])
    crop = lambda a: a[tuple(slice((s - n) // 2, (s - n) // 2 + n) for s in a.shape)]  # noqa: E731
    expected = np.rot90(crop(base), k=1, axes=(2, 1))  # array (z, y, x): x → y
    assert np.corrcoef(crop(rotated).ravel(), expected.ravel())[0, 1] > 0.999


@pytest.mark.shared_data
def test_shared_template_folder_loads_all_sixteen(shared_data):
    folder = shared_data / "templates_10A"
    names = [t.name for t in load_templates([folder], 10.0)]
    assert names == sorted(names) and len(names) == 16
