"""The aligner: search, wedge-weighted averaging, gold-standard iterations, ``resembles``.

See the package docstring (:mod:`napari_cryo_openset.align`) for the method and conventions.
Internally rotations act on (z, y, x) index vectors about voxel ``D // 2``; a box ``p`` is
modelled as ``p ≈ shift_t(R · reference)`` (the reference actively rotated by ``R``, then
translated by ``t`` voxels); results are converted to RELION's (x, y, z) matrix at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..device import choose_device, describe, set_cpu_threads
from ..errors import ParameterError
from ..params.align import AlignParams, symmetry_order
from ..progress import Progress
from . import so3
from .fourier import (
    FSC,
    fourier_crop,
    freq_grid,
    fsc,
    hermitian_weights,
    lowpass_filter,
    shift_volumes,
    soft_sphere,
    wedge_of,
)

#: Fewest boxes the aligner aligns (two half-sets of two); below it the unaligned average is returned.
MIN_BOXES = 4
STAGE = "align"
_BUDGET = 6_000_000  # elements of one batched correlation (memory ≈ 12 bytes each)


# --------------------------------------------------------------------------------------------
# rotation of volumes
# --------------------------------------------------------------------------------------------

def rotate_volumes(volumes: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """``R · v`` for (K, D, D, D) volumes (or one (D, D, D), broadcast) and (K, 3, 3) (z, y, x) rotations.

    Active rotation about voxel ``D // 2``: ``out(x) = v(Rᵀ (x − c) + c)``, trilinear, zeros outside.
    """
    rot = rotations.to(device=volumes.device, dtype=torch.float32)
    k, d = rot.shape[0], volumes.shape[-1]
    # grid_sample's coordinates are (x, y, z), normalised u = 2 i / (d − 1) − 1 (align_corners):
    # src_u = M (u − u_c) + u_c with M = Rᵀ in (x, y, z) order
    m = rot.transpose(-1, -2).flip(-1).flip(-2)
    uc = torch.full((3,), 2.0 * (d // 2) / (d - 1) - 1.0, device=volumes.device)
    theta = torch.cat([m, (uc - m @ uc)[..., None]], dim=-1)
    grid = F.affine_grid(theta, [k, 1, d, d, d], align_corners=True)
    inp = volumes.reshape(-1, 1, d, d, d)
    if inp.shape[0] == 1 and k > 1:
        inp = inp.expand(k, 1, d, d, d)
    return F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]


def _power(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return ((g.real**2 + g.imag**2) * h).sum(dim=(-3, -2, -1))


# --------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------


class _Target:
    """Boxes at one working size, band-passed, with their wedges: what a search scores against."""

    def __init__(self, boxes: torch.Tensor, wedge_ids: torch.Tensor, tilt_ranges: list, cutoff: float,
                 max_shift: float, score: str):
        n, d = boxes.shape[0], boxes.shape[-1]
        self.d, self.n, self.score = d, n, score
        self.device = boxes.device
        self.tilt_ranges = tilt_ranges if score == "wedge" else [None]
        self.wedge_ids = wedge_ids if score == "wedge" else torch.zeros_like(wedge_ids)
        self.k = freq_grid(d, self.device)
        self.band = lowpass_filter(d, cutoff, self.device)
        self.h = hermitian_weights(d, self.device)
        self.wedges = torch.stack([wedge_of(self.k, tr) for tr in self.tilt_ranges])  # (G, d, d, dr)
        fb = torch.fft.rfftn(boxes, dim=(-3, -2, -1)) * self.band * self.wedges[self.wedge_ids]
        self.fb = fb
        self.norm = torch.sqrt(_power(fb, self.h)).clamp_min(1e-12)
        ax = torch.arange(d, device=self.device)
        ax = torch.where(ax > d // 2, ax - d, ax).to(torch.float32)
        r2 = ax.view(-1, 1, 1) ** 2 + ax.view(1, -1, 1) ** 2 + ax.view(1, 1, -1) ** 2
        self.window = torch.nonzero((r2 <= max(max_shift, 1.0) ** 2 + 1e-6).flatten()).flatten()
        self.volume = float(d**3)

    def filtered_reference(self, ref_rot: torch.Tensor, wedge_ids: torch.Tensor):
        """Band- and wedge-weighted spectra of rotated references and their norms."""
        g = torch.fft.rfftn(ref_rot, dim=(-3, -2, -1)) * (self.band * self.wedges[wedge_ids])
        return g, torch.sqrt(_power(g, self.h)).clamp_min(1e-12)

    def correlate(self, box_ids: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) CC maps (B, L, d, d, d) of boxes ``box_ids`` (B,) with spectra ``g`` (B, L, …)."""
        d = self.d
        return torch.fft.irfftn(self.fb[box_ids][:, None] * g.conj(), s=(d, d, d), dim=(-3, -2, -1))

    def best_shift(self, cc: torch.Tensor, box_ids: torch.Tensor, gnorm: torch.Tensor):
        """Normalised max over the shift window of raw maps (B, L, d, d, d): (score (B, L), flat index)."""
        vals, j = cc.flatten(-3).index_select(-1, self.window).max(dim=-1)
        scale = self.volume / (self.norm[box_ids][:, None] * gnorm)
        return vals * scale, self.window[j]

    def subvoxel(self, cc: torch.Tensor, flat_idx: torch.Tensor) -> torch.Tensor:
        """Peak positions (B, 3) in voxels (z, y, x) of maps (B, d, d, d), parabolic per axis."""
        d = self.d
        idx = torch.stack([flat_idx // (d * d), (flat_idx // d) % d, flat_idx % d], dim=-1)
        out = idx.to(torch.float32)
        b = torch.arange(cc.shape[0], device=cc.device)
        for axis in range(3):
            def at(delta, axis=axis):
                j = idx.clone()
                j[:, axis] = (j[:, axis] + delta) % d
                return cc[b, j[:, 0], j[:, 1], j[:, 2]]
            c0, cm, cp = at(0), at(-1), at(1)
            den = cm - 2 * c0 + cp
            off = torch.where(den < -1e-12 * c0.abs().clamp_min(1e-30), 0.5 * (cm - cp) / den, torch.zeros_like(den))
            out[:, axis] = out[:, axis] + off.clamp(-0.5, 0.5)
        return torch.where(out > d / 2, out - d, out)


def _global_search(target: _Target, ref: torch.Tensor, grid: torch.Tensor, tick, keep: int = 1) -> Generator:
    """The ``keep`` best grid rotations per box (shared rotations, chunked): (score (N, K), index (N, K))."""
    n, d, m = target.n, target.d, grid.shape[0]
    keep = max(1, min(keep, m))
    best = torch.full((n, keep), -torch.inf, device=target.device)
    best_idx = torch.zeros(n, keep, dtype=torch.long, device=target.device)
    chunk = max(1, min(m, _BUDGET // max(1, n * d**3)))
    box_chunk = n if chunk > 1 else max(1, _BUDGET // d**3)
    groups = [torch.nonzero(target.wedge_ids == gi).flatten() for gi in range(len(target.tilt_ranges))]
    for start in range(0, m, chunk):
        rots = grid[start : start + chunk]
        ref_rot = rotate_volumes(ref, rots)
        for gi, ids in enumerate(groups):
            if not len(ids):
                continue
            g, gnorm = target.filtered_reference(ref_rot, torch.full((len(rots),), gi, device=target.device))
            for b0 in range(0, len(ids), box_chunk):
                bid = ids[b0 : b0 + box_chunk]
                cc = target.correlate(bid, g.expand(len(bid), *g.shape))
                score, _ = target.best_shift(cc, bid, gnorm.expand(len(bid), -1))  # (B, C)
                both = torch.cat([best[bid], score], dim=1)
                both_idx = torch.cat([best_idx[bid], torch.arange(start, start + len(rots), device=target.device)
                                      .expand(len(bid), -1)], dim=1)
                s, j = both.topk(keep, dim=1)
                best[bid] = s
                best_idx[bid] = torch.gather(both_idx, 1, j)
        yield tick(f"global search: rotations {min(start + chunk, m)}/{m}")
    return best, best_idx


def _local_search(target: _Target, ref: torch.Tensor, rotations: torch.Tensor, local: torch.Tensor,
                  tick, label: str) -> Generator:
    """Refine each box's rotation over ``rotations[n, k] @ local[l]``; returns (R (N,3,3), score, shift).

    ``rotations`` (N, 3, 3), or (N, K, 3, 3) for K starting candidates per box (all refined).
    """
    if rotations.ndim == 3:
        rotations = rotations[:, None]
    n, d = target.n, target.d
    local = (rotations[:, :, None] @ local[None, None]).flatten(1, 2)  # (N, K·L, 3, 3)
    ln = local.shape[1]
    per = max(1, _BUDGET // (ln * d**3))
    out_r = rotations[:, 0].clone()
    out_s = torch.empty(n, device=target.device)
    out_t = torch.empty(n, 3, device=target.device)
    for b0 in range(0, n, per):
        bid = torch.arange(b0, min(n, b0 + per), device=target.device)
        cand = local[bid]  # (B, L, 3, 3)
        ref_rot = rotate_volumes(ref, cand.reshape(-1, 3, 3))
        g, gnorm = target.filtered_reference(ref_rot, target.wedge_ids[bid].repeat_interleave(ln))
        g = g.reshape(len(bid), ln, *g.shape[1:])
        cc = target.correlate(bid, g)  # (B, L, d, d, d)
        score, flat = target.best_shift(cc, bid, gnorm.reshape(len(bid), ln))  # (B, L)
        s, j = score.max(dim=1)
        rows = torch.arange(len(bid), device=target.device)
        out_r[bid] = cand[rows, j]
        out_s[bid] = s
        out_t[bid] = target.subvoxel(cc[rows, j], flat[rows, j])
        yield tick(f"{label}: boxes {int(bid[-1]) + 1}/{n}")
    return out_r, out_s, out_t


def _levels(step: float, levels: int, d: int, start: int = 0) -> list[tuple[float, float]]:
    """(radius, step) of the local refinement levels after a search at ``step``."""
    finest = max(1.0, math.degrees(math.atan(1.0 / max(1, d // 2))) / 2)
    out = []
    radius = step
    for i in range(levels):
        fine = max(radius / 3.0, finest)
        if i >= start:
            out.append((radius, fine))
        radius = fine
    return out


def _work_size(big: int, cutoff: float, least: int = 12) -> int:
    """Smallest even box (≤ big) whose Nyquist keeps ``cutoff`` cycles/voxel of the big box (+10 %)."""
    d = int(math.ceil(2.2 * cutoff * big))
    d += d % 2
    return int(min(big, max(least, d)))


# --------------------------------------------------------------------------------------------
# averaging
# --------------------------------------------------------------------------------------------


def _wedge_sums(boxes: torch.Tensor, rotations: torch.Tensor, shifts: torch.Tensor, wedge_ids: torch.Tensor,
                tilt_ranges: list, sym: torch.Tensor):
    """Σ F'ᵢ·W'ᵢ and Σ W'ᵢ in the reference frame: each box unshifted, rotated by Rᵢᵀ, its wedge too."""
    n, d = boxes.shape[0], boxes.shape[-1]
    k = freq_grid(d, boxes.device)
    num = torch.zeros(k.shape[:-1], dtype=torch.complex64, device=boxes.device)
    den = torch.zeros(k.shape[:-1], dtype=torch.float32, device=boxes.device)
    per = max(1, _BUDGET // (4 * d**3))
    for b0 in range(0, n, per):
        sl = slice(b0, b0 + per)
        v = shift_volumes(boxes[sl], -shifts[sl])
        for s in sym:
            r = rotations[sl] @ s  # box = R·S·ref for every symmetry operation S
            fv = torch.fft.rfftn(rotate_volumes(v, r.transpose(-1, -2)), dim=(-3, -2, -1))
            kr = torch.einsum("bij,zyxj->bzyxi", r, k)  # W'(k) = W(R k)
            w = torch.stack([wedge_of(kr[i], tilt_ranges[int(wedge_ids[b0 + i])]) for i in range(kr.shape[0])])
            num += (fv * w).sum(0)
            den += w.sum(0)
    return num, den


def _average(num: torch.Tensor, den: torch.Tensor, d: int, eps: float) -> torch.Tensor:
    return torch.fft.irfftn(num / (den + eps), s=(d, d, d), dim=(-3, -2, -1))


# --------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------


@dataclass
class AlignmentResult:
    """What :func:`align_group` returns. Arrays of boxes have one row per input box.

    ``matrices`` are RELION's ``A`` (x, y, z; reference → particle), ``euler`` their
    (rlnAngleRot, rlnAngleTilt, rlnAnglePsi) in degrees, ``shifts`` the particle centre's offset
    from the box centre (voxel ``D // 2``) in voxels (z, y, x) — ``p ≈ shift(A · average)``; the
    refined coordinate is the box centre + shift, and RELION's ``rlnOriginX/Y/ZAngst`` is
    ``−shift × voxel size`` (RELION subtracts the origin). Boxes that were not aligned (empty,
    or too few) have ``half`` −1 and NaN angles and shifts.
    """

    average: np.ndarray  #: (D, D, D) wedge-weighted average of both halves (symmetrised)
    half_maps: np.ndarray | None  #: (2, D, D, D) the gold-standard half-maps
    fsc: FSC | None  #: FSC of the (masked) half-maps
    matrices: np.ndarray  #: (N, 3, 3)
    euler: np.ndarray  #: (N, 3) degrees
    shifts: np.ndarray  #: (N, 3) voxels (z, y, x)
    scores: np.ndarray  #: (N,) final score (constrained or plain CC)
    half: np.ndarray  #: (N,) 0 / 1 (−1: not aligned)
    voxel_size: float
    aligned: bool
    messages: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"

    @property
    def resolution(self) -> float | None:
        """Gold-standard resolution (Å, FSC = 0.143), or None when not aligned."""
        return None if self.fsc is None else self.fsc.resolution

    @property
    def shifts_angst(self) -> np.ndarray:
        """(N, 3) shifts in Å (z, y, x)."""
        return self.shifts * self.voxel_size

    def relion_columns(self) -> dict[str, np.ndarray]:
        """Per-box RELION 5 columns: angles, ``rlnOrigin{X,Y,Z}Angst`` (= −shift) and ``rlnRandomSubset``."""
        sa = self.shifts_angst
        return {"rlnAngleRot": self.euler[:, 0], "rlnAngleTilt": self.euler[:, 1], "rlnAnglePsi": self.euler[:, 2],
                "rlnOriginXAngst": -sa[:, 2], "rlnOriginYAngst": -sa[:, 1], "rlnOriginZAngst": -sa[:, 0],
                "rlnRandomSubset": self.half + 1}

    def summary(self) -> str:
        if not self.aligned:
            return "not aligned: " + "; ".join(self.messages)
        res = self.fsc
        bound = "≤ " if res.at_nyquist else ""
        n = int((self.half >= 0).sum())
        return (f"{n} boxes aligned, resolution {bound}{res.resolution:.1f} Å (FSC {res.threshold}), "
                f"median score {np.nanmedian(self.scores):.3f}, {self.seconds:.1f} s on {self.device}")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def _as_boxes(boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.ndim != 4 or len(set(arr.shape[1:])) != 1:
        raise ParameterError(f"boxes must be an (N, D, D, D) stack of cubes, got shape {arr.shape}")
    if arr.shape[-1] < 8:
        raise ParameterError(f"boxes must be at least 8³ voxels, got {arr.shape[-1]}³")
    if not np.isfinite(arr).all():
        raise ParameterError("boxes contain NaN or infinite values")
    return arr


def _tilt_groups(tilt_range, n: int) -> tuple[list, np.ndarray]:
    """Unique tilt ranges and each box's index into them (``None`` = no wedge)."""
    if tilt_range is None:
        return [None], np.zeros(n, dtype=np.int64)
    tr = np.asarray(tilt_range, dtype=np.float64)
    if tr.shape == (2,):
        tr = np.broadcast_to(tr, (n, 2))
    if tr.shape != (n, 2) or not np.isfinite(tr).all():
        raise ParameterError(f"tilt_range must be (min, max) degrees or one pair per box, got shape {tr.shape}")
    if (tr[:, 0] >= tr[:, 1]).any() or (tr < -90).any() or (tr > 90).any():
        raise ParameterError("tilt_range must be (min, max) with −90° ≤ min < max ≤ 90°")
    uniq, inverse = np.unique(tr, axis=0, return_inverse=True)
    return [tuple(map(float, u)) for u in uniq], inverse.reshape(-1).astype(np.int64)


def fit_box(volume, d: int) -> np.ndarray:
    """Pad (zeros) or crop a (Z, Y, X) volume to a d³ cube, keeping voxel ``n // 2`` at ``d // 2``."""
    v = np.asarray(volume, dtype=np.float32)
    out = np.zeros((d, d, d), dtype=np.float32)
    src, dst = [], []
    for n in v.shape:
        lo = d // 2 - n // 2  # where input index 0 lands
        s0, s1 = max(0, -lo), min(n, d - lo)
        src.append(slice(s0, s1))
        dst.append(slice(s0 + lo, s1 + lo))
    out[tuple(dst)] = v[tuple(src)]
    return out


def _normalise(x: torch.Tensor) -> torch.Tensor:
    dims = (-3, -2, -1)
    x = x - x.mean(dim=dims, keepdim=True)
    return x / x.std(dim=dims, keepdim=True).clamp_min(1e-12)


def _to_xyz(rot_zyx: torch.Tensor) -> np.ndarray:
    return so3.zyx_to_xyz(rot_zyx.detach().cpu().double().numpy())


# --------------------------------------------------------------------------------------------
# align a group
# --------------------------------------------------------------------------------------------


def align_group(boxes, voxel_size: float, *, tilt_range=(-60.0, 60.0), reference=None,
                params: AlignParams | None = None) -> Generator[Progress, None, AlignmentResult]:
    """Align and average a group of boxes, gold standard; a generator (progress, then the result).

    ``boxes``: (N, D, D, D), (Z, Y, X), protein of one polarity (positive for ``resembles``).
    ``tilt_range``: (min, max) degrees about Y for all boxes, one pair per box, or None (no
    wedge: then both scores are the plain CC). ``reference``: a starting map (e.g. the template
    of a known class, at the boxes' voxel size; padded/cropped to D³), low-passed to
    ``initial_lowpass``; None = reference-free (the unaligned average). Stop iterating (or
    ``close()``) to cancel: nothing is kept. Fewer than :data:`MIN_BOXES` non-empty boxes →
    the unaligned average, ``aligned=False`` and a message.
    """
    t_start = time.perf_counter()
    params = params or AlignParams()
    arr = _as_boxes(boxes)
    vs = float(voxel_size)
    if not (vs > 0 and math.isfinite(vs)):
        raise ParameterError(f"voxel_size must be > 0 Å, got {voxel_size!r}")
    n_all, d0 = arr.shape[0], arr.shape[-1]
    tilt_ranges, wedge_np = _tilt_groups(tilt_range, n_all)
    device = choose_device(params.device)
    set_cpu_threads(params.threads)
    messages: list[str] = []
    if tilt_range is None:
        messages.append("no tilt range: the missing wedge is not modelled (plain CC, plain average)")
    yield Progress(STAGE, 0, 1, f"preparing {n_all} boxes of {d0}³ on {describe(device)}")

    std = arr.reshape(n_all, -1).std(axis=1)
    valid = np.nonzero(std > 1e-8 * max(1.0, float(np.abs(arr).max(initial=0.0))))[0]
    if len(valid) < n_all:
        messages.append(f"{n_all - len(valid)} empty box(es) (constant) left out")
    pad = d0 % 2  # odd boxes: one voxel in front keeps voxel D // 2 the centre
    x = torch.as_tensor(arr[valid], device=device)
    if pad:
        x = F.pad(x, (1, 0, 1, 0, 1, 0))
    x = _normalise(x) if len(valid) else x
    d = x.shape[-1]
    n = len(valid)
    wid = torch.as_tensor(wedge_np[valid], device=device)
    sym_n = symmetry_order(params.symmetry)
    sym = torch.as_tensor(so3.xyz_to_zyx(so3.cyclic_group(sym_n)), dtype=torch.float32, device=device)
    eps = params.wedge_eps
    mask = soft_sphere(d, max(2.0, params.mask_radius * d / 2 - 2.0), device)
    max_shift = (params.max_shift / vs) if params.max_shift is not None else d / 4
    lp0 = params.initial_lowpass or max(4 * vs, 40.0)
    f0 = min(0.45, vs / lp0)
    eye = torch.eye(3, device=device).expand(max(n, 1), 3, 3).clone()
    zeros = torch.zeros(max(n, 1), 3, device=device)

    def result(avg, halves, fsc_res, rot, shifts, scores, half_of, aligned) -> AlignmentResult:
        sl = (slice(None),) + (slice(pad, None),) * 3
        mats = np.full((n_all, 3, 3), np.nan)
        sh = np.full((n_all, 3), np.nan)
        sc = np.full(n_all, np.nan)
        hf = np.full(n_all, -1, dtype=np.int64)
        if aligned:
            mats[valid] = _to_xyz(rot)
            sh[valid] = shifts.detach().cpu().double().numpy()
            sc[valid] = scores.detach().cpu().double().numpy()
            hf[valid] = half_of
        euler = np.full((n_all, 3), np.nan)
        ok = np.isfinite(mats[:, 0, 0])
        euler[ok] = so3.matrix_to_euler(mats[ok])
        avg_np = avg[None][sl][0].detach().cpu().numpy().astype(np.float32)
        halves_np = None if halves is None else halves[sl].detach().cpu().numpy().astype(np.float32)
        return AlignmentResult(avg_np, halves_np, fsc_res, mats, euler, sh, sc, hf, vs, aligned, messages,
                               history, params.to_dict(), time.perf_counter() - t_start, describe(device))

    history: list[dict] = []
    if n < MIN_BOXES:
        messages.append(f"only {n} usable box(es): at least {MIN_BOXES} are needed to align "
                        "(two half-sets); this is the unaligned average")
        if n:
            num, den = _wedge_sums(x, eye[:n], zeros[:n], wid, tilt_ranges, sym[:1])
            avg = _average(num, den, d, eps)
        else:
            avg = torch.zeros(d, d, d, device=device)
        return result(avg, None, None, None, None, None, None, False)

    # gold-standard split
    if params.split == "parity":
        half_of = np.arange(n) % 2
    else:
        half_of = np.zeros(n, dtype=np.int64)
        half_of[np.random.default_rng(params.seed).permutation(n)[n // 2:]] = 1
    halves_idx = [torch.as_tensor(np.nonzero(half_of == h)[0], device=device) for h in (0, 1)]

    # starting references
    if reference is not None:
        ref0 = torch.as_tensor(fit_box(reference, d0), device=device)
        if pad:
            ref0 = F.pad(ref0, (1, 0, 1, 0, 1, 0))
        if float(ref0.std()) <= 0:
            raise ParameterError("the reference is empty (constant)")
        ref0 = _normalise(ref0[None])[0]
    else:
        num, den = _wedge_sums(x, eye[:n], zeros[:n], wid, tilt_ranges, sym[:1])
        ref0 = _average(num, den, d, eps)
    refs = [ref0, ref0]
    rot = eye[:n].clone()
    shifts = zeros[:n].clone()
    scores = torch.zeros(n, device=device)
    cutoff = f0
    grid = torch.as_tensor(so3.xyz_to_zyx(so3.uniform_rotations(params.angular_step, seed=params.seed)),
                           dtype=torch.float32, device=device)
    n_levels = params.refine_levels
    total = sum(2 * (int(it < params.global_iterations) + max(1, n_levels) + 1) + 1
                for it in range(params.iterations))
    step = [0]

    def tick(msg: str) -> Progress:
        return Progress(STAGE, step[0], total, msg)

    fsc_res = None
    sums = [None, None]
    for it in range(params.iterations):
        is_global = it < params.global_iterations
        dw = _work_size(d, cutoff)
        for h in (0, 1):
            ids = halves_idx[h]
            label = f"round {it + 1}/{params.iterations}, half {h + 1}"
            ref_full = torch.fft.irfftn(torch.fft.rfftn(refs[h]) * lowpass_filter(d, cutoff, device), s=(d, d, d))
            ref_full = ref_full * mask
            xs = x[ids]
            r_h = rot[ids]
            start_level = 0
            if is_global:
                dg = min(dw, params.global_box) if d > params.global_box else d
                dg += dg % 2
                tg = _Target(fourier_crop(xs, dg), wid[ids], tilt_ranges, cutoff * d / dg,
                             max_shift * dg / d, params.score)
                best, best_idx = yield from _global_search(tg, fourier_crop(ref_full[None], dg)[0], grid,
                                                           lambda m: tick(f"{label}: {m}"), params.candidates)
                r_h = grid[best_idx]  # (n_h, K, 3, 3): every candidate is refined at the first level
                scores[ids] = best[:, 0]
                step[0] += 1
            else:
                start_level = 1
            tw = _Target(fourier_crop(xs, dw), wid[ids], tilt_ranges, cutoff * d / dw, max_shift * dw / d,
                         params.score)
            ref_w = fourier_crop(ref_full[None], dw)[0]
            levels = _levels(params.angular_step, n_levels + start_level, dw, start=start_level)
            if not levels:  # no refinement asked: score the current rotations for their shifts
                levels = [(0.0, 1.0)]
            for li, (radius, fine) in enumerate(levels):
                local = torch.as_tensor(so3.xyz_to_zyx(so3.local_rotations(radius, fine)), dtype=torch.float32,
                                        device=device)
                r_h, s_h, t_h = yield from _local_search(tw, ref_w, r_h, local,
                                                         lambda m: tick(f"{label}: {m}"),
                                                         f"refine {li + 1}/{len(levels)} (±{radius:.1f}° by {fine:.1f}°)")
                scores[ids] = s_h
                shifts[ids] = t_h * (d / dw)
                step[0] += 1
            rot[ids] = r_h
            sums[h] = _wedge_sums(x[ids], rot[ids], shifts[ids], wid[ids], tilt_ranges, sym)
            step[0] += 1
            yield tick(f"{label}: averaged")
        halves = [_average(*sums[h], d, eps) for h in (0, 1)]
        if is_global and reference is None:  # the two halves' frames are arbitrary: register half 2 onto half 1
            r_reg, t_reg, _ = _register(halves[1], halves[0], cutoff, params, mask, max_shift)
            ids = halves_idx[1]
            shifts[ids] = shifts[ids] + (rot[ids] @ t_reg)
            rot[ids] = rot[ids] @ r_reg
            sums[1] = _wedge_sums(x[ids], rot[ids], shifts[ids], wid[ids], tilt_ranges, sym)
            halves[1] = _average(*sums[1], d, eps)
        fsc_res = fsc(halves[0].cpu().numpy(), halves[1].cpu().numpy(), vs, mask=mask.cpu().numpy())
        cutoff = float(min(0.5, max(f0, vs / fsc_res.resolution)))
        refs = halves
        step[0] += 1
        history.append({"round": it + 1, "global": is_global, "resolution": fsc_res.resolution,
                        "median_score": float(scores.median()), "work_box": dw})
        yield tick(f"round {it + 1}/{params.iterations}: resolution {fsc_res.resolution:.1f} Å")
    num = sums[0][0] + sums[1][0]
    den = sums[0][1] + sums[1][1]
    avg = _average(num, den, d, eps)
    return result(avg, torch.stack(halves), fsc_res, rot, shifts, scores, half_of, True)


def _register(moving: torch.Tensor, fixed: torch.Tensor, cutoff: float, params: AlignParams, mask: torch.Tensor,
              max_shift: float, tilt_range=None):
    """(R, t, score): ``moving ≈ shift_t(R · fixed)`` by a global + local search of one volume."""
    gen = _align_one(moving, fixed, cutoff, params, mask, max_shift, tilt_range)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _align_one(moving: torch.Tensor, fixed: torch.Tensor, cutoff: float, params: AlignParams, mask: torch.Tensor,
               max_shift: float, tilt_range=None) -> Generator:
    d = moving.shape[-1]
    device = moving.device
    tilt_ranges, wid = _tilt_groups(tilt_range, 1)
    wid_t = torch.as_tensor(wid, device=device)
    score = params.score if tilt_range is not None else "cc"
    ref = torch.fft.irfftn(torch.fft.rfftn(fixed) * lowpass_filter(d, cutoff, device), s=(d, d, d)) * mask
    mov = moving[None]
    dw = _work_size(d, cutoff)
    dg = min(dw, params.global_box) if d > params.global_box else d
    dg += dg % 2
    grid = torch.as_tensor(so3.xyz_to_zyx(so3.uniform_rotations(params.angular_step, seed=params.seed)),
                           dtype=torch.float32, device=device)
    tg = _Target(fourier_crop(mov, dg), wid_t, tilt_ranges, cutoff * d / dg, max_shift * dg / d, score)
    _, idx = yield from _global_search(tg, fourier_crop(ref[None], dg)[0], grid, lambda m: m, params.candidates)
    r = grid[idx]
    tw = _Target(fourier_crop(mov, dw), wid_t, tilt_ranges, cutoff * d / dw, max_shift * dw / d, score)
    ref_w = fourier_crop(ref[None], dw)[0]
    s, t = torch.zeros(1, device=device), torch.zeros(1, 3, device=device)
    for radius, fine in _levels(params.angular_step, max(2, params.refine_levels), dw):
        local = torch.as_tensor(so3.xyz_to_zyx(so3.local_rotations(radius, fine)), dtype=torch.float32, device=device)
        r, s, t = yield from _local_search(tw, ref_w, r, local, lambda m: m, "refine")
    return r[0], t[0] * (d / dw), float(s[0])


# --------------------------------------------------------------------------------------------
# align one volume to references: "resembles"
# --------------------------------------------------------------------------------------------


@dataclass
class Resemblance:
    """One reference's best match to a map: its normalised correlation and the pose found."""

    name: str
    score: float  #: normalised CC at the low-pass, in the soft spherical mask (−1 … 1)
    euler: tuple[float, float, float]  #: RELION (rot, tilt, psi) of the map relative to the reference
    shift: tuple[float, float, float]  #: voxels (z, y, x)

    def __str__(self) -> str:
        return f"{self.name} ({self.score:.2f})"


def iter_resembles(average, references: Mapping[str, np.ndarray], voxel_size: float, *, tilt_range=None,
                   lowpass: float | None = None, params: AlignParams | None = None
                   ) -> Generator[Progress, None, list[Resemblance]]:
    """Generator of :func:`resembles` (one progress event per reference and search chunk)."""
    params = params or AlignParams()
    vol = np.asarray(average, dtype=np.float32)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ParameterError(f"the average must be a cube (D, D, D), got shape {vol.shape}")
    if not np.isfinite(vol).all() or float(vol.std()) <= 0:
        raise ParameterError("the average is empty (constant) or not finite")
    if not references:
        return []
    vs = float(voxel_size)
    device = choose_device(params.device)
    set_cpu_threads(params.threads)
    d = vol.shape[0] + vol.shape[0] % 2
    lp = lowpass or max(40.0, 2.2 * vs)
    cutoff = min(0.45, vs / lp)
    mask = soft_sphere(d, max(2.0, params.mask_radius * d / 2 - 2.0), device)
    max_shift = (params.max_shift / vs) if params.max_shift is not None else d / 4
    mov = _normalise(torch.as_tensor(fit_box(vol, d), device=device)[None])[0]
    out = []
    names = list(references)
    for i, name in enumerate(names):
        ref = torch.as_tensor(fit_box(references[name], d), device=device)
        if float(ref.std()) <= 0:
            raise ParameterError(f"reference {name!r} is empty (constant)")
        ref = _normalise(ref[None])[0]
        gen = _align_one(mov, ref, cutoff, params, mask, max_shift, tilt_range)
        while True:
            try:
                msg = next(gen)
            except StopIteration as stop:
                r, t, s = stop.value
                break
            yield Progress("resembles", i, len(names), f"{name}: {msg}")
        e = so3.matrix_to_euler(so3.zyx_to_xyz(r.cpu().double().numpy()))
        out.append(Resemblance(name, s, tuple(float(a) for a in e), tuple(float(a) for a in t.cpu())))
        yield Progress("resembles", i + 1, len(names), f"{name}: {s:.3f}")
    out.sort(key=lambda r: -r.score)
    return out


def resembles(average, references: Mapping[str, np.ndarray], voxel_size: float, *, tilt_range=None,
              lowpass: float | None = None, params: AlignParams | None = None) -> list[Resemblance]:
    """Align ``average`` to each reference (global SO(3) + local search) → best scores, sorted.

    ``references``: name → density map at the same voxel size (any box: padded or cropped to the
    average's, centred on voxel n // 2), protein of the same sign as the average. ``lowpass``
    (Å, default max(40 Å, 2.2 voxels)) is the resolution compared at; ``tilt_range`` (optional)
    is the average's own missing wedge, when it has one (e.g. a single-tomogram unaligned average),
    and then the constrained CC is used. E.g. ``"U0 looks like " + str(resembles(...)[0])`` →
    ``U0 looks like 4v4r (0.82)``.
    """
    gen = iter_resembles(average, references, voxel_size, tilt_range=tilt_range, lowpass=lowpass, params=params)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def align_to_reference(boxes, reference, voxel_size: float, *, tilt_range=(-60.0, 60.0),
                       lowpass: float | None = None, params: AlignParams | None = None
                       ) -> Generator[Progress, None, dict]:
    """One search of every box against a fixed reference (no iterations, no averaging).

    The building block the tests and the benchmark use to score the search alone: returns a dict
    with ``matrices`` (N, 3, 3) RELION A, ``euler``, ``shifts`` (voxels, z y x) and ``scores``.
    """
    params = params or AlignParams()
    arr = _as_boxes(boxes)
    vs = float(voxel_size)
    device = choose_device(params.device)
    set_cpu_threads(params.threads)
    n, d = arr.shape[0], arr.shape[-1]
    if d % 2:
        raise ParameterError("align_to_reference needs even boxes")
    tilt_ranges, wid = _tilt_groups(tilt_range, n)
    wid_t = torch.as_tensor(wid, device=device)
    x = _normalise(torch.as_tensor(arr, device=device))
    ref = _normalise(torch.as_tensor(fit_box(reference, d), device=device)[None])[0]
    lp = lowpass or max(2.2 * vs, 0.0)
    cutoff = min(0.5, vs / lp)
    mask = soft_sphere(d, max(2.0, params.mask_radius * d / 2 - 2.0), device)
    ref = torch.fft.irfftn(torch.fft.rfftn(ref) * lowpass_filter(d, cutoff, device), s=(d, d, d)) * mask
    max_shift = (params.max_shift / vs) if params.max_shift is not None else d / 4
    grid = torch.as_tensor(so3.xyz_to_zyx(so3.uniform_rotations(params.angular_step, seed=params.seed)),
                           dtype=torch.float32, device=device)
    dg = min(d, params.global_box)
    dg += dg % 2
    tg = _Target(fourier_crop(x, dg), wid_t, tilt_ranges, cutoff * d / dg, max_shift * dg / d, params.score)
    tick = lambda m: Progress(STAGE, 0, 1, m)  # noqa: E731
    _, idx = yield from _global_search(tg, fourier_crop(ref[None], dg)[0], grid, tick, params.candidates)
    r = grid[idx]
    dw = _work_size(d, cutoff)
    tw = _Target(fourier_crop(x, dw), wid_t, tilt_ranges, cutoff * d / dw, max_shift * dw / d, params.score)
    ref_w = fourier_crop(ref[None], dw)[0]
    s = torch.zeros(n, device=device)
    t = torch.zeros(n, 3, device=device)
    for radius, fine in _levels(params.angular_step, params.refine_levels, dw) or [(0.0, 1.0)]:
        local = torch.as_tensor(so3.xyz_to_zyx(so3.local_rotations(radius, fine)), dtype=torch.float32, device=device)
        r, s, t = yield from _local_search(tw, ref_w, r, local, tick, "refine")
    mats = _to_xyz(r)
    return {"matrices": mats, "euler": so3.matrix_to_euler(mats), "shifts": (t * (d / dw)).cpu().double().numpy(),
            "scores": s.cpu().double().numpy()}


__all__ = ["MIN_BOXES", "AlignmentResult", "Resemblance", "align_group", "align_to_reference", "fit_box",
           "iter_resembles", "resembles", "rotate_volumes"]
