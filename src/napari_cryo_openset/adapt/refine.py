"""Refine with my labels: re-adapt to a tomogram with the user's curated picks as labelled targets.

The only target labels this package ever uses are the ones the user gave (``curated_class``,
:mod:`napari_cryo_openset.curation`). :func:`refine_with_labels` runs the chosen method's
adaptation from the *source* model exactly as :func:`~.run.adapt_to_tomogram` does — same
rounds (:func:`~.loop.run_rounds`), same label-free losses — and adds, every round, a loss on a
batch of curated picks (:class:`~.loop.LabelledTargets`, weight ``label_weight``):

- both methods: cross-entropy of the classifier on the curated labels (a curated ``unknown``
  targets the network's ``unknown`` output, which it learnt from the simulated decoys);
- MLUDA in addition: curated known picks are pulled within m1 of their class centre (L_d's pull)
  and curated ``unknown`` picks pushed beyond m3 from every centre — the open-set margin L_c, on
  target features;
- 3D-ADA: the cross-entropy flows through the frozen classifier into the target encoder, in the
  target-encoder step.

The whole refinement runs at ``label_learning_rate`` (default ten times the method's label-free
rate: at MLUDA's 1e-4, eight curated picks were still mostly miscalled after 60 rounds; at 1e-3,
6 of 8 were called as labelled), for ``label_iterations`` rounds of ``label_batch_size`` source +
target boxes (defaults 100 and 16, in place of ``iterations`` and ``batch_size``): a refinement is
an interactive step and must fit about a minute — measured with 50 labels on 500 picks of 32³ on
2 CPU threads, 100 rounds of 16 + 16 boxes take ≈ 24 CPU-seconds per thread, the label-free
300 × 32 ≈ 183. With no label the plain adaptation's settings apply. Rejected picks are left out of the target set (as in every
stage); curated picks stay in it.

**Threshold.** After the rounds, the label-free threshold (source validation, checked on the
target's score distribution — :mod:`.result`) is recalibrated on the curated picks, the only
labels: with at least :data:`MIN_PER_SIDE` curated known *and* :data:`MIN_PER_SIDE` curated
``unknown`` picks, τ = Youden's J optimum between their unknown scores
(:func:`~napari_cryo_openset.openset.calibrate_threshold`, rule ``youden``), kept only when
J > 0; otherwise the label-free threshold stays. :attr:`Refinement.threshold` says which rule
decided and how many labels it used.

**Curated labels are never changed**: the returned picks carry the input ``curated_class``
column as it was; the model's own call stays in ``class_name`` beside it.

A generator yielding :class:`~napari_cryo_openset.progress.Progress` like every long job;
stopping the iteration (a widget's Cancel) leaves nothing changed.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..checkpoint import ModelBundle
from ..curation import CURATED_COLUMN, check_curated_labels, curated_labels
from ..errors import PicksError
from ..picks import UNKNOWN_CLASS, class_counts, validate_picks
from ..progress import Progress
from .common import AdaptParams
from .result import AdaptResult

#: Curated known and curated unknown picks needed (each) to recalibrate the threshold on them.
MIN_PER_SIDE = 3
#: Curated picks per round's labelled batch (all of them when there are fewer).
LABELLED_BATCH = 16


@dataclass
class Refinement:
    """A refinement with the user's labels.

    ``picks``: the input table with the refined predictions (``class_name``, ``confidence``,
    ``unknown_score``, ``is_unknown``) and the curated labels as they were; ``labels``: what was
    learnt from (``n``, ``known``, ``unknown``, ``per_class``); ``threshold``: the rule that set
    the unknown threshold (``rule`` ``curated-youden`` or ``label-free``, ``threshold``,
    ``label_free_threshold``, ``n_known``, ``n_unknown``, ``why``); ``counts_before`` /
    ``counts_after``: active picks per predicted class before (the input's ``class_name``, empty
    when it had none) and after; ``agreement``: the fraction of curated picks the refined model
    calls as the user did.
    """

    result: AdaptResult
    picks: pd.DataFrame
    polarity: str
    resampled: bool
    labels: dict = field(default_factory=dict)
    threshold: dict = field(default_factory=dict)
    counts_before: dict = field(default_factory=dict)
    counts_after: dict = field(default_factory=dict)
    agreement: float = float("nan")

    def summary(self) -> str:
        t = self.threshold
        return (f"{self.labels.get('n', 0)} curated labels ({self.labels.get('known', 0)} known, "
                f"{self.labels.get('unknown', 0)} unknown); threshold {t.get('threshold', float('nan')):.4g} "
                f"({t.get('rule', '?')}: {t.get('why', '')}); the refined model agrees with "
                f"{self.agreement:.0%} of the curated picks")


def label_indices(labels, class_names) -> np.ndarray:
    """Class indices of curated ``labels`` in the model's ``class_names`` (``unknown`` without an output: −1)."""
    names = list(class_names)
    return np.array([names.index(c) if c in names else -1 for c in labels], dtype=np.int64)


def recalibrate_on_labels(scores: np.ndarray, is_unknown_label: np.ndarray, label_free: float) -> dict:
    """The unknown threshold from the curated picks' unknown ``scores`` (Youden's J between the
    curated known and curated unknown picks), or ``label_free`` when there are too few or they do
    not separate. Returns the ``Refinement.threshold`` dictionary."""
    from ..openset import calibrate_threshold

    scores = np.asarray(scores, dtype=np.float64)
    unk = np.asarray(is_unknown_label, dtype=bool)
    n_known, n_unknown = int((~unk).sum()), int(unk.sum())
    out = {"rule": "label-free", "threshold": float(label_free), "label_free_threshold": float(label_free),
           "n_known": n_known, "n_unknown": n_unknown, "n_used": 0}
    if n_known < MIN_PER_SIDE or n_unknown < MIN_PER_SIDE:
        out["why"] = (f"{n_known} curated known and {n_unknown} curated unknown picks; recalibrating needs "
                      f"≥ {MIN_PER_SIDE} of each, so the label-free threshold is kept")
        return out
    cal = calibrate_threshold(scores[~unk], scores[unk], rule="youden")
    j = float(cal.details["youden_j"])
    if not j > 0:
        out["why"] = f"the curated picks' scores do not separate known from unknown (J = {j:.2f}); kept"
        return out
    out.update(rule="curated-youden", threshold=float(cal.threshold), n_used=n_known + n_unknown, youden_j=j,
               why=(f"Youden's J = {j:.2f} between {n_known} curated known and {n_unknown} curated unknown picks"))
    return out


def refine_with_labels(bundle: ModelBundle, source, tomogram, picks: pd.DataFrame, params: AdaptParams | None = None,
                       polarity: str = "dark", allow_resampling: bool = True,
                       ) -> Generator[Progress, None, Refinement]:
    """Adapt ``bundle`` (the *source* model) to the active picks of ``tomogram`` with their curated labels.

    ``picks``: a picks table with ``curated_class`` (see :func:`~napari_cryo_openset.curation.set_curated_class`;
    labels from another file: :func:`~napari_cryo_openset.curation.merge_labels`); coordinates in voxels
    (Z, Y, X) of ``tomogram``. Labels must be the model's classes or ``unknown`` and sit on active picks
    (:class:`~napari_cryo_openset.errors.PicksError` otherwise). With no label at all this is
    :func:`~.run.adapt_to_tomogram` with the threshold rule ``label-free``. Returns a :class:`Refinement`.
    """
    from ..boxes import take_rows
    from ..predict import fill_predictions, pick_boxes
    from ..predictions import redecide_unknowns
    from .loop import LabelledTargets
    from .run import adapt_boxes
    from .source import SourceData, load_source

    params = params or AdaptParams()
    picks = validate_picks(picks.copy())
    check_curated_labels(picks, bundle.class_names)
    active = (picks["curation"] != "rejected").to_numpy()
    if not active.any():
        raise PicksError("there are no picks to adapt to (all rejected, or none picked)")
    labels_all = curated_labels(picks).to_numpy(dtype=object)
    labels_active = labels_all[active]
    lab_pos = np.flatnonzero(labels_active != "")  # rows among the active picks
    lab_names = labels_active[lab_pos].astype(str)
    before = picks.loc[active, "class_name"].astype(str) if "class_name" in picks.columns else pd.Series([], dtype=str)
    counts_before = class_counts(before[before != ""].to_numpy()) if len(before) else {}

    src = source if isinstance(source, SourceData) else load_source(source, bundle)
    n_active = int(active.sum())
    yield Progress("extract", 0, n_active, f"{n_active} target boxes, {len(lab_pos)} with curated labels")
    boxes, polarity, resampled = pick_boxes(bundle, tomogram, picks.loc[active], polarity, allow_resampling)
    yield Progress("extract", n_active, n_active, f"polarity {polarity}")
    labelled = None
    if len(lab_pos):
        lab_boxes = take_rows(boxes, lab_pos)
        lab_boxes = lab_boxes.materialise() if hasattr(lab_boxes, "materialise") else lab_boxes
        labelled = LabelledTargets(lab_boxes, label_indices(lab_names, bundle.class_names), bundle.class_names,
                                   seed=params.seed, batch=LABELLED_BATCH, augment=params.augment)
    run_params = params if labelled is None else replace(
        params, learning_rate=params.label_learning_rate, iterations=params.label_iterations,
        batch_size=params.label_batch_size)
    result = yield from adapt_boxes(bundle, src, boxes, run_params, labelled=labelled)

    pred = result.predictions
    label_free = float(result.bundle.openset["threshold"])
    is_unk_label = lab_names == UNKNOWN_CLASS
    threshold = recalibrate_on_labels(np.asarray(pred.unknown_score)[lab_pos], is_unk_label, label_free)
    openset = result.bundle.openset
    openset["curated_calibration"] = dict(threshold)
    if threshold["rule"] == "curated-youden":
        openset["label_free_threshold"] = label_free
        openset["threshold"] = float(threshold["threshold"])
        openset["rule"] = "curated-youden"
        names, unknown = redecide_unknowns(result.bundle, pred, threshold["threshold"])
        pred.class_name, pred.is_unknown, pred.threshold = names, unknown, float(threshold["threshold"])
    per_class = dict(zip(*np.unique(lab_names, return_counts=True))) if len(lab_names) else {}
    info = {"n": int(len(lab_pos)), "known": int((~is_unk_label).sum()), "unknown": int(is_unk_label.sum()),
            "per_class": {str(k): int(v) for k, v in per_class.items()}}
    prov = result.bundle.provenance.setdefault("adaptation", {})
    prov["polarity"] = polarity
    prov["target_tomogram"] = str(getattr(tomogram, "path", "") or "")
    prov["curated_labels"] = {**info, "threshold_rule": threshold["rule"]}

    out = fill_predictions(picks, active, pred)
    if CURATED_COLUMN in picks.columns:  # the user's labels, exactly as they came in
        out[CURATED_COLUMN] = picks[CURATED_COLUMN].to_numpy()
    called = np.asarray(pred.class_name, dtype=object)[lab_pos].astype(str)
    agreement = float(np.mean(called == lab_names)) if len(lab_pos) else float("nan")
    yield Progress("refine", 1, 1, f"{info['n']} curated labels; threshold {threshold['threshold']:.4g} "
                                   f"({threshold['rule']}); agreement with them {agreement:.0%}"
                   if len(lab_pos) else "no curated labels: label-free adaptation")
    counts_after = class_counts(np.asarray(pred.class_name, dtype=str))
    return Refinement(result=result, picks=out, polarity=polarity, resampled=resampled, labels=info,
                      threshold=threshold, counts_before=counts_before, counts_after=counts_after,
                      agreement=agreement)
