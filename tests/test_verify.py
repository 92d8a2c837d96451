"""Template verification (napari_cryo_openset.verify): the bank recognises its templates, the fusion
follows the evidence, the verified calls recover the classes and call a decoy unknown."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryo_openset.params import ImagingCondition
from napari_cryo_openset.progress import run_to_completion
from napari_cryo_openset.train import source_boxes
from napari_cryo_openset.verify import (
    TemplateBank,
    Standardiser,
    decide,
    fit_temperature,
    fuse,
    known_probabilities,
    verify_calls,
)

TEMPLATE_NAMES = ("1bxn", "1qvr", "2cg9")
CONDITION = ImagingCondition(voxel_size=10.0, snr=2.0)


@pytest.fixture(scope="module")
def bank(templates, one_thread):
    return TemplateBank(templates, CONDITION, 24, n_rotations=48, seed=0)


def test_bank_recognises_each_template_in_noisy_simulated_boxes(bank, source_set):
    names = np.asarray(source_set.class_names)[source_set.labels]
    keep = np.isin(names, bank.class_names)
    boxes = source_boxes(source_set.subtomograms[keep], source_set.polarity)
    cc = bank.correlations(boxes)
    assert cc.shape == (int(keep.sum()), 3)
    assert np.all((cc > -1.001) & (cc < 1.001))
    accuracy = np.mean(np.asarray(bank.class_names)[cc.argmax(axis=1)] == names[keep])
    assert accuracy >= 0.7  # chance 1/3: 48 rotations, SNR 2


def test_bank_refuses_boxes_of_another_size(bank):
    from napari_cryo_openset.errors import ParameterError

    with pytest.raises(ParameterError, match="24³"):
        bank.correlations(np.zeros((2, 20, 20, 20), np.float32))


def test_fusion_follows_the_stronger_evidence():
    p = np.array([[0.6, 0.4], [0.6, 0.4]])
    c = np.array([[0.1, 0.1], [0.1, 0.3]])
    q = fuse(p, c, 0.05)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    assert q[0].argmax() == 0  # equal correlations: the network decides
    assert q[1].argmax() == 1  # a clearly better correlation overrides a weak network preference
    assert fuse(p, c, 1e3)[1].argmax() == 0  # a huge temperature: the network alone


def test_temperature_fit_prefers_the_informative_correlation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    p = np.full((300, 3), 1 / 3)  # an uninformative network
    c = rng.normal(0.1, 0.02, (300, 3))
    c[np.arange(300), labels] += 0.08  # the correlation tells the class
    t, ll = fit_temperature(p, c, labels)
    assert t < 0.1 and ll[t] > ll[max(ll)]
    assert known_probabilities(np.array([[0.2, 0.3, 0.5]]), ["a", "empty", "b"], ["b", "a"])[0].tolist() == \
        pytest.approx([0.5 / 0.7, 0.2 / 0.7])


def test_unknown_score_falls_with_correlation_and_with_the_entropy_rule_rises_with_entropy():
    q = np.array([[0.9, 0.1], [0.5, 0.5]])
    probe_q = np.array([[0.9, 0.1], [0.5, 0.5], [0.9, 0.1]])
    probe_c = np.array([0.3, 0.3, 0.1])
    s = Standardiser.fit(q, np.array([0.3, 0.3]), "entropy+correlation").score(probe_q, probe_c)
    assert s[1] > s[0] and s[2] > s[0]
    s = Standardiser.fit(q, np.array([0.3, 0.3])).score(probe_q, probe_c)  # default: the correlation alone
    assert s[1] == s[0] and s[2] > s[0]
    with pytest.raises(ValueError, match="score rule"):
        Standardiser.fit(q, np.array([0.3, 0.3]), "entropy")


def test_decide_re_decides_the_same_evidence_with_another_rule(bank, source_set, source_bundle):
    names = np.asarray(source_set.class_names)[source_set.labels]
    boxes = source_set.subtomograms
    rng = np.random.default_rng(0)
    cal = rng.permutation(len(boxes))[: len(boxes) // 2]
    tgt = np.setdiff1d(np.arange(len(boxes)), cal)
    ver = run_to_completion(verify_calls(source_bundle, bank, boxes[tgt], boxes[cal], names[cal]))
    assert ver.report["score_rule"] == "correlation"
    same = decide(ver.evidence, "correlation")
    assert (same.class_name == ver.class_name).all() and same.threshold == ver.threshold
    other = decide(ver.evidence, "entropy+correlation")
    assert other.report["score_rule"] == "entropy+correlation"
    assert not np.allclose(other.unknown_score, ver.unknown_score)


def test_verified_calls_recover_classes_and_call_a_decoy_unknown(bank, source_set, source_bundle):
    """Source validation set = the source set; target = the same kind of boxes: the verified calls
    are mostly right, decoys are called unknown more often than known particles are."""
    names = np.asarray(source_set.class_names)[source_set.labels]
    boxes = source_boxes(source_set.subtomograms, source_set.polarity)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(names))
    half = len(order) // 2
    cal, tgt = order[:half], order[half:]
    ver = run_to_completion(verify_calls(source_bundle, bank, boxes[tgt], boxes[cal], names[cal],
                                         transfer_rule="source", device="cpu"))
    true = names[tgt]
    known = np.isin(true, bank.class_names)
    assert ver.class_name.shape == true.shape
    assert np.mean(ver.closed_class[known] == true[known]) >= 0.6
    called = ver.class_name[known]
    assert np.all((called == ver.closed_class[known]) | np.isin(called, ["unknown", "empty"]))
    decoy = true == "unknown"
    assert np.mean(ver.is_unknown[decoy]) > np.mean(ver.is_unknown[known])
    assert np.all((ver.confidence >= 0) & (ver.confidence <= 1))
    assert ver.report["temperature"] > 0 and ver.report["templates"] == list(bank.class_names)
