"""Parameters of a DoG picking run (:class:`PickingParams`).

Lengths given by the user are in Å (``diameter``, ``min_distance``, ``border``) except ``sigma1``
(voxels, as in AITom); :func:`napari_cryo_openset.picking.params.derive_geometry` turns them into
per-axis voxel quantities (Z, Y, X) for one tomogram.

Defaults and their reasons
--------------------------
- σ1 = particle radius in voxels (AITom: "σ1 should be roughly equal to the radius in pixels"),
  σ2 = K·σ1 with K = 1.1 (Pei et al. 2016). Both overridable.
- ``min_distance`` = 0.8 × diameter: two picks closer than that would be the same particle;
  touching particles (centres one diameter apart) are still both found.
- ``border`` = diameter / 2: a pick whose centre is closer than a radius to a face of the
  volume is dropped (its box would be mostly outside the tomogram).
- Threshold: ``robust`` (median + ``k_mad`` × 1.4826 × MAD of the DoG response, k = 4), which
  does not depend on a single strongest peak; the AITom rule, top-N and an explicit value are
  offered. k = 4 is the one value that holds across the blob phantoms of
  ``benchmarks/bench_picking.py`` (low to high SNR, sparse to crowded): a lower k lets noise
  peaks through in large sparse volumes, a higher one loses particles at low SNR. It assumes
  particles are a minority of the voxels (see :mod:`napari_cryo_openset.picking.core` for the
  crowded case).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ParameterError
from ._spec import check_fields, param

#: Protein contrast of a tomogram: dark (raw reconstructions), bright (inverted) or guessed.
POLARITIES = ("dark", "bright", "auto")
THRESHOLD_METHODS = ("aitom", "robust", "topn", "value")


@dataclass(frozen=True)
class PickingParams:
    """One DoG picking run (the ``pick`` command, the Pick widget, ``run`` and the tests).

    ``threshold_method``: ``robust`` (default) median + ``k_mad`` · 1.4826 · MAD of the DoG
    response; ``aitom`` m + ``aitom_level`` · (M − m) / 20 with m, M the weakest/strongest DoG
    peak; ``topn`` the ``max_picks`` best peaks; ``value`` the explicit ``threshold`` (DoG
    response units, see :mod:`napari_cryo_openset.picking.core`). Validated by :meth:`validate`
    (called by the picker), so a widget can hold a half-edited set.
    """

    diameter: float = param(help="particle diameter", unit="Å", low=0, low_open=True,
                            expect="a positive number of Å")
    polarity: str = param("dark", choices=POLARITIES,
                          help="protein contrast in this tomogram (default dark; auto guesses and reports)")
    threshold_method: str = param("robust", choices=THRESHOLD_METHODS, help="automatic threshold rule")
    threshold: float | None = param(None, metavar="T", help="keep peaks with a DoG score ≥ T (score: response of the "
                                               "standardised volume, positive = particle-like)")
    max_picks: int | None = param(None, low=1, help="keep the N best peaks (with a threshold rule: a cap)")
    k_mad: float = param(4.0, metavar="K", help="robust threshold = median + K · 1.4826 · MAD of the response")
    aitom_level: float = param(3.0, help="t of the AITom rule T = m + t (M − m) / 20 (Pei et al.: 3)")
    min_distance: float | None = param(None, unit="Å", low=0,
                                       help="minimum distance between picks (default 0.8 × diameter; 0 = off)")
    k: float = param(1.1, low=1, low_open=True, help="σ2 / σ1 of the Difference of Gaussians")
    sigma1: float | None = param(None, unit="voxels", low=0, low_open=True,
                                 help="σ1 (default the particle radius in voxels)")
    border: float | None = param(None, unit="Å", low=0,
                                 help="drop picks closer than this to a face of the volume (default diameter/2)")
    memory_budget_mb: float = param(1024.0, unit="MB", low=0, low_open=True, flag="--memory-mb",
                                    help="working-memory target per tile; larger tomograms are tiled")
    workers: int | None = param(None, low=1, help="FFT threads (default: the CPUs this process may use)")

    def validate(self) -> PickingParams:
        """Check every value; raise :class:`ParameterError` naming the first bad one."""
        check_fields(self)
        if self.threshold_method == "value" and self.threshold is None:
            raise ParameterError(f"threshold_method 'value' needs a finite threshold, got {self.threshold!r}")
        if self.threshold_method == "topn" and self.max_picks is None:
            raise ParameterError("threshold_method 'topn' needs max_picks (how many picks to keep)")
        return self

    def to_dict(self) -> dict:
        """Plain-Python copy (for reports and JSON)."""
        return asdict(self)
