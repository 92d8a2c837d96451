"""Many tomograms on Dask: the ``batch`` command's core (no Qt, no napari).

A *data set* is a folder of MRC tomograms, a RELION 5 ``tomograms.star`` or a copick project
config (:func:`discover`). Its tomograms are grouped by imaging condition (voxel size, and the
microscope when the STAR file says it); each group gets **one source model**, simulated and
trained once on the group's first readable tomogram with :func:`~napari_cryo_openset.pipeline.prepare_run`
(or built from a given model + source set, :func:`trained_from_model`), broadcast to every worker
(``Client.scatter(..., broadcast=True)``); then **one Dask task per tomogram** runs the ``run``
pipeline on it (:func:`~napari_cryo_openset.pipeline.run_pipeline` with that source model) and
writes the ``run`` contract into ``OUT/tomograms/<name>/`` atomically
(:func:`~napari_cryo_openset.io._atomic.atomic_dir`: a hidden folder swapped in at the end).

Joint adaptation (``joint=True``, ``batch --joint``)
    Per condition, after the source stage: a :func:`pick_task` per tomogram (its picks and condition,
    as its run would make them), one :func:`joint_adapt_task` adapting the source model to the pooled
    picks of all of them (capped at ``AdaptParams.max_target_picks``, a seeded subset; the tomograms
    opened memory-mapped in that task), the adapted model broadcast, then the per-tomogram tasks predict,
    verify, map and write with it (``finish_run(..., adapted=)``: no adaptation of their own; each
    ``report.json`` says ``adaptation.mode: joint`` with the group's tomograms and the pooled pick count).
    The model is saved as ``sources/<condition>/adapted_joint.pt`` (+ ``.json``) and reused by a rerun with
    the same :func:`joint_id` (parameters and tomograms); a tomogram that fails picking is recorded and
    left out of the pool.

Faults
    A tomogram whose input is bad (corrupt file, too few picks, …: a
    :class:`~napari_cryo_openset.errors.CryoOpensetError` or a file-system error) is recorded with
    its one-line error and the batch goes on. An unexpected exception is retried by Dask
    (``retries``) and then recorded; a task whose worker dies is rescheduled by the scheduler on
    another worker (``distributed.scheduler.allowed-failures``, set to ``retries``) — it never
    leaves half-written files, since its outputs appear only when complete.

Resumption
    :func:`is_complete` checks a tomogram's folder (``report.json`` readable, made with the same
    parameters, every output it lists present and non-empty); a rerun skips complete tomograms and
    redoes the rest. Hidden temporary folders left by killed workers are removed first.

Outputs of the batch (:func:`write_batch_outputs`): ``particles.star`` (RELION 5: every complete
tomogram's predictions, ``rlnTomoName``, centred Å), ``tomograms.star``, ``class_counts.csv``
(tomogram × class), ``sources/<condition>/`` (the shared source model ``model.pt``, its simulated set
``source.npz`` — a rerun reuses them, so resumed tomograms get the same source model) and
``batch_report.json`` (per tomogram: status, one-line error, seconds, class counts, worker and
its peak RSS; per condition: the source stage's time; the cluster and its dashboard link).

Clusters (:func:`make_client`): a ``distributed.LocalCluster`` by default (one single-threaded
worker process per core, each with its own torch threads), an existing scheduler by address, or
Slurm through ``dask-jobqueue`` (:func:`slurm_cluster`; :func:`slurm_job_script` renders the job
script without Slurm).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CryoOpensetError, ParameterError

REPORT = "batch_report.json"
TOMOGRAMS_DIR = "tomograms"
SOURCES_DIR = "sources"


# --------------------------------------------------------------------------------------------
# the data set
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchItem:
    """One tomogram of a data set.

    ``kind``: ``mrc`` (``path``) or ``copick`` (``copick`` = config path, run, voxel size, tomo
    type); ``voxel_size`` Å; ``shape`` (Z, Y, X) voxels when known; ``voltage`` kV / ``cs`` mm when
    the data set says; ``error``: why it cannot be read (recorded, not run); ``picks``: a picks
    file to classify instead of picking (:func:`attach_picks`).
    """

    name: str
    kind: str = "mrc"
    path: str | None = None
    copick: tuple | None = None  # (config path, run name, voxel size Å, tomo type)
    voxel_size: float | None = None
    shape: tuple[int, int, int] | None = None
    voltage: float | None = None
    cs: float | None = None
    amplitude_contrast: float | None = None
    tilt_series_pixel_size: float | None = None
    error: str | None = None
    picks: str | None = None  # a picks file (voxels of this tomogram) to classify instead of DoG picking

    @property
    def condition(self) -> str:
        """The imaging-condition key its source model is shared by: ``10A`` (+ ``_300kV_cs2.7``)."""
        if self.voxel_size is None:
            return "unreadable"
        key = f"{self.voxel_size:.4g}A"
        if self.voltage is not None:
            key += f"_{self.voltage:g}kV"
        if self.cs is not None:
            key += f"_cs{self.cs:g}"
        return key


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _check_names(items: Sequence[BatchItem], where: str) -> None:
    names = [i.name for i in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ParameterError(f"{where}: tomogram names must be unique (they name the output folders): "
                             f"{', '.join(dupes)} repeat")
    bad = [n for n in names if not _SAFE_NAME.match(n)]
    if bad:
        raise ParameterError(f"{where}: tomogram names must be plain file names (letters, digits, . _ + -): "
                             f"{', '.join(repr(b) for b in bad[:5])}")


def _mrc_item(path: Path, name: str | None = None, **known) -> BatchItem:
    """An MRC tomogram: its header read now (memory-mapped; a corrupt file is recorded, not raised)."""
    from .io import read_tomogram

    name = name or path.stem
    try:
        tomo = read_tomogram(path)
        vs = tuple(float(v) for v in tomo.voxel_size)
        shape = tomo.shape
        del tomo
    except (CryoOpensetError, OSError, ValueError) as exc:
        return BatchItem(name, "mrc", str(path), error=one_line(exc), **known)
    return BatchItem(name, "mrc", str(path), voxel_size=vs[0], shape=shape, **known)


def discover(dataset: str | os.PathLike, *, voxel_size: float | None = None, tomo_type: str | None = None,
             ) -> tuple[str, list[BatchItem]]:
    """The tomograms of a data set: ``(kind, items)`` with kind ``folder``, ``relion5`` or ``copick``.

    A folder: every ``.mrc``/``.rec`` in it (sorted; names = file stems). A ``.star``: a RELION 5
    ``tomograms.star`` (names = ``rlnTomoName``; a file it names that does not exist is refused
    with one message listing them). A ``.json``: a copick config (one tomogram per run: the
    ``tomo_type`` at ``voxel_size``, default the first at the smallest spacing).
    """
    from .io.relion5 import read_tomograms_star
    from .errors import PicksError

    src = Path(dataset)
    if not src.exists():
        raise ParameterError(f"DATASET '{src}' does not exist (expected a folder of MRCs, a tomograms.star or a "
                             "copick config .json)")
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in (".mrc", ".rec"))
        if not files:
            raise ParameterError(f"DATASET '{src}' holds no .mrc or .rec tomograms")
        items = [_mrc_item(p) for p in files]
        _check_names(items, f"DATASET '{src}'")
        return "folder", items
    suffix = src.suffix.lower()
    if suffix == ".star":
        try:
            infos = read_tomograms_star(src)
        except PicksError as exc:
            raise ParameterError(f"DATASET {exc}") from None
        items = []
        for t in infos:
            item = _mrc_item(Path(t.path), t.name, voltage=t.voltage, cs=t.cs, amplitude_contrast=t.amplitude_contrast,
                             tilt_series_pixel_size=t.tilt_series_pixel_size)
            if item.error is None and t.voxel_size is not None and not math.isclose(
                    item.voxel_size, t.voxel_size, rel_tol=0.02):
                item = replace(item, error=f"'{t.path}' has {item.voxel_size:g} Å voxels but '{src}' says "
                                           f"{t.voxel_size:g} Å (rlnTomoTiltSeriesPixelSize × rlnTomoTomogramBinning)")
            items.append(item)
        _check_names(items, f"DATASET '{src}'")
        return "relion5", items
    if suffix == ".json":
        from .io import copick_io

        try:
            root = copick_io.open_project(src)
            refs = copick_io.project_tomograms(root, voxel_size=voxel_size, tomo_type=tomo_type)
        except PicksError as exc:
            raise ParameterError(f"DATASET: {exc}") from None
        if not refs:
            what = " of type " + repr(tomo_type) if tomo_type else ""
            at = f" at {voxel_size:g} Å" if voxel_size else ""
            raise ParameterError(f"DATASET '{src}': the copick project has no tomograms{what}{at}")
        items = [BatchItem(r.run, "copick", None, (str(src.absolute()), r.run, r.voxel_size, r.tomo_type),
                           voxel_size=r.voxel_size, shape=r.shape,
                           error=None if r.shape else f"copick tomogram '{r.run}' cannot be read")
                 for r in refs]
        _check_names(items, f"DATASET '{src}'")
        return "copick", items
    raise ParameterError(f"DATASET '{src}': expected a folder of MRCs, a tomograms.star or a copick config .json, "
                         f"got a '{src.suffix}' file")


#: Suffixes of a given picks file, ``<tomogram name><suffix>`` in ``--picks-dir``.
PICKS_SUFFIXES = (".star", ".csv")


def attach_picks(items: Sequence[BatchItem], folder: str | os.PathLike) -> list[BatchItem]:
    """``items`` with the picks file of each tomogram that has one in ``folder``
    (``<name>.star`` or ``<name>.csv``, coordinates in voxels of that tomogram); the others are
    picked by DoG as usual."""
    root = Path(folder)
    if not root.is_dir():
        raise ParameterError(f"--picks-dir '{root}' is not a folder (expected <tomogram name>.star files)")
    out = []
    for item in items:
        found = next((root / f"{item.name}{s}" for s in PICKS_SUFFIXES if (root / f"{item.name}{s}").is_file()), None)
        out.append(replace(item, picks=str(found)) if found is not None else item)
    return out


def given_picks(item: BatchItem, tomogram):
    """The picks table of ``item``'s picks file checked against ``tomogram`` (None: no file given)."""
    if item.picks is None:
        return None
    from .errors import PicksError
    from .io import read_picks
    from .picks import check_inside

    picks = read_picks(item.picks, tomogram_shape=tomogram.shape, voxel_size=tomogram.voxel_size)
    if len(picks) == 0:
        raise PicksError(f"picks file '{item.picks}' holds no picks")
    check_inside(picks, tomogram.shape, f"picks file '{item.picks}'", f"'{item.name}'")
    return picks


def load_item(item: BatchItem):
    """The tomogram of ``item`` (:class:`~napari_cryo_openset.io.Tomogram`; MRC memory-mapped)."""
    if item.kind == "copick":
        from .io import copick_io

        config, run, vs, tomo_type = item.copick
        root = copick_io.open_project(config)
        return copick_io.read_copick_tomogram(root, copick_io.CopickTomogramRef(run, float(vs), tomo_type))
    from .io import read_tomogram

    return read_tomogram(item.path)


def group_by_condition(items: Sequence[BatchItem]) -> dict[str, list[BatchItem]]:
    """Readable items by :attr:`BatchItem.condition`, in data-set order."""
    groups: dict[str, list[BatchItem]] = {}
    for item in items:
        if item.error is None:
            groups.setdefault(item.condition, []).append(item)
    return groups


def condition_params(params, item: BatchItem, told=()):
    """``params`` with the microscope of the group (voltage, Cs, amplitude contrast) where the data set gives
    it and the user did not (``told``: the imaging-condition fields the user gave on the command line)."""
    told = set(told or ())
    changes = {}
    for name in ("voltage", "cs", "amplitude_contrast"):
        value = getattr(item, name)
        if value is not None and name not in told:
            changes[name] = float(value)
    if not changes:
        return params
    condition = params.source.condition.replace(**changes)
    given = params.given
    new_given = None if given is None else tuple(dict.fromkeys((*given, *changes)))
    return replace(params, source=replace(params.source, condition=condition), given=new_given)


# --------------------------------------------------------------------------------------------
# completeness
# --------------------------------------------------------------------------------------------


def params_fingerprint(params) -> dict:
    """The run parameters as JSON would store them (what a complete folder's report must match)."""
    from .pipeline import _jsonable

    return json.loads(json.dumps(_jsonable(params.to_dict())))


def is_complete(folder: str | os.PathLike, params=None, joint: str | bool | None = None) -> bool:
    """A tomogram's output folder is complete: ``report.json`` readable, of a ``run``, made with ``params``
    (when given), adapted as ``joint`` says (when given: False = on its own, a string = by the joint
    adaptation of that :func:`joint_id`), and every output it lists present and non-empty."""
    folder = Path(folder)
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(report, dict) or report.get("command") != "run" or not isinstance(report.get("outputs"), list):
        return False
    if params is not None and report.get("parameters") != params_fingerprint(params):
        return False
    if joint is not None and _joint_of(report) != joint:
        return False
    for name in report["outputs"]:
        p = folder / str(name)
        if not p.is_file() or (p.stat().st_size == 0 and p.name != "report.json"):
            return False
    return True


def _joint_of(report: dict) -> str | bool:
    """The :func:`joint_id` of the joint adaptation a ``run`` report was made with, False when adapted alone."""
    adaptation = report.get("adaptation") if isinstance(report.get("adaptation"), dict) else {}
    if adaptation.get("mode") != "joint":
        return False
    return str((adaptation.get("joint") or {}).get("id", ""))


def joint_id(params, group: Sequence[BatchItem], given_model: bool = False) -> str:
    """What identifies a condition's joint adaptation (12 hex digits): the run parameters, the group's
    tomograms (names and files, in order) and whether the source model was given. The same id on a
    rerun reuses ``sources/<condition>/adapted_joint.pt``; another one recomputes it."""
    import hashlib

    key = {"parameters": params_fingerprint(params), "given_model": bool(given_model),
           "tomograms": [[i.name, i.path, list(i.copick) if i.copick else None] for i in group]}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def remove_stale_temporaries(out: Path, names: Sequence[str]) -> list[Path]:
    """Hidden temporary folders of tomogram outputs (``.NAME.TOKEN.part``/``.old``) left by killed workers."""
    from .io._atomic import _TEMP_NAME

    folder = out / TOMOGRAMS_DIR
    removed = []
    if not folder.is_dir():
        return removed
    wanted = set(names)
    for p in folder.iterdir():
        m = _TEMP_NAME.match(p.name)
        if m and m.group("stem") in wanted and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# --------------------------------------------------------------------------------------------
# the source model of a condition
# --------------------------------------------------------------------------------------------


def trained_from_model(model_path: str | os.PathLike, source_path: str | os.PathLike):
    """A :class:`~napari_cryo_openset.train.TrainResult` from a model bundle and the simulated set it was
    trained on (``--model M.pt --source S.npz``): adaptation and verification need both."""
    from .adapt import load_source
    from .checkpoint import load_bundle
    from .params import TrainParams
    from .simulate.datasets import load_dataset
    from .train import TrainResult

    bundle = load_bundle(model_path)
    data = load_dataset(source_path)
    source = load_source(data, bundle)  # checks the set fits the model; the split the model was validated on
    prov = bundle.provenance if isinstance(bundle.provenance, dict) else {}
    training = prov.get("training", {}) or {}
    seed = int(training.get("seed", prov.get("seed", 0) or 0))
    return TrainResult(model=bundle.model, class_names=list(bundle.class_names), box=int(bundle.box_size),
                       voxel_size=float(bundle.voxel_size), params=TrainParams(seed=seed),
                       history=list(bundle.history or []), best_epoch=int(training.get("best_epoch", 0) or 0),
                       val_accuracy=float(training.get("val_accuracy", float("nan")) or float("nan")),
                       val_indices=np.asarray(source.val_idx), stopped=f"given: {model_path}",
                       source=prov.get("simulation", {}) or {}, data=data)


def source_task(item: BatchItem, templates, params) -> dict:
    """Dask task: simulate + train the source model of ``item``'s condition on ``item``'s tomogram."""
    from .pipeline import prepare_run
    from .progress import run_to_completion

    t0 = time.perf_counter()
    _set_threads(params)
    tomo = load_item(item)
    prepared = run_to_completion(prepare_run(tomo, templates, params))
    return {"trained": prepared.trained, "reference": item.name, "seconds": time.perf_counter() - t0,
            "geometry": prepared.geometry, "condition": prepared.resolved.to_dict(), "rss_mb": peak_rss_mb()}


# --------------------------------------------------------------------------------------------
# the per-tomogram task
# --------------------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    """``exc`` as one line (its first line; the type when it says nothing)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux: ``ru_maxrss`` is in KiB)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(rss) / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


def _set_threads(params) -> None:
    from .device import set_cpu_threads

    set_cpu_threads(params.threads or 1)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


#: Errors of the input (recorded, never retried): ours and those of the file system.
INPUT_ERRORS = (CryoOpensetError, OSError)


def tomogram_task(item: BatchItem, templates, trained, params, out: str, delay: float = 0.0, picked: dict | None = None,
                  adapted=None) -> dict:
    """Dask task: the ``run`` pipeline on one tomogram; writes ``OUT/tomograms/<name>/`` atomically.

    Returns a small summary (``status`` ``done`` or ``failed`` with a one-line ``error``); an
    input error is returned, anything else raised (Dask retries it). ``delay`` s before starting
    (tests use it to kill a worker mid-run). ``picked``: the :func:`pick_task` result of this
    tomogram (its picks and condition: not redone); ``adapted``: the group's joint adaptation
    (an :class:`~napari_cryo_openset.adapt.AdaptResult`: the tomogram is predicted with it, not adapted).
    """
    from .io._atomic import atomic_dir
    from .pipeline import finish_run, run_pipeline, write_run
    from .progress import run_to_completion

    t0 = time.perf_counter()
    base = {"name": item.name, "condition": item.condition, "worker": _worker_address(), "pid": os.getpid()}
    if adapted is not None:
        base["adaptation"] = "joint"
    if delay:
        time.sleep(delay)
    try:
        params = _on_worker_device(params)
        _set_threads(params)
        tomo = load_item(item)
        if picked is not None:
            prepared = replace(picked["prepared"], trained=trained)
            result = run_to_completion(finish_run(tomo, prepared, params, adapted=adapted))
        else:
            result = run_to_completion(run_pipeline(tomo, templates, params, picks=given_picks(item, tomo),
                                                    trained=trained, adapted=adapted))
        folder = Path(out) / TOMOGRAMS_DIR / item.name
        with atomic_dir(folder, overwrite=True) as tmp:
            write_run(tmp, result)
    except INPUT_ERRORS as exc:
        return {**base, "status": "failed", "error": one_line(exc), "seconds": time.perf_counter() - t0,
                "rss_mb": peak_rss_mb()}
    extra = {"pick_seconds": round(float(picked["seconds"]), 3)} if picked is not None else {}
    return {**base, "status": "done", "seconds": time.perf_counter() - t0, "rss_mb": peak_rss_mb(),
            "class_counts": result.class_counts(), "n_picks": int(len(result.predictions)),
            "timings_s": {k: round(v, 3) for k, v in result.timings.items()}, **extra}


def pick_task(item: BatchItem, templates, trained, params) -> dict:
    """Dask task (``--joint``): pick one tomogram and read its condition, as its run would
    (:func:`~napari_cryo_openset.pipeline.prepare_run` with the shared source model).

    Returns ``status`` ``done`` with ``prepared`` (the :class:`~napari_cryo_openset.pipeline.PreparedRun`
    without the source model) and ``n_active`` (active picks), or ``failed`` with a one-line ``error``.
    """
    from .pipeline import prepare_run
    from .progress import run_to_completion

    t0 = time.perf_counter()
    base = {"name": item.name, "worker": _worker_address()}
    try:
        params = _on_worker_device(params)
        _set_threads(params)
        tomo = load_item(item)
        prepared = run_to_completion(prepare_run(tomo, templates, params, picks=given_picks(item, tomo),
                                                 trained=trained))
    except INPUT_ERRORS as exc:
        return {**base, "status": "failed", "error": one_line(exc), "seconds": time.perf_counter() - t0}
    n_active = int((prepared.picks["curation"] != "rejected").sum())
    return {**base, "status": "done", "prepared": replace(prepared, trained=None), "n_active": n_active,
            "seconds": time.perf_counter() - t0}


def joint_adapt_task(items: Sequence[BatchItem], picked: Sequence[dict], trained, params, jid: str) -> dict:
    """Dask task (``--joint``): one adaptation of the source model to the pooled picks of ``items``
    (:func:`~napari_cryo_openset.adapt.adapt_to_tomograms`; ``picked``: their :func:`pick_task` results);
    the tomograms are opened here, memory-mapped. Returns ``adapted`` (the
    :class:`~napari_cryo_openset.adapt.AdaptResult`, without its predictions), seconds, worker, peak RSS."""
    from .adapt import adapt_to_tomograms
    from .checkpoint import bundle_from_training
    from .progress import run_to_completion

    t0 = time.perf_counter()
    params = _on_worker_device(params)
    _set_threads(params)
    by_name = {i.name: i for i in items}
    picks = {i.name: (p["prepared"].picks, p["prepared"].polarity) for i, p in zip(items, picked)}
    result = run_to_completion(adapt_to_tomograms(bundle_from_training(trained), trained.data, picks,
                                                  lambda name: load_item(by_name[name]), params.adapt_params()))
    joint = result.bundle.provenance["adaptation"]["joint"]
    joint["id"] = jid
    return {"adapted": replace(result, predictions=None), "seconds": time.perf_counter() - t0,
            "worker": _worker_address(), "rss_mb": peak_rss_mb(), **joint}


# --------------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------------


@dataclass
class ClusterSpec:
    """Where the tasks run: ``scheduler`` address (an existing cluster), ``slurm`` options
    (:func:`slurm_cluster`), else a LocalCluster of ``n_workers`` single-threaded processes."""

    n_workers: int | None = None
    threads_per_worker: int = 1
    scheduler: str | None = None
    slurm: dict | None = None
    memory_limit: str | None = "auto"
    timeout: float = 10.0
    device: str = "auto"  # the run's device: with GPUs, one worker per GPU by default


def gpu_count(device: str = "auto") -> int:
    """CUDA GPUs a batch may spread over: all visible ones for ``auto``/``cuda``, none otherwise
    (``cpu``, ``mps``, or one named GPU ``cuda:N``)."""
    name = str(device or "auto").strip().lower()
    if name not in ("auto", "cuda"):
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def default_workers(device: str = "auto") -> int:
    """Workers of a LocalCluster: one per GPU when there are GPUs (``device`` auto/cuda), else one per core."""
    from .device import cpu_count

    return gpu_count(device) or max(1, int(cpu_count()))


def worker_device(device: str = "auto", index: int | None = None) -> str:
    """The device of one worker: with several GPUs, worker ``index`` (its LocalCluster name 0, 1, …;
    default: this Dask worker's) gets ``cuda:{index mod GPUs}``; anything else stays as asked."""
    n = gpu_count(device)
    if n <= 1:
        return device
    if index is None:
        try:
            from distributed import get_worker

            name = get_worker().name
            index = int(name) if str(name).isdigit() else abs(hash(str(name)))
        except (ImportError, ValueError):
            index = 0
    return f"cuda:{int(index) % n}"


def _on_worker_device(params):
    """``params`` with this worker's device (:func:`worker_device`)."""
    device = worker_device(params.device)
    return params if device == params.device else replace(params, device=device)


@contextlib.contextmanager
def _sigint_ignored():
    """Start worker processes with SIGINT ignored: Ctrl-C reaches the batch (which stops them), not each worker."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def make_client(spec: ClusterSpec):
    """A ``distributed.Client`` (and the cluster it owns, or None): local, by address, or on Slurm."""
    import logging

    from distributed import Client, LocalCluster

    # Dask's INFO lines (workers starting and closing) would drown the batch's own progress lines
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if spec.scheduler:
        try:
            client = Client(spec.scheduler, timeout=f"{spec.timeout}s")
        except Exception as exc:  # OSError / TimeoutError / ValueError for a bad address
            raise ParameterError(f"--scheduler '{spec.scheduler}': cannot reach a Dask scheduler there "
                                 f"({type(exc).__name__}: {one_line(exc)})") from None
        return client, None
    if spec.slurm is not None:
        cluster = slurm_cluster(**spec.slurm)
        cluster.scale(jobs=int(spec.slurm.get("jobs", 1)))
        return Client(cluster), cluster
    n = spec.n_workers or default_workers(spec.device)
    with _sigint_ignored():
        cluster = LocalCluster(n_workers=n, threads_per_worker=spec.threads_per_worker, processes=True,
                               memory_limit=spec.memory_limit, dashboard_address=":0",
                               silence_logs=logging.ERROR)
    return Client(cluster), cluster


#: Options of :func:`slurm_cluster` with their defaults (the ``--slurm-*`` command-line options).
SLURM_DEFAULTS = {"jobs": 1, "cores": 4, "processes": None, "memory": "16GB", "walltime": "02:00:00",
                  "queue": None, "account": None, "job_extra_directives": (), "local_directory": None,
                  "python": None}


def slurm_cluster(**options):
    """A ``dask_jobqueue.SLURMCluster``: each Slurm job runs ``processes`` single-threaded workers
    (default: one per core) with the package's environment (``python`` = this interpreter).

    Recipe (also in the README)::

        from napari_cryo_openset.batch import slurm_cluster
        cluster = slurm_cluster(cores=8, memory="32GB", walltime="04:00:00", queue="gpu")
        cluster.scale(jobs=10)            # 10 Slurm jobs × 8 workers
        # napari-cryo-openset batch DATA --scheduler <cluster.scheduler_address> ...
        # or: napari-cryo-openset batch DATA --slurm-jobs 10 --slurm-cores 8 ...
    """
    from dask_jobqueue import SLURMCluster
    import sys

    opts = {**SLURM_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    cores = int(opts["cores"])
    processes = int(opts["processes"] or cores)
    kwargs = dict(cores=cores, processes=processes, memory=str(opts["memory"]), walltime=str(opts["walltime"]),
                  python=opts["python"] or sys.executable, job_extra_directives=list(opts["job_extra_directives"]),
                  job_script_prologue=["export OMP_NUM_THREADS=1"], scheduler_options={"dashboard_address": ":0"})
    for key in ("queue", "account", "local_directory"):
        if opts.get(key):
            kwargs[key] = str(opts[key])
    return SLURMCluster(**kwargs)


def slurm_job_script(**options) -> str:
    """The Slurm job script :func:`slurm_cluster` would submit (no Slurm needed; the cluster is closed)."""
    cluster = slurm_cluster(**options)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


# --------------------------------------------------------------------------------------------
# the batch
# --------------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What a batch did: per-tomogram records (in data-set order), per-condition sources, the cluster."""

    records: list[dict]
    sources: dict
    cluster: dict
    seconds: float
    interrupted: bool = False
    outputs: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


def run_batch(items: Sequence[BatchItem], templates_for: Callable[[float], list], params, out: str | os.PathLike, *,
              client, model=None, retries: int = 2, say: Callable[[str], None] = print,
              delays: Mapping[str, float] | None = None, dataset: str = "", on_submitted=None,
              told=(), joint: bool = False) -> BatchResult:
    """Run the data set on ``client``; write every tomogram's folder and the batch outputs under ``out``.

    ``templates_for(voxel_size)`` loads the templates at a tomogram voxel size; ``model``: a
    TrainResult every condition uses instead of simulating one (``--model``); ``delays``: seconds
    before a named tomogram's task starts (tests); ``told``: the imaging-condition fields the user gave (the
    data set's microscope does not replace them, :func:`condition_params`); ``joint``: one adaptation per
    condition to the pooled picks of its tomograms (:func:`_joint_stage`) instead of one per tomogram.
    Returns the :class:`BatchResult`; on
    KeyboardInterrupt (or another BaseException such as the CLI's SIGTERM ``Terminated``) the pending
    tasks are cancelled, the report written, and the interrupt re-raised.
    """
    from distributed import as_completed

    t_all = time.perf_counter()
    out = Path(out)
    (out / TOMOGRAMS_DIR).mkdir(parents=True, exist_ok=True)
    names = [i.name for i in items]
    removed = remove_stale_temporaries(out, names)
    if removed:
        say(f"batch: removed {len(removed)} temporary folder(s) of interrupted tasks")
    records: dict[str, dict] = {}
    for item in items:
        if item.error is not None:
            records[item.name] = {"name": item.name, "status": "failed", "error": item.error, "condition": item.condition}
            say(f"batch: {item.name}: failed: {item.error}")
    todo: list[BatchItem] = []
    readable = [i for i in items if i.name not in records]
    pools = group_by_condition(readable)  # --joint: every readable tomogram of a condition is in its pool
    jids = {key: joint_id(condition_params(params, g[0], told), g, model is not None) for key, g in pools.items()}
    for item in readable:
        p = condition_params(params, item, told)
        if is_complete(out / TOMOGRAMS_DIR / item.name, p, joint=jids[item.condition] if joint else False):
            records[item.name] = {"name": item.name, "status": "skipped", "condition": item.condition,
                                  "note": "complete from an earlier run (checked)"}
        else:
            todo.append(item)
    n_skipped = sum(r["status"] == "skipped" for r in records.values())
    if n_skipped:
        say(f"batch: {n_skipped} tomogram(s) complete from an earlier run, skipped")
    sources: dict[str, dict] = {}
    futures = {}
    interrupted, stop = False, None
    try:
        with contextlib.suppress(Exception):
            client.run_on_scheduler(_set_allowed_failures, n=int(retries))
        groups = group_by_condition(todo)
        for key, group in groups.items():
            p = condition_params(params, group[0], told)
            templates = templates_for(group[0].voxel_size)
            t0 = time.perf_counter()
            trained, info = _source_of(client, key, pools[key] if joint else group, templates, p, model, records, say,
                                       retries, out)
            if trained is None:
                continue
            info["seconds_with_transfer"] = time.perf_counter() - t0
            sources[key] = info
            if not info.get("given") and not info.get("reused"):
                _save_source(out, key, trained, info, p)
            shared_trained, shared_templates = client.scatter([trained, templates], broadcast=True)
            how = ("given" if info.get("given") else f"of an earlier run (trained on {info['reference']})"
                   if info.get("reused") else f"trained on {info['reference']} in {info['seconds']:.1f} s")
            say(f"batch: condition {key}: source model {how}, broadcast to the workers; {len(group)} tomogram(s) to run")
            shared_adapted, picked = None, {}
            if joint:
                adapted, picked, info["joint"] = _joint_stage(client, key, pools[key], shared_templates, shared_trained,
                                                              p, jids[key], records, say, retries, out)
                if adapted is None:
                    continue
                shared_adapted = client.scatter(adapted, broadcast=True)
            for item in group:
                if item.name in records:  # failed as a source reference
                    continue
                fut = client.submit(tomogram_task, item, shared_templates, shared_trained, p, str(out),
                                    (delays or {}).get(item.name, 0.0), picked=picked.get(item.name),
                                    adapted=shared_adapted, key=f"tomogram-{item.name}-{time.time_ns()}",
                                    retries=int(retries), pure=False)
                futures[fut] = item
        if on_submitted is not None:
            on_submitted(futures)
        n = len(futures)
        done = 0
        for fut in as_completed(list(futures)):
            item = futures[fut]
            done += 1
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - retried by Dask and still failing, or KilledWorker
                rec = {"name": item.name, "status": "failed", "condition": item.condition,
                       "error": f"{type(exc).__name__}: {one_line(exc)}"}
            records[item.name] = rec
            if rec["status"] == "done":
                counts = ", ".join(f"{k} {v}" for k, v in rec.get("class_counts", {}).items())
                say(f"batch: [{done}/{n}] {item.name}: done in {rec['seconds']:.1f} s on {rec['worker']} "
                    f"(peak RSS {rec['rss_mb']:.0f} MB): {counts}")
            else:
                say(f"batch: [{done}/{n}] {item.name}: failed: {rec['error']}")
    except BaseException as exc:  # Ctrl-C, or SIGTERM (the CLI's Terminated): stop cleanly, report, re-raise
        if isinstance(exc, Exception):
            raise
        interrupted, stop = True, exc
        for fut in futures:
            fut.cancel()
        say("batch: interrupted: pending tomograms cancelled; complete ones are kept, rerun the same command to "
            "do the rest")
    ordered = []
    for item in items:
        rec = records.get(item.name) or {"name": item.name, "status": "not run", "condition": item.condition}
        ordered.append(rec)
    result = BatchResult(records=ordered, sources=sources, cluster=describe_client(client),
                         seconds=time.perf_counter() - t_all, interrupted=interrupted)
    result.outputs = write_batch_outputs(out, items, result, params, dataset=dataset)
    if interrupted:
        raise stop
    return result


def _set_allowed_failures(dask_scheduler=None, n: int = 2):
    """On the scheduler: how often a task may lose its worker before it is given up (KilledWorker)."""
    import dask

    dask.config.set({"distributed.scheduler.allowed-failures": int(n)})
    if dask_scheduler is not None:
        dask_scheduler.allowed_failures = int(n)


def _source_of(client, key, group, templates, params, model, records, say, retries, out: Path | None = None):
    """The source model of a condition: the given one, the one an earlier batch saved with the same
    parameters (a rerun resumes with the same model), or trained on the group's first tomogram that works."""
    if model is not None:
        return model, {"reference": None, "seconds": 0.0, "given": True}
    saved = _saved_source(out, key, params) if out is not None else None
    if saved is not None:
        return saved
    for item in group:
        fut = client.submit(source_task, item, templates, params, retries=int(retries), pure=False,
                            key=f"source-{key}-{time.time_ns()}")
        try:
            info = fut.result()
        except Exception as exc:  # noqa: BLE001 - input errors, or retried by Dask and still failing
            error = one_line(exc) if isinstance(exc, INPUT_ERRORS) else f"{type(exc).__name__}: {one_line(exc)}"
            records[item.name] = {"name": item.name, "status": "failed", "condition": item.condition, "error": error}
            say(f"batch: {item.name}: failed (as the source reference of {key}): {error}")
            continue
        trained = info.pop("trained")
        info["val_accuracy"] = float(trained.val_accuracy)
        return trained, info
    say(f"batch: condition {key}: no tomogram could make its source model; its tomograms are not run")
    return None, None


def _joint_stage(client, key: str, pool: Sequence[BatchItem], templates, trained, params, jid: str, records: dict,
                 say, retries: int, out: Path):
    """``--joint``, one condition: its adaptation to the pooled picks of ``pool`` (``templates``,
    ``trained``: the broadcast futures). Reuses ``sources/<key>/adapted_joint.pt`` when it has the id
    ``jid`` (:func:`joint_id`); else a :func:`pick_task` per tomogram (one that fails is recorded and left
    out of the pool), one :func:`joint_adapt_task` on the picked ones, saved for reruns.

    Returns (the :class:`~napari_cryo_openset.adapt.AdaptResult` or None when there is none, the pick
    futures of the picked tomograms by name — their tasks reuse the picks —, what the report says of it).
    """
    saved = _saved_joint(out, key, jid)
    if saved is not None:
        adapted, info = saved
        say(f"batch: condition {key}: joint adaptation of an earlier run ({info['pooled_picks']} picks of "
            f"{len(info['tomograms'])} tomograms), reused")
        return adapted, {}, info
    t0 = time.perf_counter()
    futures = {item.name: client.submit(pick_task, item, templates, trained, params, retries=int(retries), pure=False,
                                        key=f"pick-{item.name}-{time.time_ns()}") for item in pool}
    picked, summaries = {}, []
    for item in pool:
        try:
            rec = futures[item.name].result()
        except Exception as exc:  # noqa: BLE001 - retried by Dask and still failing, or KilledWorker
            rec = {"status": "failed", "error": f"{type(exc).__name__}: {one_line(exc)}"}
        if rec["status"] != "done":
            records[item.name] = {"name": item.name, "status": "failed", "condition": item.condition,
                                  "error": rec["error"], "stage": "pick (left out of the joint adaptation)"}
            say(f"batch: {item.name}: failed (picking, left out of the joint adaptation): {rec['error']}")
            continue
        picked[item.name] = futures[item.name]
        summaries.append(rec)
    if not picked:
        say(f"batch: condition {key}: no tomogram could be picked; no joint adaptation, its tomograms are not run")
        return None, {}, {"error": "no tomogram could be picked"}
    names = list(picked)
    say(f"batch: condition {key}: joint adaptation to {sum(r['n_active'] for r in summaries)} picks of "
        f"{len(names)} tomograms")
    items = [i for i in pool if i.name in picked]
    fut = client.submit(joint_adapt_task, items, [picked[n] for n in names], trained, params, jid,
                        retries=int(retries), pure=False, key=f"joint-{key}-{time.time_ns()}")
    try:
        info = fut.result()
    except Exception as exc:  # noqa: BLE001 - input errors, or retried by Dask and still failing
        error = f"joint adaptation: {one_line(exc)}"
        for item in items:
            records[item.name] = {"name": item.name, "status": "failed", "condition": item.condition, "error": error}
        say(f"batch: condition {key}: {error}; its tomograms are not run")
        return None, {}, {"error": error}
    adapted = info.pop("adapted")
    info["seconds_with_picking"] = time.perf_counter() - t0
    info["pick_seconds"] = {r["name"]: round(float(r["seconds"]), 3) for r in summaries}
    _save_joint(out, key, adapted, info)
    say(f"batch: condition {key}: joint adaptation done in {info['seconds']:.1f} s "
        f"({info['adaptation_picks']} of {info['pooled_picks']} pooled picks learnt from)")
    return adapted, picked, info


def _save_joint(out: Path, key: str, adapted, info: dict) -> None:
    """``sources/<key>/adapted_joint.pt`` (the jointly adapted model) and ``adapted_joint.json`` (its id,
    tomograms, diagnostics) — written last, so a rerun reuses only a complete one."""
    from .checkpoint import save_bundle
    from .io import atomic_path
    from .pipeline import _jsonable

    folder = out / SOURCES_DIR / key
    folder.mkdir(parents=True, exist_ok=True)
    save_bundle(adapted.bundle, folder / "adapted_joint.pt")
    diagnostics = {"history": adapted.history, "stopped": adapted.stopped, "adapt_seconds": adapted.seconds,
                   "calibration": adapted.calibration}
    with atomic_path(folder / "adapted_joint.json") as tmp:
        Path(tmp).write_text(json.dumps(_jsonable({**info, "result": diagnostics}), indent=2) + "\n")


def _saved_joint(out: Path, key: str, jid: str):
    """(the :class:`~napari_cryo_openset.adapt.AdaptResult`, its info) an earlier batch saved for ``key``
    with the id ``jid``, or None."""
    from .adapt import AdaptResult
    from .checkpoint import load_bundle

    folder = out / SOURCES_DIR / key
    try:
        info = json.loads((folder / "adapted_joint.json").read_text())
        if info.get("id") != jid:
            return None
        bundle = load_bundle(folder / "adapted_joint.pt")
        res = info.pop("result")
        adapted = AdaptResult(bundle=bundle, predictions=None, history=list(res["history"]), stopped=str(res["stopped"]),
                              seconds=float(res["adapt_seconds"]), calibration=dict(res["calibration"]))
    except (CryoOpensetError, OSError, ValueError, KeyError, TypeError):
        return None
    return adapted, {**info, "reused": True}


def _save_source(out: Path, key: str, trained, info: dict, params) -> None:
    """``sources/<key>/``: ``model.pt`` (the source model), ``source.npz`` (the simulated set it was trained
    on, as ``simulate`` writes it) and ``source.json`` (how it was made, with the run parameters) — written
    last, so a rerun reuses only a complete source."""
    from .checkpoint import bundle_from_training, save_bundle
    from .io import atomic_path
    from .pipeline import _jsonable
    from .simulate.datasets import write_dataset

    folder = out / SOURCES_DIR / key
    folder.mkdir(parents=True, exist_ok=True)
    save_bundle(bundle_from_training(trained), folder / "model.pt")
    write_dataset(trained.data, folder / "source.npz")
    with atomic_path(folder / "source.json") as tmp:
        Path(tmp).write_text(json.dumps(_jsonable({**info, "parameters": params_fingerprint(params)}), indent=2) + "\n")


def _saved_source(out: Path, key: str, params):
    """The source an earlier batch saved for ``key`` with the same parameters, or None."""
    folder = out / SOURCES_DIR / key
    try:
        info = json.loads((folder / "source.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("parameters") != params_fingerprint(params):
        return None
    try:
        trained = trained_from_model(folder / "model.pt", folder / "source.npz")
    except (CryoOpensetError, OSError):
        return None
    info.pop("parameters", None)
    return trained, {**info, "reused": True}


def describe_client(client) -> dict:
    try:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        return {"scheduler": client.scheduler.address, "dashboard": client.dashboard_link,
                "workers": len(workers), "threads": int(sum(w.get("nthreads", 0) for w in workers.values()))}
    except Exception:  # noqa: BLE001 - only a description
        return {}


def write_batch_outputs(out: Path, items: Sequence[BatchItem], result: BatchResult, params, *, dataset: str = "") -> dict:
    """``particles.star`` (RELION 5, every complete tomogram), ``tomograms.star``, ``class_counts.csv``,
    ``batch_report.json``; all atomically. Returns their paths by name."""
    from . import __version__
    from .io import atomic_path, read_picks
    from .io.relion5 import TomogramInfo, write_relion5_particles, write_tomograms_star
    from .pipeline import _jsonable

    by_name = {i.name: i for i in items}
    complete, counts = [], {}
    for rec in result.records:
        folder = out / TOMOGRAMS_DIR / rec["name"]
        if rec["status"] not in ("done", "skipped") or not is_complete(folder):
            continue
        report = json.loads((folder / "report.json").read_text())
        item = by_name[rec["name"]]
        shape = tuple(int(n) for n in report["geometry"]["tomogram_shape"])
        vs = float(report["geometry"]["tomogram_voxel_size"])
        info = TomogramInfo(item.name, path=Path(item.path).absolute() if item.path else None, shape=shape,
                            voxel_size=vs, tilt_series_pixel_size=item.tilt_series_pixel_size,
                            voltage=item.voltage, cs=item.cs, amplitude_contrast=item.amplitude_contrast)
        picks = read_picks(folder / "predictions.star", tomogram_shape=shape, voxel_size=vs)
        complete.append((info, picks))
        counts[item.name] = report.get("class_counts", {})
        rec.setdefault("class_counts", counts[item.name])
    paths = {}
    if complete:
        paths["particles.star"] = write_relion5_particles(out / "particles.star", complete)
        paths["tomograms.star"] = write_tomograms_star(out / "tomograms.star", [t for t, _ in complete])
    classes = sorted({c for cc in counts.values() for c in cc}, key=lambda c: (c == "unknown", c))
    table = pd.DataFrame([{"tomogram": n, **{c: int(cc.get(c, 0)) for c in classes}} for n, cc in counts.items()],
                         columns=["tomogram", *classes])
    with atomic_path(out / "class_counts.csv") as tmp:
        table.to_csv(tmp, index=False)
    paths["class_counts.csv"] = out / "class_counts.csv"
    totals = {c: int(sum(cc.get(c, 0) for cc in counts.values())) for c in classes}
    done = [r for r in result.records if r["status"] == "done"]
    busy = sum(float(r.get("seconds", 0.0)) for r in done)
    rss: dict[str, float] = {}
    for r in done:
        rss[r["worker"]] = max(rss.get(r["worker"], 0.0), float(r.get("rss_mb", 0.0)))
    report = {
        "command": "batch", "version": __version__, "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "dataset": dataset, "parameters": params.to_dict(), "cluster": result.cluster,
        "seconds": round(result.seconds, 3), "interrupted": result.interrupted, "status_counts": result.counts(),
        "tomograms_per_hour": (3600.0 * len(done) / result.seconds) if done and result.seconds > 0 else None,
        "task_seconds": round(busy, 3), "peak_rss_mb_per_worker": rss, "sources": result.sources,
        "class_counts": totals, "tomograms": result.records,
        "outputs": sorted(str(p.relative_to(out)) for p in paths.values()) + [REPORT],
    }
    with atomic_path(out / REPORT) as tmp:
        Path(tmp).write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    paths[REPORT] = out / REPORT
    return paths


def read_batch_output(out: str | os.PathLike) -> pd.DataFrame:
    """The tomograms of a batch output folder, one row each, in the order of its ``batch_report.json``.

    Columns: ``tomogram`` (name), ``status`` (``done`` / ``skipped`` / ``failed`` / …), ``error``
    (its one line, or ""), ``seconds``, ``picks`` (active picks classified), ``class_counts`` (dict
    class → picks), ``folder`` (its ``run`` folder, "" when it has none), ``tomogram_path`` (the MRC
    it ran on, None when not a file — e.g. a copick tomogram), ``voxel_size`` (Å), ``shape``
    (Z, Y, X) and ``model_classes`` (the model's class list, the palette's order). The Dataset dock
    shows this table. Raises :class:`~napari_cryo_openset.errors.ParameterError` naming the folder when
    it holds no readable batch report.
    """
    out = Path(out)
    report_path = out / REPORT
    try:
        report = json.loads(report_path.read_text())
        records = list(report["tomograms"])
    except FileNotFoundError:
        raise ParameterError(f"'{out}' is not a batch output folder (no {REPORT} in it)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ParameterError(f"'{report_path}' is not a readable batch report ({type(exc).__name__}: {exc})") from None
    rows = []
    for rec in records:
        name = str(rec.get("name", ""))
        folder = out / TOMOGRAMS_DIR / name
        run = {}
        if (folder / "report.json").is_file():
            with contextlib.suppress(OSError, ValueError):
                run = json.loads((folder / "report.json").read_text())
        counts = rec.get("class_counts") or run.get("class_counts") or {}
        geometry = run.get("geometry") or {}
        tomo = run.get("tomogram")
        rows.append({
            "tomogram": name, "status": str(rec.get("status", "")), "error": str(rec.get("error") or ""),
            "seconds": float(rec.get("seconds") or 0.0), "picks": int(sum(int(v) for v in counts.values())),
            "class_counts": {str(k): int(v) for k, v in counts.items()},
            "folder": str(folder) if (folder / "predictions.star").is_file() else "",
            "tomogram_path": tomo if tomo and Path(tomo).is_file() else None,
            "voxel_size": geometry.get("tomogram_voxel_size"), "shape": geometry.get("tomogram_shape"),
            "model_classes": (run.get("training") or {}).get("classes"),
        })
    return pd.DataFrame(rows, columns=["tomogram", "status", "error", "seconds", "picks", "class_counts", "folder",
                                       "tomogram_path", "voxel_size", "shape", "model_classes"])
