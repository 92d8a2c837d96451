"""Radial power spectra, spectral matching, and the simulator's B-factor and coloured noise."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.params import DatasetParams, ImagingCondition
from napari_cryo_openset.spectrum import (
    SpectralMatch,
    apply_spectral_match,
    box_statistics,
    fit_spectral_match,
    noise_spectrum,
    plot_spectra,
    radial_power_spectrum,
    spectrum_report,
)

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def _blurred(rng, n, b, sigma):
    """Periodic Gaussian low-pass of white noise: amplitude exp(−2π²σ²k²), k in cycles/voxel."""
    x = rng.standard_normal((n, b, b, b)).astype(np.float32)
    k = np.fft.fftfreq(b)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    return np.real(np.fft.ifftn(np.fft.fftn(x, axes=(1, 2, 3)) * np.exp(-2 * np.pi**2 * sigma**2 * k2),
                                axes=(1, 2, 3))).astype(np.float32)


def _band(freq, voxel_size, frac=0.8):
    return (freq > 0) & (freq <= frac / (2 * voxel_size) + 1e-12)


def test_white_noise_is_flat_at_its_variance():
    rng = np.random.default_rng(0)
    x = 2.0 * rng.standard_normal((64, 32, 32, 32)).astype(np.float32)
    freq, p = radial_power_spectrum(x, 10.0)
    assert freq.shape == p.shape == (17,)
    assert freq[0] == 0 and freq[-1] == pytest.approx(1 / 20)  # Nyquist of 10 Å voxels
    np.testing.assert_allclose(p[1:], 4.0, rtol=0.1)
    # torch input, one box and float16 give the same numbers
    np.testing.assert_allclose(radial_power_spectrum(torch.from_numpy(x), 10.0)[1], p, rtol=1e-5)
    np.testing.assert_allclose(radial_power_spectrum(x[0], 10.0)[1], radial_power_spectrum(x[:1], 10.0)[1])


def test_gaussian_blurred_noise_falls_as_the_gaussian():
    rng = np.random.default_rng(1)
    sigma = 1.5
    _, p = radial_power_spectrum(_blurred(rng, 48, 32, sigma), 1.0)
    k = np.arange(17) / 32  # cycles/voxel (voxel size 1 Å)
    expected = np.exp(-4 * np.pi**2 * sigma**2 * k**2)
    sel = (k > 0) & (expected > 1e-4)
    np.testing.assert_allclose(p[sel], expected[sel], rtol=0.15)


def test_fit_and_apply_make_the_source_follow_the_target():
    rng = np.random.default_rng(2)
    source = _blurred(rng, 300, 32, 0.6) + 0.3 * _blurred(rng, 300, 32, 3.0)
    target = _blurred(rng, 200, 32, 1.2) + 0.2 * rng.standard_normal((200, 32, 32, 32)).astype(np.float32)
    from napari_cryo_openset.extract import normalise_subtomograms

    source, target = normalise_subtomograms(source, "bright"), normalise_subtomograms(target, "bright")
    t0 = time.perf_counter()
    match = fit_spectral_match(source, target, 10.0)
    out = apply_spectral_match(source, match, voxel_size=10.0)
    assert time.perf_counter() - t0 < 10
    freq, pa = radial_power_spectrum(out, 10.0)
    _, pt = radial_power_spectrum(target, 10.0)
    _, pb = radial_power_spectrum(source, 10.0)
    sel = _band(freq, 10.0)
    assert np.abs(pb[sel] / pt[sel] - 1).max() > 1.0  # a real gap to close
    assert np.abs(pa[sel] / pt[sel] - 1).max() < 0.10
    # the one normalisation of every box: zero mean, unit SD, sign kept
    assert out.dtype == np.float32 and out.shape == source.shape
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, rtol=1e-4)
    corr = (out * source).mean(axis=(1, 2, 3))
    assert (corr > 0).all()
    # JSON round trip, report and plot
    again = SpectralMatch.from_dict(json.loads(json.dumps(match.to_dict())))
    np.testing.assert_allclose(apply_spectral_match(source[:4], again), out[:4], atol=1e-5)
    report = spectrum_report(source, out, target, 10.0, match=match)
    assert json.loads(json.dumps(report))["match"]["gain"] == pytest.approx(list(match.gain))
    assert report["summary"]["after"]["max_abs"] < 0.1 < report["summary"]["before"]["max_abs"]
    assert report["statistics"]["source_after"]["sd"]["mean"] == pytest.approx(1.0, abs=1e-4)
    assert set(report["statistics"]["target"]) == {"n", "mean", "sd", "skewness", "kurtosis"}


def test_plot_spectra_writes_a_png(tmp_path):
    rng = np.random.default_rng(3)
    a, b = _blurred(rng, 8, 16, 1.0), rng.standard_normal((8, 16, 16, 16)).astype(np.float32)
    path = plot_spectra(spectrum_report(a, None, b, 5.0), tmp_path / "spectra.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["spectra.png"]


def test_box_statistics_of_gaussian_noise():
    s = box_statistics(np.random.default_rng(4).standard_normal((16, 16, 16, 16)))
    assert s["n"] == 16
    assert abs(s["skewness"]["mean"]) < 0.05 and abs(s["kurtosis"]["mean"]) < 0.1
    assert s["sd"]["mean"] == pytest.approx(1.0, abs=0.02)


def test_bad_inputs_have_one_clear_message():
    x = np.zeros((2, 8, 8, 8), np.float32)
    with pytest.raises(ParameterError, match="cubic boxes"):
        radial_power_spectrum(np.zeros((2, 8, 8, 4)), 1.0)
    with pytest.raises(ParameterError, match="voxel_size must be a positive"):
        radial_power_spectrum(x, 0)
    with pytest.raises(ParameterError, match="smooth must be an odd"):
        fit_spectral_match(x, x, 1.0, smooth=2)
    with pytest.raises(ParameterError, match="max_gain"):
        fit_spectral_match(x, x, 1.0, max_gain=1)
    match = fit_spectral_match(x + np.random.default_rng(0).standard_normal(x.shape), x + 1e-3, 1.0, iterations=0)
    with pytest.raises(ParameterError, match="fitted at 1 Å/voxel"):
        apply_spectral_match(x, match, voxel_size=2.0)
    with pytest.raises(ParameterError, match="no background box"):
        noise_spectrum(np.zeros((8, 8, 8), np.float32), 1.0, picks=[[4, 4, 4]], box=8, n=4)


def test_noise_spectrum_avoids_the_picks():
    from napari_cryo_openset.spectrum import background_positions

    picks = np.array([[20.0, 20.0, 20.0]])
    pos = background_positions((40, 40, 40), 16, 50, picks, min_distance=10)
    assert len(pos) == 50 and (np.linalg.norm(pos - picks, axis=1) >= 10).all()
    assert (pos >= 8).all() and (pos <= 32).all()  # whole boxes inside
    vol = np.random.default_rng(5).standard_normal((40, 40, 40)).astype(np.float32)
    freq, p = noise_spectrum(vol, 10.0, picks, box=16, n=20)
    np.testing.assert_allclose(p[1:], 1.0, rtol=0.25)


# --------------------------------------------------------------------------------------------
# simulator physics
# --------------------------------------------------------------------------------------------


def test_condition_validates_and_round_trips_the_new_fields():
    c = ImagingCondition()
    assert c.bfactor == 0 and c.noise_spectrum is None
    c2 = ImagingCondition(bfactor=200, noise_spectrum=([0, 0.05], [1, 0.2]))
    assert c2.noise_spectrum == ((0.0, 0.05), (1.0, 0.2))
    assert ImagingCondition.from_json(c2.to_json()) == c2
    with pytest.raises(ParameterError, match="bfactor must be one number ≥ 0"):
        ImagingCondition(bfactor=-5)
    with pytest.raises(ParameterError, match="strictly increasing"):
        ImagingCondition(noise_spectrum=([0.1, 0.0], [1, 1]))
    with pytest.raises(ParameterError, match="at least 2 values"):
        ImagingCondition(noise_spectrum=([0.1, 0.2], [1]))
    with pytest.raises(ParameterError, match="not all zero"):
        ImagingCondition(noise_spectrum=([0.0, 0.1], [0, 0]))
    with pytest.raises(ParameterError, match="noise_spectrum must be None or"):
        ImagingCondition(noise_spectrum=5)


def _simulate(condition, n=24, box=24, seed=3):
    from napari_cryo_openset.simulate import builtin_templates, generate_subtomograms

    params = DatasetParams(box=box, per_class=n // 6 or 1, condition=condition, seed=seed)
    gen = generate_subtomograms(builtin_templates(condition.voxel_size), params)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value.subtomograms.astype(np.float32)


def test_bfactor_lowers_high_frequency_power_of_simulated_boxes():
    base = ImagingCondition(voxel_size=20.0, defocus=3.0, snr=20.0)
    freq, p0 = radial_power_spectrum(_simulate(base), 20.0)
    _, p1 = radial_power_spectrum(_simulate(base.replace(bfactor=4000.0)), 20.0)
    high = freq > 0.6 / 40
    low = (freq > 0) & (freq < 0.3 / 40)
    assert (p1[high] < 0.8 * p0[high]).all()
    assert p1[low].sum() > p0[low].sum()  # unit-variance boxes: the power moves to low frequencies


def test_bfactor_zero_and_white_noise_keep_the_output_identical():
    base = ImagingCondition(voxel_size=20.0, defocus=3.0, snr=0.5)
    explicit = base.replace(bfactor=0.0, noise_spectrum=None, tilt_jitter=0.0, defocus_gradient=False)
    np.testing.assert_array_equal(_simulate(base, n=6), _simulate(explicit, n=6))


def test_tilt_jitter_blurs_the_reconstruction():
    from napari_cryo_openset.simulate.imaging import jitter_shifts, shift_images

    np.testing.assert_array_equal(jitter_shifts(5, [7, 8], 1.0)[1], jitter_shifts(5, [8], 1.0)[0])  # per sample
    img = torch.zeros((1, 1, 16, 16))
    img[0, 0, 4, 4] = 1.0
    moved = shift_images(img, torch.tensor([[[2.0, -1.0]]]))
    assert moved[0, 0, 6, 3] == pytest.approx(1.0, abs=1e-5)
    # the same seeded boxes depart the more from the aligned ones, the larger the misalignment
    base = ImagingCondition(voxel_size=20.0, defocus=3.0, snr=20.0)
    aligned = _simulate(base, n=12)

    def corr(sd):
        x = _simulate(base.replace(tilt_jitter=sd), n=12)
        return float((x * aligned).mean())  # unit-variance boxes: mean correlation

    c_small, c_large = corr(0.3), corr(2.0)
    assert 0.2 < c_large < c_small < 0.999
    with pytest.raises(ParameterError, match="tilt_jitter must be one number ≥ 0"):
        ImagingCondition(tilt_jitter=-1)


def test_defocus_gradient_gives_every_tilt_its_defocus():
    from napari_cryo_openset.params.simulation import DEFOCUS_FIELD_HALF_WIDTH
    from napari_cryo_openset.simulate.imaging import tilt_defocus

    cond = ImagingCondition(voxel_size=20.0, defocus=3.0, defocus_gradient=True)
    df = tilt_defocus(cond, torch.tensor([3.0, 3.0, 4.0]), [1, 2, 3]).numpy()
    zero = int(np.flatnonzero(cond.tilt_angles == 0)[0])
    assert df.shape == (3, cond.n_tilts)
    np.testing.assert_allclose(df[:, zero], [3.0, 3.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(df[:, 0] - df[:, zero], -(df[:, -1] - df[:, zero]), atol=1e-5)  # ±60° symmetric
    assert np.abs(df - df[:, [zero]]).max() <= DEFOCUS_FIELD_HALF_WIDTH * 1e-4 * np.sin(np.deg2rad(60)) + 1e-5
    assert np.ptp(df[:2, -1]) > 0  # each sample its own distance from the axis
    np.testing.assert_array_equal(tilt_defocus(cond, torch.tensor([3.0]), [2]).numpy()[0], df[1])
    a = _simulate(cond.replace(defocus_gradient=False), n=6)
    b = _simulate(cond, n=6)
    assert a.shape == b.shape and not np.array_equal(a, b)
    with pytest.raises(ParameterError, match="defocus_gradient must be True or False"):
        ImagingCondition(defocus_gradient="yes")


def test_coloured_projection_noise_follows_the_requested_spectrum():
    from napari_cryo_openset.simulate.imaging import colour_noise_2d, gaussian_noise

    vs = 10.0
    freq = np.linspace(0, 0.05, 11)
    power = np.exp(-((freq / 0.02) ** 2)) + 0.05
    cond = ImagingCondition(voxel_size=vs, noise_spectrum=(freq, power))
    noise = colour_noise_2d(gaussian_noise((8, 64, 64), [1, 2, 3, 4]), cond).numpy()
    assert np.sqrt((noise**2).mean(axis=(-2, -1))) == pytest.approx(1.0, abs=1e-4)
    f = np.fft.rfft2(noise)
    p = (np.abs(f) ** 2).reshape(-1, f.shape[-2] * f.shape[-1]).mean(0)
    ky, kx = np.fft.fftfreq(64), np.fft.rfftfreq(64)
    shell = np.rint(np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2) * 64).astype(int).ravel()
    measured = np.bincount(shell, p)[1:30] / np.bincount(shell)[1:30]
    want = np.interp(np.arange(1, 30) / (64 * vs), freq, power)
    ratio = measured / want
    np.testing.assert_allclose(ratio / ratio.mean(), 1.0, rtol=0.15)


def test_coloured_noise_in_the_approximate_mode_shapes_the_3d_spectrum():
    from napari_cryo_openset.simulate.imaging import approximate_image_volumes

    vs = 10.0
    freq = np.array([0.0, 0.02, 0.05])
    power = np.array([4.0, 1.0, 0.25])
    cond = ImagingCondition(voxel_size=vs, tilt_range=(-90, 90), noise_spectrum=(freq, power))
    vol = torch.zeros((16, 24, 24, 24))
    vol[:, 10:14, 10:14, 10:14] = 1.0
    out = approximate_image_volumes(vol, cond, defocus=[3.0] * 16, snr=[1.0] * 16, noise_seeds=list(range(16)),
                                    include=[False] * 16)
    f, p = radial_power_spectrum(out, vs)
    want = np.interp(f, freq, power)
    ratio = p[1:] / want[1:]
    np.testing.assert_allclose(ratio / ratio.mean(), 1.0, rtol=0.15)


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------


def test_real_tomogram_spectral_match_within_ten_percent():
    tomo_path, star = REAL / "hiv_vlp_40A.mrc", REAL / "hiv_vlp_40A_lattice.star"
    if not (tomo_path.exists() and star.exists()):
        pytest.skip("../shared/data/real is not here")
    from napari_cryo_openset.extract import extract_subtomograms
    from napari_cryo_openset.io import read_picks, read_tomogram

    tomo = read_tomogram(tomo_path)
    picks = read_picks(star, tomogram_shape=tomo.shape, voxel_size=tomo.voxel_size)
    box, vs = 24, 40.0
    target = extract_subtomograms(tomo, picks.iloc[::10], box, polarity="dark")
    source = _simulate(ImagingCondition(voxel_size=vs, defocus=(3.0, 6.0), snr=(0.05, 0.5)), n=120, box=box, seed=1)
    match = fit_spectral_match(source, target, vs)
    after = apply_spectral_match(source, match, voxel_size=vs)
    report = spectrum_report(source, after, target, vs)
    assert report["summary"]["before"]["max_abs"] > 0.5  # simulated and real differ …
    assert report["summary"]["after"]["max_abs"] < 0.10  # … and the match closes the gap
    # on simulated boxes it was not fitted on, too
    held = _simulate(ImagingCondition(voxel_size=vs, defocus=(3.0, 6.0), snr=(0.05, 0.5)), n=60, box=box, seed=2)
    assert spectrum_report(held, apply_spectral_match(held, match), target, vs)["summary"]["after"]["max_abs"] < 0.10
    # the target's background (away from the lattice) is coloured too: far from white
    _, pn = noise_spectrum(tomo, picks=picks, box=box, n=64)
    assert pn[1] > 5 * pn[-1]


def test_spectrum_imports_neither_qt_nor_napari():
    import subprocess
    import sys

    code = ("import sys, numpy as np; import napari_cryo_openset.spectrum as s; "
            "s.radial_power_spectrum(np.zeros((1, 8, 8, 8)), 1.0); "
            "sys.exit(1 if {'napari', 'qtpy', 'PyQt6', 'PyQt5'} & {m.split('.')[0] for m in sys.modules} else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_simulate_command_line_takes_bfactor_and_tilt_jitter(tmp_path):
    from napari_cryo_openset.cli import build_parser
    from napari_cryo_openset.cli.simulate import params_from_args

    base = ["simulate", "--templates", "builtin", "--voxel-size", "10", "--box", "32", "--per-class", "2",
            "-o", str(tmp_path / "s.npz")]
    data, _ = params_from_args(build_parser().parse_args(base + ["--bfactor", "150", "--tilt-jitter", "0.5"]))
    assert (data.condition.bfactor, data.condition.tilt_jitter) == (150.0, 0.5)
    with pytest.raises(ParameterError, match="^--bfactor must be"):
        params_from_args(build_parser().parse_args(base + ["--bfactor", "-1"]))
