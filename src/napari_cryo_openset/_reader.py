"""napari reader: MRC tomograms → Image layers, STAR/CSV picks → Points layers, sessions.

A session file (``*.cosession.json``, :mod:`napari_cryo_openset.session`) opened with
``File ▸ Open`` is restored into the current viewer through its workflow panel (docked at
*Results* when it is not shown): tomogram, picks, models, threshold, hidden groups — the same as
the panel's *Open session…*. The reader then returns napari's "no layers" sentinel (the panel
added the layers itself).

Tomograms are memory-mapped (never loaded whole to open them). Picks get the scale of the
tomogram they belong to, found in this order:

1. the voxel size recorded in the picks file (``cosVoxelSizeAngst``);
2. a tomogram beside the picks file whose name starts the picks file's name
   (``TS_01.mrc`` for ``TS_01_picks.star``; the longest such name wins);
3. the 3-D image layers already open in the viewer, if they share one scale;
4. otherwise 1 (voxels), with a warning.

RELION 5 centred coordinates use the shape from the same source.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .errors import CryoOpensetError
from .io.picks_io import PICKS_EXTENSIONS, read_picks
from .io.tomogram import TOMOGRAM_EXTENSIONS, read_tomogram
from .layers import picks_layer, tomogram_layer


def get_reader(path: str | list[str]):
    """Return a reader function if every path is a tomogram or picks file (or it is one session
    file), else None."""
    from .session import SUFFIX as SESSION_SUFFIX

    paths = path if isinstance(path, list) else [path]
    if not paths:
        return None
    if len(paths) == 1 and str(paths[0]).lower().endswith(SESSION_SUFFIX):
        return read_session_file
    for p in paths:
        if Path(p).suffix.lower() not in TOMOGRAM_EXTENSIONS + PICKS_EXTENSIONS:
            return None
    return read_paths


def read_paths(path: str | list[str]) -> list[tuple[Any, dict, str]]:
    """Read tomograms first, then picks (so picks can take the tomograms' scale)."""
    paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
    layers = []
    opened: list[tuple[tuple[float, float, float], tuple[int, int, int]]] = []
    for p in sorted(paths, key=lambda q: q.suffix.lower() in PICKS_EXTENSIONS):
        try:
            if p.suffix.lower() in TOMOGRAM_EXTENSIONS:
                tomo = read_tomogram(p, allow_missing_voxel_size=True)
                layers.append(tomogram_layer(tomo))
                opened.append((tomo.voxel_size, tomo.shape))
            else:
                layers.append(_read_picks_layer(p, opened))
        except CryoOpensetError as exc:
            # napari shows reader errors to the user; keep it to our one clear message.
            raise CryoOpensetError(str(exc)) from None
    return layers


def read_session_file(path: str | list[str]) -> list[tuple]:
    """Restore the session at ``path`` into the current viewer (its workflow panel does it)."""
    import napari

    from ._widgets.panel import dock_panel, is_docked, panel_for

    path = Path(path[0] if isinstance(path, list) else path)
    viewer = napari.current_viewer()
    if viewer is None:
        raise CryoOpensetError(f"{path}: a session opens into a napari viewer, and none is open")
    panel = panel_for(viewer, create=False)
    if panel is None or not is_docked(panel):
        panel = dock_panel(viewer, "Results")
    panel.open_session(path)  # a refused session: the panel says why, in one message, and changes nothing
    return [(None,)]


def _read_picks_layer(path: Path, opened) -> tuple[Any, dict, str]:
    voxel_size, shape, source = _tomogram_geometry_for(path, opened)
    picks = read_picks(path, tomogram_shape=shape, voxel_size=voxel_size)
    if picks.attrs.get("voxel_size"):
        voxel_size, source = picks.attrs["voxel_size"], "picks file"
    if voxel_size is None:
        warnings.warn(
            f"{path.name}: voxel size unknown (not in the file, no matching tomogram beside it, "
            "none open in the viewer); showing picks in voxel units. Open the tomogram first.",
            UserWarning,
            stacklevel=2,
        )
    return picks_layer(
        picks,
        voxel_size=voxel_size,
        name=path.stem,
        metadata={"path": str(path), "voxel_size_source": source, "format": picks.attrs.get("format")},
    )


def _tomogram_geometry_for(path: Path, opened):
    """(voxel_size, shape, source) of the tomogram these picks most likely belong to."""
    if len(opened) == 1:
        return opened[0][0], opened[0][1], "tomogram opened together"
    stem = path.stem
    candidates = [
        q
        for q in path.parent.iterdir()
        if q.suffix.lower() in TOMOGRAM_EXTENSIONS and stem.startswith(q.stem) and q.is_file()
    ] if path.parent.is_dir() else []
    for q in sorted(candidates, key=lambda q: len(q.stem), reverse=True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tomo = read_tomogram(q, check_finite=False)
        except CryoOpensetError:
            continue
        return tomo.voxel_size, tomo.shape, f"tomogram beside it ({q.name})"
    geometry = _viewer_geometry()
    if geometry is not None:
        return geometry[0], geometry[1], "image layer in the viewer"
    return None, None, "unknown"


def _viewer_geometry():
    try:
        import napari
        from napari.layers import Image
    except ImportError:  # pragma: no cover - napari is a dependency
        return None
    viewer = napari.current_viewer()
    if viewer is None:
        return None
    images = [ly for ly in viewer.layers if isinstance(ly, Image) and ly.ndim == 3 and not ly.rgb]
    scales = {tuple(float(s) for s in ly.scale) for ly in images}
    if len(scales) != 1:
        return None
    return scales.pop(), tuple(int(s) for s in images[-1].data.shape)
