"""Learn-then-Test calibration on synthetic data: range checks, the risk bound, policy registry."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_core.confidence import CONFIDENCE, check_threshold, get_policy, should_exit
from adaptive_export.calibrate import binomial_pvalue, calibrate, evaluate, exit_index, threshold_paths

EXIT_LAYERS = (1, 2, 3)


def synthetic(n: int, seed: int, num_labels: int = 5):
    """Three exits; deeper exits are more often right, and confident logits are more often right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, n)
    difficulty = rng.uniform(0, 1, n)
    logits = np.zeros((3, n, num_labels))
    for k, skill in enumerate((0.55, 0.75, 0.92)):
        right = rng.uniform(0, 1, n) < skill * (1.2 - 0.4 * difficulty)
        wrong = (labels + rng.integers(1, num_labels, n)) % num_labels
        pred = np.where(right, labels, wrong)
        strength = np.where(right, 4.0, 1.5) * (1.5 - difficulty) + rng.normal(0, 0.5, n)
        logits[k, np.arange(n), pred] = strength
        logits[k] += rng.normal(0, 0.3, (n, num_labels))
    cost = np.cumsum(np.ones((3, n)), axis=0)  # 1, 2, 3 units per exit
    return logits, labels, cost


def test_policies_in_unit_interval():
    logits = np.random.default_rng(0).normal(0, 5, (100, 5))
    for name, fn in CONFIDENCE.items():
        c = fn(logits)
        assert c.shape == (100,) and (c >= 0).all() and (c <= 1).all(), name
    assert np.allclose(CONFIDENCE["entropy"](np.zeros((1, 5))), 0.0)
    with pytest.raises(ValueError, match="unknown confidence policy"):
        get_policy("vibes")


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_thresholds_out_of_range_rejected(bad):
    with pytest.raises(ValueError, match=r"between 0\.0 and 1\.0"):
        check_threshold(bad)
    with pytest.raises(ValueError, match=r"between 0\.0 and 1\.0"):
        should_exit(np.array([0.5]), bad)
    conf = np.full((3, 4), 0.5)
    with pytest.raises(ValueError, match=r"threshold of exit 2 must be a float between 0\.0 and 1\.0"):
        exit_index(conf, (0.5, bad))
    with pytest.raises(ValueError, match="expected 2 thresholds"):
        exit_index(conf, (0.5,))


def test_exit_index_first_confident_exit():
    conf = np.array([[0.9, 0.1, 0.1], [0.0, 0.8, 0.1], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(exit_index(conf, (0.5, 0.5)), [0, 1, 2])
    np.testing.assert_array_equal(exit_index(conf, (1.0, 1.0)), [2, 2, 2])


def test_paths_dedupe_single_early_exit():
    assert len(threshold_paths(1)) == 1
    assert len(threshold_paths(2)) == 3


def test_binomial_pvalue():
    assert binomial_pvalue(0, 1000, 0.01) == pytest.approx(0.99**1000)
    assert binomial_pvalue(50, 1000, 0.01) > 0.99


def test_risk_bounded_over_repeated_draws():
    """True risk of the chosen thresholds exceeds alpha in at most ~delta of calibration draws."""
    alpha, delta, trials = 0.03, 0.2, 20
    pop_logits, pop_labels, pop_cost = synthetic(40_000, seed=123)
    violations, speedups = 0, []
    for t in range(trials):
        logits, labels, cost = synthetic(1500, seed=t)
        cal = calibrate(logits, labels, cost, EXIT_LAYERS, policy="max_prob", max_accuracy_loss=alpha, delta=delta)
        assert cal.guarantee_met and all(0.0 <= x <= 1.0 for x in cal.thresholds)
        assert cal.p_value <= delta
        m = evaluate(pop_logits, pop_labels, cal.thresholds, "max_prob", pop_cost, EXIT_LAYERS)
        violations += m["risk"] > alpha
        assert m["accuracy_full"] - m["accuracy_early_exit"] <= m["risk"] + 1e-12  # risk bounds the loss
        speedups.append(m["expected_speedup"])
    assert violations <= max(1, int(2 * delta * trials))
    assert np.mean(speedups) > 1.1  # the guarantee is not bought by never exiting


def test_nothing_accepted_falls_back_to_no_exit():
    logits, labels, cost = synthetic(30, seed=0)  # too few samples to certify 0.1% risk
    cal = calibrate(logits, labels, cost, EXIT_LAYERS, policy="margin", max_accuracy_loss=0.001, delta=0.1)
    assert not cal.guarantee_met and cal.thresholds == (1.0, 1.0) and cal.path == "none"
    with pytest.raises(ValueError, match=r"max_accuracy_loss must be in \(0\.0, 1\.0\)"):
        calibrate(logits, labels, cost, EXIT_LAYERS, policy="margin", max_accuracy_loss=1.5, delta=0.1)
