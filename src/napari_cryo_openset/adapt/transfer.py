"""Does the source-calibrated unknown threshold hold on the target? A label-free check and rule.

The threshold τ is calibrated on source-validation scores (known vs. decoys,
:mod:`.calibrate`). Under a domain gap the target's known picks score higher (farther from
every centre) than the source's, and τ calls many of them unknown. Without a single target
label we can still look at the target's score distribution:

- ``fraction_at_source`` — the share of target picks above the source τ;
- a **two-component Gaussian mixture on the log scores** of the target (scikit-learn's
  ``GaussianMixture``, seeded): when the target holds a separate population of unknowns the
  upper component is it. It is trusted only when BIC prefers two components by
  :data:`BIC_MARGIN`, the upper weight lies in :data:`WEIGHT_RANGE` and the two means are at
  least :data:`MIN_SEPARATION` pooled SDs apart; its **expected unknown fraction** is the upper
  component's weight and its threshold the point between the means where the posteriors are
  equal;
- the unknown fraction seen at the end of adaptation (MLUDA's L_c margin, when there is one).

Rules (``AdaptParams.threshold_transfer``):

``source``   τ from the source, always (the papers' rule).
``mixture``  the mixture's threshold when the mixture is trusted, else the source τ.
``auto``     the source τ unless it calls more than :data:`EXCESS` (absolute) more of the target
             unknown than the trusted mixture expects; then the mixture's threshold. When the
             mixture is not trusted (one population: no separate unknowns, or no separation),
             τ stays — and the report says that the expected fraction is not known.
``adaptation`` as ``auto``, but when the mixture is not trusted and adaptation saw an unknown
             fraction (MLUDA: target features farther than the margin midpoint ½(m1 + m3) from
             every centre) that the source τ exceeds by more than :data:`EXCESS`, τ moves to the
             target-score quantile that calls that fraction. **Measured to fail** on the
             ``bench_run.py`` grid (5 of 5 cells where it fired: HOS 0.19–0.42 with the source τ,
             0.08–0.12 with it — MLUDA's margin sees 5–12 % unknown where about a third are), so
             it is not the default; kept for comparison.

Where it fails: unknowns that look like a known class (the mixture sees one population and
the source τ decides); a target with unknowns but a source τ far too high (few called, the
mixture and τ disagree the other way — reported, τ kept); a few dozen picks (BIC rarely
prefers two components). ``benchmarks/bench_run.py`` reports every rule on the same
predictions.
"""

from __future__ import annotations

import math

import numpy as np

#: BIC(1 component) − BIC(2 components) must exceed this for the mixture to be trusted.
BIC_MARGIN = 10.0
#: Trusted range of the upper component's weight (expected unknown fraction).
WEIGHT_RANGE = (0.02, 0.8)
#: Minimum distance of the component means, in pooled standard deviations.
MIN_SEPARATION = 1.0
#: ``auto`` moves τ when the source τ calls this much more of the target unknown than expected.
EXCESS = 0.15
#: Fewest target picks for a mixture.
MIN_PICKS = 30
TRANSFER_RULES = ("auto", "source", "mixture", "adaptation")


def score_mixture(scores: np.ndarray, seed: int = 0) -> dict:
    """Two-component mixture of the log scores: trusted?, expected fraction, threshold, BICs."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s) & (s > 0)]
    out: dict = {"n": int(s.size), "trusted": False}
    if s.size < MIN_PICKS:
        out["reason"] = f"{s.size} picks (the mixture needs {MIN_PICKS})"
        return out
    from sklearn.mixture import GaussianMixture

    x = np.log(s)[:, None]
    g1 = GaussianMixture(1, random_state=seed).fit(x)
    g2 = GaussianMixture(2, random_state=seed, n_init=3).fit(x)
    order = np.argsort(g2.means_[:, 0])
    mu = g2.means_[order, 0]
    sd = np.sqrt(g2.covariances_.reshape(-1)[order])
    w = g2.weights_[order]
    bic_gain = float(g1.bic(x) - g2.bic(x))
    pooled = float(math.sqrt(0.5 * (sd[0] ** 2 + sd[1] ** 2)))
    separation = float((mu[1] - mu[0]) / max(pooled, 1e-12))
    grid = np.linspace(mu[0], mu[1], 512)[:, None]
    post = g2.predict_proba(grid)[:, order[1]]
    cross = int(np.argmax(post >= 0.5)) if np.any(post >= 0.5) else len(grid) - 1
    threshold = float(np.exp(grid[cross, 0]))
    out.update(bic_gain=bic_gain, means=np.exp(mu).tolist(), sds_log=sd.tolist(), weights=w.tolist(),
               separation=separation, threshold=threshold, expected_unknown_fraction=float(w[1]),
               fraction_at_threshold=float(np.mean(s > threshold)))
    reasons = []
    if bic_gain < BIC_MARGIN:
        reasons.append(f"BIC prefers one population (gain {bic_gain:.1f} < {BIC_MARGIN:g})")
    if not WEIGHT_RANGE[0] <= w[1] <= WEIGHT_RANGE[1]:
        reasons.append(f"upper weight {w[1]:.2f} outside {WEIGHT_RANGE}")
    if separation < MIN_SEPARATION:
        reasons.append(f"means {separation:.2f} SD apart (< {MIN_SEPARATION:g})")
    out["trusted"] = not reasons
    if reasons:
        out["reason"] = "; ".join(reasons)
    return out


def transfer_threshold(source_threshold: float, target_scores: np.ndarray, rule: str = "auto",
                       adaptation_fraction: float | None = None, seed: int = 0) -> tuple[float, dict]:
    """(threshold to use on the target, report) — see the module docstring; never uses labels."""
    if rule not in TRANSFER_RULES:
        from ..errors import ParameterError

        raise ParameterError(f"threshold_transfer must be one of {', '.join(TRANSFER_RULES)}, got {rule!r}")
    s = np.asarray(target_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    at_source = float(np.mean(s > source_threshold)) if s.size else float("nan")
    mix = score_mixture(s, seed) if rule != "source" else {"trusted": False, "reason": "rule 'source'"}
    chosen, why = float(source_threshold), "source calibration"
    expected = None
    if mix.get("trusted"):
        expected = mix["expected_unknown_fraction"]
        if rule == "mixture":
            chosen, why = mix["threshold"], "target score mixture"
        elif rule in ("auto", "adaptation") and at_source - expected > EXCESS:
            chosen, why = mix["threshold"], (f"the source threshold calls {at_source:.0%} of the target unknown, the "
                                             f"target's scores expect {expected:.0%}")
    elif rule == "adaptation" and adaptation_fraction is not None and s.size and math.isfinite(adaptation_fraction) \
            and at_source - adaptation_fraction > EXCESS:
        expected = float(min(max(adaptation_fraction, 0.0), 1.0))
        chosen = float(np.quantile(s, 1.0 - expected)) if expected > 0 else float(s.max())
        why = (f"the source threshold calls {at_source:.0%} of the target unknown, adaptation saw "
               f"{expected:.0%} (the score mixture is not trusted: {mix.get('reason', 'one population')})")
    report = {"rule": rule, "source_threshold": float(source_threshold), "threshold": float(chosen), "why": why,
              "fraction_at_source": at_source, "fraction_called": float(np.mean(s > chosen)) if s.size else None,
              "expected_unknown_fraction": expected,
              "adaptation_unknown_fraction": adaptation_fraction, "mixture": mix}
    return float(chosen), report
