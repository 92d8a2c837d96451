"""``napari-cryo-openset predict MODEL.pt --tomo TOMO.mrc --picks PICKS.star -o PREDICTIONS.star`` (§ 4.1).

Classifies every active pick of a tomogram with a bundle and writes the predictions STAR (§ 4.2):
one row per pick — rejected picks keep their row with an empty class — with ``cosClassName``,
``cosConfidence``, ``cosUnknownScore`` and ``cosCuration``.
"""

from __future__ import annotations

import argparse

from ..errors import CryoOpensetError
from ..params import PredictParams
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
    voxels_text,
    write_table,
)

_OPTIONS = ("polarity", "threshold", "batch_size")


def register(subparsers) -> argparse.ArgumentParser:
    from ..io.picks_io import PICKS_EXTENSIONS

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
    add_options(p, PredictParams, _OPTIONS)
    add_options(p, PredictParams, ("allow_resampling",), allow_resampling="--no-resample")
    add_device_options(p, PredictParams)
    p.set_defaults(func=cmd_predict)
    return p


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``predict``: load the model, tomogram and picks, classify, write the predictions."""
    from ..io.picks_io import PICKS_EXTENSIONS

    out = output_file(args.output, PICKS_EXTENSIONS, "the predictions file", "predictions.star")
    model_path = input_file(args.model, "MODEL.pt", "a model bundle (.pt) written by 'train' or 'adapt'")
    tomo_path = input_file(args.tomo, "--tomo", "a tomogram (.mrc)")
    picks_path = input_file(args.picks, "--picks", "a picks file (.star or .csv)")
    if out.resolve() == picks_path.resolve():
        raise CryoOpensetError(f"-o '{out}' is the --picks file; write the predictions to another file")
    params = build(PredictParams, args, _OPTIONS + ("allow_resampling", "device", "threads"))

    import numpy as np

    from ..predict import predict_picks
    from ..progress import run_with_tqdm

    check_device(params.device)
    bundle = load_model(model_path)
    say(f"predict: model {model_path}: {bundle.describe()}")
    tomo, picks = read_target(tomo_path, picks_path, "predict")
    n_rejected = int((picks["curation"] == "rejected").sum())
    say(f"predict: {len(picks) - n_rejected} active picks of {len(picks)} ({n_rejected} rejected kept "
        f"unpredicted) in {tomo_path} ({'×'.join(map(str, tomo.shape))} voxels at {voxels_text(tomo.voxel_size)} Å)")

    result = run_with_tqdm(predict_picks(bundle, tomo, picks, params), desc="predict", disable=args.quiet or None)
    if params.polarity == "auto":
        say(f"predict: polarity guessed {result.polarity} (particle centres "
            f"{'darker' if result.polarity == 'dark' else 'brighter'} than their surroundings; "
            "set --polarity if this is wrong)")
    if result.resampled:
        say(f"predict: the tomogram's {voxels_text(tomo.voxel_size)} Å voxels differ from the model's "
            f"{bundle.voxel_size:g} Å; boxes were resampled to {bundle.box_size}³ voxels of {bundle.voxel_size:g} Å")
    write_table(out, result.picks, tomo.voxel_size)
    n_unknown = int(np.sum(result.picks["class_name"] == "unknown"))
    say(f"predict: {result.summary()}; {n_unknown} unknown; {result.seconds:.1f} s → {out}")
    return 0
