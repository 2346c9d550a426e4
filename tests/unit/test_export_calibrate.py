"""Learn-then-Test calibration on synthetic data: range checks, the risk bound, policy registry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from adaptive_core.confidence import CONFIDENCE, check_threshold, get_policy, should_exit
from adaptive_export.calibrate import binomial_pvalue, calibrate, confidences, exit_index, threshold_paths

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
    """True risk of the chosen thresholds exceeds alpha in at most delta of calibration draws.

    Each draw violates with probability <= delta, independently, so over `trials` draws the violations are at most
    Bin(trials, delta); more than its 0.999 quantile means the guarantee does not hold. Many small draws (two exits,
    one threshold path) give the count its power: a calibrator testing at level 0.5 instead of delta violated in 48
    of 150 draws, against a bound of 27 (and 4 with the right level).
    """
    alpha, delta, trials, n = 0.03, 0.1, 150, 400
    two_exits = [0, 2]
    pop_logits, pop_labels, pop_cost = synthetic(40_000, seed=123)
    pop_logits, pop_cost = pop_logits[two_exits], pop_cost[two_exits]
    pop_conf, pop_pred = confidences(pop_logits, "max_prob"), pop_logits.argmax(-1)
    pop_full_ok = pop_pred[-1] == pop_labels
    violations, speedups = 0, []
    for t in range(trials):
        logits, labels, cost = synthetic(n, seed=1000 + t)
        cal = calibrate(
            logits[two_exits], labels, cost[two_exits], (1, 3), policy="max_prob", max_accuracy_loss=alpha, delta=delta
        )
        assert cal.guarantee_met and 0.0 <= cal.thresholds[0] <= 1.0 and cal.p_value <= delta
        e = exit_index(pop_conf, cal.thresholds)
        early_ok = pop_pred[e, np.arange(len(pop_labels))] == pop_labels
        risk = float((~early_ok & pop_full_ok).mean())
        violations += risk > alpha
        assert pop_full_ok.mean() - early_ok.mean() <= risk + 1e-12  # risk bounds the accuracy lost
        speedups.append(pop_cost[-1].mean() / pop_cost[e, np.arange(len(pop_labels))].mean())
    assert violations <= binom.ppf(0.999, trials, delta), f"{violations} of {trials} draws past alpha"
    assert np.mean(speedups) > 1.1  # the guarantee is not bought by never exiting


def test_nothing_accepted_falls_back_to_no_exit():
    logits, labels, cost = synthetic(30, seed=0)  # too few samples to certify 0.1% risk
    cal = calibrate(logits, labels, cost, EXIT_LAYERS, policy="margin", max_accuracy_loss=0.001, delta=0.1)
    assert not cal.guarantee_met and cal.thresholds == (1.0, 1.0) and cal.path == "none"
    with pytest.raises(ValueError, match=r"max_accuracy_loss must be in \(0\.0, 1\.0\)"):
        calibrate(logits, labels, cost, EXIT_LAYERS, policy="margin", max_accuracy_loss=1.5, delta=0.1)
