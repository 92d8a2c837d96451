"""Shared machinery of the papers' protocol benchmarks (bench_adaptation.py, bench_openset.py).

Honest protocol: fixed seeds; the class map is the sorted known names (+ ``empty``,
``unknown``); source models are chosen on a held-out *source* split; thresholds are calibrated
on source validation data; target labels are used only to score. Every number is reported as
mean ± sd over seeds.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
RESULTS = REPO / "benchmarks" / "results"

import torch  # noqa: E402

from napari_cryo_openset.adapt import AdaptParams, adapt_boxes, load_source  # noqa: E402
from napari_cryo_openset.checkpoint import bundle_from_training  # noqa: E402
from napari_cryo_openset.predict import classify_boxes  # noqa: E402
from napari_cryo_openset.progress import run_to_completion  # noqa: E402
from napari_cryo_openset.simulate import (  # noqa: E402
    DatasetParams,
    ImagingCondition,
    generate_subtomograms,
    load_templates,
)
from napari_cryo_openset.train import TrainParams, source_boxes, train_source  # noqa: E402

BATCH_B = {"defocus": 10.0, "cs": 2.2}  # 3D-ADA source condition
BATCH_A = {"defocus": 5.0, "cs": 2.0}  # 3D-ADA target condition


def shared_templates(voxel_size: float = 10.0):
    root = Path(os.environ.get("CRYO_OPENSET_SHARED", REPO.parent / "shared")) / "data" / "templates_10A"
    if not root.is_dir():
        print(f"skipped: {root} not found (the shared data folder is needed)")
        sys.exit(0)
    return load_templates(root, voxel_size)


def simulate(templates, condition: dict, snr: float, per_class: int, seed: int, box: int = 32,
             decoys: int = 0, empty: int | None = None):
    cond = ImagingCondition(voxel_size=10.0, snr=snr, **condition)
    params = DatasetParams(box=box, per_class=per_class, decoys=decoys,
                           empty=per_class if empty is None else empty, condition=cond, seed=seed)
    return run_to_completion(generate_subtomograms(templates, params))


def train(data, seed: int, epochs: int, threads: int):
    result = run_to_completion(train_source(data, TrainParams(epochs=epochs, seed=seed, threads=threads,
                                                               device="cpu")))
    return bundle_from_training(result), result


def boxes_of(data) -> torch.Tensor:
    return source_boxes(data.subtomograms, data.polarity)[:, 0]


def adapt(bundle, source, target_boxes, threads: int, **kwargs):
    params = AdaptParams(device="cpu", threads=threads, **kwargs)
    t0 = time.perf_counter()
    result = run_to_completion(adapt_boxes(bundle, source, target_boxes, params))
    return result, time.perf_counter() - t0


def predict(bundle, boxes):
    return classify_boxes(bundle, boxes, "cpu")


def mean_sd(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(values) -> str:
    m, s = mean_sd(values)
    return "–" if not np.isfinite(m) else f"{m:.3f} ± {s:.3f}"


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def save(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float))
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


__all__ = ["BATCH_A", "BATCH_B", "adapt", "boxes_of", "fmt", "load_source", "machine", "mean_sd", "predict",
           "save", "shared_templates", "simulate", "train"]
