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

Diameter ranges (multi-scale picking)
-------------------------------------
``max_diameter`` (Å) turns one run into a scale space: ``n_scales`` diameters spaced
geometrically from ``diameter`` (the smallest) to ``max_diameter`` (default
:func:`default_n_scales`: one scale per factor 1.25, at least 2). Each scale is a DoG at its
own σ1 = radius/√3 (the scale at which a sphere responds most, see
:mod:`napari_cryo_openset.picking.multiscale`); its response is robust-z-scored (median / 1.4826·MAD of that scale), so scores
are comparable across scales and the robust threshold is simply ``k_mad`` on the joint score.
Derived defaults then apply *per pick, from its own size*: the minimum distance between two
picks is the mean of their two diameters (overlapping spheres are one particle; touching spheres of any sizes are both kept), and a pick is dropped within its own radius of
a face (``border`` = own diameter / 2; a small particle near a face is kept although a large one
there would not be). An explicit ``min_distance`` or ``border`` applies to every pick. ``sigma1``
fixes one scale and cannot be combined with a range. ``max_diameter`` None (or equal to
``diameter``) is the single-scale picker, unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import math

from ..errors import ParameterError
from ._spec import check_fields, param

#: Ratio between neighbouring scales that :func:`default_n_scales` aims for.
SCALE_RATIO = 1.25


def default_n_scales(diameter: float, max_diameter: float) -> int:
    """Scales for ``diameter``..``max_diameter`` Å: ⌈log(max/min) / log 1.25⌉ + 1, at least 2."""
    ratio = float(max_diameter) / float(diameter)
    return max(2, int(math.ceil(math.log(ratio) / math.log(SCALE_RATIO) - 1e-9)) + 1)

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
    max_diameter: float | None = param(None, unit="Å", flag="--max-diameter",
                                       help="largest particle diameter: pick at scales from diameter to this "
                                            "(None = one scale; the CLI's --diameter MIN MAX)")
    n_scales: int | None = param(None, low=2, help="scales from MIN to MAX of a --diameter range "
                                                   "(default one per factor 1.25, at least 2)")
    polarity: str = param("dark", choices=POLARITIES,
                          help="protein contrast in this tomogram (default dark; auto guesses and reports)")
    threshold_method: str = param("robust", choices=THRESHOLD_METHODS, help="automatic threshold rule")
    threshold: float | None = param(None, metavar="T", help="keep peaks with a DoG score ≥ T (score: response of the "
                                               "standardised volume, positive = particle-like)")
    max_picks: int | None = param(None, low=1, help="keep the N best peaks (with a threshold rule: a cap)")
    k_mad: float = param(4.0, metavar="K", help="robust threshold = median + K · 1.4826 · MAD of the response")
    aitom_level: float = param(3.0, help="t of the AITom rule T = m + t (M − m) / 20 (Pei et al.: 3)")
    min_distance: float | None = param(None, unit="Å", low=0,
                                       help="minimum distance between picks (default 0.8 × diameter, for a range "
                                            "the mean diameter of the two picks; 0 = off)")
    k: float = param(1.1, low=1, low_open=True, help="σ2 / σ1 of the Difference of Gaussians")
    sigma1: float | None = param(None, unit="voxels", low=0, low_open=True,
                                 help="σ1 (default the particle radius in voxels)")
    border: float | None = param(None, unit="Å", low=0,
                                 help="drop picks closer than this to a face of the volume (default diameter/2, "
                                      "for a range each pick's own radius)")
    memory_budget_mb: float = param(1024.0, unit="MB", low=0, low_open=True, flag="--memory-mb",
                                    help="working-memory target per tile; larger tomograms are tiled")
    workers: int | None = param(None, low=1, help="FFT threads (default: the CPUs this process may use)")

    def validate(self) -> PickingParams:
        """Check every value; raise :class:`ParameterError` naming the first bad one."""
        check_fields(self)
        if self.max_diameter is not None:
            md = self.max_diameter
            if not (isinstance(md, (int, float)) and math.isfinite(md)):
                raise ParameterError(f"max_diameter must be a finite number of Å (--diameter MIN MAX), got {md!r}")
            if md <= 0 or md < self.diameter:
                why = "zero or negative" if md <= 0 else "an inverted range"
                raise ParameterError(
                    f"diameter range {self.diameter:g}..{md:g} Å is {why}: give --diameter MIN MAX with "
                    f"0 < MIN ≤ MAX (Å), or one diameter"
                )
            object.__setattr__(self, "max_diameter", float(md))
            if self.sigma1 is not None and self.is_range:
                raise ParameterError(
                    "sigma1 fixes one scale; leave it unset with a diameter range (--diameter MIN MAX)"
                )
        elif self.n_scales is not None:
            raise ParameterError("n_scales needs a diameter range (--diameter MIN MAX, i.e. max_diameter)")
        if self.threshold_method == "value" and self.threshold is None:
            raise ParameterError(f"threshold_method 'value' needs a finite threshold, got {self.threshold!r}")
        if self.threshold_method == "topn" and self.max_picks is None:
            raise ParameterError("threshold_method 'topn' needs max_picks (how many picks to keep)")
        return self

    @property
    def is_range(self) -> bool:
        """True when this run picks at more than one scale (``max_diameter`` > ``diameter``)."""
        return self.max_diameter is not None and self.max_diameter > self.diameter

    @property
    def largest_diameter(self) -> float:
        """``max_diameter`` if set, else ``diameter`` (Å)."""
        return float(self.max_diameter) if self.max_diameter is not None else float(self.diameter)

    def scale_diameters(self) -> tuple[float, ...]:
        """The diameters (Å) picked at: ``(diameter,)`` or the geometric series to ``max_diameter``."""
        if not self.is_range:
            return (float(self.diameter),)
        n = int(self.n_scales) if self.n_scales is not None else default_n_scales(self.diameter, self.max_diameter)
        lo, hi = math.log(self.diameter), math.log(self.max_diameter)
        inner = [float(math.exp(lo + (hi - lo) * i / (n - 1))) for i in range(1, n - 1)]
        return (float(self.diameter), *inner, float(self.max_diameter))

    def to_dict(self) -> dict:
        """Plain-Python copy (for reports and JSON)."""
        return asdict(self)
