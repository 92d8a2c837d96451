"""Where the networks run: device choice (cuda → mps → cpu, overridable), CPU threads, AMP.

One place for the decision, used by training, adaptation, prediction, the CLI and the widgets.
torch is imported by the functions that need it: :func:`cpu_count` also serves the picker,
which runs without torch.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from .errors import ParameterError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """The device names this machine can run (``auto`` first)."""
    import torch

    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names.append("cuda")
    if _mps_available():
        names.append("mps")
    return names


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def choose_device(requested: str | torch.device | None = "auto") -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` to a :class:`torch.device`.

    ``auto`` picks CUDA if present, then Apple MPS, then the CPU. Asking for a device the
    machine lacks raises :class:`ParameterError` naming it.
    """
    import torch

    if isinstance(requested, torch.device):
        requested = str(requested)
    name = (requested or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise ParameterError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {requested!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device 'cuda' was requested but no CUDA GPU is available (use --device auto or cpu)")
    if kind == "mps" and not _mps_available():
        raise ParameterError("device 'mps' was requested but Apple MPS is not available (use --device auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ParameterError(f"device {requested!r} is not valid: {exc}") from None


def cpu_count() -> int:
    """CPUs this process may use (respects affinity / container limits where visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: the usable CPUs, at most 16); return the number."""
    import torch

    n = cpu_count() if threads is None else int(threads)
    if n < 1:
        raise ParameterError(f"threads must be ≥ 1, got {threads!r}")
    n = min(n, 16) if threads is None else n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (bfloat16 if supported, else float16); a no-op elsewhere."""
    import torch

    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    """A short human description, e.g. ``cuda (NVIDIA H100 80GB HBM3)`` or ``cpu (2 threads)``."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
