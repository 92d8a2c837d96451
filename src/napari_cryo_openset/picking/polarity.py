"""Contrast polarity: is protein dark or bright in this tomogram?

- ``dark``: protein darker than the background (raw reconstructions, IMOD convention);
- ``bright``: protein brighter (many pipelines invert before writing; the real HIV VLP tomogram
  in ``shared/data/real`` is bright);
- ``auto``: guessed by :func:`guess_polarity` and reported, so the user can see and override it.

The canonical polarity of everything fed to a network is :data:`CANONICAL_POLARITY` (bright:
protein positive after normalisation, like density maps); see
:func:`napari_cryo_openset.extract.normalise_subtomograms`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

POLARITIES = ("dark", "bright", "auto")
#: Protein is positive (bright) in every normalised subtomogram, as in density maps.
CANONICAL_POLARITY = "bright"


def polarity_sign(polarity: str) -> float:
    """+1 for ``bright``, −1 for ``dark``: multiply the data by it to make protein positive.

    ``auto`` must be resolved first (:func:`guess_polarity`); it raises :class:`ParameterError`.
    """
    if polarity == "bright":
        return 1.0
    if polarity == "dark":
        return -1.0
    if polarity == "auto":
        raise ParameterError(
            "polarity 'auto' must be resolved to 'dark' or 'bright' first (e.g. by picking with "
            "polarity='auto', which reports its guess)"
        )
    raise ParameterError(f"polarity must be 'dark' or 'bright', got {polarity!r}")


def guess_polarity(
    response_sample: np.ndarray,
    bright_peaks: np.ndarray | None = None,
    dark_peaks: np.ndarray | None = None,
    noise_sigma: float | None = None,
) -> tuple[str, dict]:
    """Guess the polarity from the skewness of the band-passed (DoG) volume.

    Particles are compact objects of one contrast: after the DoG band-pass they make a heavy
    tail on one side of the response distribution (positive for bright particles, negative for
    dark ones), while noise is symmetric. So::

        polarity = 'bright' if skewness(response_sample) > 0 else 'dark'

    ``response_sample`` is a regular sample of the DoG response ``G(σ1)*v − G(σ2)*v`` (not
    sign-corrected). Gold fiducials have the contrast of protein, so they push the same way.

    Optional supporting evidence (reported, not used for the decision): the mean height, in
    noise SDs, of the k strongest peaks of each sign (k = 1 % of the peaks, at least 5).

    Returns the guess and the evidence: ``skewness``, ``confident`` (|skewness| ≥ 0.1; below
    that the data do not say, and the user should check), and the peak excesses when given.
    Why 0.1: phantoms give a skewness far above it with the right sign (the
    ``ours (polarity auto)`` rows of ``benchmarks/bench_picking.py``), and a real tomogram,
    with weaker and more crowded contrast, still lands above it over a range of diameters.
    """
    sample = np.asarray(response_sample, dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    skew = 0.0
    if sample.size > 2:
        centred = sample - sample.mean()
        m2 = float(np.mean(centred**2))
        if m2 > 0:
            skew = float(np.mean(centred**3) / m2**1.5)
    guess = "bright" if skew > 0 else "dark"
    evidence: dict = {"skewness": skew, "confident": bool(abs(skew) >= 0.1)}
    if bright_peaks is not None and dark_peaks is not None:
        bp = np.sort(np.asarray(bright_peaks, dtype=np.float64))[::-1]
        dp = np.sort(np.asarray(dark_peaks, dtype=np.float64))[::-1]
        k = max(5, int(round(0.01 * min(bp.size, dp.size))))
        sigma = float(noise_sigma) if noise_sigma and noise_sigma > 0 else 1.0
        evidence["peak_excess_bright"] = float(np.mean(bp[:k])) / sigma if bp.size else 0.0
        evidence["peak_excess_dark"] = float(np.mean(dp[:k])) / sigma if dp.size else 0.0
        evidence["k"] = k
    return guess, evidence
