"""jobs.py: the widgets' background jobs run to completion without Qt and leave their inputs alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from napari_cryo_openset.jobs import PREVIEW_MAX_VOXELS, pick_job, predict_job
from napari_cryo_openset.progress import Progress, run_to_completion


def test_pick_job_picks_and_makes_the_band_pass_preview():
    from napari_cryo_openset.picking import PickingParams
    from napari_cryo_openset.synthetic import BlobTomogramParams, blob_tomogram

    params = BlobTomogramParams(shape=(32, 64, 64), n_particles=6, voxel_size=10.0, diameter=120.0)
    volume, truth = blob_tomogram(params)
    events = []
    result, response = run_to_completion(pick_job(volume, (10.0,) * 3, PickingParams(diameter=120.0), True),
                                         events.append)
    assert len(result.candidates) >= len(truth) and response.shape == volume.shape
    assert any(isinstance(e, Progress) and e.stage == "preview" for e in events)
    assert volume.size <= PREVIEW_MAX_VOXELS
    _, none = run_to_completion(pick_job(volume, (10.0,) * 3, PickingParams(diameter=120.0), False))
    assert none is None


def test_predict_job_does_not_reassign_the_given_bundle():
    from napari_cryo_openset.checkpoint import ModelBundle
    from napari_cryo_openset.models import NetworkParams, build_model
    from napari_cryo_openset.predict import PredictParams

    torch.manual_seed(0)
    classes = ["a", "b", "unknown"]
    model = build_model(NetworkParams(box=16, num_classes=3)).eval()
    bundle = ModelBundle(model=model, class_names=classes, box_size=16, voxel_size=10.0)
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((32, 48, 48)).astype(np.float32)
    picks = pd.DataFrame({"z": [16.0, 16.0], "y": [20.0, 28.0], "x": [20.0, 28.0]})
    result = run_to_completion(predict_job(bundle, volume, picks, PredictParams(device="cpu")))
    assert bundle.model is model  # the bundle another widget holds still has its own network object
    assert set(result.picks["class_name"]) <= set(classes) and len(result.picks) == 2
