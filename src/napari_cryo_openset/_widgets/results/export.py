"""Results export: the picks with every column (STAR/CSV), and the averages (one MRC per group)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout

from .._task import report_error

STAR_SUFFIX = ".star"


class ExportBox(QGroupBox):
    """"only the selected row's picks", Save picks…, Save averages…"""

    def __init__(self) -> None:
        super().__init__("Export")
        self.only_selected = QCheckBox("only the selected row's picks")
        self.only_selected.setToolTip("Save picks… writes only the picks of the selected class / cluster")
        self.save_picks_button = QPushButton("Save picks…")
        self.save_picks_button.setToolTip("STAR or CSV with every column (class, confidence, unknown score, "
                                          "curation, map, cluster); hidden picks are saved too")
        self.save_averages_button = QPushButton("Save averages…")
        self.save_averages_button.setToolTip("One MRC per class and cluster (with the voxel size) into a folder")
        layout = QVBoxLayout(self)
        layout.addWidget(self.only_selected)
        row = QHBoxLayout()
        row.addWidget(self.save_picks_button)
        row.addWidget(self.save_averages_button)
        layout.addLayout(row)


def layer_voxel_size(layer) -> float | None:
    """The layer's voxel size (Å) if it is isotropic, else None (not written into the file)."""
    vs = (layer.metadata or {}).get("voxel_size") or tuple(layer.scale[-3:])
    vs = np.asarray(vs, dtype=float)[-3:]
    return float(vs[0]) if np.allclose(vs, vs[0]) and vs[0] > 0 else None


def save_picks(layer, path, group: str | None = None, only_group: bool = False) -> Path | None:
    """Write the picks of ``layer`` to ``path`` (``.star``/``.csv``; ``.star`` if no suffix) with every column.

    ``only_group``: only the active picks of ``group`` (a class or cluster; a warning if None).
    Candidates below the Pick widget's live threshold are not written; rejected picks are,
    marked ``rejected``. Returns the path written, or None (the reason was shown).
    """
    from napari.utils.notifications import show_info, show_warning

    from ...io import write_picks
    from ...layers import SCORE_THRESHOLD_KEY, above_threshold
    from ...picks import from_points
    from .groups import PicksGroups

    if layer is None or len(layer.data) == 0:
        show_warning("Results: there are no picks to save (choose a picks layer).")
        return None
    if only_group and group is None:
        show_warning("Results: select a class or cluster row to save only its picks.")
        return None
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(STAR_SUFFIX)
    keep = above_threshold(layer.features, layer.metadata.get(SCORE_THRESHOLD_KEY))
    view = PicksGroups.of(layer)  # as the layer is now (curation may have changed since the table was filled)
    if only_group:
        keep &= view.members(group)
    try:
        picks = from_points(layer.data, layer.features)
        out = write_picks(path, picks[keep].reset_index(drop=True), voxel_size=layer_voxel_size(layer))
    except Exception as exc:  # noqa: BLE001 - PicksError: one clear message; others with traceback
        report_error(exc)
        return None
    what = f"the {int(keep.sum())} picks of {view.label(group)}" if only_group else f"{int(keep.sum())} picks"
    show_info(f"Results: saved {what} to {out}")
    return out


def save_averages(folder, averages: dict, voxel_size: float | None) -> list[Path]:
    """Write every average of ``{group: (box, n)}`` (``voxel_size`` Å) as ``average_<group>.mrc`` into
    the existing ``folder``; returns the paths written ([] after a message if there are none, or on failure)."""
    from napari.utils.notifications import show_info, show_warning

    from ...embed import write_averages
    from ...errors import CryoOpensetError
    from ...layers import group_order

    if not averages:
        show_warning("Results: there are no averages yet: run Embed & cluster on this picks layer.")
        return []
    folder = Path(folder)
    try:
        if not folder.is_dir():
            raise CryoOpensetError(f"'{folder}': the folder does not exist")
        written = write_averages(folder, averages, voxel_size, group_order(list(averages)))
    except Exception as exc:  # noqa: BLE001 - one clear message (user input) or with its traceback
        report_error(exc)
        return []
    show_info(f"Results: saved {len(written)} averages to {folder}")
    return written
