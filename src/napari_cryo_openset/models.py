"""3D CNNs for subtomogram classification: encoders, classifier head, domain discriminator.

Input: float32 boxes ``(N, 1, B, B, B)`` (Z, Y, X), canonical polarity (protein positive),
per-box zero mean and unit variance (:func:`napari_cryo_openset.extract.normalise_subtomograms`).

Two encoders, chosen by name (:data:`ARCHITECTURES`):

``fast`` (default)
    Designed for 24³–40³ boxes and CPU speed: a strided 3×3×3 stem halves the box at once,
    two more stride-2 stages, BatchNorm (or GroupNorm) + ReLU after every convolution,
    global average pooling and a linear embedding of configurable size (optionally
    L2-normalised and scaled, for the metric losses of MLUDA). About 30 M multiply-adds per
    32³ box, ~20× less than the reference. Channels-last 3D memory layout.

``ada-reference``
    The 3D-ADA encoder (Lin et al. 2019, Fig. 2) as the public code builds it: valid
    convolutions ``1→8 k5 · 8→16 k5 + pool · 16→32 k4 · 32→64 k4 + pool · 64→128 k3 ·
    128→128 k3 + pool · 128→128 k1 ×2 + pool · FC →500 + ReLU + dropout 0.5``, ReLU after every
    convolution, 2×2×2 max-pooling with ceil mode. Valid convolutions need boxes ≥ 37³:
    **smaller boxes are zero-padded symmetrically to 37³** inside :meth:`ReferenceEncoder.forward`
    (zero = the box mean after normalisation, so padding adds no signal); larger boxes are
    used as they are (the FC layer is sized for the box at construction).

Both encoders return an embedding ``(N, embedding_dim)``; :class:`Classifier3D` adds a linear
head (K known classes, or K + 1 with an ``unknown`` output when the training set has decoys).
:class:`DomainDiscriminator` is the 3D-ADA discriminator (embedding → hidden → hidden → 1
logit, LeakyReLU; one logit with a sigmoid is the paper's 2-way softmax).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F

from .device import autocast
from .errors import ParameterError, known_fields

DEFAULT_ARCHITECTURE = "fast"
REFERENCE_ARCHITECTURE = "ada-reference"
ARCHITECTURES = (DEFAULT_ARCHITECTURE, REFERENCE_ARCHITECTURE)
REFERENCE_MIN_BOX = 37
#: Checked ranges (inclusive) of the sizes that decide how big a network is. A model bundle is
#: checked against them before any layer is built: an edited ``width`` of 2048 would allocate
#: gigabytes. The reference encoder's FC layer grows with the box cubed, hence its own limit.
NETWORK_LIMITS = {"box": (8, 256), "num_classes": (2, 1000), "embedding_dim": (2, 4096), "width": (2, 128)}
REFERENCE_MAX_BOX = 128


@dataclass(frozen=True)
class NetworkParams:
    """Architecture hyper-parameters (stored in model bundles).

    Attributes
    ----------
    architecture
        ``fast`` or ``ada-reference``.
    box
        Input box edge (voxels).
    num_classes
        Outputs of the classifier head.
    embedding_dim
        Feature (embedding) size; the reference encoder's is 500 (its FC layer).
    width
        Channels of the first stage of the fast encoder (doubled at each stride-2 stage).
    norm
        ``batch`` or ``group`` normalisation in the fast encoder.
    l2_normalize
        Fast encoder: project embeddings on a sphere of radius ``embedding_scale``.
    embedding_scale
        Radius of that sphere.
    dropout
        Dropout before the classifier head (reference: 0.5 inside the encoder).
    """

    architecture: str = DEFAULT_ARCHITECTURE
    box: int = 32
    num_classes: int = 2
    embedding_dim: int = 64
    width: int = 16
    norm: str = "batch"
    l2_normalize: bool = False
    embedding_scale: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if int(self.num_classes) < 2:
            raise ParameterError(f"a classifier needs at least 2 classes, got {self.num_classes}")
        check_network_sizes(self.to_dict())
        if self.norm not in ("batch", "group"):
            raise ParameterError(f"norm must be 'batch' or 'group', got {self.norm!r}")
        if int(self.embedding_dim) < 2 or int(self.width) < 2:
            raise ParameterError("embedding_dim and width must be at least 2")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ParameterError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.architecture == REFERENCE_ARCHITECTURE and int(self.embedding_dim) != 500:
            object.__setattr__(self, "embedding_dim", 500)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkParams:
        return cls(**known_fields(cls, data))


def check_network_sizes(values: dict) -> None:
    """Refuse architecture values outside :data:`NETWORK_LIMITS` (ParameterError naming the field).

    Runs on plain values (a bundle's stored dict, too) before anything is built.
    """
    arch = values.get("architecture", DEFAULT_ARCHITECTURE)
    if arch not in ARCHITECTURES:
        raise ParameterError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    for name, (lo, hi) in NETWORK_LIMITS.items():
        if name not in values:
            continue
        if name == "box" and arch == REFERENCE_ARCHITECTURE:
            hi = REFERENCE_MAX_BOX
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) and not (
                isinstance(value, float) and value.is_integer()):
            raise ParameterError(f"{name} must be a whole number in {lo}–{hi}, got {value!r}")
        if not lo <= int(value) <= hi:
            raise ParameterError(f"{name} must be in {lo}–{hi}, got {int(value)}")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(8, channels // 2), channels)
    return nn.BatchNorm3d(channels)


def _conv(cin: int, cout: int, stride: int, norm: str) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True)]


class FastEncoder(nn.Module):
    """The default encoder (see the module docstring). Output ``(N, embedding_dim)``."""

    def __init__(self, params: NetworkParams) -> None:
        super().__init__()
        w, norm = int(params.width), params.norm
        self.features = nn.Sequential(
            *_conv(1, w, 2, norm),            # B/2
            *_conv(w, 2 * w, 2, norm),        # B/4
            *_conv(2 * w, 2 * w, 1, norm),
            *_conv(2 * w, 4 * w, 2, norm),    # B/8
            *_conv(4 * w, 4 * w, 1, norm),
        )
        self.embed = nn.Linear(4 * w, int(params.embedding_dim))
        self.l2_normalize = bool(params.l2_normalize)
        self.scale = float(params.embedding_scale)
        self.out_dim = int(params.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = h.mean(dim=(2, 3, 4))
        h = self.embed(h)
        if self.l2_normalize:
            h = self.scale * F.normalize(h, dim=1)
        return h


class ReferenceEncoder(nn.Module):
    """The 3D-ADA reference encoder (valid convolutions; boxes < 37³ are zero-padded to 37³)."""

    def __init__(self, params: NetworkParams) -> None:
        super().__init__()
        self.input_box = max(int(params.box), REFERENCE_MIN_BOX)
        pool = lambda: nn.MaxPool3d(2, ceil_mode=True)  # noqa: E731
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 5), relu(),
            nn.Conv3d(8, 16, 5), relu(), pool(),
            nn.Conv3d(16, 32, 4), relu(),
            nn.Conv3d(32, 64, 4), relu(), pool(),
            nn.Conv3d(64, 128, 3), relu(),
            nn.Conv3d(128, 128, 3), relu(), pool(),
            nn.Conv3d(128, 128, 1), relu(),
            nn.Conv3d(128, 128, 1), relu(), pool(),
        )
        side = self.input_box
        for k, pooled in ((5, False), (5, True), (4, False), (4, True), (3, False), (3, True), (1, False), (1, True)):
            side = side - k + 1
            if pooled:
                side = math.ceil(side / 2)
        self.flat = 128 * side**3
        self.fc = nn.Sequential(nn.Linear(self.flat, 500), nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.out_dim = 500

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[-1]
        if b < self.input_box:
            lo = (self.input_box - b) // 2
            hi = self.input_box - b - lo
            x = F.pad(x, (lo, hi, lo, hi, lo, hi))
        h = self.features(x)
        return self.fc(h.flatten(1))


def build_encoder(params: NetworkParams) -> nn.Module:
    return ReferenceEncoder(params) if params.architecture == REFERENCE_ARCHITECTURE else FastEncoder(params)


class Classifier3D(nn.Module):
    """Encoder + dropout + linear head. ``forward`` → logits; ``embed`` → features."""

    def __init__(self, params: NetworkParams, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.params = params
        self.encoder = encoder if encoder is not None else build_encoder(params)
        self.dropout = nn.Dropout(float(params.dropout)) if params.dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.encoder.out_dim, int(params.num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))

    def with_encoder(self, encoder: nn.Module) -> Classifier3D:
        """A new model sharing this head, with another encoder (3D-ADA's target encoder)."""
        model = Classifier3D(self.params, encoder)
        model.head = self.head
        model.dropout = self.dropout
        return model


class DomainDiscriminator(nn.Module):
    """Embedding → hidden → hidden → 1 logit (LeakyReLU), the 3D-ADA discriminator."""

    def __init__(self, in_dim: int, hidden: int = 500) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(1)


def build_model(params: NetworkParams) -> Classifier3D:
    """A fresh :class:`Classifier3D` for ``params`` (weights from torch's current RNG)."""
    return Classifier3D(params)


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to ``device`` in channels-last 3D layout.

    Channels-last is faster on GPU and on CPU alike, for inference and training
    (the layout ``benchmarks/bench_throughput.py`` times).
    """
    return model.to(device).to(memory_format=torch.channels_last_3d)


def prepare_batch(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A float32 batch ``(N, 1, B, B, B)`` on ``device``, channels-last 3D."""
    x = x.to(device, dtype=torch.float32, non_blocking=True)
    if x.ndim == 4:
        x = x[:, None]
    return x.contiguous(memory_format=torch.channels_last_3d)


@torch.no_grad()
def forward_batches(module: nn.Module, boxes: torch.Tensor, device: torch.device, forward=None,
                    batch_size: int = 256, amp: bool = False) -> list[torch.Tensor]:
    """Run ``forward(module, batch)`` (default ``module(batch)``) over ``boxes`` in eval mode.

    Boxes are ``(N, 1, B, B, B)`` or ``(N, B, B, B)``; the module's train/eval mode is restored
    afterwards; AMP (CUDA only, :func:`~napari_cryo_openset.device.autocast`) when ``amp``.
    ``forward`` returns one tensor or a tuple of tensors per batch; the result is one float32
    CPU tensor per output, concatenated over batches (an empty list when there are no boxes).
    """
    was = module.training
    module.eval()
    chunks: list[tuple[torch.Tensor, ...]] = []
    try:
        for s in range(0, len(boxes), batch_size):
            xb = prepare_batch(boxes[s:s + batch_size], device)
            with autocast(device, amp):
                out = forward(module, xb) if forward is not None else module(xb)
            out = out if isinstance(out, tuple) else (out,)
            chunks.append(tuple(o.float().cpu() for o in out))
    finally:
        module.train(was)
    return [torch.cat(parts) for parts in zip(*chunks)]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
