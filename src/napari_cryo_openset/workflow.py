"""What each step of the workflow panel still needs, and the warnings a user should see (no Qt, no napari).

The panel gathers a few :class:`Facts` about the viewer (how many tomograms and picks layers,
whether a model exists, …) and shows :func:`needs` on every step; the texts live here so the
widgets, the docs and the tests say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Facts:
    """What the viewer holds now, as far as the steps care."""

    tomograms: int = 0  # 3-D tomogram image layers
    picks: int = 0  # 3-D points layers
    predicted: int = 0  # picks layers with predictions (class_name)
    model: bool = False  # a source model (trained or loaded)
    adapted: bool = False  # an adapted model


NO_TOMOGRAM = "No tomogram yet: File ▸ Open a tomogram (.mrc/.rec), or File ▸ Open Sample."
NO_PICKS = "No picks yet: pick particles in Pick, or File ▸ Open a STAR/CSV file of picks."
NO_MODEL = "No model yet: train one in Model (Simulate & train), or Load model…."
NO_PREDICTIONS = "No predictions yet: classify the picks in Model (Predict) or Adapt."


def needs(step: str, facts: Facts) -> str:
    """What ``step`` (Pick, Curate, Model, Adapt, Results) is missing, one line per need; "" if nothing."""
    lines: list[str] = []
    if step in ("Pick", "Model", "Adapt") and not facts.tomograms:
        lines.append(NO_TOMOGRAM)
    if step == "Model" and not facts.picks and facts.model:
        lines.append("Predict needs picks: " + NO_PICKS[len("No picks yet: "):])
    if step in ("Curate", "Adapt") and not facts.picks:
        lines.append(NO_PICKS)
    if step == "Adapt" and not facts.model:
        lines.append(NO_MODEL)
    if step == "Results":
        if not facts.picks:
            lines.append(NO_PICKS)
        elif not facts.predicted:
            lines.append(NO_PREDICTIONS)
        if not (facts.model or facts.adapted):
            lines.append("No model yet for the map: train one in Model, adapt one in Adapt, or Load model….")
    return "\n".join(lines)
