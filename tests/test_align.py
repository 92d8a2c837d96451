"""Subtomogram alignment (napari_cryo_openset.align): conventions, grids, search, FSC, averages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryo_openset.align import (
    MIN_BOXES,
    align_group,
    align_to_reference,
    euler_to_matrix,
    fit_box,
    fsc,
    local_rotations,
    matrix_to_euler,
    orientation_errors,
    resembles,
    resolution_at,
    rotate_volumes,
    rotation_angle,
    uniform_rotations,
    xyz_to_zyx,
)
from napari_cryo_openset.align import so3
from napari_cryo_openset.align.synthetic import phantom, rotate_map, wedged_copies
from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.params import AlignParams
from napari_cryo_openset.progress import Progress, run_to_completion

VS = 10.0
FAST = dict(threads=2, device="cpu", angular_step=30.0, global_box=16)


@pytest.fixture(scope="module")
def template():
    return phantom(24)


# ------------------------------------------------------------------ conventions


def test_euler_round_trip():
    rng = np.random.default_rng(0)
    e = np.c_[rng.uniform(-180, 180, 500), rng.uniform(0, 180, 500), rng.uniform(-180, 180, 500)]
    a = euler_to_matrix(*e.T)
    assert np.allclose(a @ np.swapaxes(a, -1, -2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(a), 1.0)
    back = matrix_to_euler(a)
    assert np.allclose(back, e, atol=1e-8)
    assert np.allclose(euler_to_matrix(*back.T), a, atol=1e-12)
    # gimbal lock: tilt 0 → only rot + psi is defined; RELION puts it all into psi
    g = matrix_to_euler(euler_to_matrix(30.0, 0.0, 20.0))
    assert np.allclose(g, [0.0, 0.0, 50.0], atol=1e-8)
    # matrices from random quaternions round-trip too
    q = so3.quaternion_to_matrix(rng.normal(size=(200, 4)))
    assert np.allclose(euler_to_matrix(*matrix_to_euler(q).T), q, atol=1e-10)


def test_relion_convention():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(1)
    e = np.c_[rng.uniform(-180, 180, 50), rng.uniform(0, 180, 50), rng.uniform(-180, 180, 50)]
    a = euler_to_matrix(*e.T)
    # RELION's A is the transpose of the intrinsic (upper-case) ZYZ active rotation of (rot, tilt, psi)
    assert np.allclose(a, np.swapaxes(Rotation.from_euler("ZYZ", e, degrees=True).as_matrix(), -1, -2), atol=1e-12)
    # rot = 90° alone: x → −y (the object turns clockwise seen from +z, as the 3DEM table says of RELION)
    assert np.allclose(euler_to_matrix(90, 0, 0), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)
    # the matrix maps the reference onto the particle: a blob at +x of the reference lands at A·x
    d = 24
    ref = np.zeros((d, d, d), np.float32)
    ref[d // 2, d // 2, d // 2 + 6] = 1.0  # (z, y, x): +6 along x
    for angles in [(90, 0, 0), (0, 90, 0), (30, 50, -70)]:
        m = euler_to_matrix(*angles)
        part = rotate_map(ref, m, order=1)
        want = m @ np.array([6.0, 0.0, 0.0])  # (x, y, z)
        com = np.array(np.unravel_index(np.argmax(part), part.shape)) - d // 2  # (z, y, x)
        assert np.allclose(com[::-1], want, atol=1.0), (angles, com, want)
        # the aligner's own (trilinear, torch) rotation agrees with the (cubic, scipy) simulator
        mine = rotate_volumes(torch.as_tensor(ref), torch.as_tensor(xyz_to_zyx(m)[None]))[0].numpy()
        com2 = np.array(np.unravel_index(np.argmax(mine), mine.shape)) - d // 2
        assert np.allclose(com2, com, atol=1.0)


def test_relion_columns_sign_of_origin(template):
    boxes, mats, shifts = wedged_copies(template, 6, snr=np.inf, max_shift=2.0, seed=3)
    res = run_to_completion(align_group(boxes, VS, reference=template,
                                        params=AlignParams(iterations=1, **FAST)))
    cols = res.relion_columns()
    assert set(cols) >= {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
                         "rlnOriginZAngst", "rlnRandomSubset"}
    # RELION subtracts the origin: the particle centre is at centre − origin = centre + shift
    assert np.allclose(-cols["rlnOriginXAngst"] / VS, res.shifts[:, 2])
    assert np.median(np.abs(res.shifts - shifts)) < 0.5
    assert set(np.unique(cols["rlnRandomSubset"])) == {1, 2}


# ------------------------------------------------------------------ SO(3) grids


def test_uniform_grid_coverage():
    step = 30.0
    grid = uniform_rotations(step)
    assert grid.shape == (576, 3, 3)
    assert np.allclose(grid @ np.swapaxes(grid, -1, -2), np.eye(3), atol=1e-10)
    assert np.array_equal(grid, uniform_rotations(step))  # deterministic
    rng = np.random.default_rng(0)
    probes = so3.quaternion_to_matrix(rng.normal(size=(300, 4)))  # uniformly random rotations
    nearest = np.array([rotation_angle(grid, p[None]).min() for p in probes])
    assert nearest.max() < step  # covering radius below the step
    assert 0.35 * step < np.median(nearest) < 0.65 * step
    nn = np.array([np.sort(rotation_angle(grid, grid[i][None]))[1] for i in range(0, 576, 8)])
    assert 0.6 * step < np.median(nn) < 1.1 * step  # evenly spaced: no clumps
    assert nn.min() > 0.25 * step
    # uniformity: the rotated z axis fills the sphere evenly (octant counts within 25 %)
    z = grid[:, :, 2]
    octant = (z[:, 0] > 0) * 4 + (z[:, 1] > 0) * 2 + (z[:, 2] > 0)
    counts = np.bincount(octant, minlength=8)
    assert counts.min() > 0.75 * 576 / 8 and counts.max() < 1.25 * 576 / 8
    seeded = uniform_rotations(step, seed=5)
    assert not np.allclose(seeded, grid) and np.allclose(np.linalg.det(seeded), 1.0)


def test_local_grid():
    loc = local_rotations(15.0, 5.0)
    assert np.allclose(loc[0], np.eye(3))
    ang = rotation_angle(loc)
    assert ang.max() <= 15.0 + 1e-6 and len(loc) == 123
    assert np.sort(ang)[1] == pytest.approx(5.0, abs=1e-6)


# ------------------------------------------------------------------ search


def test_known_rotation_and_shift_recovered(template):
    boxes, mats, shifts = wedged_copies(template, 6, tilt_range=(-60, 60), snr=np.inf, max_shift=2.5, seed=2)
    out = run_to_completion(align_to_reference(boxes, template, VS, lowpass=30.0, params=AlignParams(**FAST)))
    err = rotation_angle(out["matrices"], mats)
    assert err.max() < FAST["angular_step"] / 2, err  # well below the global grid step
    assert np.median(err) < 6.0, err
    assert np.abs(out["shifts"] - shifts).max() < 0.6
    assert np.allclose(euler_to_matrix(*out["euler"].T), out["matrices"], atol=1e-9)


def test_wedge_aware_beats_plain_cc(template):
    tilt = (-45.0, 45.0)
    boxes, mats, _ = wedged_copies(template, 10, tilt_range=tilt, snr=0.5, max_shift=1.0, seed=4)
    err = {}
    for score in ("wedge", "cc"):
        out = run_to_completion(align_to_reference(boxes, template, VS, tilt_range=tilt, lowpass=40.0,
                                                   params=AlignParams(score=score, candidates=1, **FAST)))
        err[score] = float(np.median(rotation_angle(out["matrices"], mats)))
    assert err["wedge"] < 20.0, err  # at 40 Å
    assert err["wedge"] < 0.5 * err["cc"], err  # plain CC is drawn to the wedge


# ------------------------------------------------------------------ FSC


def test_fsc_analytic_cases():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(32, 32, 32)).astype(np.float32)
    same = fsc(a, a, voxel_size=5.0)
    assert np.allclose(same.fsc[1:], 1.0, atol=1e-6)
    assert same.at_nyquist and same.resolution == pytest.approx(10.0)
    b = rng.normal(size=(32, 32, 32)).astype(np.float32)
    ind = fsc(a, b, voxel_size=5.0)
    assert abs(ind.fsc[3:].mean()) < 0.03 and np.abs(ind.fsc[3:]).max() < 0.2
    assert ind.resolution > 32 * 5.0 / 3  # falls below 0.143 in the first shells
    # signal + independent noise of equal power per shell → FSC = SNR / (1 + SNR) = 0.5
    s = rng.normal(size=(32, 32, 32))
    half = fsc(s + rng.normal(size=s.shape), s + rng.normal(size=s.shape))
    assert np.abs(half.fsc[4:].mean() - 0.5) < 0.03
    # the 0.143 crossing is interpolated between shells
    freq = np.arange(5) / 40.0
    res, nyq = resolution_at(freq, np.array([1.0, 0.9, 0.5, 0.1, 0.0]))
    assert not nyq and res == pytest.approx(1.0 / (2 / 40 + (0.5 - 0.143) / 0.4 / 40))


# ------------------------------------------------------------------ gold standard, averages


def test_gold_standard_gives_a_resolution(template):
    boxes, mats, _ = wedged_copies(template, 12, tilt_range=(-60, 60), snr=1.0, max_shift=1.5, seed=5)
    res = run_to_completion(align_group(boxes, VS, tilt_range=(-60, 60), reference=template,
                                        params=AlignParams(iterations=2, **FAST)))
    assert res.aligned and res.half_maps.shape == (2, 24, 24, 24) and res.average.shape == (24, 24, 24)
    assert 2 * VS <= res.resolution < 80.0
    assert len(res.history) == 2 and res.fsc.fsc[1] > 0.5
    assert np.median(orientation_errors(res.matrices, mats, common_frame=False)) < 15.0
    assert np.corrcoef(res.average.ravel(), template.ravel())[0, 1] > 0.8
    assert (np.bincount(res.half) == 6).all()  # parity split
    assert "resolution" in res.summary()


def test_reference_free_runs_and_symmetry(template):
    boxes, _, _ = wedged_copies(template, 8, tilt_range=(-60, 60), snr=2.0, max_shift=1.0, seed=6)
    res = run_to_completion(align_group(boxes, VS, tilt_range=(-60, 60),
                                        params=AlignParams(iterations=1, symmetry="C4", refine_levels=1, **FAST)))
    assert res.aligned and np.isfinite(res.resolution) and np.isfinite(res.euler).all()
    quarter = np.rot90(res.average, k=1, axes=(1, 2))  # 90° about Z
    assert np.corrcoef(quarter.ravel(), res.average.ravel())[0, 1] > 0.95
    with pytest.raises(ParameterError):
        AlignParams(symmetry="D2")


# ------------------------------------------------------------------ resembles


def test_resembles_ranks_the_true_template_first(template):
    ax = np.arange(24) - 12
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    others = {
        "rod": np.exp(-(z**2 / 50.0 + y**2 / 4.0 + x**2 / 4.0)),
        "dumbbell": np.exp(-(z**2 + y**2 + (x - 4) ** 2) / 6.0) + np.exp(-(z**2 + y**2 + (x + 4) ** 2) / 6.0),
        "ring": np.exp(-((np.sqrt(y**2 + x**2) - 5) ** 2 + z**2) / 3.0),
    }
    refs = {"truth": template, **others}
    m = euler_to_matrix(40.0, 70.0, -30.0)
    avg = rotate_map(template, m, (1.0, -1.0, 0.5))
    out = resembles(avg, refs, VS, params=AlignParams(**FAST))
    assert [r.name for r in out][0] == "truth" and out[0].score > 0.9
    assert out[0].score > out[1].score + 0.05
    assert str(out[0]).startswith("truth (0.9")
    assert rotation_angle(euler_to_matrix(*out[0].euler), m) < 20.0  # compared at 40 Å


# ------------------------------------------------------------------ generator, bad input


def test_progress_and_cancel(template):
    boxes, _, _ = wedged_copies(template, 8, snr=1.0, seed=7)
    gen = align_group(boxes, VS, reference=template, params=AlignParams(iterations=2, **FAST))
    events = [next(gen) for _ in range(4)]
    assert all(isinstance(e, Progress) and e.stage == "align" for e in events)
    assert all(0 <= e.step <= e.total for e in events[1:])
    gen.close()  # Cancel: stop iterating — nothing else runs
    with pytest.raises(StopIteration):
        next(gen)
    seen = []
    res = run_to_completion(align_group(boxes, VS, reference=template, params=AlignParams(iterations=1, **FAST)),
                            seen.append)
    assert res.aligned and seen[-1].step == seen[-1].total


def test_bad_input(template):
    boxes, _, _ = wedged_copies(template, 3, snr=1.0, seed=8)
    few = run_to_completion(align_group(boxes, VS, params=AlignParams(**FAST)))
    assert not few.aligned and few.resolution is None and few.average.shape == (24, 24, 24)
    assert any(f"at least {MIN_BOXES}" in m for m in few.messages)
    assert np.isnan(few.euler).all() and (few.half == -1).all()
    empty = np.zeros((5, 24, 24, 24), np.float32)
    none = run_to_completion(align_group(empty, VS, params=AlignParams(**FAST)))
    assert not none.aligned and any("empty" in m for m in none.messages)
    with pytest.raises(ParameterError, match="stack of cubes"):
        run_to_completion(align_group(np.zeros((4, 8, 9, 9)), VS))
    with pytest.raises(ParameterError, match="tilt_range"):
        run_to_completion(align_group(boxes, VS, tilt_range=(50, -50)))
    odd = wedged_copies(template[:23, :23, :23], 4, snr=np.inf, seed=9)[0]
    res = run_to_completion(align_group(odd, VS, tilt_range=None, reference=template[:23, :23, :23],
                                        params=AlignParams(iterations=1, refine_levels=1, **FAST)))
    assert res.average.shape == (23, 23, 23) and any("no tilt range" in m for m in res.messages)
