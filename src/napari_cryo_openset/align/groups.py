"""Stage ``align`` of a run: every class and cluster of unknown picks aligned, averaged and named (core, no Qt).

:func:`align_run_groups` takes the run's classified, mapped picks (the groups of
:func:`~napari_cryo_openset.layers.pick_groups`: a known class, or a cluster ``unknown U<k>``)
and, for every group of at least :data:`~.core.MIN_BOXES` active picks:

1. cuts its boxes exactly as the run cut them for prediction and the unaligned averages
   (:func:`~napari_cryo_openset.predict.pick_boxes`: the working box and voxel size, protein
   positive, per-box normalised; axes Z, Y, X) — at most ``max_boxes``, a seeded subset of a
   larger group (reported);
2. aligns them with :func:`~.core.align_group` (gold standard, the missing wedge of the run's
   tilt range about Y): a known class starts from its template (at the working voxel size,
   padded/cropped to the box by :func:`~.core.fit_box`), a cluster reference-free;
3. compares every aligned average with every known template — a cluster's also with the known
   classes' aligned averages, ``<class> average`` — (:func:`~.core.iter_resembles`, normalised CC
   at 40 Å in a soft mask, a global search at :data:`RESEMBLES_STEP`): the best match and its
   correlation give the call ``resembles 1bxn (0.82)`` at or above ``threshold``, else
   ``no known structure above 0.5 (best …)``. Known structures correlate with each other at
   0.7–0.85 at 40 Å (built-in templates), so read the score, not only the call.

Groups it does not align — unknown picks in no cluster (not one structure), a class without a
template (``empty``), fewer than :data:`~.core.MIN_BOXES` picks — are reported with the reason; their
unaligned average (:mod:`napari_cryo_openset.embed`) stays the only one. Each aligned pick gets its
orientation, RELION's ZYZ Euler angles ``rot``/``tilt``/``psi`` (degrees; STAR ``rlnAngleRot/Tilt/Psi``)
and origin ``origin_x/y/z`` (Å; STAR ``rlnOriginX/Y/ZAngst`` = −shift, RELION subtracts it from the
coordinate); the other picks get NaN (:meth:`GroupAlignments.apply`).

:func:`write_group_alignments` writes ``<folder>/<group>/`` per aligned group: ``average.mrc``,
``half1.mrc``, ``half2.mrc`` (MRC at the working voxel size), ``fsc.csv`` (spatial frequency 1/Å,
resolution Å, FSC) and ``fsc.png``.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..params import AlignParams
from ..progress import Progress
from .core import MIN_BOXES, AlignmentResult, Resemblance, align_group, iter_resembles

STAGE = "align"
#: An average "resembles" a known structure at or above this correlation (the run's default).
RESEMBLES_THRESHOLD = 0.5
#: Global grid step (degrees) of the "resembles" search at least (then two local levels, ±45° by 15°,
#: ±15° by 5°, which cost most): on a 36³ map against the built-in templates it gave the same top-3
#: scores as 30° (to 0.01), about 1.1 CPU-seconds per reference on 2 threads.
RESEMBLES_STEP = 45.0
#: Per-pick columns of an alignment (picks table name → STAR name, see :data:`napari_cryo_openset.picks.STAR_COLUMNS`).
PICK_COLUMNS = ("rot", "tilt", "psi", "origin_x", "origin_y", "origin_z")
#: Files of one aligned group's folder.
GROUP_FILES = ("average.mrc", "half1.mrc", "half2.mrc", "fsc.csv", "fsc.png")


@dataclass
class GroupAlignment:
    """One group's alignment (or why it was not aligned)."""

    group: str
    n: int  #: active picks in the group
    rows: np.ndarray  #: rows of the picks table whose boxes were aligned (empty: none)
    reference: str | None = None  #: the template it started from (None: reference-free)
    result: AlignmentResult | None = None
    matches: list[Resemblance] = field(default_factory=list)  #: best first
    call: str | None = None
    message: str = ""

    @property
    def aligned(self) -> bool:
        return self.result is not None and self.result.aligned

    @property
    def resolution(self) -> float | None:
        """Gold-standard resolution (Å, FSC 0.143), None when not aligned."""
        return self.result.resolution if self.aligned else None

    def to_dict(self) -> dict:
        best = self.matches[0] if self.matches else None
        res = self.result
        return {"n": int(self.n), "boxes": int(len(self.rows)) if self.aligned else 0, "aligned": self.aligned,
                "reference": self.reference if self.aligned else None,
                "resolution_angst": _finite(self.resolution),
                "resolution_at_nyquist": bool(res.fsc.at_nyquist) if self.aligned else None,
                "resembles": {"name": best.name, "score": _finite(best.score)} if best is not None else None,
                "matches": {m.name: _finite(m.score) for m in self.matches},
                "call": self.call, "message": self.message,
                "seconds": round(float(res.seconds), 3) if res is not None else None}


@dataclass
class GroupAlignments:
    """Every group's :class:`GroupAlignment` and what the stage was told."""

    groups: dict[str, GroupAlignment]
    voxel_size: float  #: Å, of the boxes and maps (the run's working voxel size)
    tilt_range: tuple[float, float] | None  #: degrees about Y
    tilt_source: str  #: "given", "estimated" or "default"
    max_boxes: int
    threshold: float
    params: dict
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def apply(self, picks: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``picks`` (the table aligned) with ``rot``, ``tilt``, ``psi`` (degrees) and
        ``origin_x/y/z`` (Å) set for every aligned pick; NaN for the others."""
        out = picks.copy()
        cols = {c: np.full(len(out), np.nan) for c in PICK_COLUMNS}
        for g in self.groups.values():
            if not g.aligned:
                continue
            rel = g.result.relion_columns()
            for ours, theirs in zip(PICK_COLUMNS, ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
                                                    "rlnOriginYAngst", "rlnOriginZAngst")):
                cols[ours][g.rows] = rel[theirs]
        for c in PICK_COLUMNS:
            out[c] = cols[c]
        return out

    def report(self) -> dict:
        """``report.json["alignment"]``: settings, tilt range and its source, notes, per-group results."""
        return {"voxel_size": self.voxel_size, "tilt_range": list(self.tilt_range) if self.tilt_range else None,
                "tilt_range_source": self.tilt_source, "max_boxes_per_group": self.max_boxes,
                "resembles_threshold": self.threshold, "search": self.params, "seconds": round(self.seconds, 3),
                "notes": list(self.notes), "groups": {k: g.to_dict() for k, g in self.groups.items()}}

    def summary(self) -> list[str]:
        """One line per group: boxes, resolution and call, or why it was not aligned."""
        lines = []
        for name, g in self.groups.items():
            if g.aligned:
                r = g.result.fsc
                lines.append(f"{name}: {len(g.rows)} boxes aligned ({'from ' + g.reference if g.reference else 'reference-free'}), "
                             f"{'≤ ' if r.at_nyquist else ''}{r.resolution:.0f} Å, {g.call}")
            else:
                lines.append(f"{name}: not aligned: {g.message}")
        return lines


def _finite(value):
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _subset(rows: np.ndarray, limit: int, seed: int, k: int) -> np.ndarray:
    """All ``rows``, or a seeded random ``limit`` of them (sorted)."""
    if len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng([int(seed), int(k), len(rows)]).choice(rows, int(limit), replace=False))


def _why_not(group: str, n: int, templates: dict) -> str | None:
    from ..layers import is_cluster
    from ..picks import UNKNOWN_CLASS

    if group == UNKNOWN_CLASS:
        return "unknown picks in no cluster: not one structure"
    if not is_cluster(group) and group not in templates:
        return f"no template for '{group}' (empty boxes hold no particle)" if group == "empty" else \
            f"no template for '{group}' to start from"
    if n < MIN_BOXES:
        return (f"{n} pick(s): at least {MIN_BOXES} are needed to align (two half-sets); the unaligned average "
                "is the only one")
    return None


def align_run_groups(bundle, tomogram, picks: pd.DataFrame, polarity: str, templates: Sequence,
                     tilt_range=(-60.0, 60.0), *, tilt_source: str = "given", max_boxes: int = 150,
                     params: AlignParams | None = None, threshold: float = RESEMBLES_THRESHOLD,
                     ) -> Generator[Progress, None, GroupAlignments]:
    """Align and name every class and cluster of ``picks`` (the module docstring); a generator.

    ``bundle``: the model whose box and voxel size the picks were classified at; ``picks``: the
    run's predictions (``class_name``, ``is_unknown``, ``cluster``, ``curation``; rejected picks are
    left out); ``polarity`` the one the run resolved; ``templates``: the known templates at the
    working voxel size (those named like a model class are used); ``tilt_range`` (min, max)
    degrees about Y, ``tilt_source`` where it came from (``default`` is noted: the wedge may be
    wrong). Stop iterating to cancel.
    """
    from ..layers import group_order, pick_groups
    from ..predict import pick_boxes

    t0 = time.perf_counter()
    params = params or AlignParams()
    vs = float(bundle.voxel_size)
    known = {t.name: np.asarray(t.density, dtype=np.float32) for t in templates if t.name in set(bundle.class_names)}
    groups = pick_groups(picks)
    active = (picks["curation"] != "rejected").to_numpy() & (groups != "")
    order = group_order(groups[active])
    notes = []
    tr = None if tilt_range is None else (float(tilt_range[0]), float(tilt_range[1]))
    if tilt_source == "default":
        notes.append(f"the tilt range {tr[0]:+g}…{tr[1]:+g}° is the default (neither given nor estimated from the "
                     "tomogram): the missing wedge the alignment models may be wrong; give --tilt-range")
    out: dict[str, GroupAlignment] = {}
    todo = []
    for name in order:
        rows = np.flatnonzero(active & (groups == name))
        why = _why_not(name, len(rows), known)
        out[name] = GroupAlignment(name, len(rows), np.zeros(0, dtype=np.int64), message=why or "")
        if why is None:
            todo.append(name)
    total = len(todo) + 1
    yield Progress(STAGE, 0, total, f"aligning {len(todo)} of {len(order)} groups (at most {max_boxes} boxes each)")
    for k, name in enumerate(todo):
        g = out[name]
        rows = np.flatnonzero(active & (groups == name))
        g.rows = _subset(rows, max_boxes, params.seed, k)
        if len(g.rows) < len(rows):
            g.message = f"a seeded subset of {len(g.rows)} of its {len(rows)} picks aligned"
        boxes, _, _ = pick_boxes(bundle, tomogram, picks.iloc[g.rows], polarity)
        x = boxes.materialise()[:, 0].numpy()
        g.reference = name if name in known else None
        job = align_group(x, vs, tilt_range=tr, reference=known.get(name), params=params)
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                g.result = stop.value
                break
            yield Progress(STAGE, k, total, f"{name}: {event.message}")
        if not g.result.aligned:
            g.message = "; ".join(g.result.messages)
        yield Progress(STAGE, k + 1, total, f"{name}: {g.result.summary()}")

    # what each aligned average looks like: the known templates (and, for a cluster, the known classes' averages)
    aligned = [name for name in todo if out[name].aligned]
    averages = {f"{name} average": out[name].result.average for name in aligned if name in known}
    search = replace(params, angular_step=max(params.angular_step, RESEMBLES_STEP), candidates=1)
    for name in aligned:
        g = out[name]
        refs = known if name in known else {**known, **averages}
        matches = yield from _matches(g, refs, vs, search, len(todo), total)
        g.matches = matches
        best = matches[0] if matches else None
        if best is not None and best.score >= threshold:
            g.call = f"resembles {best}"
        else:
            g.call = f"no known structure above {threshold:g}" + (f" (best {best})" if best is not None else "")
    yield Progress(STAGE, total, total, f"{len(aligned)} groups aligned in {time.perf_counter() - t0:.0f} s")
    return GroupAlignments(out, vs, tr, tilt_source, int(max_boxes), float(threshold), params.to_dict(),
                           time.perf_counter() - t0, notes)


def _matches(g: GroupAlignment, refs: dict, vs: float, params: AlignParams, step: int, total: int):
    """The group average's :class:`~.core.Resemblance` to each reference, best first (progress on the way)."""
    if not refs:
        return []
    job = iter_resembles(g.result.average, refs, vs, params=params)
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        yield Progress(STAGE, step, total, f"{g.group} resembles? {event.message}")


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def write_group_alignments(folder, alignments: GroupAlignments) -> dict[str, Path]:
    """``folder/<group>/{average,half1,half2}.mrc``, ``fsc.csv`` and ``fsc.png`` of every aligned group (atomic).

    Returns the paths by ``<group folder>/<file>``. Group names become folder names with only
    letters, digits, ``.``, ``_`` and ``-`` (``unknown U0`` → ``unknown_U0``; a collision gets ``_2``).
    """
    from ..embed import group_stem
    from ..io import write_tomogram

    folder = Path(folder)
    paths: dict[str, Path] = {}
    used: set[str] = set()
    vs = alignments.voxel_size
    for name, g in alignments.groups.items():
        if not g.aligned:
            continue
        stem, k = group_stem(name), 2
        base = stem
        while stem in used:
            stem, k = f"{base}_{k}", k + 1
        used.add(stem)
        d = folder / stem
        d.mkdir(parents=True, exist_ok=True)
        res = g.result
        how = f"from {g.reference}" if g.reference else "reference-free"
        label = f"napari-cryo-openset aligned average of {len(g.rows)} ({how}): {name}"
        paths[f"{stem}/average.mrc"] = write_tomogram(d / "average.mrc", res.average, vs, label=label[:80])
        for h in (0, 1):
            paths[f"{stem}/half{h + 1}.mrc"] = write_tomogram(d / f"half{h + 1}.mrc", res.half_maps[h], vs,
                                                             label=f"half-map {h + 1}: {name}"[:80])
        paths[f"{stem}/fsc.csv"] = write_fsc_csv(d / "fsc.csv", res.fsc)
        paths[f"{stem}/fsc.png"] = plot_fsc(res.fsc, d / "fsc.png", title=f"{name}: {len(g.rows)} boxes, {how}")
    return paths


def write_fsc_csv(path, fsc) -> Path:
    """``spatial_frequency_per_angst, resolution_angst, fsc`` per shell (shell 0: resolution ``inf``), atomically."""
    from ..io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        with Path(tmp).open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["spatial_frequency_per_angst", "resolution_angst", "fsc"])
            for freq, value in zip(fsc.frequency.tolist(), fsc.fsc.tolist()):
                w.writerow([repr(float(freq)), repr(1.0 / freq) if freq > 0 else "inf", repr(float(value))])
    return path


def plot_fsc(fsc, path, title: str = "") -> Path:
    """The FSC curve against spatial frequency (1/Å) with the 0.143 line and the resolution, as a PNG, atomically."""
    from matplotlib.figure import Figure

    from ..io import atomic_path

    fig = Figure(figsize=(4.8, 3.4), dpi=110)
    ax = fig.add_subplot(111)
    ax.plot(fsc.frequency, fsc.fsc, color="#1f77b4", lw=1.6)
    ax.axhline(fsc.threshold, color="#888888", lw=0.8, ls="--")
    if fsc.resolution and math.isfinite(fsc.resolution):
        ax.axvline(1.0 / fsc.resolution, color="#d62728", lw=0.8)
    bound = "≤ " if fsc.at_nyquist else ""
    ax.set_title(f"{title}\nresolution {bound}{fsc.resolution:.1f} Å (FSC {fsc.threshold:g})" if title else
                 f"resolution {bound}{fsc.resolution:.1f} Å (FSC {fsc.threshold:g})", fontsize=9)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.2, 1.05)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


__all__ = ["GROUP_FILES", "PICK_COLUMNS", "RESEMBLES_THRESHOLD", "GroupAlignment", "GroupAlignments",
           "align_run_groups", "plot_fsc", "write_fsc_csv", "write_group_alignments"]
