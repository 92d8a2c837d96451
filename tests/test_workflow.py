"""workflow.py: what each step needs, and the warnings a user must see (no display)."""

from __future__ import annotations

from napari_cryo_openset.workflow import (
    NO_MODEL,
    NO_PICKS,
    NO_TOMOGRAM,
    Facts,
    diameter_warning,
    model_warning,
    needs,
    result_warning,
    warnings,
)


def test_needs_name_the_missing_inputs():
    assert needs("Pick", Facts()) == NO_TOMOGRAM
    assert NO_PICKS in needs("Curate", Facts(tomograms=1))
    assert NO_MODEL in needs("Adapt", Facts(tomograms=1, picks=1))
    assert needs("Adapt", Facts(tomograms=1, picks=1, model=True)) == ""
    assert "No predictions" in needs("Results", Facts(tomograms=1, picks=1, model=True))


def test_a_near_chance_model_is_flagged():
    assert "near chance" in model_warning(0.17, 8)  # the case: 8 classes, chance 0.125
    assert "near chance" in model_warning(0.1875, 8)  # 1.5 / 8
    assert model_warning(0.19, 8) == "" and model_warning(None, 8) == "" and model_warning(0.9, 8) == ""
    assert "near chance" in warnings("Model", Facts(model=True, val_accuracy=0.17, num_classes=8))


def test_mostly_empty_or_unknown_results_are_flagged():
    text = result_warning(89, 0.05, 61 / 89, "source")  # the case: 61 of 89 picks empty
    assert "69% of the picks are called empty" in text and "Adapt" in text
    assert "polarity" in result_warning(89, 0.0, 0.6, "mluda")  # after adaptation: check the inputs
    assert "called unknown" in result_warning(100, 0.51, 0.0)
    assert result_warning(100, 0.5, 0.5) == "" and result_warning(0, 1.0, 1.0) == ""
    assert "called unknown" in warnings("Results", Facts(classified=10, unknown_fraction=0.8))


def test_a_particle_under_four_voxels_is_flagged():
    text = diameter_warning(100.0, 40.0)  # the case: 2.5 voxels
    assert "2.5 voxels" in text and "at least 4" in text
    assert diameter_warning(160.0, 40.0) == "" and diameter_warning(100.0, None) == ""
    assert warnings("Pick", Facts(diameter=100.0, voxel_size=40.0)) == text
