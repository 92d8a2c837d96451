"""Physics of the imaging chain: CTF zeros, SNR, missing wedge, contrast sign, geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_cryo_openset.params import ImagingCondition
from napari_cryo_openset.simulate.imaging import (
    _ctf_radial,
    approximate_image_volumes,
    dose_filter_2d,
    dose_order,
    fold_angle,
    image_volumes,
    mtf_2d,
    window_variance,
)
from napari_cryo_openset.simulate.placement import random_rotations, rotate_into_boxes
from napari_cryo_openset.simulate.projector import TiltProjector

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def proteasome(builtin):
    return builtin(("3j9i",))[0]


def _wavelength(kv: float) -> float:
    """Relativistic electron wavelength in Å, written out independently of the package."""
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    v = kv * 1e3
    return h / math.sqrt(2 * m0 * e * v * (1 + e * v / (2 * m0 * c * c))) * 1e10


def _expected_zero_shells(defocus_um, cs_mm, kv, ac, voxel, n):
    """Shells (index = |f|·n, f in cycles/pixel) where sin(χ + asin(ac)) = 0, χ(k) = πλΔf k² − π/2·Cs·λ³k⁴."""
    lam = _wavelength(kv)
    k = np.linspace(0, 0.5, 200001) / voxel
    chi = math.pi * lam * defocus_um * 1e4 * k**2 - 0.5 * math.pi * cs_mm * 1e7 * lam**3 * k**4 + math.asin(ac)
    crossings = np.flatnonzero(np.diff(np.floor(chi / math.pi)) != 0)
    return k[crossings] * voxel * n


def _wedge_fraction(volumes: torch.Tensor, max_tilt: float, tolerance_voxels: float = 0.0) -> float:
    """Fraction of the power (DC excluded, k_y axis excluded) at |atan2(k_z, k_x)| > max_tilt."""
    n = volumes.shape[-1]
    power = torch.fft.fftn(volumes, dim=(-3, -2, -1)).abs() ** 2
    k = torch.fft.fftfreq(n) * n
    kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
    phi = fold_angle(torch.rad2deg(torch.atan2(kz, kx))).abs()
    rho = torch.sqrt(kx**2 + kz**2)
    valid = rho > 0
    wedge = valid & (phi > max_tilt) & (rho * torch.sin(torch.deg2rad((phi - max_tilt).clamp(min=0))) > tolerance_voxels)
    return float(power[:, wedge].sum() / power[:, valid].sum())


# ------------------------------------------------------------------------------------------
# CTF
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("defocus, cs, kv", [(3.0, 2.7, 300.0), (1.5, 2.0, 200.0)])
def test_ctf_zeros_of_a_noise_free_projection_are_where_the_formula_puts_them(defocus, cs, kv):
    n, voxel = 64, 4.0
    cond = ImagingCondition(voxel_size=voxel, defocus=defocus, cs=cs, voltage=kv, snr=1.0,
                            tilt_range=(-6, 6), tilt_step=3)
    vol = torch.randn(4, n, n, n, generator=torch.Generator().manual_seed(0))  # white: flat spectrum
    _, ts = image_volumes(vol, cond, defocus=[defocus] * 4, snr=[1.0] * 4, noise_seeds=range(4),
                          return_tilt_series=True)
    u0 = (ts.signal.shape[-1] - n) // 2
    img = ts.signal[..., u0 : u0 + n].reshape(-1, n, n).numpy()  # noise-free projections, n × n
    ps = (np.abs(np.fft.fft2(img)) ** 2).mean(0)
    f = np.fft.fftfreq(n)
    shell = np.rint(np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) * n).astype(int)
    radial = np.bincount(shell.ravel(), ps.ravel()) / np.bincount(shell.ravel())
    minima = [i for i in range(2, n // 2 - 1) if radial[i] < radial[i - 1] and radial[i] < radial[i + 1]]
    zeros = [z for z in _expected_zero_shells(defocus, cs, kv, 0.07, voxel, n) if 3 <= z <= n // 2 - 2]
    assert len(zeros) >= 3
    for z in zeros:
        assert any(abs(m - z) <= 1.0 for m in minima), f"no power minimum within ±1 shell of the CTF zero at {z:.2f} (minima {minima})"
        assert radial[int(round(z))] < 0.2 * radial[2 : n // 2].max()


def test_package_ctf_agrees_with_torch_ctf_1d():
    from torch_ctf import calculate_ctf_1d

    cond = ImagingCondition(voxel_size=5.0, defocus=4.0, cs=2.7, voltage=300)
    ref = calculate_ctf_1d(defocus=4.0, voltage=300.0, spherical_aberration=2.7, amplitude_contrast=0.07,
                           phase_shift=0.0, pixel_size=5.0, n_samples=65, oversampling_factor=1)
    k = torch.linspace(0, 0.5, 65) / 5.0
    ours = _ctf_radial(cond, torch.tensor([4.0]), k)[0]
    assert torch.allclose(ours, ref, atol=1e-4)
    assert ref[0] > 0  # torch-ctf: RELION sign, +amplitude contrast at zero frequency


def test_mtf_is_sinc_with_2_over_pi_at_nyquist():
    m = mtf_2d((64, 64))
    assert abs(float(m[0, 32]) - 2 / math.pi) < 1e-4 and float(m[0, 0]) == 1.0


def test_dose_weighting_damps_later_tilts_more():
    cond = ImagingCondition(voxel_size=5.0, dose_per_tilt=3.0, tilt_range=(-6, 6), tilt_step=3)
    order = dose_order(cond.tilt_angles)
    assert order[list(cond.tilt_angles).index(0.0)] == 0
    f = dose_filter_2d(cond, (32, 32))
    hi = f[:, 8, 8]  # a high frequency
    assert torch.all(torch.diff(hi[np.argsort(order)]) < 0)
    assert float(f[order.argmin(), 8, 8]) == 1.0


# ------------------------------------------------------------------------------------------
# noise, wedge, sign
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("snr", [0.1, 2.0])
def test_measured_projection_snr_is_within_10_percent(proteasome, snr):
    cond = ImagingCondition(voxel_size=10.0, defocus=5.0, snr=snr)
    rng = np.random.default_rng(1)
    vols = rotate_into_boxes(proteasome.density, random_rotations(rng, 8), None, (32, 32, 32))
    _, ts = image_volumes(vols, cond, defocus=[5.0] * 8, snr=[snr] * 8, noise_seeds=range(8), return_tilt_series=True)
    measured = window_variance(ts.signal, (32, 32)) / window_variance(ts.noisy - ts.signal, (32, 32))
    assert abs(float(measured.mean()) / snr - 1) < 0.10
    assert abs(float(measured.median()) / snr - 1) < 0.10


def test_reconstruction_has_at_most_5_percent_of_its_power_in_the_missing_wedge(proteasome):
    cond = ImagingCondition(voxel_size=10.0, defocus=5.0, snr=0.5, tilt_range=(-60, 60), tilt_step=3)
    rng = np.random.default_rng(2)
    vols = rotate_into_boxes(proteasome.density, random_rotations(rng, 8), None, (32, 32, 32))
    rec = image_volumes(vols, cond, defocus=[5.0] * 8, snr=[0.5] * 8, noise_seeds=range(8))
    strict = _wedge_fraction(rec, 60.0)
    assert strict <= 0.05, strict
    # beyond one Fourier voxel from the wedge boundary (the box's own sinc) it is nearly empty
    assert _wedge_fraction(rec, 60.0, tolerance_voxels=1.0) <= 0.015
    # a ±45° series has a bigger wedge
    cond45 = cond.replace(tilt_range=(-45, 45))
    rec45 = image_volumes(vols, cond45, defocus=[5.0] * 8, snr=[0.5] * 8, noise_seeds=range(8))
    assert _wedge_fraction(rec45, 45.0) <= 0.05
    assert _wedge_fraction(rec45, 60.0) < strict + 0.05


def test_protein_is_dark_in_the_reconstruction(proteasome):
    cond = ImagingCondition(voxel_size=10.0, defocus=5.0, snr=1.0)
    rng = np.random.default_rng(3)
    vols = rotate_into_boxes(proteasome.density, random_rotations(rng, 4), None, (32, 32, 32))
    rec = image_volumes(vols, cond, defocus=[5.0] * 4, snr=[1e9] * 4, noise_seeds=range(4))
    for v, r in zip(vols, rec):
        assert np.corrcoef(v.numpy().ravel(), r.numpy().ravel())[0, 1] < -0.4
    approx = approximate_image_volumes(vols, cond, defocus=[5.0] * 4, snr=[1e9] * 4, noise_seeds=range(4))
    for v, r in zip(vols, approx):
        assert np.corrcoef(v.numpy().ravel(), r.numpy().ravel())[0, 1] < -0.4


def test_approximate_mode_has_an_empty_wedge_and_its_3d_snr(proteasome):
    cond = ImagingCondition(voxel_size=10.0, defocus=5.0, snr=0.2)
    rng = np.random.default_rng(4)
    vols = rotate_into_boxes(proteasome.density, random_rotations(rng, 6), None, (32, 32, 32))
    out = approximate_image_volumes(vols, cond, defocus=[5.0] * 6, snr=[0.2] * 6, noise_seeds=range(6))
    assert _wedge_fraction(out, 60.0) < 1e-6
    clean = approximate_image_volumes(vols, cond, defocus=[5.0] * 6, snr=[1e12] * 6, noise_seeds=range(6))
    ratio = clean.var(dim=(1, 2, 3)) / (out - clean).var(dim=(1, 2, 3))
    assert torch.allclose(ratio, torch.full_like(ratio, 0.2), rtol=0.02)


def test_empty_boxes_keep_the_noise_level_of_a_particle(proteasome):
    cond = ImagingCondition(voxel_size=10.0, defocus=5.0, snr=0.1)
    rng = np.random.default_rng(5)
    vols = rotate_into_boxes(proteasome.density, random_rotations(rng, 2), None, (32, 32, 32))
    _, ts = image_volumes(vols, cond, defocus=[5.0] * 2, snr=[0.1] * 2, noise_seeds=[7, 8],
                          include=[True, False], return_tilt_series=True)
    assert float(ts.signal[1].abs().max()) == 0.0  # no particle in the empty box
    assert torch.allclose(ts.noise_sigma[1] ** 2 * 0.1, ts.reference_variance[1])
    assert float(ts.noise_sigma[1].mean()) > 0


# ------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------


def test_projector_conserves_mass_and_full_coverage_wbp_recovers_the_volume():
    n = 32
    z, y, x = np.indices((n, n, n)) - n // 2
    vol = np.exp(-((z - 3) ** 2 + y**2 + (x + 4) ** 2) / 18.0) + 0.5 * np.exp(-((z + 5) ** 2 + (y - 3) ** 2 + (x - 2) ** 2) / 8.0)
    v = torch.tensor(vol, dtype=torch.float32)[None]
    proj = TiltProjector((n, n), np.arange(-90, 90, 1.0))
    p = proj.project(v)
    assert torch.allclose(p.sum(dim=(-2, -1)), v.sum().expand(1, proj.n_tilts), rtol=1e-4)
    rec = proj.reconstruct(p)
    assert np.corrcoef(rec.numpy().ravel(), vol.ravel())[0, 1] > 0.99
    assert abs(float((rec * v).sum() / (v * v).sum()) - 1) < 0.05  # WBP is calibrated


def test_projection_geometry_tilt_about_y():
    """A point at +x, +z lands at u = x cos θ + z sin θ; y is unchanged."""
    n = 33
    vol = torch.zeros(1, n, n, n)
    vol[0, 16 + 5, 16 + 3, 16 + 7] = 1.0  # z=+5, y=+3, x=+7 from the centre
    proj = TiltProjector((n, n), [0.0, 30.0], detector_width=61, supersample=1)
    p = proj.project(vol)[0]
    for t, a in enumerate((0.0, math.radians(30))):
        row, col = np.unravel_index(int(p[t].argmax()), p[t].shape)
        assert row == 16 + 3
        assert abs(col - (30 + 7 * math.cos(a) + 5 * math.sin(a))) <= 1.0


def test_rotations_are_uniform_and_placement_is_exact():
    rng = np.random.default_rng(0)
    r = random_rotations(rng, 20000)
    assert np.allclose(np.linalg.det(r), 1.0) and np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.abs(r.mean(0)).max() < 0.03  # Haar measure: E[R] = 0

    d = np.zeros((9, 9, 9), np.float32)
    d[4, 4, 6] = 1.0  # +2 voxels along x from the centre
    ident = rotate_into_boxes(d, np.eye(3)[None], None, (9, 9, 9))[0].numpy()
    assert np.array_equal(ident, d)
    rz90 = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)  # acts on (z, y, x): +x → +y
    rot = rotate_into_boxes(d, rz90[None], None, (9, 9, 9))[0].numpy()
    assert rot[4, 6, 4] == pytest.approx(1.0)
    shifted = rotate_into_boxes(d, np.eye(3)[None], np.array([[0.0, 0.0, 1.0]]), (11, 11, 11))[0].numpy()
    assert shifted[5, 5, 8] == pytest.approx(1.0)  # centre 5, +2 +1


def test_chain_agrees_with_torch_fourier_slice_and_torch_ctf(proteasome):
    """Noise-free: our sparse real-space chain ≈ Fourier-slice projection + DFI with torch-ctf."""
    from scipy import ndimage
    from torch_ctf import calculate_ctf_2d
    from torch_fourier_slice import backproject_2d_to_3d, project_3d_to_2d

    box = 32
    cond = ImagingCondition(voxel_size=10.0, defocus=5.0, snr=1.0, recon_cutoff=None)
    rot = random_rotations(np.random.default_rng(9), 1)
    ours = image_volumes(rotate_into_boxes(proteasome.density, rot, None, (box,) * 3), cond,
                         defocus=[5.0], snr=[1e12], noise_seeds=[0])[0].numpy()

    c_in = np.asarray(proteasome.shape) // 2
    vol = ndimage.affine_transform(proteasome.density, rot[0].T, offset=c_in - rot[0].T @ np.full(3, box // 2),
                                   output_shape=(box,) * 3, order=1)
    a = torch.deg2rad(torch.as_tensor(cond.tilt_angles, dtype=torch.float32))
    c, s, z, o = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    tilts = torch.stack([torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], -2)
    proj = project_3d_to_2d(torch.from_numpy(vol.astype(np.float32)), tilts)
    ctf = calculate_ctf_2d(defocus=5.0, astigmatism=0.0, astigmatism_angle=0.0, voltage=300.0, spherical_aberration=cond.cs,
                           amplitude_contrast=0.07, phase_shift=0.0, pixel_size=10.0, image_shape=(box, box),
                           rfft=True, fftshift=False)
    h = -ctf * mtf_2d((box, box))
    ref = backproject_2d_to_3d(torch.fft.irfft2(torch.fft.rfft2(proj) * h, s=(box, box)), tilts).numpy()
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.95
