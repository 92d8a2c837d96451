"""Adaptation losses (CORAL, MLUDA margins, centre loss, centre updates) on hand examples."""

from __future__ import annotations

import math

import pytest
import torch

from napari_cryo_openset.adapt.losses import (
    batch_class_means,
    centre_loss,
    centre_pull_loss,
    centre_separation_loss,
    coral_loss,
    entropy_loss,
    unknown_margin_loss,
    update_centres,
)
from napari_cryo_openset.errors import ParameterError


def t(values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


CENTRES = [[0.0, 0.0], [10.0, 0.0]]


# ----------------------------------------------------------------------------- CORAL
def test_coral_hand_example_2d():
    # Cov(hs) = 4/3·I (centred ±1, n − 1 = 3); Cov(ht) = [[2, 2], [2, 2]] (n − 1 = 1)
    # ‖diff‖² = 2·(2/3)² + 2·2² = 80/9; / (4·2²) = 5/9
    hs = t([[0, 0], [2, 0], [0, 2], [2, 2]], grad=True)
    ht = t([[0, 0], [2, 2]], grad=True)
    loss = coral_loss(hs, ht)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(5 / 9)
    loss.backward()
    assert hs.grad.abs().sum() > 0 and ht.grad.abs().sum() > 0


def test_coral_hand_example_1d():
    # var([0, 2]) = 2, var([0, 1, 2]) = 1 -> (2 − 1)² / 4
    assert coral_loss(t([[0.0], [2.0]]), t([[0.0], [1.0], [2.0]])).item() == pytest.approx(0.25)


def test_coral_zero_for_identical_and_shift_invariant():
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(16, 3, generator=g, dtype=torch.float64)
    ht = torch.randn(12, 3, generator=g, dtype=torch.float64) * 2
    assert coral_loss(hs, hs.clone()).item() == pytest.approx(0.0, abs=1e-15)
    assert coral_loss(hs + 5.0, ht - 3.0).item() == pytest.approx(coral_loss(hs, ht).item())


def test_coral_rejects_bad_input():
    with pytest.raises(ParameterError, match="hs"):
        coral_loss(t([[1.0, 2.0]]), t([[1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(ParameterError, match="ht"):
        coral_loss(t([[1.0, 2.0], [0.0, 1.0]]), t([[1.0], [3.0]]))


# ----------------------------------------------------------------------------- MLUDA terms
def test_centre_pull_loss_hand_example_and_gradient():
    # squared distances 25, 1, 1; m1² = 4 -> hinges 21, 0, 0 -> mean 7
    h = t([[3.0, 4.0], [10.0, 1.0], [0.0, 1.0]], grad=True)
    loss = centre_pull_loss(h, torch.tensor([0, 1, 0]), t(CENTRES), m1=2.0)
    assert loss.item() == pytest.approx(7.0)
    loss.backward()
    # d/dh0 = 2(h0 − c0)/3; the satisfied rows get no gradient
    torch.testing.assert_close(h.grad, t([[2.0, 8 / 3], [0.0, 0.0], [0.0, 0.0]]))


def test_centre_pull_loss_satisfied_margin_gives_zero_gradient():
    h = t([[3.0, 4.0], [10.0, 1.0]], grad=True)
    c = t(CENTRES, grad=True)
    loss = centre_pull_loss(h, [0, 1], c, m1=10.0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(h.grad) == 0 and torch.count_nonzero(c.grad) == 0


def test_centre_pull_loss_gradient_reaches_centres_and_rejects_bad_labels():
    c = t(CENTRES, grad=True)
    centre_pull_loss(t([[3.0, 4.0]]), [0], c, m1=1.0).backward()
    torch.testing.assert_close(c.grad, t([[-6.0, -8.0], [0.0, 0.0]]))
    with pytest.raises(ParameterError, match="y"):
        centre_pull_loss(t([[3.0, 4.0]]), [2], t(CENTRES), m1=1.0)
    with pytest.raises(ParameterError, match="m1"):
        centre_pull_loss(t([[3.0, 4.0]]), [0], t(CENTRES), m1=-1.0)


def test_centre_separation_loss_hand_example_and_gradient():
    # pair squared distances 9, 16, 25; m2² = 16 -> hinges 7, 0, 0 -> mean 7/3
    c = t([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], grad=True)
    loss = centre_separation_loss(c, m2=4.0)
    assert loss.item() == pytest.approx(7 / 3)
    loss.backward()
    # −∂‖c0 − c1‖²/3: c0 pushed to −x, c1 to +x (gradient descent), c2 untouched
    torch.testing.assert_close(c.grad, t([[2.0, 0.0], [-2.0, 0.0], [0.0, 0.0]]))


def test_centre_separation_loss_satisfied_and_single_centre():
    c = t([[0.0, 0.0], [3.0, 0.0]], grad=True)
    loss = centre_separation_loss(c, m2=1.0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(c.grad) == 0
    one = t([[1.0, 2.0]], grad=True)
    loss = centre_separation_loss(one, m2=5.0)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert torch.count_nonzero(one.grad) == 0


def test_unknown_margin_loss_hand_example_and_gradient():
    # nearest squared distances 1, 16, 100; m3² = 25 -> hinges 24, 9, 0 -> mean 11
    h = t([[1.0, 0.0], [6.0, 0.0], [20.0, 0.0]], grad=True)
    loss = unknown_margin_loss(h, t(CENTRES), m3=5.0)
    assert loss.item() == pytest.approx(11.0)
    loss.backward()
    # −2(h − c_nearest)/3: pushed away from the nearest centre; the far sample is left alone
    torch.testing.assert_close(h.grad, t([[-2 / 3, 0.0], [8 / 3, 0.0], [0.0, 0.0]]))


def test_unknown_margin_loss_satisfied_and_empty():
    h = t([[20.0, 0.0]], grad=True)
    loss = unknown_margin_loss(h, t(CENTRES), m3=5.0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(h.grad) == 0
    empty = torch.zeros((0, 2), dtype=torch.float64, requires_grad=True)
    loss = unknown_margin_loss(empty, t(CENTRES), m3=5.0)
    assert loss.ndim == 0 and loss.item() == 0.0
    loss.backward()


def test_centre_loss_hand_example():
    # 0.5 · mean(25, 1)
    h = t([[3.0, 4.0], [10.0, 1.0]], grad=True)
    loss = centre_loss(h, [0, 1], t(CENTRES))
    assert loss.item() == pytest.approx(6.5)
    loss.backward()
    torch.testing.assert_close(h.grad, t([[1.5, 2.0], [0.0, 0.5]]))  # (h − c)/B


def test_losses_are_batch_means():
    h = t([[3.0, 4.0], [10.0, 1.0]])
    y = torch.tensor([0, 1])
    doubled_h, doubled_y = torch.cat([h, h]), torch.cat([y, y])
    assert centre_pull_loss(doubled_h, doubled_y, t(CENTRES), 1.0).item() == pytest.approx(
        centre_pull_loss(h, y, t(CENTRES), 1.0).item()
    )
    assert unknown_margin_loss(doubled_h, t(CENTRES), 6.0).item() == pytest.approx(
        unknown_margin_loss(h, t(CENTRES), 6.0).item()
    )


def test_entropy_loss():
    assert entropy_loss(torch.zeros(3, 4)).item() == pytest.approx(math.log(4))
    assert entropy_loss(t([[100.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-12)
    logits = t([[1.0, 0.0, -1.0]], grad=True)
    entropy_loss(logits).backward()
    assert logits.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- centres
def test_update_centres_matches_formula():
    centres = t([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]])
    h = t([[2.0, 0.0], [4.0, 0.0], [10.0, 2.0], [99.0, 99.0], [50.0, 50.0]], grad=True)
    y = torch.tensor([0, 0, 1, -1, 3])  # −1 and K = 3 are ignored
    out = update_centres(centres, h, y, gamma=0.5)
    assert out is centres
    # c0: Δ = ((0−2) + (0−4), 0) / (1 + 2) = (−2, 0) -> c0 − ½Δ = (1, 0)
    # c1: Δ = (10−10, 0−2) / (1 + 1) = (0, −1) -> (10, 0.5);  c2: absent, unchanged
    torch.testing.assert_close(centres, t([[1.0, 0.0], [10.0, 0.5], [5.0, 5.0]]))
    assert not centres.requires_grad


def test_update_centres_in_place_on_parameter_and_validation():
    centres = torch.nn.Parameter(torch.zeros(2, 2))
    update_centres(centres, torch.ones(3, 2), torch.tensor([1, 1, 1]), gamma=1.0)
    torch.testing.assert_close(centres.data, torch.tensor([[0.0, 0.0], [0.75, 0.75]]))
    with pytest.raises(ParameterError, match="gamma"):
        update_centres(torch.zeros(2, 2), torch.ones(1, 2), [0], gamma=2.0)
    with pytest.raises(ParameterError, match="h"):
        update_centres(torch.zeros(2, 2), torch.ones(1, 3), [0], gamma=0.5)


def test_batch_class_means():
    h = t([[0.0, 0.0], [2.0, 2.0], [5.0, 5.0], [7.0, 1.0]], grad=True)
    means, present = batch_class_means(h, torch.tensor([0, 0, -1, 2]), num_classes=3)
    torch.testing.assert_close(means.detach(), t([[1.0, 1.0], [0.0, 0.0], [7.0, 1.0]]))
    assert present.tolist() == [True, False, True]
    means[0].sum().backward()
    torch.testing.assert_close(h.grad, t([[0.5, 0.5], [0.5, 0.5], [0.0, 0.0], [0.0, 0.0]]))


def test_separation_through_batch_means_reaches_features():
    h = t([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], grad=True)
    means, present = batch_class_means(h, [0, 0, 1, 1], num_classes=2)
    centre_separation_loss(means[present], m2=3.0).backward()
    assert torch.count_nonzero(h.grad) > 0
