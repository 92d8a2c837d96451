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
    val_accuracy: float | None = None  # the source model's validation accuracy (simulated data)
    num_classes: int = 0  # its outputs
    classified: int = 0  # active picks with a class, in the layer the legend shows
    unknown_fraction: float = 0.0  # of those, called unknown
    empty_fraction: float = 0.0  # of those, called empty
    predicted_by: str = ""  # "source" (Model ▸ Predict) or the adaptation method
    diameter: float | None = None  # the Pick step's particle diameter (Å)
    voxel_size: float | None = None  # the Pick step's tomogram voxel size (Å)


NO_TOMOGRAM = "No tomogram yet: File ▸ Open a tomogram (.mrc/.rec), or File ▸ Open Sample."
NO_PICKS = "No picks yet: pick particles in Pick, or File ▸ Open a STAR/CSV file of picks."
NO_MODEL = "No model yet: train one in Model (Simulate & train), or Load model…"
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
            lines.append("No model yet for the map: train one in Model, adapt one in Adapt, or Load model…")
    return "\n".join(lines)


#: Below this many voxels across, a particle is too small to pick or classify reliably.
MIN_DIAMETER_VOXELS = 4.0
#: Above this fraction of ``unknown`` or ``empty`` calls, the result needs a second look.
MOSTLY = 0.5


def near_chance(val_accuracy: float | None, num_classes: int) -> bool:
    """Is a validation accuracy at most 1.5 × chance (1.5 / number of classes)?"""
    return val_accuracy is not None and num_classes > 1 and float(val_accuracy) <= 1.5 / num_classes


def model_warning(val_accuracy: float | None, num_classes: int) -> str:
    """A warning for a model barely better than guessing ("" if it is not)."""
    if not near_chance(val_accuracy, num_classes):
        return ""
    return (f"The model is near chance: validation accuracy {float(val_accuracy):.2f} for {num_classes} classes "
            f"(chance {1 / num_classes:.2f}). Its calls mean little: simulate more per class, more epochs, a "
            "higher SNR, or fewer / more distinct templates, and check the voxel size and imaging settings.")


def result_warning(classified: int, unknown_fraction: float, empty_fraction: float, predicted_by: str = "") -> str:
    """A warning for predictions that are mostly ``unknown`` or mostly ``empty`` ("" otherwise)."""
    if classified <= 0:
        return ""
    lines = []
    if empty_fraction > MOSTLY:
        hint = ("adapt the model to this tomogram (Adapt)" if predicted_by in ("", "source")
                else "check the polarity, the voxel size and the diameter of the picks")
        lines.append(f"{empty_fraction:.0%} of the picks are called empty: {hint}, or raise the picking threshold.")
    if unknown_fraction > MOSTLY:
        lines.append(f"{unknown_fraction:.0%} of the picks are called unknown: the templates may not match this "
                     "sample, or the threshold is strict (move it in Adapt); check the polarity and the voxel size.")
    return "\n".join(lines)


def diameter_warning(diameter: float | None, voxel_size: float | None) -> str:
    """A warning for a particle under :data:`MIN_DIAMETER_VOXELS` voxels across ("" otherwise)."""
    if not diameter or not voxel_size:
        return ""
    voxels = float(diameter) / float(voxel_size)
    if voxels >= MIN_DIAMETER_VOXELS:
        return ""
    return (f"A {float(diameter):.0f} Å particle is only {voxels:.1f} voxels across at {float(voxel_size):g} Å/voxel "
            f"(at least {MIN_DIAMETER_VOXELS:.0f} needed): use a less binned tomogram, or check the diameter.")


def warnings(step: str, facts: Facts) -> str:
    """The warnings ``step`` shows, one per line ("" if none)."""
    lines = []
    if step == "Pick":
        lines.append(diameter_warning(facts.diameter, facts.voxel_size))
    if step in ("Model", "Adapt"):
        lines.append(model_warning(facts.val_accuracy, facts.num_classes))
    if step in ("Model", "Adapt", "Results"):
        lines.append(result_warning(facts.classified, facts.unknown_fraction, facts.empty_fraction, facts.predicted_by))
    return "\n".join(line for line in lines if line)
