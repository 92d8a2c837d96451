"""Template-matching peer for ``bench_run.py``: the approach biologists use today.

Every pick box is compared with every known template passed through the **same imaging model
the run simulates** (the resolved condition: CTF at the mean defocus, the tilt range's missing
wedge, MTF, weighted back-projection; no noise) at ``n_rotations`` orientations drawn uniformly
on SO(3), by normalised cross-correlation inside a spherical mask, over centre offsets of
±``shift`` voxels of the binned grid. A pick's class is the template with the highest
correlation; its unknown score is minus that correlation. The unknown threshold is calibrated
**the same label-free way as the run's**: Youden's J on the run's own simulated source boxes
(known classes vs. decoys, :func:`~napari_cryo_openset.openset.calibrate_threshold`), then
checked on the target's scores by :func:`~napari_cryo_openset.adapt.transfer.transfer_threshold`.
No target label is used.

Benchmark-only; not part of the package.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F

from napari_cryo_openset.adapt.transfer import transfer_threshold
from napari_cryo_openset.extract import normalise_subtomograms
from napari_cryo_openset.openset import calibrate_threshold
from napari_cryo_openset.picks import UNKNOWN_CLASS
from napari_cryo_openset.simulate.imaging import image_volumes
from napari_cryo_openset.simulate.placement import random_rotations, rotate_into_boxes


def _binned_masked(x: torch.Tensor, bin_: int, mask: torch.Tensor) -> torch.Tensor:
    """(N, B, B, B) → (N, b³) binned, zero mean and unit norm inside ``mask``."""
    if bin_ > 1:
        x = F.avg_pool3d(x[:, None], bin_)[:, 0]
    x = x * mask
    m = mask.sum()
    x = x - (x.sum(dim=(1, 2, 3), keepdim=True) / m) * mask
    x = x.reshape(len(x), -1)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class TemplateMatcher:
    """Templates × rotations imaged like the run's source; scores canonical boxes (protein positive)."""

    def __init__(self, templates, condition, box: int, n_rotations: int = 300, bin_: int = 2, shift: int = 1,
                 seed: int = 0):
        t0 = time.perf_counter()
        self.class_names = [t.name for t in templates]
        self.bin, self.shift = int(bin_), int(shift)
        b = box // self.bin
        r = (np.arange(b) - (b - 1) / 2.0)
        zz, yy, xx = np.meshgrid(r, r, r, indexing="ij")
        self.mask = torch.from_numpy((np.sqrt(zz**2 + yy**2 + xx**2) <= b / 2.0 - 0.5).astype(np.float32))
        rng = np.random.default_rng([int(seed), 0x7E3])
        size = box + 8
        defocus = float(np.mean(condition.defocus_range))
        bank, labels = [], []
        for k, tpl in enumerate(templates):
            rot = random_rotations(rng, n_rotations)
            for a in range(0, n_rotations, 64):
                vol = rotate_into_boxes(tpl.density, rot[a:a + 64], None, (size,) * 3)
                n = len(vol)
                out = image_volumes(vol, condition, defocus=[defocus] * n, snr=[1e6] * n, noise_seeds=list(range(n)),
                                    recon_shape=(box,) * 3)
                canon = torch.from_numpy(normalise_subtomograms(out.numpy(), "dark"))
                bank.append(_binned_masked(canon, self.bin, self.mask))
                labels.append(np.full(n, k))
        self.bank = torch.cat(bank)  # (K·R, b³)
        self.labels = torch.from_numpy(np.concatenate(labels))
        self.seconds_bank = time.perf_counter() - t0

    def correlations(self, boxes) -> np.ndarray:
        """(N, K) best normalised cross-correlation of each box with each template (rotations × offsets)."""
        x = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
        if x.ndim == 5:
            x = x[:, 0]
        if self.bin > 1:
            x = F.avg_pool3d(x[:, None], self.bin)[:, 0]
        k = len(self.class_names)
        best = torch.full((len(x), k), -2.0)
        s = self.shift
        for dz, dy, dx in itertools.product(range(-s, s + 1), repeat=3):
            shifted = torch.roll(x, shifts=(dz, dy, dx), dims=(1, 2, 3))
            v = _binned_masked(shifted, 1, self.mask)
            for a in range(0, len(v), 256):
                cc = v[a:a + 256] @ self.bank.T  # (n, K·R)
                per = torch.full((len(cc), k), -2.0).scatter_reduce(
                    1, self.labels.expand(len(cc), -1), cc, reduce="amax", include_self=True)
                best[a:a + 256] = torch.maximum(best[a:a + 256], per)
        return best.numpy()


def template_matching_peer(trained, templates, condition, target_boxes, *, n_rotations: int = 300,
                           per_class: int = 40, seed: int = 0) -> dict:
    """Classify ``target_boxes`` (canonical) by template matching; threshold from the run's source set.

    ``trained``: the run's :class:`~napari_cryo_openset.train.TrainResult` (its simulated source
    set ``trained.data`` calibrates the unknown threshold). Returns class names, the target
    unknown scores, the threshold report and seconds.
    """
    from napari_cryo_openset.train import source_boxes

    t0 = time.perf_counter()
    data = trained.data
    known = [t for t in templates if t.name in data.class_names]
    box = int(data.box)
    tm = TemplateMatcher(known, condition.replace(voxel_size=data.voxel_size), box, n_rotations, seed=seed)
    rng = np.random.default_rng(seed)
    names = np.asarray(data.class_names)[data.labels]
    take = np.concatenate([rng.permutation(np.flatnonzero(names == c))[:per_class]
                           for c in [t.name for t in known] + [UNKNOWN_CLASS] if (names == c).any()])
    src = source_boxes(data.subtomograms[take], data.polarity)[:, 0]
    src_scores = -tm.correlations(src).max(axis=1)
    is_unknown = names[take] == UNKNOWN_CLASS
    cal = calibrate_threshold(src_scores[~is_unknown], src_scores[is_unknown] if is_unknown.any() else None)
    cc = tm.correlations(target_boxes)
    scores = -cc.max(axis=1)
    threshold, transfer = transfer_threshold(cal.threshold, scores, "auto", seed=seed)
    pred = np.asarray(tm.class_names)[cc.argmax(axis=1)].astype(object)
    pred[scores > threshold] = UNKNOWN_CLASS
    return {"class_name": pred.astype(str), "unknown_score": scores, "threshold": threshold,
            "source_threshold": cal.threshold, "transfer": transfer, "seconds": time.perf_counter() - t0,
            "seconds_bank": tm.seconds_bank, "references": int(len(tm.bank))}
