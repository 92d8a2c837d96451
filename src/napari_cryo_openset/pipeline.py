"""The end-to-end run: pick → simulate → train → adapt (+ predict) → embed → align, and its outputs (core, no Qt).

:func:`run_pipeline` is one generator (progress events per stage; stop iterating to cancel)
used by the ``run`` command; :func:`write_run` writes what ARCHITECTURE.md § 4.1 promises in
``OUTDIR``: ``picks.star`` (the DoG picks, or the picks given), ``predictions.star`` (§ 4.2,
plus the map coordinates and cluster of every pick), ``model.pt`` (the source model),
``adapted.pt``, ``report.json`` (parameters, per-stage timings, class counts, adaptation
diagnostics, the imaging condition and where each value came from, the source/target spectra)
and ``embedding.png``, ``spectrum.png`` (radial power spectra of the target picks and the source
boxes before/after spectral matching); plus ``averages/``: one unaligned MRC per class and unknown
cluster (``average_<group>.mrc``, :mod:`.embed`) and, per group the ``align`` stage aligned,
``averages/<group>/`` with ``average.mrc``, ``half1.mrc``, ``half2.mrc``, ``fsc.csv`` and ``fsc.png``
(:mod:`.align.groups`; each aligned pick's orientation is in ``predictions.star``). Every file is
written atomically.

Choices made for the user (all recorded in the report):

- **Working voxel size and box.** The box holds the largest structure (the particle diameter
  or the largest template) with a 20 % margin. The fast encoder is built for 24³–40³ boxes,
  so a structure that needs more than 40 voxels is handled at an integer binning of the
  tomogram (model voxel size = bin × tomogram voxel size); extraction resamples the picks'
  boxes to it. The imaging condition of the simulation takes the working voxel size; defocus,
  Cs, voltage, tilt range/step and SNR are the user's (defaults as ``simulate``).
- **Source set.** :meth:`~napari_cryo_openset.params.RunParams.source_params`: ``per_class``
  boxes per template plus as many decoys (procedural and near misses of the templates: the source
  ``unknown`` class) and half as many empty boxes. ``source_kind="scenes"`` (default) simulates
  whole crowded tomograms like the target (its slab and pick density, :func:`scene_source_settings`)
  and picks them with the target's picker (:mod:`.simulate.scene_source`); ``"isolated"`` one
  particle per box with neighbours and background (the papers' protocol). Every box is then
  spectrally matched to the target picks (:func:`match_source_spectrum`).
- **Imaging condition.** What the user did not give is read from the tomogram (tilt range, slab;
  the SNR calibrated on small scenes like it, :func:`scene_snr_calibrator`), see
  :func:`resolve_run_condition`; ``benchmarks/bench_run.py`` measures the whole run on crowded
  scenes far from the defaults.
- **Polarity.** Picking resolves ``auto`` on the tomogram (reported); the same polarity is
  used to extract the boxes for adaptation and prediction.
- **Alignment** (``align``, :func:`align_run`). Light presets (:data:`~.params.run.FULL_ALIGN`,
  :data:`~.params.run.FAST_ALIGN`): a 20° (``--fast`` 30°) SO(3) grid, 2 (1) rounds, one local level,
  at most 150 (60) boxes per group; the missing wedge of the resolved tilt range (a default one is
  noted in the report).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ParameterError, PicksError
from .params import RunParams
from .progress import Progress

#: Why a run's averages are all unaligned when the ``align`` stage is off.
ALIGN_OFF = "alignment off (--no-align): only the unaligned average (averages/average_<group>.mrc)"
#: Box edges (voxels) the fast encoder is designed for.
BOX_RANGE = (24, 40)
#: Margin around the largest structure in the box.
BOX_MARGIN = 1.2


def working_geometry(tomogram_voxel_size: float, structure_diameter: float, box: int | None = None
                     ) -> tuple[float, int, int]:
    """``(model voxel size Å, box voxels, bin)`` for a structure of ``structure_diameter`` Å.

    The smallest integer binning at which the structure plus margin fits a box ≤ 40 voxels;
    the box is even and at least 24. With ``box`` given, no binning unless it is needed to fit.
    """
    need = BOX_MARGIN * structure_diameter / tomogram_voxel_size
    limit = box if box is not None else BOX_RANGE[1]
    binning = max(1, math.ceil(need / limit))
    if box is None:
        box = int(2 * math.ceil(need / binning / 2))
        box = min(max(box, BOX_RANGE[0]), BOX_RANGE[1])
    return tomogram_voxel_size * binning, int(box), binning


def check_box_fits(tomogram_shape, box: int, binning: int, what: str = "box") -> None:
    """The working box (``box`` voxels at ``binning``) must fit inside the tomogram.

    A box larger than the tomogram's smallest side cannot hold a particle's neighbourhood, and
    simulating a source set of such boxes would allocate gigabytes; refuse before any of it.
    """
    side = int(box) * int(binning)
    smallest = min(int(n) for n in tomogram_shape)
    if side > smallest:
        shape = "×".join(str(int(n)) for n in tomogram_shape)
        binned = f" at bin {binning} ({side} tomogram voxels)" if binning > 1 else ""
        raise ParameterError(
            f"{what} {box}{binned} is larger than the tomogram ({shape} voxels, Z×Y×X): boxes must fit its "
            f"smallest side, {smallest} voxels (a box of at most {smallest // binning} at bin {binning}; a smaller "
            "structure diameter needs less binning)"
        )


@dataclass
class RunResult:
    """Everything a run produced (tables, models, diagnostics); :func:`write_run` saves it."""

    tomogram_path: str
    params: RunParams
    picking: object | None  # PickResult (None when picks were given)
    picks: pd.DataFrame  # the picks the run started from (DoG picks or the given ones)
    predictions: pd.DataFrame  # picks with class, confidence, unknown score, map, cluster
    trained: object  # TrainResult
    model: object  # ModelBundle (source)
    adapted: object  # ModelBundle
    adaptation: object  # TomogramAdaptation
    embedded: object  # PicksEmbedding
    geometry: dict
    timings: dict
    condition: object = None  # ResolvedCondition: the condition simulated and where each value came from
    spectrum: dict | None = None  # spectrum_report: source vs target power spectra, before/after matching
    verification: object = None  # verify.Verification: the calls checked against the templates (None: off)
    verify_skipped: str | None = None  # why verification was skipped (too many picks), else None
    alignments: object = None  # align.groups.GroupAlignments (None: --no-align)

    def class_counts(self) -> dict[str, int]:
        active = self.predictions["curation"] != "rejected"
        from .picks import class_counts

        return class_counts(self.predictions.loc[active, "class_name"].astype(str))

    def unknown_fraction(self) -> float | None:
        """Share of the active picks called ``unknown``."""
        active = self.predictions["curation"] != "rejected"
        n = int(active.sum())
        return float((self.predictions.loc[active, "class_name"] == "unknown").sum() / n) if n else None

    def report(self) -> dict:
        from . import __version__

        res = self.adaptation.result
        hist = res.history[-1] if res.history else {}
        tomo_vs = self.geometry["tomogram_voxel_size"]
        picking = self.picking.to_dict() if self.picking is not None else {"given": True}
        joint = (self.adapted.provenance.get("adaptation") or {}).get("joint")
        return {
            "command": "run",
            "version": __version__,
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "tomogram": self.tomogram_path,
            "parameters": self.params.to_dict(),
            "geometry": self.geometry,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "picking": _jsonable(picking),
            "picks": {"n": int(len(self.picks)), "active": int((self.picks["curation"] != "rejected").sum())},
            "training": {"classes": list(self.trained.class_names), "val_accuracy": float(self.trained.val_accuracy),
                         "best_epoch": int(self.trained.best_epoch), "epochs_run": len(self.trained.history),
                         "stopped": self.trained.stopped, "device": str(self.trained.device),
                         "source_counts": self.trained.data.counts(),
                         "source": _source_report(self.trained.data)},
            "adaptation": {"mode": "joint" if joint else "per-tomogram",
                           **({"joint": _jsonable(joint)} if joint else {}),
                           "method": self.params.method, "stopped": res.stopped, "seconds": round(res.seconds, 3),
                           "rounds": int(hist.get("iteration", 0) or 0), "last_diagnostics": _jsonable(hist),
                           "threshold": float(self.adapted.openset.get("threshold", float("nan"))),
                           "threshold_rule": self.adapted.openset.get("rule"),
                           "calibration": _jsonable(res.calibration), "polarity": self.adaptation.polarity,
                           "resampled": bool(self.adaptation.resampled)},
            "condition": self.condition.to_dict() if self.condition is not None else None,
            "open_set": {"decided_by": "template verification" if self.verification is not None else "network",
                         "expected_unknown_fraction": (
                             (self.verification.report if self.verification is not None else res.calibration)
                             .get("transfer") or {}).get("expected_unknown_fraction"),
                         "called_unknown_fraction": self.unknown_fraction()},
            "spectrum": _jsonable(self.spectrum),
            "verification": (_jsonable(self.verification.report) if self.verification is not None
                             else {"skipped": self.verify_skipped} if self.verify_skipped else None),
            "class_counts": self.class_counts(),
            "embedding": {"method": self.embedded.embedding.method, "perplexity": self.embedded.embedding.perplexity,
                          "unknown_clusters": {f"U{k}": v for k, v in self.embedded.embedding.cluster_sizes.items()},
                          "averages": {k: int(n) for k, (_, n) in self.embedded.averages.items()},
                          "averages_voxel_size": self.embedded.voxel_size},
            "alignment": self.alignments.report() if self.alignments is not None else {"skipped": ALIGN_OFF},
            "averages": self.averages_report(),
            "voxel_size": tomo_vs,
        }

    def averages_report(self) -> dict:
        """``report.json["averages"]``: per class and cluster, the picks, whether it was aligned, its
        resolution (Å), the known structure it resembles most and the call, or why it was not aligned."""
        out = {}
        unaligned = {k: int(n) for k, (_, n) in self.embedded.averages.items()}
        groups = self.alignments.groups if self.alignments is not None else {}
        for name in dict.fromkeys([*groups, *unaligned]):
            g = groups.get(name)
            if g is not None:
                d = g.to_dict()
                out[name] = {"n": d["n"], "aligned": d["aligned"], "boxes": d["boxes"],
                             "resolution_angst": d["resolution_angst"], "resembles": d["resembles"],
                             "call": d["call"], "message": d["message"], "unaligned_n": unaligned.get(name)}
            else:
                out[name] = {"n": unaligned[name], "aligned": False, "boxes": 0, "resolution_angst": None,
                             "resembles": None, "call": None, "unaligned_n": unaligned[name],
                             "message": ALIGN_OFF if self.alignments is None else "not a group of active picks"}
        return out


def _source_report(data) -> dict:
    """What the source set is and how it was made (kind, scenes simulated, boxes per class, seconds).

    ``kind`` ``given`` when the set did not come from this run's simulators (e.g. ``trained=``)."""
    info = {k: v for k, v in (getattr(data, "info", {}) or {}).items()
            if k not in ("truth", "box_scene", "box_position", "box_score")}  # per-particle/box detail stays out
    return {"kind": info.pop("source_kind", "given"), "boxes": data.counts(), **info}


def _jsonable(obj):
    """Plain JSON types (numpy scalars/arrays → numbers/lists; unknown objects → str)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    return str(obj)


@dataclass
class PreparedRun:
    """What the first stages of a run produced (:func:`prepare_run`): the picks, the imaging condition,
    the working geometry and the source model (simulated and trained, or the one given)."""

    picking: object | None  # PickResult (None when picks were given)
    picks: pd.DataFrame
    polarity: str
    resolved: object  # ResolvedCondition
    geometry: dict
    templates: list  # at the working voxel size
    data_params: object  # DatasetParams of the source (working box, voxel size, condition)
    trained: object  # TrainResult
    spectrum: dict | None
    timings: dict


def prepare_run(tomogram, templates: Sequence, params: RunParams, picks: pd.DataFrame | None = None,
                trained=None) -> Generator[Progress, None, PreparedRun]:
    """Stages 1–3 of a run: pick (unless ``picks`` are given), read the imaging condition, simulate and
    train the source model at the working voxel size (skipped when ``trained`` is given).

    :func:`run_pipeline` continues from here; ``batch`` (:mod:`napari_cryo_openset.batch`) calls it
    once per imaging condition to make the source model its tomograms share.
    """
    from .adapt.common import MIN_TARGET_PICKS
    from .picking import pick_particles
    from .picks import validate_picks
    from .simulate.scene_source import generate_scene_source
    from .train import simulate_isolated, train_source

    if not templates:
        raise ParameterError("the run needs at least one template (a map, an atomic model, or 'builtin')")
    timings: dict[str, float] = {}
    vs = tuple(float(v) for v in tomogram.voxel_size)
    if max(vs) - min(vs) > 1e-3 * max(vs):
        raise ParameterError(f"the tomogram's voxels are not cubic ({'/'.join(f'{v:g}' for v in vs)} Å)")
    tomo_vs = vs[0]

    # 1. picks
    t0 = time.perf_counter()
    polarity = params.polarity
    picking = None
    if picks is None:
        picking = yield from pick_particles(tomogram, None, params.picking)
        picks = picking.select(max_picks=params.picking.max_picks)
        polarity = picking.polarity
    else:
        picks = validate_picks(picks.copy())
        max_picks = params.picking.max_picks
        if max_picks is not None and len(picks) > max_picks:
            order = picks["score"].fillna(-np.inf).to_numpy().argsort(kind="stable")[::-1]
            picks = picks.iloc[np.sort(order[:max_picks])].reset_index(drop=True)
    timings["pick"] = time.perf_counter() - t0
    n_active = int((picks["curation"] != "rejected").sum())
    if n_active < MIN_TARGET_PICKS:
        how = "picking found" if picking is not None else "the picks file holds"
        hint = (picking.message if picking is not None and picking.message else
                "pick more particles, lower the threshold, or check --diameter and --polarity")
        raise PicksError(f"{how} {n_active} active picks; the run needs at least {MIN_TARGET_PICKS} ({hint})")

    # 2. the imaging condition: the user's values, the tomogram's own where the user gave none
    t0 = time.perf_counter()
    yield Progress("condition", 0, 1, "reading the imaging condition from the tomogram")
    resolved = resolve_run_condition(tomogram, params, templates=templates, picks=picks)
    yield Progress("condition", 1, 1, resolved.summary())
    timings["condition"] = time.perf_counter() - t0

    # 3. simulate + train at the working voxel size
    largest = max([params.picking.largest_diameter] + [float(t.diameter) for t in templates])
    model_vs, box, binning = working_geometry(tomo_vs, largest, params.box)
    check_box_fits(tomogram.shape, box, binning, "box" if params.box is not None else "the working box")
    if binning > 1:
        templates = [t.at_voxel_size(model_vs) for t in templates]
    geometry = {"tomogram_voxel_size": tomo_vs, "model_voxel_size": model_vs, "bin": binning, "box": box,
                "largest_structure_A": largest, "tomogram_shape": list(map(int, tomogram.shape))}
    resolved = with_slab_note(resolved, templates, tomo_vs, largest)
    data_params = params.source_params(box, model_vs, resolved.condition)
    train_params = params.train_params()
    t0 = time.perf_counter()
    spectrum = None
    if trained is None:
        if params.source_kind == "scenes":
            scene = scene_source_settings(tomogram, picks, resolved.slab, binning, model_vs)
            data = yield from generate_scene_source(
                templates, data_params, replace(params.picking, polarity="dark"),
                polarity=polarity if polarity in ("dark", "bright") else "dark", **scene)
        else:
            data = yield from simulate_isolated(templates, data_params)
        data, spectrum = yield from match_source_spectrum(data, tomogram, picks, binning, params.match_spectrum)
        trained = yield from train_source(data, train_params)
    timings["simulate+train"] = time.perf_counter() - t0

    return PreparedRun(picking=picking, picks=picks, polarity=polarity, resolved=resolved, geometry=geometry,
                       templates=list(templates), data_params=data_params, trained=trained, spectrum=spectrum,
                       timings=timings)


def run_pipeline(tomogram, templates: Sequence, params: RunParams, picks: pd.DataFrame | None = None,
                 trained=None, adapted=None) -> Generator[Progress, None, RunResult]:
    """Pick (unless ``picks`` are given), simulate, train, adapt and embed; return a :class:`RunResult`.

    ``tomogram``: a :class:`~napari_cryo_openset.io.Tomogram`; ``templates``: loaded at the
    tomogram's voxel size (:func:`~napari_cryo_openset.simulate.load_templates`), re-sampled
    here if the run works binned. Given ``picks`` keep their curation: rejected ones are
    left out of adaptation and prediction but stay in the tables. ``trained``: a
    :class:`~napari_cryo_openset.train.TrainResult` of an earlier run with the same source
    parameters (benchmarks compare methods on one source model; ``batch`` shares one per imaging
    condition); simulation and training are skipped. ``adapted``: an
    :class:`~napari_cryo_openset.adapt.AdaptResult` of that source model made elsewhere (``batch
    --joint``: one adaptation to the pooled picks of a group of tomograms); this run's own
    adaptation is skipped and its picks are predicted with it (:func:`finish_run`).
    """
    t_all = time.perf_counter()
    prepared = yield from prepare_run(tomogram, templates, params, picks=picks, trained=trained)
    return (yield from finish_run(tomogram, prepared, params, adapted=adapted, started=t_all))


def finish_run(tomogram, prepared: PreparedRun, params: RunParams, adapted=None, started: float | None = None,
               ) -> Generator[Progress, None, RunResult]:
    """Stages 4–7 of a run, from :func:`prepare_run`'s ``prepared``: adapt to the picks (or, with
    ``adapted`` — an :class:`~napari_cryo_openset.adapt.AdaptResult` of ``prepared.trained``'s model —
    predict them with it), verify the calls against the templates, map and average, and align every
    class and cluster (``params.align``; :func:`align_run`).

    ``started``: :func:`time.perf_counter` at the start of the run (the report's ``total``); None:
    the prepared stages' timings plus this part.
    """
    from .adapt import adapt_to_tomogram, apply_adaptation
    from .checkpoint import bundle_from_training
    from .embed import embed_picks

    t_finish = time.perf_counter()
    picking, picks, polarity, resolved = prepared.picking, prepared.picks, prepared.polarity, prepared.resolved
    geometry, templates, data_params = prepared.geometry, prepared.templates, prepared.data_params
    trained, spectrum, timings = prepared.trained, prepared.spectrum, dict(prepared.timings)
    n_active = int((picks["curation"] != "rejected").sum())
    model = bundle_from_training(trained)

    # 4. adapt to the picks, predicting every active pick (or predict them with the adaptation given)
    t0 = time.perf_counter()
    if adapted is None:
        adaptation = yield from adapt_to_tomogram(model, trained.data, tomogram, picks, params.adapt_params(),
                                                  polarity=polarity)
        timings["adapt"] = time.perf_counter() - t0
    else:
        adaptation = yield from apply_adaptation(adapted, tomogram, picks, polarity, device=params.device)
        timings["predict"] = time.perf_counter() - t0
    adapted = adaptation.result.bundle

    # 5. template verification of the calls
    classified, verification = adaptation.picks, None
    verify_skipped = None
    if params.verify and not any(t.name in set(adapted.class_names) for t in templates):
        verify_skipped = "template verification skipped: none of the templates is a class of the model"
        yield Progress("verify", 1, 1, verify_skipped)
    elif params.verify and n_active > params.verify_max_picks:
        verify_skipped = (f"template verification skipped: {n_active} active picks > --verify-max-picks "
                          f"{params.verify_max_picks} (about 20 ms per pick on 2 CPU cores); the network's own calls "
                          "are written")
        yield Progress("verify", 1, 1, verify_skipped)
    elif params.verify:
        t0 = time.perf_counter()
        classified, verification = yield from verify_run_calls(
            adapted, trained, templates, data_params.condition, tomogram, adaptation.picks, adaptation.polarity, params)
        timings["verify"] = time.perf_counter() - t0

    # 6. map, clusters of unknowns, averages
    t0 = time.perf_counter()
    embedded = yield from embed_picks(adapted, tomogram, classified, adaptation.polarity, params.embed_params(),
                                      device=params.device)
    timings["embed"] = time.perf_counter() - t0

    # 7. every class and cluster aligned, averaged and compared with the known structures
    predictions, alignments = embedded.picks, None
    if params.align:
        t0 = time.perf_counter()
        alignments = yield from align_run(adapted, tomogram, embedded, templates, resolved, params)
        predictions = alignments.apply(embedded.picks)
        timings["align"] = time.perf_counter() - t0
    if started is not None:
        timings["total"] = time.perf_counter() - started
    else:
        timings["total"] = sum(prepared.timings.values()) + time.perf_counter() - t_finish
    return RunResult(tomogram_path=str(getattr(tomogram, "path", "") or ""), params=params, picking=picking,
                     picks=picks, predictions=predictions, trained=trained, model=model, adapted=adapted,
                     adaptation=adaptation, embedded=embedded, geometry=geometry, timings=timings,
                     condition=resolved, spectrum=spectrum, verification=verification,
                     verify_skipped=verify_skipped, alignments=alignments)


def align_run(bundle, tomogram, embedded, templates, resolved, params: RunParams):
    """Stage ``align`` (:func:`~napari_cryo_openset.align.groups.align_run_groups`): the groups of the mapped
    picks ``embedded`` aligned at the working box and voxel size, in the polarity the run used, the
    missing wedge of the resolved condition's tilt range; returns the
    :class:`~napari_cryo_openset.align.groups.GroupAlignments`."""
    from .align.groups import align_run_groups

    source = (resolved.sources.get("tilt_range", "default") if resolved is not None else "default")
    tilt = resolved.condition.tilt_range if resolved is not None else params.source.condition.tilt_range
    return (yield from align_run_groups(bundle, tomogram, embedded.picks, embedded.polarity, templates, tilt,
                                        tilt_source=source, max_boxes=params.n_align_boxes,
                                        params=params.align_params(), threshold=params.resembles_threshold))


def verify_run_calls(bundle, trained, templates, condition, tomogram, picks: pd.DataFrame, polarity: str,
                     params: RunParams, bank=None):
    """Stage ``verify``: the calls of the active picks checked against the known templates
    (:func:`~napari_cryo_openset.verify.verify_calls`); returns (the picks table with the verified
    ``class_name``, ``confidence``, ``unknown_score``, ``is_unknown`` and ``template_correlation``,
    the :class:`~napari_cryo_openset.verify.Verification`).

    ``templates`` at the working voxel size; ``condition`` the simulated one (working voxel
    size); the source validation boxes of ``trained`` calibrate the fusion and the threshold.
    """
    from .device import choose_device
    from .predict import pick_boxes
    from .train import source_boxes
    from .verify import TemplateBank, verify_calls

    known = [t for t in templates if t.name in set(bundle.class_names)]
    device = choose_device(params.device)
    if bank is None:
        yield Progress("verify", 0, 3, f"imaging {len(known)} templates at {params.verify_rotations} rotations")
        bank = TemplateBank(known, condition, int(bundle.box_size), n_rotations=params.verify_rotations,
                            seed=params.seed, device=device)
    data = trained.data
    val = np.asarray(trained.val_indices if trained.val_indices is not None else np.arange(len(data.labels)))
    names = np.asarray(data.class_names)[np.asarray(data.labels)[val]]
    src = source_boxes(data.subtomograms[val], data.polarity)
    active = (picks["curation"] != "rejected").to_numpy()
    boxes, _, _ = pick_boxes(bundle, tomogram, picks.loc[active], polarity)  # cut batch by batch, on demand
    verification = yield from verify_calls(bundle, bank, boxes, src, names, transfer_rule=params.verify_threshold,
                                           score_rule=params.verify_score,
                                           seed=params.seed, device=device)
    out = picks.copy()
    out["template_correlation"] = np.nan
    for column in ("class_name", "confidence", "unknown_score", "template_correlation"):
        out.loc[active, column] = getattr(verification, column)
    out.loc[active, "is_unknown"] = verification.is_unknown
    return out, verification


def with_slab_note(resolved, templates, tomogram_voxel_size: float, largest: float):
    """``resolved`` with a note when its slab is thinner than the largest structure (Å)."""
    if resolved.slab is None:
        return resolved
    thickness = (resolved.slab[1] - resolved.slab[0]) * tomogram_voxel_size
    if thickness >= largest:
        return resolved
    big = ", ".join(t.name for t in templates if float(t.diameter) > thickness) or f"{largest:.0f} Å"
    return replace(resolved, notes=resolved.notes + (
        f"the slab read from the tomogram ({thickness:.0f} Å) is thinner than the largest structure ({big}): "
        "such particles cannot lie whole in it; the simulated scenes use a slab that holds them — check the "
        "templates, or give the slab",))


#: Scene thickness (working voxels) at most, for a target without a slab.
SCENE_Z_MAX = 128


def scene_source_settings(tomogram, picks: pd.DataFrame, slab, binning: int, model_vs: float) -> dict:
    """Slab, scene shape and the target's pick density for a scene-simulated source.

    ``slab``: the resolved (z0, z1) Z edges in tomogram voxels (None: the whole Z is sample).
    Returns keyword arguments of :func:`~napari_cryo_openset.simulate.scene_source.generate_scene_source`:
    ``slab`` (thickness in working voxels) or ``shape`` (Z = the tomogram's thickness in working
    voxels, at most :data:`SCENE_Z_MAX`), ``pick_density`` (active picks per µm³ of the target's
    slab or volume) and the starting ``density`` (1.5 × that: the picker misses particles in a crowd).
    """
    from .simulate.scene_source import SCENE_XY

    shape = [int(v) for v in tomogram.shape]
    tomo_vs = model_vs / binning
    n_active = int((picks["curation"] != "rejected").sum())
    z = (float(slab[1]) - float(slab[0])) if slab is not None else float(shape[0])
    volume_um3 = z * shape[1] * shape[2] * tomo_vs**3 * 1e-12
    pick_density = n_active / volume_um3 if n_active and volume_um3 > 0 else None
    out: dict = {"pick_density": pick_density, "density": 1.5 * pick_density if pick_density else None}
    if slab is not None:
        out["slab"] = z / binning
    else:
        out["shape"] = (int(min(SCENE_Z_MAX, max(16, round(shape[0] / binning)))), SCENE_XY, SCENE_XY)
    return out


#: The target spectrum of the spectral matching is measured on at most this many picks.
MAX_SPECTRUM_PICKS = 2_000


def match_source_spectrum(data, tomogram, picks: pd.DataFrame, binning: int, enabled: bool = True):
    """Spectral matching of the simulated source boxes to the target picks (stage ``spectrum``).

    The target boxes are the active picks extracted at the working box and voxel size (as for
    adaptation); :func:`~napari_cryo_openset.spectrum.fit_spectral_match` fits a per-shell gain
    that makes the source's radial power spectrum follow theirs and every source box is filtered
    by it. Returns (the set, matched or not, and the diagnostic :func:`~napari_cryo_openset.spectrum.spectrum_report`
    — before/after spectra and per-box statistics; with ``enabled`` False only the gap is reported).
    The target spectrum is that of at most :data:`MAX_SPECTRUM_PICKS` active picks (a seeded
    random subset of more: a mean spectrum needs no more, and the boxes are held in memory).
    """
    from .extract import extract_subtomograms
    from .spectrum import apply_spectral_match, fit_spectral_match, spectrum_report

    yield Progress("spectrum", 0, 1, "radial power spectra of the target picks and the source boxes")
    active = picks.loc[picks["curation"] != "rejected", ["z", "y", "x"]].to_numpy(np.float64)
    if len(active) > MAX_SPECTRUM_PICKS:
        rows = np.random.default_rng([int(getattr(data, "seed", 0) or 0), len(active)]).choice(
            len(active), MAX_SPECTRUM_PICKS, replace=False)
        active = active[np.sort(rows)]
    vs = float(data.voxel_size)
    tomo_vs = float(tomogram.voxel_size[0])
    # the sign does not change a power spectrum: bright (kept)
    target = extract_subtomograms(tomogram, active, int(data.box), voxel_size=tomogram.voxel_size,
                                  target_voxel_size=(vs,) * 3 if binning > 1 else None, polarity="bright")
    source = np.asarray(data.subtomograms, dtype=np.float32)
    if not enabled:
        report = spectrum_report(source, None, target, vs)
        yield Progress("spectrum", 1, 1, "spectral matching off")
        return data, report
    match = fit_spectral_match(source, target, vs)
    matched = apply_spectral_match(source, match)
    report = spectrum_report(source, matched, target, vs, match=match)
    data.subtomograms = matched.astype(data.subtomograms.dtype)
    info = getattr(data, "info", None)
    if isinstance(info, dict):
        info["spectral_match"] = True
    yield Progress("spectrum", 1, 1, f"source spectrum matched to {len(target)} target picks "
                   f"(tomogram {tomo_vs:g} Å, boxes at {vs:g} Å)")
    return data, report


def resolve_run_condition(tomogram, params: RunParams, snr_calibrator=None, templates=None, picks=None):
    """The imaging condition the run simulates (:func:`~napari_cryo_openset.estimate.condition.resolve_condition`):
    the tomogram is estimated unless every value is the user's (``params.given`` None). With the
    run's ``templates`` and ``picks`` and no ``snr_calibrator``, an SNR the user did not give is
    calibrated on small scenes like the target (:func:`scene_snr_calibrator`)."""
    from .estimate import estimate_volume
    from .estimate.condition import resolve_condition

    estimate = None
    try:
        estimate = estimate_volume(tomogram, diameter=params.diameter)
    except ParameterError as exc:  # a volume the estimator cannot read: say so, use the given/defaults
        resolved = resolve_condition(params.source.condition, params.given, None)
        return replace(resolved, notes=resolved.notes + (f"no estimate: {exc}",))
    if snr_calibrator is None and templates and picks is not None and estimate.slab is not None:
        first = resolve_condition(params.source.condition, params.given, estimate)  # tilt range etc., no SNR yet
        snr_calibrator = scene_snr_calibrator(tomogram, first.condition, templates, picks, estimate.slab,
                                              params.seed)
    return resolve_condition(params.source.condition, params.given, estimate, snr_calibrator)


#: Below this 3-D SNR (per-voxel variance ratio − 1) of the target's slab, the SNR is calibrated
#: on the low-frequency band's power ratio (:func:`~napari_cryo_openset.estimate.slab.snr_in_slab`).
LOW_SNR3D = 0.02
#: Edge (Y, X voxels) of the scenes that calibrate the SNR: the estimator's central crop (its slab
#: profile reads 256² voxels per slice; at 128² the same condition shows a 3-D SNR 1.5× higher,
#: so a smaller scene calibrates the SNR too low).
SNR_SCENE_XY = 256


def scene_snr_calibrator(tomogram, condition, templates, picks: pd.DataFrame, slab, seed: int = 0):
    """``snr3d → (projection SNR, details)`` for :func:`~napari_cryo_openset.estimate.condition.resolve_condition`.

    The estimator's 3-D SNR of the target's slab is not the simulator's per-projection SNR. A
    small scene like the target — its voxel size, slab (Z edges, tomogram voxels), pick density,
    tilt range and the run's templates, a crowding background in the slab — is simulated at a
    trial SNR and its 3-D SNR measured like the target's, inside the slab it was given
    (:func:`~napari_cryo_openset.estimate.slab.snr_in_slab`: no slab detection, which fails on very
    noisy trials; below :data:`LOW_SNR3D` the band-power ratio on target and trials alike);
    :func:`~napari_cryo_openset.estimate.condition.calibrate_snr` steps the trial towards the
    target (three rounds, a few seconds each at 256²). Measured on the grid's scenes
    (``benchmarks/bench_run.py``, true per-projection SNR 0.05 / 0.2 / 0.03): 0.052, 0.049 /
    0.177, 0.202 / see the grid (was 0.036–0.068 / 0.13–0.18 / the default 0.1: the second trial of
    a 128² scene found no slab).
    """
    from .estimate.condition import calibrate_snr
    from .estimate.slab import snr_in_slab
    from .simulate.scenes import SceneParams, make_scene

    vs = float(tomogram.voxel_size[0])
    nz, ny, nx = (int(v) for v in tomogram.shape)
    xy = min(SNR_SCENE_XY, ny, nx)
    n_active = int((picks["curation"] != "rejected").sum())
    n = max(4, int(round(n_active * xy * xy / (ny * nx))))
    z0, z1 = float(slab[0]) + 0.5, float(slab[1]) - 0.5
    largest = max(float(t.diameter) for t in templates) / vs
    if z1 - z0 < largest + 1:  # the scene's slab must hold the largest structure
        mid, half = 0.5 * (z0 + z1), 0.5 * (largest + 1)
        z0, z1 = max(0.0, mid - half), min(nz - 1.0, mid + half)

    def measure(volume, edges, band: bool):
        try:
            return snr_in_slab(volume, edges, band=band)
        except ParameterError:
            return None

    def calibrate(target: float):
        band = not target >= LOW_SNR3D  # too noisy for the variance ratio: the particles' band instead
        if band:
            target = measure(tomogram.data, (float(slab[0]), float(slab[1])), True)
            if target is None or not target > 0:
                return None, {"statistic": "band power", "reason": "no band power in the target's slab"}

        def snr3d(snr: float):
            scene = SceneParams(shape=(nz, xy, xy), condition=condition.replace(voxel_size=vs, snr=float(snr)),
                                templates=tuple(templates), n_particles=n, background=0.05, slab=(z0, z1),
                                seed=int(seed) + 7)
            return measure(make_scene(scene)[0], (z0, z1), band)

        snr, details = calibrate_snr(target, snr3d, start=float(np.mean(condition.snr_range)))
        return snr, {"statistic": "band power" if band else "variance", **details}

    return calibrate


OUTPUTS = ("picks.star", "predictions.star", "model.pt", "adapted.pt", "report.json", "embedding.png")


def write_run(outdir, result: RunResult) -> dict[str, Path]:
    """Write the run's files into ``outdir`` (created if needed); return their paths by name."""
    from .align.groups import GROUP_FILES, write_group_alignments
    from .checkpoint import save_bundle
    from .embed import write_averages
    from .io import write_picks
    from .io import atomic_path

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)  # a fresh folder: the CLI swaps it in whole (io.atomic_dir)
    vs = result.geometry["tomogram_voxel_size"]
    paths = {name: out / name for name in OUTPUTS}
    write_picks(paths["picks.star"], result.picks, voxel_size=vs)
    write_picks(paths["predictions.star"], result.predictions, voxel_size=vs)
    save_bundle(result.model, paths["model.pt"])
    save_bundle(result.adapted, paths["adapted.pt"])
    plot_embedding(result.predictions, paths["embedding.png"],
                   title=f"{result.params.method.upper()} on {Path(result.tomogram_path).name or 'tomogram'}",
                   model_classes=result.adapted.class_names)
    if result.spectrum is not None:
        from .spectrum import plot_spectra

        paths["spectrum.png"] = plot_spectra(result.spectrum, out / "spectrum.png",
                                             title="source boxes vs target picks: radial power spectra")
    averages = out / "averages"
    averages.mkdir(exist_ok=True)
    for stale in averages.glob("average_*.mrc"):  # groups of an earlier run into the same folder
        stale.unlink()
    for path in write_averages(averages, result.embedded.averages, result.embedded.voxel_size):
        paths[f"averages/{path.name}"] = path
    for stale in averages.iterdir():  # aligned groups of an earlier run into the same folder
        if stale.is_dir() and {p.name for p in stale.iterdir()} <= set(GROUP_FILES):
            for p in stale.iterdir():
                p.unlink()
            stale.rmdir()
    if result.alignments is not None:
        for name, path in write_group_alignments(averages, result.alignments).items():
            paths[f"averages/{name}"] = path
    report = result.report()
    report["outputs"] = sorted(str(p.relative_to(out)) for p in paths.values())
    with atomic_path(paths["report.json"]) as tmp:
        Path(tmp).write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    return paths


def plot_embedding(picks: pd.DataFrame, path, title: str = "", model_classes=None) -> Path:
    """Save the t-SNE map of ``picks`` as a PNG, atomically (drawn by :func:`napari_cryo_openset.plots.plot_embedding`,
    colours ordered by the model's ``model_classes``)."""
    from .plots import plot_embedding as save_map

    return save_map(picks, path, title, model_classes)
