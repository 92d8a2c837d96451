"""Model bundles (``.pt``): save and load a trained or adapted classifier safely.

A bundle is one ``torch.save`` file holding **only tensors and plain Python types**
(dict/list/str/int/float/bool/None) and is read with ``torch.load(weights_only=True)``, so
opening a model file can never run code (a pickled object is refused). Contents
(ARCHITECTURE.md § 4.3)::

    format                "napari-cryo-openset model"
    format_version        1
    class_names           [str]   the network's outputs, in order (sorted known, empty, unknown)
    box_size              int     voxels
    voxel_size            float   Å
    normalisation         {"polarity": "bright", "method": "per-box zero mean, unit variance"}
    architecture          {"name": str, "params": {...}}  (NetworkParams)
    state_dicts           {"encoder", "classifier"[, "source_encoder", "discriminator"]}
    openset               {"method", "score", "threshold", "rule", "centres" (tensor) …}
    provenance            {"simulation", "training", "adaptation", "target_tomogram", "seed",
                           "package_version", "torch_version", "date"}
    history               [ {epoch metrics} ]

Box and voxel size are checked against the data by :func:`check_compatible`: a different
tomogram voxel size is served by resampling the boxes at extraction (``target_voxel_size``),
so only a box-size mismatch in already-extracted data is an error.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CryoOpensetError, OutputError, ParameterError
from .io import atomic_path
from .models import (
    Classifier3D,
    DomainDiscriminator,
    NetworkParams,
    build_encoder,
    build_model,
    check_network_sizes,
)

FORMAT = "napari-cryo-openset model"
FORMAT_VERSION = 1
NORMALISATION = {"polarity": "bright", "method": "per-box zero mean, unit variance"}


class BundleError(CryoOpensetError):
    """A model bundle cannot be read or does not fit the data."""


@dataclass
class ModelBundle:
    """A classifier with everything needed to use it on a tomogram."""

    model: Classifier3D
    class_names: list[str]
    box_size: int
    voxel_size: float
    openset: dict = field(default_factory=lambda: {"method": "softmax", "score": "1 - max softmax",
                                                   "threshold": None})
    provenance: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    source_encoder: torch.nn.Module | None = None
    discriminator: DomainDiscriminator | None = None
    normalisation: dict = field(default_factory=lambda: dict(NORMALISATION))

    @property
    def network(self) -> NetworkParams:
        return self.model.params

    @property
    def known_classes(self) -> list[str]:
        from .picks import UNKNOWN_CLASS

        return [c for c in self.class_names if c != UNKNOWN_CLASS]

    def describe(self) -> str:
        thr = self.openset.get("threshold")
        thr_s = "none" if thr is None else f"{thr:.3g}"
        return (f"{self.network.architecture} network, {len(self.class_names)} outputs "
                f"({', '.join(self.class_names)}), box {self.box_size}³ at {self.voxel_size:g} Å, "
                f"open-set {self.openset.get('method', 'softmax')} (threshold {thr_s})")


def bundle_from_training(result, **provenance) -> ModelBundle:
    """A bundle from a :class:`~napari_cryo_openset.train.TrainResult`."""
    return ModelBundle(
        model=result.model, class_names=list(result.class_names), box_size=int(result.box),
        voxel_size=float(result.voxel_size),
        provenance={"simulation": result.source, "training": {**result.params.to_dict(), "best_epoch": result.best_epoch,
                                                               "val_accuracy": result.val_accuracy,
                                                               "stopped": result.stopped, "device": result.device},
                    "seed": result.params.seed, **provenance},
        history=list(result.history),
    )


# --------------------------------------------------------------------------------------------
# plain-type conversion
# --------------------------------------------------------------------------------------------


def _plain(value, where: str):
    """Check/convert to tensors and plain types (numpy scalars/arrays become float/int/tensor)."""
    import numpy as np

    if value is None or type(value) is bool:
        return value
    if isinstance(value, str):
        return str(value)  # also str subclasses such as torch.__version__
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"model bundle field {where} holds a {type(value).__name__}; only tensors and plain types are allowed")


def _state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def to_dict(bundle: ModelBundle) -> dict:
    """The bundle as the plain dict written to disk."""
    from . import __version__

    states = {"encoder": _state(bundle.model.encoder), "classifier": _state(bundle.model.head)}
    if bundle.source_encoder is not None:
        states["source_encoder"] = _state(bundle.source_encoder)
    if bundle.discriminator is not None:
        states["discriminator"] = _state(bundle.discriminator)
    provenance = dict(bundle.provenance)
    provenance.setdefault("package_version", __version__)
    provenance.setdefault("torch_version", torch.__version__)
    provenance.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    out = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class_names": [str(c) for c in bundle.class_names],
        "box_size": int(bundle.box_size),
        "voxel_size": float(bundle.voxel_size),
        "normalisation": dict(bundle.normalisation),
        "architecture": {"name": bundle.network.architecture, "params": bundle.network.to_dict()},
        "state_dicts": states,
        "openset": dict(bundle.openset),
        "provenance": provenance,
        "history": list(bundle.history),
        "discriminator_hidden": (bundle.discriminator.net[0].out_features if bundle.discriminator is not None else None),
    }
    return _plain(out, "bundle")


def save_bundle(bundle: ModelBundle, path: str | os.PathLike) -> Path:
    """Write the bundle to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise BundleError(f"output '{path}': the folder '{path.parent}' does not exist")
    data = to_dict(bundle)
    with atomic_path(path) as tmp:
        try:
            torch.save(data, tmp)
        except RuntimeError as exc:  # torch's C++ writer: "[enforce fail at inline_container.cc…] …"
            raise OutputError(path, _write_failure(path, exc)) from None
    return path


def _write_failure(path: Path, exc: RuntimeError) -> str:
    """torch's C++ write error in words, with the space left on the output's disk."""
    import shutil

    text = str(exc)
    reason = "the disk is full or failed" if ("write" in text or "enforce fail" in text) else text.splitlines()[0][:160]
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return reason
    return f"{reason} ({free / 1024**2:,.1f} MB free there)"


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def read_bundle_dict(path: str | os.PathLike) -> dict:
    """The raw plain dict of a bundle file, read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"model file '{path}' does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        import re

        # torch words it "Unsupported global: GLOBAL mod.name" or "unsupported GLOBAL mod.name"
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:  # e.g. "Unsupported operand 8": not a pickle of plain values at all
            raise BundleError(f"model file '{path}' is not a napari-cryo-openset model bundle (unreadable as a "
                              "torch.save file of tensors and plain values); it was not loaded") from None
        what = found.group(1)
        raise BundleError(
            f"model file '{path}' was refused: it holds Python objects that could run code ({what}), not only "
            "tensors and plain values; it was not loaded"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, LookupError, TypeError,
            io.UnsupportedOperation) as exc:  # LookupError: e.g. a text file (IndexError in the unpickler)
        raise BundleError(f"model file '{path}' is not a napari-cryo-openset model bundle ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"model file '{path}' is not a napari-cryo-openset model bundle (no '{FORMAT}' marker)")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"model file '{path}' has no valid format_version")
    if version > FORMAT_VERSION:
        raise BundleError(f"model file '{path}' has format version {version}, newer than this version of "
                          f"napari-cryo-openset reads ({FORMAT_VERSION}); please update the plugin")
    if version < FORMAT_VERSION:
        raise BundleError(f"model file '{path}' has the old format version {version}; this version reads {FORMAT_VERSION}")
    return data


#: Checked range (inclusive) of the 3D-ADA discriminator's hidden layer.
DISCRIMINATOR_HIDDEN_LIMITS = (1, 4096)


def check_bundle_sizes(data: dict, path) -> None:
    """Refuse a bundle whose stored architecture sizes are out of range, before building anything.

    The message names the file and the field (an edited or damaged file must not make the
    loader allocate gigabytes).
    """
    arch = data.get("architecture")
    values = arch.get("params") if isinstance(arch, dict) else None
    if not isinstance(values, dict):
        raise BundleError(f"model file '{path}' is damaged or incomplete (no architecture parameters)")
    try:
        check_network_sizes(values)
    except ParameterError as exc:
        raise BundleError(f"model file '{path}': architecture field {exc}; the file was edited or is damaged, "
                          "it was not loaded") from None
    hidden = data.get("discriminator_hidden")
    lo, hi = DISCRIMINATOR_HIDDEN_LIMITS
    if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or not lo <= hidden <= hi):
        raise BundleError(f"model file '{path}': field discriminator_hidden must be a whole number in {lo}–{hi}, "
                          f"got {hidden!r}; the file was edited or is damaged, it was not loaded")


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Load a bundle (on the CPU, eval mode). Never unpickles code."""
    data = read_bundle_dict(path)
    check_bundle_sizes(data, path)
    try:
        params = NetworkParams.from_dict(data["architecture"]["params"])
        model = build_model(params)
        states = data["state_dicts"]
        model.encoder.load_state_dict(states["encoder"])
        model.head.load_state_dict(states["classifier"])
        source_encoder = None
        if "source_encoder" in states:
            source_encoder = build_encoder(params)
            source_encoder.load_state_dict(states["source_encoder"])
            source_encoder.eval()
        discriminator = None
        if "discriminator" in states:
            discriminator = DomainDiscriminator(model.encoder.out_dim, int(data.get("discriminator_hidden") or 500))
            discriminator.load_state_dict(states["discriminator"])
            discriminator.eval()
        class_names = [str(c) for c in data["class_names"]]
        if len(class_names) != model.head.out_features:
            raise ValueError(f"{len(class_names)} class names for {model.head.out_features} outputs")
        bundle = ModelBundle(
            model=model.eval(), class_names=class_names, box_size=int(data["box_size"]),
            voxel_size=float(data["voxel_size"]), openset=dict(data.get("openset") or {}),
            provenance=dict(data.get("provenance") or {}), history=list(data.get("history") or []),
            source_encoder=source_encoder, discriminator=discriminator,
            normalisation=dict(data.get("normalisation") or NORMALISATION),
        )
    except (KeyError, TypeError, ValueError, RuntimeError, ParameterError) as exc:
        raise BundleError(f"model file '{path}' is damaged or incomplete ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    return bundle


def check_compatible(bundle: ModelBundle, *, box: int | None = None, voxel_size=None, allow_resampling: bool = True,
                     source: str = "the data", tolerance: float = 0.02) -> bool:
    """Check data against a bundle; return True if boxes must be resampled to the model's voxel size.

    ``voxel_size`` (Å; one number or Z Y X) different from the model's by more than
    ``tolerance`` (relative) is served by resampling when ``allow_resampling`` (the documented
    automatic path of :func:`~napari_cryo_openset.extract.extract_subtomograms`), else refused.
    A box of already-extracted data must equal the model's.
    """
    if box is not None and int(box) != int(bundle.box_size):
        raise BundleError(f"{source} has {int(box)}³ boxes but the model expects {bundle.box_size}³")
    if voxel_size is None:
        return False
    sizes = [float(v) for v in (voxel_size if hasattr(voxel_size, "__len__") else [voxel_size])]
    if any(not math.isfinite(v) or v <= 0 for v in sizes):
        raise BundleError(f"{source} has no valid voxel size ({voxel_size!r})")
    off = max(abs(v - bundle.voxel_size) / bundle.voxel_size for v in sizes)
    if off <= tolerance:
        return False
    if not allow_resampling:
        shown = "/".join(f"{v:g}" for v in sizes)
        raise BundleError(f"{source} has {shown} Å voxels but the model was trained at {bundle.voxel_size:g} Å "
                          "(allow resampling, or train a model at this voxel size)")
    return True
