"""Feature-space losses for domain adaptation: Deep CORAL, MLUDA margins, centre loss.

Conventions (ALGORITHMS.md § 4)
-------------------------------
- Features ``h`` are float tensors of shape (B, d) (the shared bottleneck layer); class centres
  are (K, d) in the same units; labels ``y`` are int64 tensors (B,) with known classes 0..K−1.
- All distances are **squared Euclidean** ``‖a − b‖²`` (no square root, so gradients stay finite
  at coincident points); margins ``m1``, ``m2``, ``m3`` are given as distances and squared here.
- Every loss is a **mean** over the batch (or over the centre pairs), never a sum, so its scale
  does not depend on the batch size. (MLUDA writes sums; a mean is the sum divided by B, which
  only rescales λ1.)
- Every loss returns a 0-d tensor differentiable w.r.t. the features (and the centres, where
  they require grad). An empty batch gives a zero that still carries the graph.
- :func:`update_centres` is the non-gradient MLUDA centre update (eq. 3–4). Because such centres
  give the encoder no gradient through :func:`centre_separation_loss`, pass it batch class
  means (:func:`batch_class_means`) or learnable centres instead.

No Qt or napari imports.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ParameterError

__all__ = [
    "batch_class_means",
    "centre_loss",
    "centre_pull_loss",
    "centre_separation_loss",
    "coral_loss",
    "entropy_loss",
    "unknown_margin_loss",
    "update_centres",
]


# ----------------------------------------------------------------------------- validation
def _features(h: Any, name: str) -> torch.Tensor:
    if not isinstance(h, torch.Tensor):
        raise ParameterError(f"{name}: expected a torch tensor, got {type(h).__name__}")
    if h.ndim != 2:
        raise ParameterError(f"{name}: expected shape (B, d), got {tuple(h.shape)}")
    if not h.is_floating_point():
        raise ParameterError(f"{name}: expected a floating-point tensor, got {h.dtype}")
    return h


def _centres(centres: Any, d: int | None, name: str = "centres") -> torch.Tensor:
    c = _features(centres, name)
    if d is not None and c.shape[1] != d:
        raise ParameterError(f"{name}: feature dimension {c.shape[1]} does not match features ({d})")
    return c


def _labels(y: Any, n: int, device: torch.device) -> torch.Tensor:
    y = torch.as_tensor(y, device=device)
    if y.ndim != 1 or y.shape[0] != n:
        raise ParameterError(f"y: expected {n} labels of shape ({n},), got {tuple(y.shape)}")
    if y.numel() and (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool):
        raise ParameterError(f"y: expected integer class labels, got {y.dtype}")
    return y.long()


def _margin(m: float, name: str) -> float:
    m = float(m)
    if not m >= 0.0 or m == float("inf"):
        raise ParameterError(f"{name}: expected a finite margin >= 0, got {m}")
    return m


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A 0-d zero connected to the graph of ``tensors`` (so ``.backward()`` works)."""
    zero = tensors[0].new_zeros(())
    for t in tensors:
        zero = zero + t.sum() * 0.0
    return zero


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (N, M) between rows of ``a`` (N, d) and ``b`` (M, d)."""
    diff = a[:, None, :] - b[None, :, :]
    return (diff * diff).sum(dim=-1)


# ----------------------------------------------------------------------------- losses
def coral_loss(hs: torch.Tensor, ht: torch.Tensor) -> torch.Tensor:
    """Deep CORAL: ``‖Cov(hs) − Cov(ht)‖²_F / (4 d²)``.

    Parameters
    ----------
    hs, ht : torch.Tensor, shape (Bs, d) and (Bt, d)
        Source and target features; at least 2 rows each. Covariances are unbiased (n − 1).

    Returns
    -------
    torch.Tensor, 0-d
        Zero for equal covariances; invariant to shifts of either mean.
    """
    hs = _features(hs, "hs")
    ht = _features(ht, "ht")
    if hs.shape[1] != ht.shape[1]:
        raise ParameterError(f"ht: feature dimension {ht.shape[1]} does not match hs ({hs.shape[1]})")
    for name, h in (("hs", hs), ("ht", ht)):
        if h.shape[0] < 2:
            raise ParameterError(f"{name}: CORAL needs at least 2 samples, got {h.shape[0]}")
    d = hs.shape[1]

    def cov(h: torch.Tensor) -> torch.Tensor:
        centred = h - h.mean(dim=0, keepdim=True)
        return centred.T @ centred / (h.shape[0] - 1)

    diff = cov(hs) - cov(ht)
    return (diff * diff).sum() / (4.0 * d * d)


def centre_pull_loss(h: torch.Tensor, y: Any, centres: torch.Tensor, m1: float) -> torch.Tensor:
    """MLUDA intra-class term: ``mean_i max(0, ‖h_i − c_{y_i}‖² − m1²)``.

    Parameters
    ----------
    h : torch.Tensor, shape (B, d)
        Features of *known* source samples.
    y : int tensor or array-like, shape (B,)
        Labels in 0..K−1 (others raise :class:`ParameterError`; mask unknowns out first).
    centres : torch.Tensor, shape (K, d)
    m1 : float
        Radius (feature units) inside which a sample costs nothing.
    """
    h = _features(h, "h")
    c = _centres(centres, h.shape[1])
    y = _labels(y, h.shape[0], h.device)
    m1 = _margin(m1, "m1")
    if h.shape[0] == 0:
        return _zero(h, c)
    if int(y.min()) < 0 or int(y.max()) >= c.shape[0]:
        raise ParameterError(f"y: labels must lie in 0..{c.shape[0] - 1}")
    d2 = ((h - c[y]) ** 2).sum(dim=1)
    return F.relu(d2 - m1 * m1).mean()


def centre_separation_loss(centres: torch.Tensor, m2: float) -> torch.Tensor:
    """MLUDA inter-centre term: ``mean_{i<j} max(0, m2² − ‖c_i − c_j‖²)``.

    Parameters
    ----------
    centres : torch.Tensor, shape (K, d)
        Batch class means or learnable centres (gradients flow into them). K ≤ 1 gives 0.
    m2 : float
        Minimum distance between centres (feature units).
    """
    c = _centres(centres, None)
    m2 = _margin(m2, "m2")
    k = c.shape[0]
    if k < 2:
        return _zero(c)
    i, j = torch.triu_indices(k, k, offset=1, device=c.device)
    d2 = ((c[i] - c[j]) ** 2).sum(dim=1)
    return F.relu(m2 * m2 - d2).mean()


def unknown_margin_loss(h_unknown: torch.Tensor, centres: torch.Tensor, m3: float) -> torch.Tensor:
    """MLUDA unknown term: ``mean_i max(0, m3² − min_j ‖h_i − c_j‖²)``.

    Parameters
    ----------
    h_unknown : torch.Tensor, shape (B, d)
        Features of source *unknown* samples (decoys); B = 0 gives 0.
    centres : torch.Tensor, shape (K, d)
        Known-class centres.
    m3 : float
        Distance (feature units) every unknown should keep from every known centre.
    """
    h = _features(h_unknown, "h_unknown")
    c = _centres(centres, h.shape[1])
    m3 = _margin(m3, "m3")
    if h.shape[0] == 0 or c.shape[0] == 0:
        return _zero(h, c)
    nearest = _sq_dist(h, c).min(dim=1).values
    return F.relu(m3 * m3 - nearest).mean()


def centre_loss(h: torch.Tensor, y: Any, centres: torch.Tensor) -> torch.Tensor:
    """Plain centre loss (Wen et al. 2016): ``0.5 · mean_i ‖h_i − c_{y_i}‖²``.

    Parameters
    ----------
    h : torch.Tensor, shape (B, d)
    y : int tensor or array-like, shape (B,), labels in 0..K−1
    centres : torch.Tensor, shape (K, d)
    """
    return 0.5 * centre_pull_loss(h, y, centres, 0.0)


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax of ``logits`` (B, K); B = 0 gives 0."""
    z = _features(logits, "logits")
    if z.shape[0] == 0 or z.shape[1] == 0:
        return _zero(z)
    logp = F.log_softmax(z, dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


# ----------------------------------------------------------------------------- centres
def batch_class_means(
    h: torch.Tensor, y: Any, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean of the batch features (differentiable w.r.t. ``h``).

    Parameters
    ----------
    h : torch.Tensor, shape (B, d)
    y : int tensor or array-like, shape (B,)
        Labels; values outside 0..K−1 (e.g. unknown = −1 or K) are ignored.
    num_classes : int
        K.

    Returns
    -------
    means : torch.Tensor, shape (K, d)
        Class means; zero rows for classes absent from the batch.
    present : torch.Tensor of bool, shape (K,)
        Which classes occur in the batch (select ``means[present]`` for the separation term).
    """
    h = _features(h, "h")
    y = _labels(y, h.shape[0], h.device)
    k = int(num_classes)
    if k < 1:
        raise ParameterError(f"num_classes: expected at least 1, got {num_classes}")
    valid = (y >= 0) & (y < k)
    onehot = F.one_hot(torch.where(valid, y, torch.zeros_like(y)), k).to(h.dtype)
    onehot = onehot * valid[:, None].to(h.dtype)
    counts = onehot.sum(dim=0)
    means = (onehot.T @ h) / counts.clamp(min=1.0)[:, None]
    return means, counts > 0


@torch.no_grad()
def update_centres(centres: torch.Tensor, h: torch.Tensor, y: Any, gamma: float) -> torch.Tensor:
    """MLUDA centre update (eq. 3–4), in place and without gradient.

    ``Δc_j = Σ_i δ(y_i = j)(c_j − h_i) / (1 + Σ_i δ(y_i = j))``, ``c_j ← c_j − γ Δc_j``.
    Classes absent from the batch do not move.

    Parameters
    ----------
    centres : torch.Tensor, shape (K, d)
        Updated in place.
    h : torch.Tensor, shape (B, d)
        Features (detached internally).
    y : int tensor or array-like, shape (B,)
        Labels; values outside 0..K−1 (e.g. unknown = −1 or K) are ignored.
    gamma : float
        Step size γ in [0, 1].

    Returns
    -------
    torch.Tensor
        ``centres`` (the same object).
    """
    c = _centres(centres, None)
    h = _features(h, "h")
    if h.shape[1] != c.shape[1]:
        raise ParameterError(f"h: feature dimension {h.shape[1]} does not match centres ({c.shape[1]})")
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ParameterError(f"gamma: expected a value in [0, 1], got {gamma}")
    y = _labels(y, h.shape[0], c.device)
    valid = (y >= 0) & (y < c.shape[0])
    y, hv = y[valid], h.detach()[valid].to(device=c.device, dtype=c.dtype)
    counts = torch.zeros(c.shape[0], dtype=c.dtype, device=c.device).index_add_(
        0, y, torch.ones_like(y, dtype=c.dtype)
    )
    sums = torch.zeros_like(c).index_add_(0, y, hv)
    delta = (counts[:, None] * c - sums) / (1.0 + counts[:, None])
    c.sub_(gamma * delta)
    return c
