"""The end of every adaptation: class centres, a calibrated open-set rule, the adapted bundle.

All calibration uses **source** data only (the model's held-out source validation split), never
target labels:

- centres: mean feature of each known class (``unknown`` excluded, ``empty`` included) over the
  source *training* split, in the method's metric space (3D-ADA: the frozen source encoder's
  features; MLUDA: L2-normalised features of the adapted encoder);
- unknown score: distance to the nearest centre;
- threshold: :func:`.calibrate.calibrate_open_set` on source-validation known vs. decoy scores,
  then checked on the target's score distribution without labels (:mod:`.transfer`);
- confidence: softmax with a temperature fitted on source-validation logits.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import ModelBundle
from ..picks import class_counts
from ..progress import Progress
from .calibrate import calibrate_open_set, fit_temperature
from .common import AdaptParams
from .transfer import transfer_threshold
from .source import SourceData


@dataclass
class AdaptResult:
    """An adapted model bundle, its predictions on the target boxes, and the diagnostics."""

    bundle: ModelBundle
    predictions: object  # napari_cryo_openset.predict.Predictions, rows = target boxes
    history: list = field(default_factory=list)
    stopped: str = "completed"
    seconds: float = 0.0
    calibration: dict = field(default_factory=dict)

    def summary(self) -> str:
        parts = ", ".join(f"{n} {c}" for n, c in class_counts(self.predictions.class_name).items())
        return f"{self.bundle.provenance.get('adaptation', {}).get('method', '?')}: {parts}; {self.stopped}"


def encode(encoder: torch.nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Features of boxes (eval mode, restored afterwards), float32 on the CPU."""
    from ..models import forward_batches

    out = forward_batches(encoder, x, device, batch_size=batch_size)
    return out[0] if out else torch.zeros(0, getattr(encoder, "out_dim", 1))


def metric(h: torch.Tensor, normalize: bool) -> torch.Tensor:
    return F.normalize(h, dim=1) if normalize else h


def finish_open_set(bundle: ModelBundle, model, source: SourceData, target: torch.Tensor, params: AdaptParams,
                    device: torch.device, *, reference_encoder, discriminator=None, history=None,
                    stopped: str = "completed", t0: float | None = None, classify: str = "argmax",
                    normalize: bool = False, extra: dict | None = None, predict_on=None):
    """Centres, threshold and temperature from source data; the adapted bundle; target predictions.

    ``target``: the boxes adapted to; ``predict_on``: the boxes predicted (default ``target``),
    a tensor or a lazy :class:`~napari_cryo_openset.boxes.PickBoxes` encoded batch by batch.
    """
    from ..openset import nearest_centre
    from ..predict import score_outputs

    yield Progress("calibrate", 0, 1, "calibrating the unknown threshold on source validation data")
    t0 = time.perf_counter() if t0 is None else t0
    model = model.to(device).eval()
    head = model.head
    known = source.known_labels
    tr_known, _ = source.split_known_unknown(source.train_idx)
    va_known, va_unknown = source.split_known_unknown(source.val_idx)
    h_tr = metric(encode(reference_encoder, source.x[torch.from_numpy(tr_known)], device), normalize)
    y_tr = source.y[torch.from_numpy(tr_known)]
    present = [c for c in known if bool((y_tr == c).any())]
    centres = torch.stack([h_tr[y_tr == c].mean(0) for c in present])
    centre_classes = [source.class_names[c] for c in present]

    h_va_raw = encode(reference_encoder, source.x[torch.from_numpy(np.concatenate([va_known, va_unknown]))], device)
    with torch.no_grad():
        logits_va = head(h_va_raw.to(device)).float().cpu()
    d_va, _ = nearest_centre(metric(h_va_raw, normalize).numpy(), centres.numpy())
    n_k = len(va_known)
    calibration = calibrate_open_set(d_va[:n_k], d_va[n_k:], params)
    temperature = fit_temperature(logits_va, source.y[torch.from_numpy(np.concatenate([va_known, va_unknown]))])

    model = model.to("cpu").to(memory_format=torch.contiguous_format)
    openset = {
        "method": "centre", "assign": classify, "normalize": bool(normalize), "centres": centres.contiguous(),
        "centre_classes": centre_classes, "threshold": float(calibration.threshold), "rule": calibration.rule,
        "calibration": calibration.to_dict(), "temperature": float(temperature),
        "score": "distance to the nearest known class centre" + (" (L2-normalised features)" if normalize else ""),
    }
    provenance = copy.deepcopy(bundle.provenance)
    provenance["adaptation"] = {"method": params.method, "params": params.to_dict(), "stopped": stopped,
                                "target_picks": int(len(predict_on if predict_on is not None else target)),
                                "adaptation_picks": int(len(target)), "seconds": round(time.perf_counter() - t0, 2),
                                **(extra or {})}
    adapted = ModelBundle(
        model=model, class_names=list(bundle.class_names), box_size=bundle.box_size, voxel_size=bundle.voxel_size,
        openset=openset, provenance=provenance, history=list(bundle.history) + [{"adaptation": h} for h in (history or [])],
        source_encoder=(reference_encoder.to("cpu").to(memory_format=torch.contiguous_format)
                        if reference_encoder is not model.encoder else None),
        discriminator=discriminator.to("cpu") if discriminator is not None else None,
        normalisation=dict(bundle.normalisation),
    )
    dev_model = model.to(device)
    h_t = encode(dev_model.encoder, predict_on if predict_on is not None else target, device)
    with torch.no_grad():
        logits_t = dev_model.head(h_t.to(device)).float().cpu()
    adapted.model = dev_model.to("cpu").to(memory_format=torch.contiguous_format)
    predictions = score_outputs(adapted, logits_t, h_t)
    # does the source threshold hold on the target? (label-free: the target's score distribution)
    last = (history or [{}])[-1] if history else {}
    threshold, transfer = transfer_threshold(calibration.threshold, predictions.unknown_score,
                                             params.threshold_transfer, last.get("target_unknown_fraction"),
                                             seed=params.seed)
    adapted.openset["transfer"] = transfer
    if threshold != calibration.threshold:
        adapted.openset["source_threshold"] = float(calibration.threshold)
        adapted.openset["threshold"] = float(threshold)
        predictions = score_outputs(adapted, logits_t, h_t)
    cal = {**calibration.to_dict(), "transfer": transfer}
    yield Progress("calibrate", 1, 1, f"threshold {threshold:.3g} ({calibration.rule}; {transfer['why']})")
    return AdaptResult(bundle=adapted, predictions=predictions, history=list(history or []), stopped=stopped,
                       seconds=time.perf_counter() - t0, calibration=cal)
