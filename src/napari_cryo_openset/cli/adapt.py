"""``napari-cryo-openset adapt MODEL.pt --source SOURCE --tomo TOMO.mrc --picks PICKS.star --method ada|mluda
-o ADAPTED.pt`` (ARCHITECTURE.md § 4.1).

Adapts a source model (``train`` output) to the active picks of one tomogram — unlabelled target
data — with 3D-ADA (adversarial) or MLUDA (margin losses + CORAL), recalibrates the open-set
``unknown`` threshold on the model's held-out *source* data, and writes the adapted bundle
(``.pt``, § 4.3). ``--predictions`` also writes the adapted model's predictions STAR (§ 4.2) —
the file ``predict`` with the adapted model would write.

``--labels PICKS.star`` refines with the user's curated labels (``cosCuratedClassName``;
:mod:`napari_cryo_openset.adapt.refine`): they are learnt from in every round and, when there are
enough, recalibrate the unknown threshold.

``SOURCE`` is the simulated set the model was trained on: a bundle does not carry its training
data, and both methods need it (3D-ADA: the source side of the discriminator; MLUDA: the
supervised loss and the class centres).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import CryoOpensetError, ParameterError
from ..params import AdaptParams
from ..picks import class_counts
from ._outputs import MB
from ._args import (
    add_device_options,
    add_options,
    build,
    check_device,
    input_file,
    load_model,
    output_file,
    read_target,
    say,
    simulated_set,
    voxels_text,
    write_table,
)

_OPTIONS = ("method", "iterations", "batch_size", "learning_rate", "eval_every", "seed", "amp", "label_weight",
            "label_learning_rate", "label_iterations", "label_batch_size")
_METHOD_NAMES = {"ada": "3D-ADA", "mluda": "MLUDA"}


def register(subparsers) -> argparse.ArgumentParser:
    from ..io.picks_io import PICKS_EXTENSIONS

    p = subparsers.add_parser(
        "adapt",
        help="adapt a model to a tomogram's picks (3D-ADA or MLUDA) and write the adapted model (.pt)",
        description=(
            "Adapt a source model (written by 'train') to the active picks of a tomogram — accepted and "
            "unreviewed; rejected picks are left out — without any labels: 3D-ADA aligns the encoder's "
            "features adversarially, MLUDA fine-tunes with margin losses and CORAL. The unknown threshold "
            "is recalibrated on the model's held-out source data. Writes the adapted bundle atomically; "
            "--predictions also writes its predictions (STAR/CSV, one row per pick)."
        ),
    )
    p.add_argument("model", metavar="MODEL.pt", help="source model bundle written by 'train'")
    p.add_argument("--source", metavar="SOURCE",
                   help="the simulated set (.npz from 'simulate') MODEL.pt was trained on (required: a "
                        "model file does not hold its training data)")
    p.add_argument("--tomo", required=True, metavar="TOMO.mrc", help="target tomogram (MRC), read memory-mapped")
    p.add_argument("--picks", required=True, metavar="PICKS.star",
                   help="picks in voxels of this tomogram (.star or .csv); rejected picks are left out")
    p.add_argument("-o", "--output", required=True, metavar="ADAPTED.pt", help="output adapted model bundle (.pt)")
    p.add_argument("--predictions", metavar="PREDICTIONS.star",
                   help=f"also write the adapted model's predictions ({' or '.join(PICKS_EXTENSIONS)})")
    p.add_argument("--labels", metavar="PICKS.star",
                   help="refine with your labels: a picks file of this tomogram whose cosCuratedClassName column "
                        "holds your classes (a model class or unknown) — e.g. the predictions file you curated. The "
                        "labelled picks are matched to --picks by position (within 1 voxel; others are added), "
                        "learnt from in every round, and recalibrate the unknown threshold (Youden's J, when at "
                        "least 3 known and 3 unknown labels)")
    p.add_argument("--polarity", choices=("dark", "bright", "auto"), default="dark",
                   help="protein contrast in this tomogram (default dark; auto guesses from the picks "
                        "and reports the guess)")
    add_options(p, AdaptParams, _OPTIONS, required=("method",))
    add_device_options(p, AdaptParams)
    p.set_defaults(func=cmd_adapt)
    return p


def adapt_params_from_args(args: argparse.Namespace) -> AdaptParams:
    """:class:`~napari_cryo_openset.params.AdaptParams` from parsed arguments (validated)."""
    return build(AdaptParams, args, _OPTIONS + ("device", "threads"))


def _diagnostic_line(metrics: dict, method: str, class_names) -> str:
    """One line per diagnostic round (the records with a target class histogram)."""
    hist = metrics.get("histogram") or []
    names = [c for c in class_names if c != "unknown"] if method == "mluda" else list(class_names)
    counts = ", ".join(f"{n} {int(c)}" for n, c in zip(names, hist) if int(c))
    if method == "mluda":
        head = (f"loss {metrics.get('loss', float('nan')):.3f} (ce {metrics.get('ce', float('nan')):.3f}, "
                f"coral {metrics.get('coral', float('nan')):.3g}), target unknown fraction "
                f"{metrics.get('target_unknown_fraction', float('nan')):.2f}")
    else:
        head = (f"D loss {metrics.get('loss_d', float('nan')):.3f}, "
                f"target loss {metrics.get('loss_t', float('nan')):.3f}, D acc {metrics.get('d_acc', float('nan')):.2f}")
    return (f"adapt: round {metrics.get('iteration')}: {head}; predicted on the target: {counts or '-'} "
            f"(entropy {metrics.get('entropy', float('nan')):.2f})")


def _with_diagnostics(gen, method: str, class_names, quiet: bool):
    """Pass the job's events through, writing a line for each diagnostic record (above the bars)."""
    from tqdm.auto import tqdm

    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        metrics = getattr(event, "metrics", None) or {}
        if getattr(event, "stage", "") == "adapt" and "histogram" in metrics and not quiet:
            tqdm.write(_diagnostic_line(metrics, method, class_names), file=sys.stderr)
            sys.stderr.flush()
        yield event


def _load_source(path: Path, bundle, model_path: Path):
    """The simulated set, checked against the model (one message naming both files)."""
    from ..adapt import load_source
    from ..simulate.datasets import load_dataset

    data = load_dataset(simulated_set(path, "--source"))
    try:
        return data, load_source(data, bundle)
    except ParameterError as exc:
        raise ParameterError(f"--source '{path}' does not fit MODEL.pt '{model_path}': {exc}") from None


def cmd_adapt(args: argparse.Namespace) -> int:
    """Run ``adapt``: load model, source set, tomogram and picks; adapt; write ADAPTED.pt (+ predictions)."""
    from ..io.picks_io import PICKS_EXTENSIONS

    t0 = time.perf_counter()
    # file checks first: they need no torch, so a typo fails at once
    model_path = input_file(args.model, "MODEL.pt", "a model bundle (.pt) written by 'train'")
    # the adapted bundle adds a source encoder and a discriminator to the model's weights
    out = output_file(args.output, (".pt",), "the adapted model file", "adapted.pt",
                      need=3 * model_path.stat().st_size + MB, command="adapt")
    if out.resolve() == model_path.resolve():
        raise CryoOpensetError(f"-o '{out}' is MODEL.pt; write the adapted model to another file")
    pred_out = None
    if args.predictions is not None:
        pred_out = output_file(args.predictions, PICKS_EXTENSIONS, "the predictions file", "predictions.star",
                               option="--predictions", command="adapt")
    tomo_path = input_file(args.tomo, "--tomo", "a tomogram (.mrc)")
    picks_path = input_file(args.picks, "--picks", "a picks file (.star or .csv)")
    if pred_out is not None and pred_out.resolve() == picks_path.resolve():
        raise CryoOpensetError(f"--predictions '{pred_out}' is the --picks file; write the predictions to another file")
    labels_path = None
    if getattr(args, "labels", None) is not None:
        labels_path = input_file(args.labels, "--labels", "a picks file with curated labels (.star or .csv)")
    if args.source is None:
        # the core says the same (ParameterError from load_source); say it before loading anything
        raise ParameterError(
            f"--source is missing: MODEL.pt '{model_path}' is a model without source data, and adaptation needs "
            "the simulated set it was trained on (pass --source SOURCE, the .npz written by 'simulate'"
            + _trained_on_hint(model_path) + ")"
        )
    source_path = input_file(args.source, "--source", "a simulated set (.npz) written by 'simulate'")
    params = adapt_params_from_args(args)
    check_device(params.device)

    from ..adapt.common import MIN_TARGET_PICKS, is_adapted
    from ..adapt import adapt_to_tomogram
    from ..progress import run_with_tqdm

    bundle = load_model(model_path)
    if is_adapted(bundle):
        raise ParameterError(f"MODEL.pt '{model_path}' is already adapted "
                             f"({bundle.provenance['adaptation'].get('method', '?')}); adapt the source model instead")
    say(f"adapt: model {model_path}: {bundle.describe()}")
    data, source = _load_source(source_path, bundle, model_path)
    counts = ", ".join(f"{k} {v}" for k, v in data.counts().items())
    say(f"adapt: source {source_path}: {len(data)} subtomograms ({counts}); "
        f"{len(source.train_idx)} for adaptation, {len(source.val_idx)} held out for the unknown threshold")
    tomo, picks = read_target(tomo_path, picks_path, "adapt", at_least=MIN_TARGET_PICKS, purpose="adapt to")
    n_rejected = int((picks["curation"] == "rejected").sum())
    n_active = len(picks) - n_rejected
    say(f"adapt: target {tomo_path} ({'×'.join(map(str, tomo.shape))} voxels at {voxels_text(tomo.voxel_size)} Å): "
        f"{n_active} active picks of {len(picks)} ({n_rejected} rejected left out); {_METHOD_NAMES[params.method]}, "
        + _rounds_text(params, labels_path is not None))

    if labels_path is not None:
        from ..adapt.refine import refine_with_labels

        picks = _merge_labels(labels_path, picks, picks_path, tomo, tomo_path, bundle)
        job = refine_with_labels(bundle, source, tomo, picks, params, polarity=args.polarity)
    else:
        job = adapt_to_tomogram(bundle, source, tomo, picks, params, polarity=args.polarity)
    adaptation = run_with_tqdm(_with_diagnostics(job, params.method, bundle.class_names, args.quiet),
                               desc="adapt", disable=args.quiet or None)
    result = adaptation.result
    prov = result.bundle.provenance.setdefault("adaptation", {})
    prov.update(target_tomogram=str(tomo_path.resolve()), target_picks_file=str(picks_path.resolve()),
                source_path=str(source_path.resolve()), command="adapt")
    if labels_path is not None:
        prov["labels_file"] = str(labels_path.resolve())
    if args.polarity == "auto":
        say(f"adapt: polarity guessed {adaptation.polarity} (particle centres "
            f"{'darker' if adaptation.polarity == 'dark' else 'brighter'} than their surroundings; "
            "set --polarity if this is wrong)")
    if adaptation.resampled:
        say(f"adapt: the tomogram's voxels differ from the model's {bundle.voxel_size:g} Å; boxes were "
            f"resampled to {bundle.box_size}³ voxels of {bundle.voxel_size:g} Å")

    _write_outputs(out, pred_out, result.bundle, adaptation.picks, tomo.voxel_size)

    active = (adaptation.picks["curation"] != "rejected").to_numpy()
    counts = class_counts(adaptation.picks["class_name"].astype(str).to_numpy()[active])
    n_unknown = counts.get("unknown", 0)
    n = int(active.sum())
    openset = result.bundle.openset
    cal = result.calibration or {}
    say(f"adapt: {params.method}: {result.stopped}")
    say(f"adapt: classes of the {n} active picks: {', '.join(f'{k} {v}' for k, v in counts.items())} "
        f"({n_unknown} unknown, {n_unknown / max(n, 1):.0%})")
    refined = getattr(adaptation, "threshold", None)
    if refined is not None and refined.get("rule") == "curated-youden":
        say(f"adapt: unknown threshold {float(openset.get('threshold', float('nan'))):.4g} (recalibrated on "
            f"{refined['n_used']} curated picks: {refined['why']}; label-free threshold "
            f"{refined['label_free_threshold']:.4g})")
    else:
        say(f"adapt: unknown threshold {float(openset.get('threshold', float('nan'))):.4g} "
            f"({openset.get('rule', cal.get('rule', '?'))}, calibrated on held-out source data; score: "
            f"{openset.get('score', 'distance to the nearest class centre')})"
            + (f"; not recalibrated on the labels: {refined['why']}" if refined is not None else ""))
    if refined is not None:
        say(f"adapt: refined with {adaptation.labels['n']} curated labels "
            f"({', '.join(f'{k} {v}' for k, v in adaptation.labels['per_class'].items())}); the refined model calls "
            f"{adaptation.agreement:.0%} of them as you did (your labels are kept in cosCuratedClassName)")
    written = f"{out}" + (f" and {pred_out}" if pred_out is not None else "")
    say(f"adapt: adaptation {result.seconds:.1f} s, {time.perf_counter() - t0:.1f} s in all → {written}")
    return 0


def _rounds_text(params: AdaptParams, refining: bool) -> str:
    """``up to N rounds of B + B boxes`` — a refinement with labels has its own rounds and batch."""
    n, b = (params.label_iterations, params.label_batch_size) if refining else (params.iterations, params.batch_size)
    return f"up to {n} round{'s' if n != 1 else ''} of {b} + {b} boxes" + (" (refining with labels)" if refining else "")


def _write_outputs(out: Path, pred_out: Path | None, bundle, picks, voxel_size) -> None:
    """ADAPTED.pt and PREDICTIONS.star as one unit: both are written, then both renamed in place."""
    from ..checkpoint import load_bundle, save_bundle
    from ..io._atomic import atomic_paths

    targets = [out] if pred_out is None else [out, pred_out]
    with atomic_paths(targets) as temps:
        save_bundle(bundle, temps[0])
        load_bundle(temps[0])  # read back: the file on disk is a valid bundle
        if pred_out is not None:
            write_table(temps[1], picks, voxel_size)


def _trained_on_hint(model_path: Path) -> str:
    """``; it was trained on '…'`` from the bundle's provenance, when readable (else nothing)."""
    try:
        from ..checkpoint import read_bundle_dict

        prov = read_bundle_dict(model_path).get("provenance") or {}
    except Exception:  # noqa: BLE001 - only a hint; the model is checked properly later
        return ""
    path = prov.get("source_path") if isinstance(prov, dict) else None
    return f"; MODEL.pt records it was trained on '{path}'" if isinstance(path, str) and path else ""


def _merge_labels(labels_path: Path, picks, picks_path: Path, tomo, tomo_path: Path, bundle):
    """The --picks table with the curated labels of --labels, checked (one message naming --labels)."""
    from ..curation import check_curated_labels, check_labels_fit_tomogram, is_curated, label_summary, merge_labels
    from ..errors import PicksError
    from ..io import read_picks

    where = f"--labels '{labels_path}'"
    labels = read_picks(labels_path, tomogram_shape=tomo.shape, voxel_size=tomo.voxel_size)
    if not is_curated(labels).any():
        raise PicksError(f"{where} holds no curated labels (no cosCuratedClassName values); label picks first — a "
                         "model class or unknown per pick")
    check_labels_fit_tomogram(labels, tomo.shape, tomo.voxel_size[0], where=where, tomogram=f"the tomogram '{tomo_path}'")
    check_curated_labels(labels, bundle.class_names, where)
    check_curated_labels(picks, bundle.class_names, f"--picks '{picks_path}'")  # labels it carries itself
    merged, info = merge_labels(picks, labels, where=where)
    counts = ", ".join(f"{k} {v}" for k, v in label_summary(merged).items())
    say(f"adapt: labels {labels_path}: {int(is_curated(merged).sum())} curated picks ({counts}); {info['matched']} "
        f"matched to --picks, {info['added']} added as accepted picks")
    return merged
