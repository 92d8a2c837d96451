"""The imaging chain (3D-ADA § 3.1): tilt series → CTF × MTF → noise → reconstruction.

**Full chain** (:func:`image_volumes`, batched over many volumes per call):

1. projection of each (Z, Y, X) volume at every tilt about Y (:class:`.projector.TiltProjector`,
   exact real-space line integrals with linear interpolation);
2. per tilt, in 2D Fourier space of the zero-padded projection (no wrap-around of the CTF's
   delocalisation): multiplication by ``H = −CTF · MTF (· dose filter)``; ``CTF`` comes from
   ``torch-ctf`` (defocus in µm, underfocus positive; RELION sign convention, +amplitude
   contrast at zero frequency), ``MTF = sinc(|f|)`` with f in cycles/pixel, the optional dose
   filter is Grant & Grigorieff's (2015) critical-exposure curve;
   an optional B-factor envelope ``exp(−B·k²/4)`` (``condition.bfactor``, Å², k in 1/Å)
   multiplies ``H`` too;
3. Gaussian noise per projection at the requested SNR (module
   :mod:`napari_cryo_openset.params.simulation`: ``SNR = var(signal)/var(noise)`` per projection):
   white, or shaped by ``condition.noise_spectrum`` (2D radial power, 1/Å) and rescaled to the
   same variance; with ``condition.tilt_jitter`` (pixels) every noisy projection is then shifted
   by its own random offset (residual tilt-series misalignment);
4. weighted back-projection (Ram-Lak ramp filter with IMOD's radial fall-off by default, Δθ
   weights) → the reconstruction, with the missing wedge of the tilt range.

**Contrast sign** (ALGORITHMS.md § 2): ``torch-ctf`` returns the CTF in RELION's convention;
the image the microscope records is the projected potential filtered by the *negative* of it,
so step 2 multiplies by ``−CTF``. The output is therefore in the **raw-reconstruction
convention: protein DARK** (negative) on a zero background — the same as IMOD's raw output.
Bright (inverted) tomograms are the negative of this.

**Approximate mode** (:func:`approximate_image_volumes`, named so on purpose): a 3D shortcut
for tests and quick experiments — the volume's 3D Fourier transform times ``−CTF(|k|) ·
MTF(|k|)`` times a binary missing-wedge mask, plus white noise passed through the same wedge
mask. It has no tilt-series noise structure, no CTF differences between tilts and no
reconstruction artefacts; its SNR is the 3D ratio ``var(signal)/var(noise)`` in the box, *not*
the projection SNR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..params import ImagingCondition
from ..params.simulation import DEFOCUS_FIELD_HALF_WIDTH
from .projector import TiltProjector, get_projector

# --------------------------------------------------------------------------------------------
# transfer functions
# --------------------------------------------------------------------------------------------


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å."""
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    v = voltage_kv * 1e3
    return h / math.sqrt(2 * m0 * e * v * (1 + e * v / (2 * m0 * c**2))) * 1e10


def delocalisation_pixels(condition: ImagingCondition) -> int:
    """Pixels of zero padding that keep the CTF's point spread from wrapping around."""
    lam = electron_wavelength(condition.voltage)
    k_max = math.sqrt(2) / (2 * condition.voxel_size)  # corner of the 2D Fourier grid, 1/Å
    df = condition.defocus_range[1] + (DEFOCUS_FIELD_HALF_WIDTH * 1e-4 if condition.defocus_gradient else 0.0)
    d = lam * df * 1e4 * k_max + 0.5 * condition.cs * 1e7 * lam**3 * k_max**3
    return int(min(128, math.ceil(d / condition.voxel_size) + 2))


def _freq_grid(shape: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(fy, fx) cycles/pixel of an rfft2 grid of a real image of ``shape``."""
    fy = torch.fft.fftfreq(shape[0], device=device)
    fx = torch.fft.rfftfreq(shape[1], device=device)
    return torch.meshgrid(fy, fx, indexing="ij")


def ctf_2d(condition: ImagingCondition, defocus: torch.Tensor, shape: Sequence[int], device="cpu") -> torch.Tensor:
    """``torch-ctf`` CTF (RELION sign) on an rfft2 grid: (N, H, W//2+1) for N defocus values (µm)
    ((N, T, H, W//2+1) for an (N, T) array of per-tilt defocus values)."""
    from torch_ctf import calculate_ctf_2d

    defocus = torch.as_tensor(defocus, dtype=torch.float32, device=device)
    if defocus.ndim == 2:
        n, t = defocus.shape
        return ctf_2d(condition, defocus.reshape(-1), shape, device).reshape(n, t, int(shape[0]), int(shape[1]) // 2 + 1)
    defocus = defocus.reshape(-1)
    return calculate_ctf_2d(
        defocus=defocus,
        astigmatism=0.0,
        astigmatism_angle=0.0,
        voltage=condition.voltage,
        spherical_aberration=condition.cs,
        amplitude_contrast=condition.amplitude_contrast,
        phase_shift=0.0,
        pixel_size=condition.voxel_size,
        image_shape=(int(shape[0]), int(shape[1])),
        rfft=True,
        fftshift=False,
    ).reshape(defocus.shape[0], int(shape[0]), int(shape[1]) // 2 + 1)


def mtf_2d(shape: Sequence[int], device="cpu") -> torch.Tensor:
    """Detector MTF ``sinc(|f|)`` (f in cycles/pixel; 2/π ≈ 0.64 at Nyquist) on an rfft2 grid."""
    fy, fx = _freq_grid(shape, device)
    return torch.sinc(torch.sqrt(fy**2 + fx**2))


def dose_order(angles: Sequence[float]) -> np.ndarray:
    """Exposure index of each tilt in a dose-symmetric scheme: by increasing |angle|, + first."""
    a = np.asarray(angles, dtype=np.float64)
    ranking = np.lexsort((a < 0, np.round(np.abs(a), 6)))
    order = np.empty(len(a), dtype=np.int64)
    order[ranking] = np.arange(len(a))
    return order


def dose_filter_2d(condition: ImagingCondition, shape: Sequence[int], device="cpu") -> torch.Tensor | None:
    """Grant & Grigorieff (2015) exposure filter per tilt, (T, H, W//2+1), or None if off.

    ``exp(−N / (2·N_c(k)))`` with ``N`` the exposure accumulated *before* the tilt (e⁻/Å²,
    dose-symmetric order) and ``N_c(k) = 0.245·k^−1.665 + 2.81`` (k in 1/Å, 300 kV; × 0.8 at
    200 kV).
    """
    if condition.dose_per_tilt is None:
        return None
    fy, fx = _freq_grid(shape, device)
    k = torch.sqrt(fy**2 + fx**2) / condition.voxel_size
    k = torch.clamp(k, min=1e-6)
    nc = 0.245 * k ** (-1.665) + 2.81
    if condition.voltage < 250:
        nc = nc * 0.8
    exposure = torch.as_tensor(dose_order(condition.tilt_angles) * condition.dose_per_tilt,
                               dtype=torch.float32, device=device)
    return torch.exp(-exposure.view(-1, 1, 1) / (2 * nc[None]))


def transfer_2d(condition: ImagingCondition, defocus: torch.Tensor, shape: Sequence[int], device="cpu") -> torch.Tensor:
    """The image-forming filter ``H = −CTF · MTF (· dose)``: (N, T or 1, H, W//2+1).

    ``defocus``: (N,) µm, or (N, T) per tilt (:func:`tilt_defocus`). The minus sign makes
    protein dark (see the module docstring).
    """
    ctf = ctf_2d(condition, defocus, shape, device)
    h = -(ctf if ctf.ndim == 4 else ctf[:, None])
    if condition.mtf:
        h = h * mtf_2d(shape, device)
    dose = dose_filter_2d(condition, shape, device)
    if dose is not None:
        h = h * dose[None]
    env = bfactor_2d(condition, shape, device)
    if env is not None:
        h = h * env
    return h


def bfactor_envelope(condition: ImagingCondition, k_per_A: torch.Tensor) -> torch.Tensor:
    """``exp(−B·k²/4)`` at spatial frequencies ``k`` (1/Å), B = ``condition.bfactor`` (Å²)."""
    return torch.exp(-condition.bfactor * k_per_A**2 / 4.0)


def bfactor_2d(condition: ImagingCondition, shape: Sequence[int], device="cpu") -> torch.Tensor | None:
    """The B-factor envelope on an rfft2 grid (H, W//2+1), or None when ``bfactor`` is 0."""
    if not condition.bfactor:
        return None
    fy, fx = _freq_grid(shape, device)
    return bfactor_envelope(condition, torch.sqrt(fy**2 + fx**2) / condition.voxel_size)


def apply_transfer(
    projections: torch.Tensor, condition: ImagingCondition, defocus: torch.Tensor, pad: int | None = None
) -> torch.Tensor:
    """Filter (N, T, Y, U) projections with :func:`transfer_2d`, zero-padded by ``pad`` pixels."""
    from scipy.fft import next_fast_len

    n, t, ny, nu = projections.shape
    pad = delocalisation_pixels(condition) if pad is None else int(pad)
    shape = (next_fast_len(ny + 2 * pad, real=True), next_fast_len(nu + 2 * pad, real=True))
    h = transfer_2d(condition, defocus, shape, projections.device)
    padded = torch.zeros((n, t, *shape), dtype=projections.dtype, device=projections.device)
    oy, ou = (shape[0] - ny) // 2, (shape[1] - nu) // 2
    padded[..., oy : oy + ny, ou : ou + nu] = projections
    f = torch.fft.rfft2(padded)
    out = torch.fft.irfft2(f * h, s=shape)
    return out[..., oy : oy + ny, ou : ou + nu].contiguous()


# --------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------


def window_variance(images: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """Variance over the centred ``window`` (rows, cols) of (…, Y, U) images → (…)."""
    ny, nu = images.shape[-2:]
    wy, wu = min(int(window[0]), ny), min(int(window[1]), nu)
    oy, ou = (ny - wy) // 2, (nu - wu) // 2
    win = images[..., oy : oy + wy, ou : ou + wu].double()  # float64: independent of thread count
    return win.var(dim=(-2, -1), unbiased=False).to(images.dtype)


def noise_amplitude(condition: ImagingCondition, k_per_A: torch.Tensor) -> torch.Tensor | None:
    """``sqrt(power)`` of ``condition.noise_spectrum`` at frequencies ``k`` (1/Å), or None (white).

    Linear interpolation of the power between the given frequencies, constant past the ends.
    """
    if condition.noise_spectrum is None:
        return None
    freq, power = (np.asarray(v, dtype=np.float64) for v in condition.noise_spectrum)
    amp = np.interp(k_per_A.detach().cpu().numpy().astype(np.float64), freq, power)
    return torch.as_tensor(np.sqrt(amp), dtype=torch.float32, device=k_per_A.device)


def colour_noise_2d(noise: torch.Tensor, condition: ImagingCondition) -> torch.Tensor:
    """Shape white (…, Y, U) noise images by ``condition.noise_spectrum`` (2D radial, periodic
    filter), then rescale every image to unit mean square; white noise is returned as it is."""
    shape = noise.shape[-2:]
    fy, fx = _freq_grid(shape, noise.device)
    amp = noise_amplitude(condition, torch.sqrt(fy**2 + fx**2) / condition.voxel_size)
    if amp is None:
        return noise
    out = torch.fft.irfft2(torch.fft.rfft2(noise) * amp, s=tuple(shape))
    return out / out.square().mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)


#: Mixed into a subtomogram's noise seed to seed its tilt-jitter shifts (a separate stream).
_JITTER_SALT = 0x5DEECE66D
#: … and its distance from the tilt axis for the defocus gradient.
_GRADIENT_SALT = 0x2545F4914F6CDD1D


def tilt_defocus(condition: ImagingCondition, defocus: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """(N, T) per-tilt defocus (µm) of particles off the tilt axis: ``df − x·sin θ`` with ``x``
    uniform in ±:data:`DEFOCUS_FIELD_HALF_WIDTH` Å per sample (seeded), kept ≥ 0.05 µm."""
    x = torch.empty(len(seeds), dtype=torch.float64)
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed((int(s) ^ _GRADIENT_SALT) & 0x7FFF_FFFF_FFFF_FFFF)
        x[i] = (torch.rand((), generator=g, dtype=torch.float64) * 2 - 1) * DEFOCUS_FIELD_HALF_WIDTH
    sin = torch.from_numpy(np.sin(np.deg2rad(condition.tilt_angles)))
    df = defocus.detach().cpu().double().reshape(-1, 1) - x[:, None] * sin[None] * 1e-4
    return df.clamp_min(0.05).to(torch.float32).to(defocus.device)


def jitter_shifts(n_tilts: int, seeds: Sequence[int], sd: float) -> torch.Tensor:
    """(N, T, 2) Gaussian (Y, U) shifts in pixels of SD ``sd``, one generator per sample."""
    out = torch.empty((len(seeds), int(n_tilts), 2), dtype=torch.float32)
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed((int(s) ^ _JITTER_SALT) & 0x7FFF_FFFF_FFFF_FFFF)
        out[i] = torch.randn((int(n_tilts), 2), generator=g) * float(sd)
    return out


def shift_images(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift (N, T, Y, U) images by (N, T, 2) sub-pixel (Y, U) offsets (Fourier phase ramp,
    periodic)."""
    shape = images.shape[-2:]
    fy, fx = _freq_grid(shape, images.device)
    dy = shifts[..., 0, None, None].to(images.device)
    du = shifts[..., 1, None, None].to(images.device)
    phase = torch.exp(-2j * math.pi * (fy * dy + fx * du))
    return torch.fft.irfft2(torch.fft.rfft2(images) * phase, s=tuple(shape))


def gaussian_noise(shape: Sequence[int], seeds: Sequence[int], device="cpu") -> torch.Tensor:
    """Standard normal noise (N, *shape), sample ``i`` drawn from its own generator ``seeds[i]``.

    Per-sample generators make every sample independent of how samples are batched.
    """
    out = torch.empty((len(seeds), *shape), dtype=torch.float32)
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF)
        out[i] = torch.randn(tuple(shape), generator=g)
    return out.to(device)


# --------------------------------------------------------------------------------------------
# the full chain
# --------------------------------------------------------------------------------------------


@dataclass
class TiltSeries:
    """Intermediate products of :func:`image_volumes` (``return_tilt_series=True``).

    ``signal``: noise-free filtered projections (N, T, Y, U) of everything in the volume;
    ``noisy``: signal + noise; ``noise_sigma``: (N, T) noise standard deviation;
    ``reference_variance``: (N, T) variance that set the noise (``var·/SNR``).
    """

    angles: np.ndarray
    signal: torch.Tensor
    noisy: torch.Tensor
    noise_sigma: torch.Tensor
    reference_variance: torch.Tensor


def image_volumes(
    volumes: torch.Tensor,
    condition: ImagingCondition,
    *,
    defocus: Sequence[float] | torch.Tensor,
    snr: Sequence[float] | torch.Tensor,
    noise_seeds: Sequence[int],
    context: torch.Tensor | None = None,
    include: torch.Tensor | Sequence[bool] | None = None,
    recon_shape: Sequence[int] | None = None,
    snr_window: Sequence[int] | None = None,
    supersample: int = 2,
    return_tilt_series: bool = False,
    fft_chunk: int = 4,
):
    """Run the full chain on a batch of volumes; returns reconstructions (N, Zr, Yr, Xr).

    Parameters
    ----------
    volumes
        (N, Z, Y, X) densities of the central particles (protein positive), all one shape.
        Their filtered projections set the noise: ``σ² = var(signal)/SNR`` per projection over
        ``snr_window``.
    condition
        The imaging condition (voxel size, CTF, tilts, MTF, dose).
    defocus, snr
        Per-volume defocus (µm, underfocus positive) and SNR.
    noise_seeds
        Per-volume seeds for the Gaussian noise (the result does not depend on batching).
    context
        Optional (N, Z, Y, X) extra density imaged with the particle but not counted in the
        SNR (neighbours at the box edges, crowding background).
    include
        Optional (N,) booleans: False leaves the particle out of the image while keeping its
        noise level (the empty class: "the noise a particle would have, without it").
    recon_shape
        (Zr, Yr, Xr) of the centred reconstruction box (default: the volume shape); the
        differences to the volume shape must be even.
    snr_window
        (rows, cols) detector window for the variance (default (Yr, Xr): the detector area
        above the reconstructed box at 0°).
    supersample
        Sub-voxels per axis for the projector weights.
    return_tilt_series
        Also return the :class:`TiltSeries`.
    fft_chunk
        On the CPU the 2D/1D FFT stages run this many volumes at a time (small batches stay in
        the cache and are faster there); projection and back-projection always take the whole
        batch. On a GPU everything runs as one batch.
    """
    n, nz, ny, nx = volumes.shape
    device = volumes.device
    rz, ry, rx = recon_shape or (nz, ny, nx)
    projector: TiltProjector = get_projector((nz, nx), condition.tilt_angles, (rz, rx), None, supersample, device,
                                             condition.recon_cutoff, condition.recon_falloff)
    defocus_t = torch.as_tensor(np.asarray(defocus, dtype=np.float32), device=device).reshape(n)
    if condition.defocus_gradient:  # (N, T): each tilt its own defocus
        defocus_t = tilt_defocus(condition, defocus_t, list(noise_seeds))
    snr_t = torch.as_tensor(np.asarray(snr, dtype=np.float32), device=device).reshape(n, 1)
    inc = None if include is None else torch.as_tensor(np.asarray(include, dtype=bool), device=device)
    seeds = list(noise_seeds)
    window = snr_window or (ry, rx)
    oy = (ny - ry) // 2

    # 1. projection of the whole batch (one sparse product)
    raw = projector.project(volumes if context is None else torch.cat([volumes, context], 0))
    # 2.-3. transfer, noise and ramp filter in chunks: small FFT batches stay in the CPU cache
    chunk = n if device.type != "cpu" else max(1, int(fft_chunk))
    filtered = torch.empty((n, projector.n_tilts, ry, projector.u_size), dtype=torch.float32, device=device)
    keep: dict[str, list[torch.Tensor]] = {"signal": [], "noisy": [], "sigma": [], "var": []}
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        particle = apply_transfer(raw[a:b], condition, defocus_t[a:b])
        ref_var = window_variance(particle, window)  # (n_chunk, T)
        signal = particle if inc is None else particle * inc[a:b].view(-1, 1, 1, 1).to(particle.dtype)
        if context is not None:
            signal = signal + apply_transfer(raw[n + a : n + b], condition, defocus_t[a:b])
        sigma = torch.sqrt(ref_var / snr_t[a:b])  # (n_chunk, T)
        noise = gaussian_noise(signal.shape[1:], seeds[a:b], device)
        if condition.noise_spectrum is not None:
            noise = colour_noise_2d(noise, condition)
        noisy = signal + noise * sigma[..., None, None]
        if condition.tilt_jitter:  # residual misalignment of the recorded tilts
            noisy = shift_images(noisy, jitter_shifts(noisy.shape[1], seeds[a:b], condition.tilt_jitter))
        filtered[a:b] = projector.ramp_filter(noisy[:, :, oy : oy + ry])
        if return_tilt_series:
            keep["signal"].append(signal)
            keep["noisy"].append(noisy)
            keep["sigma"].append(sigma)
            keep["var"].append(ref_var)
    # 4. back-projection of the whole batch (one sparse product)
    recon = projector.backproject(filtered)
    if return_tilt_series:
        cat = {k: torch.cat(v, 0) for k, v in keep.items()}
        return recon, TiltSeries(condition.tilt_angles, cat["signal"], cat["noisy"], cat["sigma"], cat["var"])
    return recon


# --------------------------------------------------------------------------------------------
# approximate 3D mode
# --------------------------------------------------------------------------------------------


def wedge_mask(shape: Sequence[int], tilt_range: Sequence[float], device="cpu", rfft: bool = True) -> torch.Tensor:
    """Binary mask of the *measured* Fourier region of a (Z, Y, X) volume for a Y tilt axis.

    A frequency is measured when ``atan2(k_z, k_x)`` (folded to (−90°, 90°]) lies in the tilt
    range; the k_y axis (k_x = k_z = 0) is always measured. (Z, Y, X//2+1) for ``rfft``.
    """
    kz = torch.fft.fftfreq(shape[0], device=device)
    ky = torch.fft.fftfreq(shape[1], device=device)
    kx = torch.fft.rfftfreq(shape[2], device=device) if rfft else torch.fft.fftfreq(shape[2], device=device)
    kz, ky, kx = torch.meshgrid(kz, ky, kx, indexing="ij")
    phi = fold_angle(torch.rad2deg(torch.atan2(kz, kx)))
    lo, hi = float(tilt_range[0]), float(tilt_range[1])
    return ((phi >= lo - 1e-6) & (phi <= hi + 1e-6)) | ((kx == 0) & (kz == 0))


def fold_angle(phi_deg: torch.Tensor) -> torch.Tensor:
    """Fold a direction angle to (−90°, 90°] (a line through the origin)."""
    phi = torch.where(phi_deg > 90, phi_deg - 180, phi_deg)
    return torch.where(phi <= -90, phi + 180, phi)


def approximate_image_volumes(
    volumes: torch.Tensor,
    condition: ImagingCondition,
    *,
    defocus: Sequence[float] | torch.Tensor,
    snr: Sequence[float] | torch.Tensor,
    noise_seeds: Sequence[int],
    context: torch.Tensor | None = None,
    include: torch.Tensor | Sequence[bool] | None = None,
    recon_shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """APPROXIMATE 3D imaging: ``−CTF(|k|)·MTF(|k|)`` × wedge mask + wedge-masked noise.

    Same arguments as :func:`image_volumes`. The output is cropped to ``recon_shape``
    (centred). SNR here is ``var(filtered particle)/var(noise)`` over the output box, after the
    wedge mask — a 3D ratio, not the projection SNR.
    """
    n = volumes.shape[0]
    shape = tuple(volumes.shape[1:])
    device = volumes.device
    defocus_t = torch.as_tensor(np.asarray(defocus, dtype=np.float32), device=device).reshape(n)
    snr_t = torch.as_tensor(np.asarray(snr, dtype=np.float32), device=device).reshape(n)
    kz = torch.fft.fftfreq(shape[0], device=device)
    ky = torch.fft.fftfreq(shape[1], device=device)
    kx = torch.fft.rfftfreq(shape[2], device=device)
    kz, ky, kx = torch.meshgrid(kz, ky, kx, indexing="ij")
    k = torch.sqrt(kz**2 + ky**2 + kx**2)  # cycles/voxel
    h = -_ctf_radial(condition, defocus_t, k / condition.voxel_size)  # (N, …)
    if condition.mtf:
        h = h * torch.sinc(k)
    if condition.bfactor:
        h = h * bfactor_envelope(condition, k / condition.voxel_size)
    mask = wedge_mask(shape, condition.tilt_range, device).to(torch.float32)
    h = h * mask

    def filtered(v):
        return torch.fft.irfftn(torch.fft.rfftn(v, dim=(-3, -2, -1)) * h, s=shape, dim=(-3, -2, -1))

    rz, ry, rx = recon_shape or shape
    crop = tuple(slice((a - b) // 2, (a - b) // 2 + b) for a, b in zip(shape, (rz, ry, rx)))
    particle = filtered(volumes)[(slice(None), *crop)]
    signal = particle
    if include is not None:
        inc = torch.as_tensor(np.asarray(include, dtype=bool), device=device).view(n, 1, 1, 1)
        signal = particle * inc.to(particle.dtype)
    if context is not None:
        signal = signal + filtered(context)[(slice(None), *crop)]
    var = particle.var(dim=(-3, -2, -1), unbiased=False)
    out_shape = (rz, ry, rx)
    mask_out = wedge_mask(out_shape, condition.tilt_range, device).to(torch.float32)
    noise = gaussian_noise(out_shape, noise_seeds, device)
    if condition.noise_spectrum is not None:
        qz, qy, qx = torch.meshgrid(torch.fft.fftfreq(rz, device=device), torch.fft.fftfreq(ry, device=device),
                                    torch.fft.rfftfreq(rx, device=device), indexing="ij")
        mask_out = mask_out * noise_amplitude(condition, torch.sqrt(qz**2 + qy**2 + qx**2) / condition.voxel_size)
    noise = torch.fft.irfftn(torch.fft.rfftn(noise, dim=(-3, -2, -1)) * mask_out, s=out_shape, dim=(-3, -2, -1))
    noise = noise / noise.std(dim=(-3, -2, -1), keepdim=True).clamp_min(1e-12)
    sigma = torch.sqrt(var / snr_t)
    return signal + noise * sigma.view(n, 1, 1, 1)


def _ctf_radial(condition: ImagingCondition, defocus_um: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The same CTF as ``torch-ctf`` (RELION sign) evaluated at |k| (1/Å), (N, *k.shape).

    Used only by the approximate 3D mode (torch-ctf has no 3D grid function); cross-checked
    against ``torch_ctf.calculate_ctf_1d`` in the tests.
    """
    lam = electron_wavelength(condition.voltage)
    cs = condition.cs * 1e7
    df = defocus_um.view(-1, *([1] * k.ndim)) * 1e4
    k2 = (k**2)[None]
    w = math.asin(condition.amplitude_contrast)
    chi = math.pi * lam * df * k2 - 0.5 * math.pi * cs * lam**3 * k2**2 + w
    return torch.sin(chi)
