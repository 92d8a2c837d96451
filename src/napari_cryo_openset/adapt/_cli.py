"""The ``adapt`` subcommand of ``napari-cryo-openset`` (ARCHITECTURE.md § 4.1)::

    napari-cryo-openset adapt MODEL.pt --source SOURCE --tomo TOMO.mrc --picks PICKS.star --method ada|mluda
                              -o ADAPTED.pt [--polarity dark|bright|auto] [--iterations N] [--device ...]
                              [--seed N] [--predictions PREDICTIONS.star] [--batch-size N]
                              [--learning-rate LR] [--eval-every N] [--threads N] [--quiet]

Adapts a source model (``train`` output) to the active picks of one tomogram — unlabelled
target data — with 3D-ADA (adversarial) or MLUDA (margin losses + CORAL), recalibrates the
open-set ``unknown`` threshold on the model's held-out *source* data, and writes the adapted
bundle (``.pt``, § 4.3). ``--predictions`` also writes the adapted model's predictions STAR
(§ 4.2; one row per pick, rejected picks unpredicted) — the same file ``predict`` with the
adapted model would write.

``SOURCE`` is the simulated set the model was trained on (the ``.npz`` from ``simulate``): a
model bundle does not carry its training data, and both methods need it (3D-ADA: the source
side of the discriminator; MLUDA: the supervised loss and the class centres).

Progress goes to stderr (tqdm bars per stage, one line per diagnostic round); bad input raises
:class:`~napari_cryo_openset.errors.CryoOpensetError` subclasses naming the file or option, which
the main CLI prints as one line (exit status 2). Outputs are written atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
import zipfile
from pathlib import Path

from ..errors import CryoOpensetError, ParameterError, PicksError
from ..model_cli import (
    _add_device_options,
    _check_device,
    _check_input,
    _check_output,
    _check_picks_inside,
    _finite_float,
    _int,
    _load_model,
    _option_error,
)

METHODS = ("ada", "mluda")  # == adapt.common.METHODS (checked by the tests; no torch import here)
#: AdaptParams defaults shown in --help (checked against the dataclass by the tests).
ADAPT_DEFAULTS = {"iterations": 300, "batch_size": 32, "seed": 0, "eval_every": 25}
_METHOD_NAMES = {"ada": "3D-ADA", "mluda": "MLUDA"}
_OPTIONS = {"iterations": "--iterations", "batch_size": "--batch-size", "seed": "--seed",
            "learning_rate": "--learning-rate", "eval_every": "--eval-every", "method": "--method",
            "threads": "--threads"}


def _print(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``adapt`` subcommand to an ``argparse`` subparsers object."""
    from ..io.picks_io import PICKS_EXTENSIONS

    d = argparse.Namespace(**ADAPT_DEFAULTS)
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
    p.add_argument("--method", required=True, choices=METHODS,
                   help="ada: 3D-ADA (adversarial, ADDA-style); mluda: margin losses + CORAL (open set)")
    p.add_argument("-o", "--output", required=True, metavar="ADAPTED.pt", help="output adapted model bundle (.pt)")
    p.add_argument("--predictions", metavar="PREDICTIONS.star",
                   help=f"also write the adapted model's predictions ({' or '.join(PICKS_EXTENSIONS)})")
    p.add_argument("--polarity", choices=("dark", "bright", "auto"), default="dark",
                   help="protein contrast in this tomogram (default dark; auto guesses from the picks "
                        "and reports the guess)")
    p.add_argument("--iterations", type=_int, default=d.iterations, metavar="N",
                   help="optimisation rounds (default %(default)s; 3D-ADA may stop earlier when the "
                        "domains are aligned or predictions collapse)")
    p.add_argument("--batch-size", type=_int, default=d.batch_size, metavar="N",
                   help="source and target boxes per round, each (default %(default)s)")
    p.add_argument("--learning-rate", type=_finite_float, default=None, metavar="LR",
                   help="Adam learning rate (default by method: ada 1e-5, mluda 1e-4)")
    p.add_argument("--eval-every", type=_int, default=d.eval_every, metavar="N",
                   help="rounds between diagnostics on all target picks (default %(default)s)")
    p.add_argument("--seed", type=_int, default=d.seed, metavar="N", help="seed of everything random (default 0)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    _add_device_options(p)
    p.set_defaults(func=cmd_adapt)
    return p


def adapt_params_from_args(args: argparse.Namespace):
    """:class:`~napari_cryo_openset.adapt.AdaptParams` from parsed arguments (validated)."""
    from .common import AdaptParams

    if args.threads is not None and args.threads < 1:
        raise ParameterError(f"--threads must be ≥ 1, got {args.threads}")
    try:
        return AdaptParams(method=args.method, iterations=args.iterations, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, seed=args.seed, device=args.device,
                           threads=args.threads, amp=not args.no_amp, eval_every=args.eval_every)
    except ParameterError as exc:
        raise _option_error(exc, _OPTIONS) from None


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
    from ..simulate.datasets import load_dataset
    from .common import load_source

    if not zipfile.is_zipfile(path):
        raise CryoOpensetError(f"--source '{path}' is not a simulated set (expected the .npz written by 'simulate')")
    data = load_dataset(path)
    try:
        return data, load_source(data, bundle)
    except ParameterError as exc:
        raise ParameterError(f"--source '{path}' does not fit MODEL.pt '{model_path}': {exc}") from None


def cmd_adapt(args: argparse.Namespace) -> int:
    """Run ``adapt``: load model, source set, tomogram and picks; adapt; write ADAPTED.pt (+ predictions)."""
    from ..io.picks_io import PICKS_EXTENSIONS

    t0 = time.perf_counter()
    # file checks first: they need no torch, so a typo fails at once
    model_path = _check_input(args.model, "MODEL.pt", "a model bundle (.pt) written by 'train'")
    out = _check_output(args.output, (".pt",), "the adapted model file", "adapted.pt")
    if out.resolve() == model_path.resolve():
        raise CryoOpensetError(f"-o '{out}' is MODEL.pt; write the adapted model to another file")
    pred_out = None
    if args.predictions is not None:
        try:
            pred_out = _check_output(args.predictions, PICKS_EXTENSIONS, "the predictions file", "predictions.star")
        except CryoOpensetError as exc:
            raise CryoOpensetError(str(exc).replace("-o ", "--predictions ", 1)) from None
    tomo_path = _check_input(args.tomo, "--tomo", "a tomogram (.mrc)")
    picks_path = _check_input(args.picks, "--picks", "a picks file (.star or .csv)")
    if pred_out is not None and pred_out.resolve() == picks_path.resolve():
        raise CryoOpensetError(f"--predictions '{pred_out}' is the --picks file; write the predictions to another file")
    if args.source is None:
        # the core says the same (ParameterError from load_source); say it before loading anything
        raise ParameterError(
            f"--source is missing: MODEL.pt '{model_path}' is a model without source data, and adaptation needs "
            "the simulated set it was trained on (pass --source SOURCE, the .npz written by 'simulate'"
            + _trained_on_hint(model_path) + ")"
        )
    source_path = _check_input(args.source, "--source", "a simulated set (.npz) written by 'simulate'")
    params = adapt_params_from_args(args)
    _check_device(params.device)

    import numpy as np

    from ..io import read_picks, read_tomogram, write_picks
    from ..progress import run_with_tqdm
    from .common import MIN_TARGET_PICKS
    from .run import adapt_to_tomogram

    bundle = _load_model(model_path)
    if bundle.openset.get("method") == "centre" and "adaptation" in bundle.provenance:
        raise ParameterError(f"MODEL.pt '{model_path}' is already adapted "
                             f"({bundle.provenance['adaptation'].get('method', '?')}); adapt the source model instead")
    _print(f"adapt: model {model_path}: {bundle.describe()}")
    data, source = _load_source(source_path, bundle, model_path)
    counts = ", ".join(f"{k} {v}" for k, v in data.counts().items())
    _print(f"adapt: source {source_path}: {len(data)} subtomograms ({counts}); "
           f"{len(source.train_idx)} for adaptation, {len(source.val_idx)} held out for the unknown threshold")
    tomo = read_tomogram(tomo_path)
    picks = read_picks(picks_path, tomogram_shape=tomo.shape, voxel_size=tomo.voxel_size)
    if len(picks) == 0:
        raise PicksError(f"--picks '{picks_path}' holds no picks; nothing to adapt to")
    n_rejected = int((picks["curation"] == "rejected").sum())
    n_active = len(picks) - n_rejected
    if n_active == 0:
        raise PicksError(f"--picks '{picks_path}': all {len(picks)} picks are marked rejected; nothing to adapt to")
    if n_active < MIN_TARGET_PICKS:
        raise PicksError(f"--picks '{picks_path}': only {n_active} active picks ({n_rejected} rejected); adaptation "
                         f"needs at least {MIN_TARGET_PICKS} (pick more particles or lower the picking threshold)")
    _check_picks_inside(picks, tomo.shape, picks_path, tomo_path)
    file_vs = picks.attrs.get("voxel_size")
    if file_vs is not None and abs(file_vs[0] - tomo.voxel_size[0]) > 0.02 * tomo.voxel_size[0]:
        _print(f"adapt: warning: '{picks_path}' records {file_vs[0]:g} Å voxels but the tomogram has "
               f"{tomo.voxel_size[0]:g} Å; the picks are read as voxels of the tomogram")
    _print(f"adapt: target {tomo_path} ({'×'.join(map(str, tomo.shape))} voxels at "
           f"{'/'.join(f'{v:g}' for v in sorted(set(tomo.voxel_size)))} Å): {n_active} active picks of "
           f"{len(picks)} ({n_rejected} rejected left out); {_METHOD_NAMES[params.method]}, "
           f"up to {params.iterations} round{'s' if params.iterations != 1 else ''} of {params.batch_size} + "
           f"{params.batch_size} boxes")

    job = adapt_to_tomogram(bundle, source, tomo, picks, params, polarity=args.polarity)
    adaptation = run_with_tqdm(_with_diagnostics(job, params.method, bundle.class_names, args.quiet),
                               desc="adapt", disable=args.quiet or None)
    result = adaptation.result
    prov = result.bundle.provenance.setdefault("adaptation", {})
    prov.update(target_tomogram=str(tomo_path.resolve()), target_picks_file=str(picks_path.resolve()),
                source_path=str(source_path.resolve()), command="adapt")
    if args.polarity == "auto":
        _print(f"adapt: polarity guessed {adaptation.polarity} (particle centres "
               f"{'darker' if adaptation.polarity == 'dark' else 'brighter'} than their surroundings; "
               "set --polarity if this is wrong)")
    if adaptation.resampled:
        _print(f"adapt: the tomogram's voxels differ from the model's {bundle.voxel_size:g} Å; boxes were "
               f"resampled to {bundle.box_size}³ voxels of {bundle.voxel_size:g} Å")

    from ..checkpoint import load_bundle, save_bundle

    save_bundle(result.bundle, out)
    load_bundle(out)  # read back: the file on disk is a valid bundle
    if pred_out is not None:
        vs = tomo.voxel_size
        isotropic = max(vs) - min(vs) <= 1e-6 * max(vs)
        write_picks(pred_out, adaptation.picks, voxel_size=vs[0] if isotropic else None)

    active = (adaptation.picks["curation"] != "rejected").to_numpy()
    names = np.asarray(adaptation.picks["class_name"], dtype=str)[active]
    values, freq = np.unique(names, return_counts=True)
    order = sorted(zip(values, freq), key=lambda t: (t[0] == "unknown", -t[1], t[0]))
    class_counts = ", ".join(f"{n} {int(c)}" for n, c in order)
    n_unknown = int(np.sum(names == "unknown"))
    openset = result.bundle.openset
    cal = result.calibration or {}
    _print(f"adapt: {params.method}: {result.stopped}")
    _print(f"adapt: classes of the {len(names)} active picks: {class_counts} ({n_unknown} unknown, "
           f"{n_unknown / max(len(names), 1):.0%})")
    _print(f"adapt: unknown threshold {float(openset.get('threshold', float('nan'))):.4g} "
           f"({openset.get('rule', cal.get('rule', '?'))}, calibrated on held-out source data; score: "
           f"{openset.get('score', 'distance to the nearest class centre')})")
    written = f"{out}" + (f" and {pred_out}" if pred_out is not None else "")
    _print(f"adapt: adaptation {result.seconds:.1f} s, {time.perf_counter() - t0:.1f} s in all → {written}")
    return 0


def _trained_on_hint(model_path: Path) -> str:
    """``; it was trained on '…'`` from the bundle's provenance, when readable (else nothing)."""
    try:
        from ..checkpoint import read_bundle_dict

        prov = read_bundle_dict(model_path).get("provenance") or {}
    except Exception:  # noqa: BLE001 - only a hint; the model is checked properly later
        return ""
    path = prov.get("source_path") if isinstance(prov, dict) else None
    return f"; MODEL.pt records it was trained on '{path}'" if isinstance(path, str) and path else ""
