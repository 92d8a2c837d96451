"""pytorch-adapt peer rows for ``bench_adaptation.py``: the library's ADDA and CORAL on our backbone.

Benchmark-only and optional (``bash benchmarks/install_peer.sh``); never a dependency of the
package. Both rows start from a copy of the source ``bundle.model`` (``fast`` encoder = the
library's generator ``G``, dropout + linear head = its classifier ``C``) and use no target labels.

From pytorch-adapt 0.0.83 (its algorithms, run as the library runs them):

- **ADDA**: ``adapters.ADDA`` (wrapping ``hooks.ADDAHook``) with ``models.Discriminator``
  (3-layer MLP, hidden 500 as in our 3D-ADA). Its schedule: one D step per round on the frozen
  source encoder G (eval mode, no grad) vs. the target encoder T (a deep copy of G made by the
  adapter); one T step with inverted labels, taken only when D's accuracy on that round's
  batches (after its step) exceeds 0.6 (``StrongDHook``, the library's default); C frozen.
  Predictions: the library's ``adda_fn`` (T then C).
- **CORAL**: ``adapters.Aligner`` (wrapping ``hooks.AlignerPlusCHook``) with
  ``layers.CORALLoss`` and the hook's defaults: the loss aligns the features *and* the softmax
  outputs of the source and target batches; the total is the mean of those two terms and the
  source cross-entropy (``MeanWeighter``); G and C are both trained.

Ours: the data (seeded source/target batch samplers, batch 32, the wedge-preserving
augmentation ``augment_batch(x, gen, False, 1)`` and ``prepare_batch`` as in our methods),
the optimisers (Adam, the learning rates of our methods: ADDA 1e-5 with betas (0.5, 0.999) as
our 3D-ADA, CORAL 1e-4 as our MLUDA/Deep CORAL), the round count (given by the caller), and the
final arg-max over the head's softmax.

BatchNorm: exactly the library's algorithm, **without our AdaBN** (no exact target-statistics
pass). ADDA's T is trained in train mode on target batches only, so its running statistics end
as the EMA (momentum 0.1) of target-batch statistics; G keeps the source ones. CORAL's G sees
source and target batches in separate forward passes in train mode, so its running statistics
end as an EMA over both domains. Predictions use those running statistics (eval mode).
"""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import numpy as np
import torch

from napari_cryo_openset.adapt.loop import check_target
from napari_cryo_openset.adapt.source import BatchSampler
from napari_cryo_openset.models import prepare_batch
from napari_cryo_openset.train import augment_batch

INSTALL = "bash benchmarks/install_peer.sh"


def _library():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics 0.9 imports the deprecated pkg_resources
            from pytorch_adapt import adapters, containers, layers, models
    except ImportError as e:
        raise ImportError(f"pytorch-adapt is not installed ({e}); run `{INSTALL}`") from e
    return adapters, containers, layers, models


def available() -> bool:
    try:
        _library()
    except ImportError:
        return False
    return True


def peer_adda(bundle, source, target_boxes, iterations: int, seed: int, batch_size: int = 32,
              learning_rate: float = 1e-5):
    """pytorch-adapt's ADDA on a copy of ``bundle.model``; predictions on ``target_boxes``."""
    adapters, containers, _, models = _library()
    torch.manual_seed(seed)
    model = copy.deepcopy(bundle.model)
    nets = containers.Models({"G": model.encoder, "C": _head(model),
                              "D": models.Discriminator(model.encoder.out_dim, h=500)})
    opts = containers.Optimizers((torch.optim.Adam, {"lr": learning_rate, "betas": (0.5, 0.999)}), keys=["T", "D"])
    adapter = adapters.ADDA(models=nets, optimizers=opts)
    return _run(adapter, bundle, source, target_boxes, iterations, seed, batch_size, labels=False)


def peer_coral(bundle, source, target_boxes, iterations: int, seed: int, batch_size: int = 32,
               learning_rate: float = 1e-4):
    """pytorch-adapt's CORAL aligner (+ source CE) on a copy of ``bundle.model``."""
    adapters, containers, layers, _ = _library()
    torch.manual_seed(seed)
    model = copy.deepcopy(bundle.model)
    nets = containers.Models({"G": model.encoder, "C": _head(model)})
    opts = containers.Optimizers((torch.optim.Adam, {"lr": learning_rate}), keys=["G", "C"])
    adapter = adapters.Aligner(models=nets, optimizers=opts, hook_kwargs={"loss_fn": layers.CORALLoss()})
    return _run(adapter, bundle, source, target_boxes, iterations, seed, batch_size, labels=True)


def _head(model) -> torch.nn.Module:
    return torch.nn.Sequential(model.dropout, model.head)  # Classifier3D.classify


def _run(adapter, bundle, source, target, iterations, seed, batch_size, labels):
    device = torch.device("cpu")
    target = target if target.ndim == 5 else target[:, None]
    batch = check_target(len(target), batch_size)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    sampler_s = BatchSampler(source.train_idx, batch, rng)
    sampler_t = BatchSampler(np.arange(len(target)), batch, rng)

    def batch_of(x, idx):
        return prepare_batch(augment_batch(x[torch.from_numpy(idx)], gen, False, 1), device)

    adapter.models.train()
    for _ in range(iterations):
        idx = sampler_s()
        data = {"src_imgs": batch_of(source.x, idx), "target_imgs": batch_of(target, sampler_t())}
        data["src_domain"] = torch.zeros(len(data["src_imgs"]))
        data["target_domain"] = torch.ones(len(data["target_imgs"]))
        if labels:
            data["src_labels"] = source.y[torch.from_numpy(idx)]
        adapter.training_step(data)
    adapter.models.eval()
    with torch.no_grad():
        logits = torch.cat([adapter.inference(prepare_batch(target[s:s + 256], device), domain=torch.ones(1))["logits"]
                            for s in range(0, len(target), 256)])
    prob = torch.softmax(logits.float(), dim=1).numpy()
    names = np.asarray(bundle.class_names, dtype=object)
    return SimpleNamespace(class_name=names[prob.argmax(1)], probabilities=prob)
