"""Decoys: seeded, protein-sized, with the symmetry they claim."""

from __future__ import annotations

import numpy as np

from napari_cryo_openset.simulate.decoys import DecoyParams, make_decoy, make_decoys


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_decoys_are_seeded_distinct_and_protein_sized():
    a = make_decoys(10, 10.0, seed=3)
    b = make_decoys(10, 10.0, seed=3)
    c = make_decoys(10, 10.0, seed=4)
    assert all(np.array_equal(x.density, y.density) for x, y in zip(a, b))
    assert not np.array_equal(a[0].density, c[0].density)
    assert len({x.source for x in a}) > 2  # symmetry variety
    for d in a:
        assert d.name.startswith("decoy_") and d.source.startswith("decoy:")
        assert 5.0 <= d.diameter / 10 <= 32.0  # nm
        assert d.density.min() >= 0


def test_cyclic_and_dihedral_symmetry():
    rng = np.random.default_rng(0)
    big = DecoyParams(diameter_range=(18.0, 24.0))
    c4 = make_decoy(rng, 8.0, symmetry="C4", params=big).density
    assert _corr(c4, np.rot90(c4, 1, axes=(1, 2))) > 0.97  # 90° about Z
    d2 = make_decoy(rng, 8.0, symmetry="D2", params=big).density
    assert _corr(d2, np.rot90(d2, 2, axes=(1, 2))) > 0.97  # 2-fold about Z
    assert _corr(d2, d2[::-1, ::-1, :]) > 0.97  # 2-fold about X: (z, y) → (−z, −y)
    c1 = make_decoy(rng, 8.0, symmetry="C1", params=big).density
    assert _corr(c1, np.rot90(c1, 1, axes=(1, 2))) < 0.9
    assert _corr(c1, c1[::-1, ::-1, :]) < 0.9


def test_max_diameter_caps_the_size():
    for d in make_decoys(6, 10.0, seed=1, max_diameter=12.0):
        assert d.diameter / 10 <= 14.0


def test_near_miss_decoys_are_close_to_a_known_structure_without_being_it():
    from napari_cryo_openset.simulate import builtin_templates
    from napari_cryo_openset.simulate.decoys import derived_decoys

    known = builtin_templates(20.0)
    near = derived_decoys(known, 12, seed=3)
    assert [t.name for t in near] == [f"near_{i:03d}" for i in range(12)]
    assert [t.name for t in derived_decoys(known, 12, seed=3)] == [t.name for t in near]
    assert all(np.array_equal(a.density, b.density) for a, b in zip(near, derived_decoys(known, 12, seed=3)))
    kinds = {t.source.split(":")[1] for t in near}
    assert kinds <= {"scaled", "fragment", "chimera"} and len(kinds) >= 2
    by_name = {t.name: t for t in known}
    for t in near:
        _, kind, parent = t.source.split(":")
        ratio = t.diameter / by_name[parent].diameter
        if kind == "scaled":  # too small or too large to be the parent
            assert ratio < 0.9 or ratio > 1.12, (t.source, ratio)
        assert t.density.max() > 0 and abs(t.density[t.density > 0.5].mean() - 1) < 0.6
