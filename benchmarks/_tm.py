"""Template-matching peer for ``bench_run.py``: the approach biologists use today.

Every pick box is compared with every known template passed through the **same imaging model
the run simulates** by the product's own template bank (:class:`napari_cryo_openset.verify.TemplateBank`:
the resolved condition's CTF at the mean defocus, missing wedge and weighted back-projection, no
noise, ``n_rotations`` orientations uniform on SO(3), normalised cross-correlation inside a
spherical mask over centre offsets of ±1 binned voxel) — here without the network. A pick's class is the template with the highest
correlation; its unknown score is minus that correlation. The unknown threshold is calibrated
**the same label-free way as the run's**: Youden's J on the run's own simulated source boxes
(known classes vs. decoys, :func:`~napari_cryo_openset.openset.calibrate_threshold`), then
checked on the target's scores by :func:`~napari_cryo_openset.adapt.transfer.transfer_threshold`.
No target label is used.

Benchmark-only; not part of the package.
"""

from __future__ import annotations

import time

import numpy as np

from napari_cryo_openset.adapt.transfer import transfer_threshold
from napari_cryo_openset.openset import calibrate_threshold
from napari_cryo_openset.picks import UNKNOWN_CLASS
from napari_cryo_openset.verify import TemplateBank


def template_matching_peer(trained, templates, condition, target_boxes, *, n_rotations: int = 300,
                           per_class: int = 40, seed: int = 0, bank: TemplateBank | None = None) -> dict:
    """Classify ``target_boxes`` (canonical) by template matching; threshold from the run's source set.

    ``trained``: the run's :class:`~napari_cryo_openset.train.TrainResult` (its simulated source
    set ``trained.data`` calibrates the unknown threshold); ``bank``: the run's own template bank
    (the same templates and imaging), else one is made. Returns class names, the target
    unknown scores, the threshold report and seconds.
    """
    from napari_cryo_openset.train import source_boxes

    t0 = time.perf_counter()
    data = trained.data
    known = [t for t in templates if t.name in data.class_names]
    box = int(data.box)
    tm = bank if bank is not None else TemplateBank(known, condition.replace(voxel_size=data.voxel_size), box,
                                                    n_rotations=n_rotations, seed=seed)
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
            "seconds_bank": tm.seconds, "references": int(len(tm.bank))}
