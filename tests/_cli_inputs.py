"""Tiny CLI inputs shared by the interruption and bad-input suites (made in-process, ~2 s).

``make_cli_inputs(folder, templates, simulated, train)`` writes, into ``folder``:
``tomo.mrc`` (48×64×64 at 10 Å, 20 particles of ``templates``), ``picks.star`` (its true
positions), ``source.npz`` (the templates × 10 boxes of 24³ at SNR 1) and ``model.pt`` (1 epoch
on it, width 8), and returns their paths by name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

VOXEL = 10.0
#: Temporary names the atomic writers use (a file's ``.NAME.TOKEN.part.EXT``, a folder's
#: ``.NAME.TOKEN.part`` and its backup ``.NAME.TOKEN.old``).
TEMPORARY = re.compile(r"^\..*\.[0-9a-f]{8}\.(part|old)(\..*)?$")


def make_cli_inputs(folder: Path, templates, simulated, train) -> dict[str, Path]:
    from napari_cryo_openset.checkpoint import bundle_from_training, save_bundle
    from napari_cryo_openset.io import write_picks, write_tomogram
    from napari_cryo_openset.simulate import ImagingCondition, SceneParams, make_scene, write_dataset

    from conftest import one_torch_thread

    with one_torch_thread():
        volume, truth = make_scene(SceneParams(shape=(48, 64, 64), condition=ImagingCondition(voxel_size=VOXEL, snr=1.0),
                                               templates=tuple(templates), n_particles=20, seed=1))
    data = simulated(templates)
    result = train(data, epochs=1, batch_size=8, width=8, embedding_dim=16, seed=0)
    return {
        "tomo": write_tomogram(folder / "tomo.mrc", volume, VOXEL),
        "picks": write_picks(folder / "picks.star", truth.drop(columns=["class_name"]), voxel_size=VOXEL),
        "source": write_dataset(data, folder / "source.npz"),
        "model": save_bundle(bundle_from_training(result, command="test"), folder / "model.pt"),
    }


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders anywhere under ``folder`` (there must be none)."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [str(Path(root, n)) for n in dirs + files if TEMPORARY.match(n)]
    return found


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
