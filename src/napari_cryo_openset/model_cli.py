"""The ``train`` and ``predict`` subcommands of ``napari-cryo-openset`` (ARCHITECTURE.md § 4.1)::

    napari-cryo-openset train SOURCE -o MODEL.pt [--epochs N] [--device auto|cpu|cuda|mps] [--seed N]
                              [--architecture fast|ada-reference] [--batch-size N] [--patience N]
                              [--learning-rate LR] [--validation-fraction F] [--threads N]
    napari-cryo-openset predict MODEL.pt --tomo TOMO.mrc --picks PICKS.star -o PREDICTIONS.star
                                [--polarity dark|bright|auto] [--device ...] [--threshold T]
                                [--batch-size N] [--threads N] [--no-resample]

``train`` learns the classes of a simulated set (``simulate`` output, ``.npz``) and writes a
model bundle (``.pt``, § 4.3). ``predict`` classifies every active pick of a tomogram with a
bundle and writes the predictions STAR (§ 4.2): one row per pick — rejected picks keep their
row with an empty class — with ``cosClassName``, ``cosConfidence``, ``cosUnknownScore`` and
``cosCuration``.

Wire both into the main parser with ``register(subparsers)``. Bad input raises
:class:`~napari_cryo_openset.errors.CryoOpensetError` subclasses naming the file or option;
the main CLI prints them as one line and exits with status 2. Outputs are written atomically
(temporary name, then rename), so a failure or Ctrl-C leaves no half-written file.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zipfile
from pathlib import Path

from .errors import CryoOpensetError, ParameterError, PicksError

PROG = "napari-cryo-openset"
MODEL_SUFFIX = ".pt"

# Registered without importing torch (the CLI starts fast for every subcommand); the tests check
# these against models.ARCHITECTURES and TrainParams().
ARCHITECTURES = ("fast", "ada-reference")
TRAIN_DEFAULTS = {"epochs": 30, "batch_size": 64, "learning_rate": 2e-3, "patience": 8,
                  "validation_fraction": 0.15, "seed": 0}


def _print(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# shared checks
# --------------------------------------------------------------------------------------------


def _check_output(path: str, suffixes: tuple[str, ...], what: str, example: str) -> Path:
    """``-o`` must name a file with one of ``suffixes`` in an existing folder."""
    out = Path(path)
    if out.is_dir():
        raise CryoOpensetError(f"-o '{out}' is a folder; give a file name such as {example}")
    if out.suffix.lower() not in suffixes:
        raise CryoOpensetError(f"-o '{out}': {what} must end in {' or '.join(suffixes)} (e.g. {example})")
    if not out.parent.is_dir():
        raise CryoOpensetError(f"-o '{out}': the folder '{out.parent}' does not exist")
    return out


def _check_input(path: str, option: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CryoOpensetError(f"{option} '{p}' does not exist (expected {what})")
    if not p.is_file():
        raise CryoOpensetError(f"{option} '{p}' is not a file (expected {what})")
    return p


def _check_device(device: str):
    """Resolve ``--device`` early (before loading data) so a missing GPU fails at once."""
    from .device import choose_device

    try:
        return choose_device(device)
    except ParameterError as exc:
        raise ParameterError(f"--device: {exc}") from None


def _option_error(exc: ParameterError, names: dict[str, str]) -> ParameterError:
    """Rewrite ``name must …`` messages of the core's parameter checks to name the CLI option."""
    msg = str(exc)
    first = msg.split(" ", 1)[0]
    if first in names:
        msg = names[first] + msg[len(first):]
    return ParameterError(msg)


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|mps",
                   help="where the network runs (default auto: cuda → mps → cpu; also cuda:N)")
    p.add_argument("--threads", type=_int, default=None, metavar="N",
                   help="CPU threads for torch (default: the CPUs available, at most 16)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (summary lines only)")


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

_TRAIN_OPTIONS = {
    "epochs": "--epochs", "batch_size": "--batch-size", "patience": "--patience", "seed": "--seed",
    "learning_rate": "--learning-rate", "validation_fraction": "--validation-fraction",
    "architecture": "--architecture", "threads": "--threads",
}


def _register_train(subparsers) -> argparse.ArgumentParser:
    d = argparse.Namespace(**TRAIN_DEFAULTS)
    p = subparsers.add_parser(
        "train",
        help="train a subtomogram classifier on a simulated set and write a model bundle (.pt)",
        description=(
            "Train a 3D CNN on the classes of a simulated set (the .npz written by 'simulate'), "
            "with wedge-preserving augmentation, a stratified seeded validation hold-out of the set "
            "for early stopping, and AdamW with a cosine schedule. The best epoch (by validation "
            "accuracy) is kept and written, atomically, as a model bundle (.pt, loadable with "
            "torch.load(weights_only=True))."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="simulated set (.npz from 'simulate')")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt", help="output model bundle (.pt)")
    p.add_argument("--epochs", type=_int, default=d.epochs, metavar="N",
                   help="maximum passes over the training split (default %(default)s)")
    p.add_argument("--architecture", choices=ARCHITECTURES, default=ARCHITECTURES[0],
                   help="encoder: 'fast' (default, designed for CPUs) or 'ada-reference' (the 3D-ADA "
                        "encoder; boxes < 37³ are zero-padded to 37³)")
    p.add_argument("--batch-size", type=_int, default=d.batch_size, metavar="N",
                   help="subtomograms per step (default %(default)s)")
    p.add_argument("--learning-rate", type=_finite_float, default=d.learning_rate, metavar="LR",
                   help="AdamW learning rate (default %(default)g; cosine schedule to 5%%)")
    p.add_argument("--patience", type=_int, default=d.patience, metavar="N",
                   help="stop after N epochs without a better validation accuracy (0 = never; "
                        "default %(default)s)")
    p.add_argument("--validation-fraction", type=_finite_float, default=d.validation_fraction, metavar="F",
                   help="stratified hold-out of the set for early stopping, 0.05–0.5 (default %(default)s)")
    p.add_argument("--seed", type=_int, default=d.seed, metavar="N",
                   help="seed of everything random: weights, split, batches, augmentation (default 0)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    _add_device_options(p)
    p.set_defaults(func=cmd_train)
    return p


def train_params_from_args(args: argparse.Namespace):
    """:class:`~napari_cryo_openset.train.TrainParams` from parsed arguments (validated)."""
    from .train import TrainParams

    if args.threads is not None and args.threads < 1:
        raise ParameterError(f"--threads must be ≥ 1, got {args.threads}")
    try:
        return TrainParams(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            validation_fraction=args.validation_fraction, patience=args.patience,
            architecture=args.architecture, seed=args.seed, device=args.device, threads=args.threads,
            amp=not args.no_amp,
        )
    except ParameterError as exc:
        raise _option_error(exc, _TRAIN_OPTIONS) from None


class _TrainReporter:
    """Progress of ``train_source``: a tqdm bar of steps, and one line per finished epoch."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __call__(self, event) -> None:
        from tqdm.auto import tqdm

        metrics = getattr(event, "metrics", None) or {}
        if self.bar is None and event.total > 1:
            self.bar = tqdm(total=event.total, desc="train", file=sys.stderr, disable=self.quiet or None,
                            leave=False, unit="step")
        if self.bar is not None:
            if self.bar.total != event.total:
                self.bar.total = event.total
            self.bar.n = event.step
            if "loss" in metrics and "val_acc" not in metrics:
                self.bar.set_postfix_str(f"epoch {metrics.get('epoch')}, loss {metrics['loss']:.3f}", refresh=False)
            self.bar.refresh()
        if event.message and event.step == 0 and not metrics:
            self.write(f"train: {event.message}")
        if "val_acc" in metrics:
            self.write(
                f"train: epoch {metrics['epoch']}: loss {metrics['loss']:.3f}, train acc {metrics['train_acc']:.3f}, "
                f"val loss {metrics['val_loss']:.3f}, val acc {metrics['val_acc']:.3f}, lr {metrics['lr']:.2g} "
                f"({metrics['seconds']:.1f} s)"
            )

    def write(self, line: str) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=sys.stderr)
            sys.stderr.flush()
        else:
            _print(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_finite(result, params) -> None:
    """Refuse to write a model whose weights became NaN/inf.

    ``train_source`` stops on a non-finite *training* loss; a step can also leave finite but
    huge losses and non-finite weights (validation loss NaN), which must not become a bundle.
    """
    import torch

    from .train import TrainingDiverged

    bad = [name for name, t in result.model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        record = next((r for r in result.history if r.get("epoch") == result.best_epoch), {})
        raise TrainingDiverged(
            f"training diverged: the network's weights became NaN/inf (epoch {result.best_epoch}: loss "
            f"{record.get('loss', float('nan')):.3g}, validation loss {record.get('val_loss', float('nan')):.3g}); "
            f"lower the learning rate (--learning-rate, now {params.learning_rate:g}); no model was written"
        )


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``train``: load SOURCE, train with progress on stderr, write MODEL.pt; return 0."""
    t0 = time.perf_counter()
    # file checks first: they need no torch, so a typo fails at once
    source = _check_input(args.source, "SOURCE", "a simulated set (.npz) written by 'simulate'")
    out = _check_output(args.output, (MODEL_SUFFIX,), "the model file", "model.pt")
    if out.resolve() == source.resolve():
        raise CryoOpensetError(f"-o '{out}' is the source file; choose another name for the model")
    if not zipfile.is_zipfile(source):
        raise CryoOpensetError(f"SOURCE '{source}' is not a simulated set (expected the .npz written by 'simulate')")

    from .checkpoint import bundle_from_training, load_bundle, save_bundle
    from .progress import run_to_completion
    from .simulate.datasets import load_dataset
    from .train import check_training_set, train_source

    params = train_params_from_args(args)
    _check_device(params.device)
    data = load_dataset(source)
    counts = ", ".join(f"{k} {v}" for k, v in data.counts().items())
    _print(f"train: {source}: {len(data)} subtomograms of {data.box}³ voxels at {data.voxel_size:g} Å "
           f"({counts}); {params.architecture} network, up to {params.epochs} epoch{'s' if params.epochs != 1 else ''}")
    check_training_set(data.labels, data.class_names, f"SOURCE '{source}'")
    reporter = _TrainReporter(args.quiet)
    try:
        result = run_to_completion(train_source(data, params), reporter)
    finally:
        reporter.close()
    _check_finite(result, params)
    bundle = bundle_from_training(result, source_path=str(source.resolve()), command="train")
    save_bundle(bundle, out)
    load_bundle(out)  # read back: the file on disk is a valid bundle
    _print(f"train: {bundle.describe()}")
    _print(f"train: validation accuracy {result.val_accuracy:.3f} at the best epoch, {result.best_epoch} "
           f"({len(result.history)} of at most {params.epochs} epochs run; {result.stopped}); training "
           f"{result.seconds:.1f} s on {result.device} → {out} ({time.perf_counter() - t0:.1f} s in all)")
    return 0


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


def _register_predict(subparsers) -> argparse.ArgumentParser:
    from .io.picks_io import PICKS_EXTENSIONS

    p = subparsers.add_parser(
        "predict",
        help="classify the picks of a tomogram with a model bundle and write predictions (STAR)",
        description=(
            "Extract a box at every active pick (accepted and unreviewed; rejected picks keep their "
            "row and get no prediction), classify it with the model and write the predictions STAR "
            "(or CSV): one row per pick with cosClassName (a known class or 'unknown'), "
            "cosConfidence (0..1), cosUnknownScore (higher = more likely unknown) and cosCuration. "
            "A tomogram at another voxel size than the model's is resampled box by box (reported)."
        ),
    )
    p.add_argument("model", metavar="MODEL.pt", help="model bundle written by 'train' or 'adapt'")
    p.add_argument("--tomo", required=True, metavar="TOMO.mrc", help="tomogram (MRC), read memory-mapped")
    p.add_argument("--picks", required=True, metavar="PICKS.star",
                   help="picks in voxels of this tomogram (.star or .csv, e.g. from 'pick')")
    p.add_argument("-o", "--output", required=True, metavar="PREDICTIONS.star",
                   help=f"output predictions ({' or '.join(PICKS_EXTENSIONS)}), written atomically")
    p.add_argument("--polarity", choices=("dark", "bright", "auto"), default="dark",
                   help="protein contrast in this tomogram (default dark; auto guesses from the picks "
                        "and reports the guess)")
    p.add_argument("--threshold", type=_finite_float, default=None, metavar="T",
                   help="unknown-score threshold above which a pick is 'unknown' (default: the model's)")
    p.add_argument("--batch-size", type=_int, default=128, metavar="N",
                   help="boxes per network call (default %(default)s)")
    p.add_argument("--no-resample", action="store_true",
                   help="refuse a tomogram whose voxel size differs from the model's instead of "
                        "resampling the boxes")
    _add_device_options(p)
    p.set_defaults(func=cmd_predict)
    return p


def _load_model(path: Path):
    """:func:`~napari_cryo_openset.checkpoint.load_bundle`, with any failure as one clear BundleError."""
    from .checkpoint import BundleError, load_bundle

    if not zipfile.is_zipfile(path):  # bundles are torch.save zip archives; refuse anything else unread
        raise BundleError(f"MODEL.pt '{path}' is not a napari-cryo-openset model bundle (not a torch.save archive)")
    try:
        return load_bundle(path)
    except CryoOpensetError:
        raise
    except Exception as exc:  # torch.load fails in many ways on foreign files
        raise BundleError(f"MODEL.pt '{path}' is not a napari-cryo-openset model bundle "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from None


def _check_picks_inside(picks, shape, picks_path: Path, tomo_path: Path) -> None:
    """Active picks must lie inside the tomogram; one message naming both files."""
    import numpy as np

    active = picks[picks["curation"] != "rejected"]
    coords = active[["z", "y", "x"]].to_numpy(np.float64)
    size = np.asarray(shape, dtype=np.float64)
    outside = np.any((coords < -0.5) | (coords > size - 0.5), axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        z, y, x = (round(float(v), 2) for v in coords[i])
        raise PicksError(
            f"--picks '{picks_path}': {int(outside.sum())} of {len(coords)} pick(s) lie outside the tomogram "
            f"'{tomo_path}' of {'×'.join(map(str, shape))} (Z×Y×X) voxels (first: row {int(active.index[i]) + 1} "
            f"at x={x}, y={y}, z={z}); are the picks in voxels of this tomogram?"
        )


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``predict``: load the model, tomogram and picks, classify, write the predictions."""
    from .io.picks_io import PICKS_EXTENSIONS

    out = _check_output(args.output, PICKS_EXTENSIONS, "the predictions file", "predictions.star")
    model_path = _check_input(args.model, "MODEL.pt", "a model bundle (.pt) written by 'train' or 'adapt'")
    tomo_path = _check_input(args.tomo, "--tomo", "a tomogram (.mrc)")
    picks_path = _check_input(args.picks, "--picks", "a picks file (.star or .csv)")
    if out.resolve() == picks_path.resolve():
        raise CryoOpensetError(f"-o '{out}' is the --picks file; write the predictions to another file")
    if args.threads is not None and args.threads < 1:
        raise ParameterError(f"--threads must be ≥ 1, got {args.threads}")
    if args.batch_size < 1:
        raise ParameterError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if args.threshold is not None and args.threshold < 0:
        raise ParameterError(f"--threshold must be ≥ 0 (an unknown score), got {args.threshold:g}")

    import numpy as np

    from .io import read_picks, read_tomogram, write_picks
    from .predict import PredictParams, predict_picks
    from .progress import run_with_tqdm

    _check_device(args.device)
    params = PredictParams(polarity=args.polarity, batch_size=args.batch_size, device=args.device,
                           threads=args.threads, threshold=args.threshold, allow_resampling=not args.no_resample)

    bundle = _load_model(model_path)
    _print(f"predict: model {model_path}: {bundle.describe()}")
    tomo = read_tomogram(tomo_path)
    picks = read_picks(picks_path, tomogram_shape=tomo.shape, voxel_size=tomo.voxel_size)
    if len(picks) == 0:
        raise PicksError(f"--picks '{picks_path}' holds no picks; nothing to classify")
    n_rejected = int((picks["curation"] == "rejected").sum())
    if n_rejected == len(picks):
        raise PicksError(f"--picks '{picks_path}': all {len(picks)} picks are marked rejected; nothing to classify")
    _check_picks_inside(picks, tomo.shape, picks_path, tomo_path)
    file_vs = picks.attrs.get("voxel_size")
    if file_vs is not None and abs(file_vs[0] - tomo.voxel_size[0]) > 0.02 * tomo.voxel_size[0]:
        _print(f"predict: warning: '{picks_path}' records {file_vs[0]:g} Å voxels but the tomogram has "
               f"{tomo.voxel_size[0]:g} Å; the picks are read as voxels of the tomogram")
    _print(f"predict: {len(picks) - n_rejected} active picks of {len(picks)} ({n_rejected} rejected kept "
           f"unpredicted) in {tomo_path} ({'×'.join(map(str, tomo.shape))} voxels at "
           f"{'/'.join(f'{v:g}' for v in sorted(set(tomo.voxel_size)))} Å)")

    result = run_with_tqdm(predict_picks(bundle, tomo, picks, params), desc="predict",
                           disable=args.quiet or None)
    if args.polarity == "auto":
        _print(f"predict: polarity guessed {result.polarity} (particle centres "
               f"{'darker' if result.polarity == 'dark' else 'brighter'} than their surroundings; "
               "set --polarity if this is wrong)")
    if result.resampled:
        _print(f"predict: the tomogram's {'/'.join(f'{v:g}' for v in sorted(set(tomo.voxel_size)))} Å voxels "
               f"differ from the model's {bundle.voxel_size:g} Å; boxes were resampled to "
               f"{bundle.box_size}³ voxels of {bundle.voxel_size:g} Å")
    vs = tomo.voxel_size
    isotropic = max(vs) - min(vs) <= 1e-6 * max(vs)
    write_picks(out, result.picks, voxel_size=vs[0] if isotropic else None)
    n_unknown = int(np.sum(result.picks["class_name"] == "unknown"))
    _print(f"predict: {result.summary()}; {n_unknown} unknown; {result.seconds:.1f} s → {out}")
    return 0


# --------------------------------------------------------------------------------------------


def register(subparsers) -> None:
    """Add the ``train`` and ``predict`` subcommands to an ``argparse`` subparsers object."""
    _register_train(subparsers)
    _register_predict(subparsers)
