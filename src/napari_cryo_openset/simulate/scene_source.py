"""A source set simulated the way the target is picked: crowded scenes → DoG picks → boxes.

:func:`generate_scene_source` simulates whole crowded tomograms (:mod:`.scenes`: the user's
templates plus procedural decoys, imaged by the full chain — tilt series, CTF, noise, WBP — at
``data_params.condition``), picks each one with the **target's picker and parameters**
(:func:`napari_cryo_openset.picking.pick_particles`), labels every pick by the nearest true
particle and cuts the boxes exactly as target boxes are cut
(:func:`~napari_cryo_openset.extract.extract_subtomograms` without resampling — the scenes are
simulated at the working voxel size — then :func:`~napari_cryo_openset.extract.normalise_subtomograms`).
The boxes therefore carry what DoG picks of a crowded tomogram carry: centring errors,
neighbours cut by the box, missing-wedge streaks of particles outside the box and, outside a
slab, empty ice.

Labels (class order of :func:`~.datasets.class_names_for`: sorted template names, ``empty``,
``unknown``): a pick within ``label_radius`` × D of the nearest true particle (D its diameter)
takes its class (decoys → ``unknown``); a pick farther than ``empty_radius`` × D from every
particle is ``empty``; picks in between (on the edge of a particle) are left out. When the
picker gives too few empty picks, random background positions (at the same distance from every
particle) fill the quota.

Scenes (seed ``i`` derived from ``data_params.seed``) are simulated until every known class has
``data_params.per_class`` boxes, ``unknown`` ``data_params.decoys`` and ``empty``
``data_params.empty``; surplus boxes are dropped. The template mix of the next scene leans
towards the classes still short. From scene :data:`FILL_AFTER` on, a class still short (one the
picker rarely reaches: smaller than the picking range, say) is topped up with boxes at the true
centres of its unpicked particles, offset as that scene's picks are offset from theirs — every
template stays in the model (``info['filled_at_true_centres']`` counts them). A class still short
after ``max_scenes`` is reported in ``SimulatedSet.info['unreached']`` with its count.

Boxes are stored as every simulated set: protein dark, per box zero mean and unit variance
(the set's ``polarity`` is ``dark``; training makes them canonical). Coordinates (Z, Y, X)
voxels; lengths in Å unless said; density in particles per µm³ of slab.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import replace

import numpy as np
import torch

from ..errors import ParameterError
from ..extract import extract_subtomograms, normalise_subtomograms
from ..params import DatasetParams, PickingParams
from ..picks import UNKNOWN_CLASS
from ..progress import Progress, run_to_completion
from .datasets import EMPTY_CLASS, SimulatedSet, class_names_for
from .scenes import SceneParams, generate_scene_truth
from .templates import Template

#: Share of the decoy structures (the source ``unknown`` class) derived from the known templates
#: (near misses: rescaled, cut, two halves joined — :func:`~.decoys.derived_decoys`).
NEAR_MISS = 0.5
#: Scene edge across the beam (Y, X voxels) unless ``shape`` is given.
SCENE_XY = 256
#: Default scene thickness (Z voxels) when neither a slab nor a shape is given: at least this.
SCENE_Z = 96
#: Default crowding: fraction of the slab volume occupied by particles.
VOLUME_FRACTION = 0.06
#: At most this many particles per scene (placement gets slow and mostly fails beyond).
MAX_PARTICLES = 600
#: A class with no box after this many scenes is given up (the picker does not pick it).
GIVE_UP_AFTER = 10
#: From this scene on, a class still short of its quota is topped up with boxes at the true
#: centres of its unpicked particles (offset like the scene's picks); ``info['filled_at_true_centres']``.
FILL_AFTER = 3


def generate_scene_source(
    templates: Sequence[Template],
    data_params: DatasetParams,
    picking: PickingParams,
    *,
    polarity: str = "dark",
    slab: float | tuple[float, float] | None = None,
    density: float | None = None,
    pick_density: float | None = None,
    shape: tuple[int, int, int] | None = None,
    max_scenes: int = 60,
    label_radius: float = 0.5,
    empty_radius: float = 0.75,
    near_miss: float | None = None,
    device: str | torch.device = "cpu",
) -> Generator[Progress, None, SimulatedSet]:
    """Simulate, pick and label crowded scenes until the quotas are met (see the module docstring).

    Parameters
    ----------
    templates
        The known structures (any voxel size; resampled to ``data_params.voxel_size``).
    data_params
        Box (voxels), counts (``per_class``, ``decoys``, ``empty``), condition (its voxel size
        is the working one), ``seed``, ``mode``, ``background`` (crowding background of the scenes).
    picking
        The target's picking parameters (``diameter`` Å …). The scenes are protein dark and are
        picked with ``polarity='dark'``; with ``threshold_method='topn'`` the scene keeps as many
        picks as it has particles (the target's ``max_picks`` counts the target's).
    polarity
        The polarity the target resolved (``dark``/``bright``; recorded — target boxes are made
        canonical by the same normalisation, so the scenes need no inversion).
    slab
        Thickness in Z voxels (centred in the scene) or ``(z0, z1)`` Z edges in scene voxels of
        the sample; widened to hold the largest structure. None: the whole scene is slab.
    density
        Particles per µm³ of slab (None: :data:`VOLUME_FRACTION` of the slab filled).
    pick_density
        The target's picks per µm³ of slab. When given, the particle density is adjusted from
        scene to scene so that the scenes' picks per µm³ match it (the picker misses particles
        in a crowd, so the target's pick density understates its particle density).
    shape
        Scene (Z, Y, X) voxels (default: Z = slab + a box on each side or :data:`SCENE_Z`, Y = X = :data:`SCENE_XY`).
    max_scenes
        Give up after this many scenes (the set then has fewer boxes of the classes not reached).
    label_radius, empty_radius
        Fractions of the nearest particle's diameter (see the module docstring).
    device
        Where the scenes are imaged.

    Yields :class:`Progress` (stage ``scenes``, boxes collected / boxes wanted) once per scene;
    stop iterating to cancel. Returns a :class:`SimulatedSet` whose ``info`` holds the scene
    count, seconds, densities, ``counts``/``wanted``/``unreached`` per category, ``scene_log``
    (per scene: seed, particles, picks, boxes kept), ``truth`` (per scene: particle
    ``centres`` (n, 3) voxels, ``diameters`` voxels, ``structure``, ``class_name``) and per box
    ``box_scene`` (index into ``truth``), ``box_position`` (the pick, Z Y X voxels) and ``box_score``
    (its DoG score; NaN for a background position).
    """
    from ..picking import pick_particles

    t_start = time.perf_counter()
    if polarity not in ("dark", "bright"):
        raise ParameterError(f"polarity must be the target's resolved polarity, dark or bright, got {polarity!r}")
    if not templates:
        raise ParameterError("at least one template is needed")
    if not 0 < label_radius <= empty_radius:
        raise ParameterError(f"need 0 < label_radius ≤ empty_radius, got {label_radius!r}, {empty_radius!r}")
    if int(max_scenes) < 1:
        raise ParameterError(f"max_scenes must be ≥ 1, got {max_scenes!r}")
    picking = picking.validate()
    vs = float(data_params.voxel_size)
    box = int(data_params.box)
    known = sorted((t.at_voxel_size(vs) for t in templates), key=lambda t: t.name)
    names = class_names_for([t.name for t in known], data_params.decoys, data_params.empty, data_params.empty_label)
    empty_label = names.index(data_params.empty_label) if data_params.empty else -1
    unknown_label = names.index(UNKNOWN_CLASS) if UNKNOWN_CLASS in names else -1
    # quotas per category: known classes by index, then "decoy", then "empty"
    categories = [t.name for t in known] + ["decoy", "empty"]
    quota = np.array([data_params.per_class] * len(known) + [data_params.decoys, data_params.empty], dtype=np.int64)
    label_of = list(range(len(known))) + [unknown_label, empty_label]

    largest = max(t.diameter for t in known) / vs
    shape, slab_zz = _scene_geometry(shape, slab, box, largest)
    slab_um3 = (slab_zz[1] - slab_zz[0]) * shape[1] * shape[2] * vs**3 * 1e-12
    decoy_max_nm = 0.9 * box * vs / 10.0
    mean_vol_um3 = float(np.mean([4 / 3 * math.pi * (t.radius * 1e-4) ** 3 for t in known]))
    if density is None:
        density = VOLUME_FRACTION / mean_vol_um3
    if not (float(density) > 0 and math.isfinite(density)):
        raise ParameterError(f"density must be a positive number of particles per µm³, got {density!r}")
    if pick_density is not None and not (float(pick_density) > 0 and math.isfinite(pick_density)):
        raise ParameterError(f"pick_density must be a positive number of picks per µm³, got {pick_density!r}")
    density = float(density)
    max_density = MAX_PARTICLES / slab_um3
    scene_picking = replace(picking, polarity="dark")
    base = SceneParams(shape=shape, condition=data_params.condition, templates=tuple(known), background=float(
        data_params.background), mode=data_params.mode, slab=slab_zz if slab is not None else None,
                       decoy_structures=8, decoy_max_diameter=decoy_max_nm,
                       near_miss=NEAR_MISS if near_miss is None else float(near_miss))

    kept: list[list[dict]] = [[] for _ in categories]
    boxes: list[list[np.ndarray]] = [[] for _ in categories]
    have = np.zeros(len(categories), dtype=np.int64)
    log: list[dict] = []
    truths: list[dict] = []
    unreached: set[int] = set()
    filled = np.zeros(len(categories), dtype=np.int64)
    wanted = int(quota.sum())
    yield Progress("scenes", 0, wanted, f"scenes of {shape[0]}×{shape[1]}×{shape[2]} voxels at {vs:g} Å")
    rng_master = np.random.default_rng([int(data_params.seed), 0x5CE2E])
    n_scene = 0
    while n_scene < int(max_scenes):
        short = (have < quota) & ~np.isin(np.arange(len(categories)), list(unreached))
        if not short.any():
            break
        seed = int(rng_master.integers(2**31))
        n_particles = int(min(MAX_PARTICLES, max(4, round(density * slab_um3))))
        need = np.maximum(quota - have, 0).astype(np.float64)
        weights = need[: len(known)] + 0.05 * max(1, data_params.per_class)  # full classes stay in the crowd
        n_known_need, n_decoy_need = need[: len(known)].sum(), need[len(known)]
        if data_params.decoys:
            frac = n_decoy_need / max(n_known_need + n_decoy_need, 1.0)
            frac = float(np.clip(frac, 0.05, 0.5))
        else:
            frac = 0.0
        sp = replace(base, n_particles=n_particles, unknown_fraction=frac, weights=tuple(weights), seed=seed)
        t0 = time.perf_counter()
        volume, truth, extra = run_to_completion(generate_scene_truth(sp, device))
        t_sim = time.perf_counter() - t0
        res = run_to_completion(pick_particles(volume, vs, _scene_max_picks(scene_picking, len(truth))))
        picks = res.select(max_picks=_scene_max_picks(scene_picking, len(truth)).max_picks)
        coords = picks[["z", "y", "x"]].to_numpy(np.float64)
        centres = truth[["z", "y", "x"]].to_numpy(np.float64)
        diam = 2.0 * np.asarray(extra["radius"], dtype=np.float64)
        cat, nearest, dist = _label_picks(coords, centres, diam, extra["structure"], truth["class_name"].tolist(),
                                          [t.name for t in known], label_radius, empty_radius)
        rng = np.random.default_rng([seed, 1])
        order = rng.permutation(len(coords))
        take: list[int] = []
        take_cat: list[int] = []
        for i in order:
            c = cat[i]
            if c >= 0 and quota[c] > have[c] + take_cat.count(c):
                take.append(int(i))
                take_cat.append(int(c))
        n_empty_picked = take_cat.count(len(categories) - 1)
        # empty quota: topped up with background positions when the picker gives too few
        extra_empty = np.zeros((0, 3))
        e = len(categories) - 1
        deficit = int(quota[e] - have[e] - n_empty_picked)
        if deficit > 0:
            per_scene = max(1, math.ceil(quota[e] / 8))
            extra_empty = _background_positions(rng, shape, slab_zz, centres, diam, empty_radius, box,
                                                min(deficit, per_scene))
        # classes the picker rarely reaches (smaller than the picking range, say): after FILL_AFTER
        # scenes their boxes are cut at the true centres of their unpicked particles, offset as the
        # picks of this scene are offset from theirs — the model still learns every template
        fill_coords, fill_cat, fill_k = [], [], []
        if n_scene + 1 >= FILL_AFTER:
            on_particle = [i for i, c in zip(take, take_cat) if c < len(known) + 1]  # not the empty picks
            picked_k = {int(nearest[i]) for i in on_particle}
            offsets = dist[on_particle] if on_particle else np.zeros(0)
            jitter = float(np.clip(np.median(offsets) if offsets.size else 1.0, 0.5, 2.0))
            for c in range(len(known)):
                deficit_c = int(quota[c] - have[c] - take_cat.count(c))
                if deficit_c <= 0:
                    continue
                ks = [k for k, name in enumerate(extra["structure"]) if name == known[c].name and k not in picked_k]
                for k in ks[:deficit_c]:
                    off = rng.normal(0.0, jitter / math.sqrt(3.0), 3)
                    cap = 0.5 * label_radius * diam[k]  # well inside the particle, as a pick that labels it
                    off *= min(1.0, cap / max(float(np.linalg.norm(off)), 1e-12))
                    pos = np.clip(centres[k] + off, 0, np.asarray(shape) - 1)
                    fill_coords.append(pos)
                    fill_cat.append(c)
                    fill_k.append(k)
                    filled[c] += 1
        fill_arr = np.asarray(fill_coords, dtype=np.float64).reshape(-1, 3)
        all_coords = np.concatenate([coords[take], fill_arr, extra_empty])
        all_cat = take_cat + fill_cat + [e] * len(extra_empty)
        if len(all_coords):
            raw = extract_subtomograms(volume, all_coords, box, normalise=False)
            # the target's normalisation; "bright" keeps the sign: stored protein dark as every simulated set
            norm = normalise_subtomograms(raw, "bright").astype(np.float16)
            scores = np.concatenate([picks["score"].to_numpy(np.float64)[take],
                                     np.full(len(fill_arr) + len(extra_empty), np.nan)])
            for j, c in enumerate(all_cat):
                picked = j < len(take)
                if picked:
                    k = int(nearest[take[j]]) if c != e else -1
                else:
                    k = fill_k[j - len(take)] if j - len(take) < len(fill_k) else -1
                kept[c].append({
                    "template": extra["structure"][k] if k >= 0 else "",
                    "rotation": extra["rotations"][k] if k >= 0 else np.eye(3),
                    # the set's convention: the particle's centre relative to the box centre (voxels)
                    "shift": centres[k] - np.floor(all_coords[j] + 0.5) if k >= 0 else np.zeros(3),
                    "defocus": float(truth.attrs["defocus_um"]), "snr": float(truth.attrs["snr"]),
                    "scene": n_scene, "picked": picked, "score": float(scores[j]), "position": all_coords[j],
                })
                boxes[c].append(norm[j])
                have[c] += 1
        truths.append({"centres": centres, "diameters": diam, "structure": list(extra["structure"]),
                       "class_name": truth["class_name"].tolist()})
        n_scene += 1
        scene_pick_density = len(picks) / slab_um3
        log.append({"scene": n_scene, "seed": seed, "particles": int(len(truth)), "picks": int(len(picks)),
                    "kept": len(all_coords), "empty_background": int(len(extra_empty)),
                    "density_per_um3": round(density, 1), "seconds_simulate": round(t_sim, 3)})
        if pick_density is not None and scene_pick_density > 0:
            density = float(np.clip(density * np.clip(pick_density / scene_pick_density, 0.5, 2.0),
                                    1.0 / slab_um3, max_density))
        if n_scene >= GIVE_UP_AFTER:
            unreached |= {c for c in range(len(categories)) if quota[c] > 0 and have[c] == 0}
        counts = ", ".join(f"{categories[c]} {have[c]}/{quota[c]}" for c in range(len(categories)) if quota[c])
        yield Progress("scenes", int(np.minimum(have, quota).sum()), wanted,
                       f"scene {n_scene}: {len(truth)} particles, {len(picks)} picks; {counts}",
                       {"scene": n_scene, "picks": int(len(picks))})

    return _assemble(kept, boxes, label_of, categories, quota, have, names, data_params, known, log, {
        "source_kind": "scenes", "scenes": n_scene, "shape": list(shape),
        "slab": [float(slab_zz[0]), float(slab_zz[1])], "polarity_target": polarity,
        "density_per_um3": round(density, 1), "pick_density_target": pick_density,
        "label_radius": label_radius, "empty_radius": empty_radius,
        "seconds": round(time.perf_counter() - t_start, 3), "truth": truths,
        "filled_at_true_centres": {categories[c]: int(filled[c]) for c in range(len(known)) if filled[c]}})


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _scene_geometry(shape, slab, box: int, largest: float) -> tuple[tuple[int, int, int], tuple[float, float]]:
    """(scene shape, slab Z edges) from the arguments (see :func:`generate_scene_source`)."""
    need = largest + 2.0  # voxels: the largest structure must fit the slab
    if isinstance(slab, (int, float, np.integer, np.floating)):
        thickness = max(float(slab), need)
        if shape is None:
            z = int(math.ceil(thickness + 2 * (box // 2)))
            shape = (max(z, 16), SCENE_XY, SCENE_XY)
        shape = tuple(int(s) for s in shape)
        thickness = min(thickness, shape[0])
        z0 = (shape[0] - thickness) / 2
        zz = (z0, z0 + thickness)
    elif slab is not None:
        try:
            z0, z1 = (float(v) for v in slab)
        except (TypeError, ValueError):
            raise ParameterError(f"slab must be a thickness or (z0, z1) voxels, got {slab!r}") from None
        if shape is None:
            shape = (max(int(math.ceil(z1)), 16), SCENE_XY, SCENE_XY)
        shape = tuple(int(s) for s in shape)
        if not 0 <= z0 < z1 <= shape[0]:
            raise ParameterError(f"slab (z0, z1) must satisfy 0 ≤ z0 < z1 ≤ {shape[0]}, got {slab!r}")
        if z1 - z0 < need:  # widen around its middle, within the scene
            mid = 0.5 * (z0 + z1)
            z0, z1 = max(0.0, mid - need / 2), min(float(shape[0]), mid + need / 2)
        zz = (z0, z1)
    else:
        if shape is None:
            shape = (max(SCENE_Z, int(math.ceil(need)) + 2), SCENE_XY, SCENE_XY)
        shape = tuple(int(s) for s in shape)
        zz = (0.0, float(shape[0]))
    if len(shape) != 3 or min(shape) < 16:
        raise ParameterError(f"shape must be three sizes (Z, Y, X) of at least 16 voxels, got {shape!r}")
    if min(shape[1:]) < need or zz[1] - zz[0] < need - 1e-6:
        raise ParameterError(f"the scene {shape} (slab Z {zz[0]:.0f}…{zz[1]:.0f}) cannot hold the largest "
                             f"structure ({largest:.0f} voxels across)")
    return shape, zz


def _scene_max_picks(picking: PickingParams, n_particles: int) -> PickingParams:
    """The target's ``max_picks`` counts the target's picks: a scene keeps its own (topn: its particle count)."""
    if picking.threshold_method == "topn":
        return replace(picking, max_picks=max(1, int(n_particles)))
    return replace(picking, max_picks=None)


def _label_picks(coords, centres, diameters, structures, classes, known_names, label_radius, empty_radius):
    """Per pick: category (known index, len(known) = decoy, len(known)+1 = empty, −1 = left out),
    nearest particle index and its distance (voxels)."""
    n_known = len(known_names)
    if len(coords) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    if len(centres) == 0:
        return np.full(len(coords), n_known + 1), np.full(len(coords), -1), np.full(len(coords), np.inf)
    d = np.sqrt(((coords[:, None, :] - centres[None]) ** 2).sum(-1))
    nearest = d.argmin(1)
    dist = d[np.arange(len(coords)), nearest]
    rel = d / diameters[None]
    cat = np.full(len(coords), -1, dtype=np.int64)
    index = {n: i for i, n in enumerate(known_names)}
    for i in range(len(coords)):
        k = int(nearest[i])
        if dist[i] <= label_radius * diameters[k]:
            cat[i] = n_known if classes[k] == UNKNOWN_CLASS else index[structures[k]]
        elif rel[i].min() > empty_radius:
            cat[i] = n_known + 1
    return cat, nearest, dist


def _background_positions(rng, shape, slab_zz, centres, diameters, empty_radius, box, n) -> np.ndarray:
    """Up to ``n`` random positions (voxels) farther than ``empty_radius`` × D from every particle,
    a half box from the X/Y faces (anywhere in Z, as empty picks land)."""
    if n <= 0:
        return np.zeros((0, 3))
    lo = np.array([box / 4, box / 2, box / 2])
    hi = np.asarray(shape, dtype=np.float64) - 1 - lo
    hi = np.maximum(hi, lo)
    cand = rng.uniform(lo, hi, size=(max(20 * n, 50), 3))
    if len(centres):
        rel = np.sqrt(((cand[:, None, :] - centres[None]) ** 2).sum(-1)) / diameters[None]
        cand = cand[rel.min(1) > empty_radius]
    return cand[:n]


def _assemble(kept, boxes, label_of, categories, quota, have, names, data_params, known, log, info) -> SimulatedSet:
    """The set, shuffled (seeded), with per-box records and the run's info."""
    box = int(data_params.box)
    records, arrays, labels = [], [], []
    for c, items in enumerate(kept):
        for rec, b in zip(items[: quota[c]], boxes[c][: quota[c]]):
            records.append(rec)
            arrays.append(b)
            labels.append(label_of[c])
    order = np.random.default_rng([int(data_params.seed), 0]).permutation(len(records))
    records = [records[i] for i in order]
    sub = np.stack([arrays[i] for i in order]) if records else np.zeros((0, box, box, box), np.float16)
    counts = {categories[c]: int(min(have[c], quota[c])) for c in range(len(categories)) if quota[c]}
    unreached = {categories[c]: int(have[c]) for c in range(len(categories)) if have[c] < quota[c]}
    info.update(box_scene=np.array([r["scene"] for r in records], dtype=np.int64),
                box_position=(np.stack([r["position"] for r in records]) if records else np.zeros((0, 3))),
                box_score=np.array([r["score"] for r in records], dtype=np.float64),
                counts=counts, wanted={categories[c]: int(quota[c]) for c in range(len(categories)) if quota[c]},
                unreached=unreached, scene_log=log,
                picked_empty=int(sum(1 for r in records if r["template"] == "" and r["picked"])),
                background_empty=int(sum(1 for r in records if r["template"] == "" and not r["picked"])))
    if unreached:
        info["message"] = ("after {} scenes the picker gave too few boxes of: {} — check the picking parameters "
                           "(diameter, threshold) or the templates".format(
                               info["scenes"], ", ".join(f"{k} ({v}/{info['wanted'][k]})"
                                                         for k, v in unreached.items())))
    decoy_names = sorted({r["template"] for r in records if r["template"] and r["template"] not in
                          {t.name for t in known}})
    return SimulatedSet(
        subtomograms=sub,
        labels=np.asarray([labels[i] for i in order], dtype=np.int64),
        class_names=list(names),
        condition=data_params.condition,
        params=data_params,
        seed=int(data_params.seed),
        template=np.array([r["template"] for r in records], dtype=str),
        defocus=np.array([r["defocus"] for r in records], dtype=np.float32),
        snr=np.array([r["snr"] for r in records], dtype=np.float32),
        rotations=(np.stack([r["rotation"] for r in records]).astype(np.float32) if records
                   else np.zeros((0, 3, 3), np.float32)),
        shifts=(np.stack([r["shift"] for r in records]).astype(np.float32) if records
                else np.zeros((0, 3), np.float32)),
        templates=[{"name": t.name, "source": t.source, "radius_A": round(t.radius, 2)} for t in known]
        + [{"name": n, "source": "decoy", "radius_A": None} for n in decoy_names],
        info=info,
    )


__all__ = ["generate_scene_source", "EMPTY_CLASS"]
