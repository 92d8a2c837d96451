"""``napari-cryo-openset train SOURCE -o MODEL.pt`` (ARCHITECTURE.md § 4.1).

Learns the classes of a simulated set (``simulate`` output, ``.npz``) and writes a model bundle
(``.pt``, § 4.3) atomically, read back once to prove it loads.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import CryoOpensetError
from ..params import TrainParams
from ._args import add_device_options, add_options, build, check_device, input_file, output_file, say, simulated_set
from ._outputs import bundle_bytes

MODEL_SUFFIX = ".pt"
_OPTIONS = ("epochs", "architecture", "batch_size", "learning_rate", "patience", "validation_fraction", "seed", "amp")


def register(subparsers) -> argparse.ArgumentParser:
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
    add_options(p, TrainParams, _OPTIONS)
    add_device_options(p, TrainParams)
    p.set_defaults(func=cmd_train)
    return p


def train_params_from_args(args: argparse.Namespace) -> TrainParams:
    """:class:`~napari_cryo_openset.params.TrainParams` from parsed arguments (validated)."""
    return build(TrainParams, args, _OPTIONS + ("device", "threads"))


class _TrainReporter:
    """Progress of ``train_source``: a tqdm bar of steps, and one line per finished epoch."""

    def __init__(self, quiet: bool) -> None:
        from ..progress import PlainLines, is_terminal

        self.quiet = quiet
        self.bar = None
        # a log (stderr not a terminal): plain periodic lines instead of a bar
        self.plain = None if quiet or is_terminal(sys.stderr) else PlainLines(sys.stderr, desc="train")

    def __call__(self, event) -> None:
        from tqdm.auto import tqdm

        metrics = getattr(event, "metrics", None) or {}
        if self.plain is not None and event.total > 1:
            self.plain(event)
        elif self.bar is None and event.total > 1:
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
            say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_finite(result, params) -> None:
    """Refuse to write a model whose weights became NaN/inf.

    ``train_source`` stops on a non-finite *training* loss; a step can also leave finite but
    huge losses and non-finite weights (validation loss NaN), which must not become a bundle.
    """
    import torch

    from ..train import TrainingDiverged

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
    source = input_file(args.source, "SOURCE", "a simulated set (.npz) written by 'simulate'")
    out = output_file(args.output, (MODEL_SUFFIX,), "the model file", "model.pt", need=bundle_bytes(),
                      command="train")
    if out.resolve() == source.resolve():
        raise CryoOpensetError(f"-o '{out}' is the source file; choose another name for the model")
    simulated_set(source, "SOURCE")

    from ..checkpoint import bundle_from_training, load_bundle, save_bundle
    from ..progress import run_to_completion
    from ..simulate.datasets import load_dataset
    from ..train import check_training_set, train_source

    params = train_params_from_args(args)
    check_device(params.device)
    data = load_dataset(source)
    counts = ", ".join(f"{k} {v}" for k, v in data.counts().items())
    say(f"train: {source}: {len(data)} subtomograms of {data.box}³ voxels at {data.voxel_size:g} Å "
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
    say(f"train: {bundle.describe()}")
    say(f"train: validation accuracy {result.val_accuracy:.3f} at the best epoch, {result.best_epoch} "
           f"({len(result.history)} of at most {params.epochs} epochs run; {result.stopped}); training "
           f"{result.seconds:.1f} s on {result.device} → {out} ({time.perf_counter() - t0:.1f} s in all)")
    return 0
