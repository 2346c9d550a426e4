"""Complexity router: features, estimator ONNX parity, routing simulation and calibration, CLI smoke test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptive_core.complexity_features import (
    FEATURE_NAMES,
    HANDCRAFTED_NAMES,
    NUM_FEATURES,
    NUM_HANDCRAFTED,
    extract_features,
)
from adaptive_export.cli import main
from adaptive_export.complexity import (
    EstimatorTraining,
    estimator_metrics,
    export_estimator,
    predict_proba,
    train_estimator,
)
from adaptive_export.routing import (
    Outcome,
    RoutingConfig,
    calibrate_router,
    cascade_outcome,
    gap_recovery,
    needed_size,
    policy_report,
    simulate,
    start_sizes,
)

COL = {n: i for i, n in enumerate(HANDCRAFTED_NAMES)}


def test_feature_layout_and_shape():
    assert len(FEATURE_NAMES) == NUM_FEATURES == NUM_HANDCRAFTED + 512
    x = extract_features(["hello world", "", "A b c"])
    assert x.shape == (3, NUM_FEATURES) and x.dtype == np.float32
    assert np.all(x[1] == 0)  # empty text: all zeros, no NaN
    norms = np.linalg.norm(x[:, NUM_HANDCRAFTED:], axis=1)
    assert np.allclose(norms[[0, 2]], 1.0, atol=1e-6)


def test_feature_detection():
    x = extract_features(
        [
            "def f(x): return {x; y}",
            "compute 3 + 4 = 7",
            "the integral ∫ of x",
            "What is it and why, how and when?",
            "plain words only here",
            "ABC 123",
        ]
    )
    assert x[0, COL["has_code"]] == 1 and x[4, COL["has_code"]] == 0
    assert x[1, COL["has_math"]] == 1 and x[2, COL["has_math"]] == 1 and x[4, COL["has_math"]] == 0
    assert x[3, COL["question_words"]] == 4 and x[4, COL["question_words"]] == 0
    assert x[5, COL["digit_ratio"]] == pytest.approx(3 / 7) and x[5, COL["upper_ratio"]] == pytest.approx(3 / 7)
    assert x[4, COL["type_token"]] == 1.0
    assert extract_features(["a a a a"])[0, COL["type_token"]] == pytest.approx(0.25)
    assert x[4, COL["log_words"]] == pytest.approx(np.log1p(4))


def test_features_deterministic_and_batch_independent():
    texts = ["Stocks fell 3% on Monday", "Arsenal won the cup", "", b"bytes are fine".decode()]
    a = extract_features(texts)
    b = np.concatenate([extract_features([t]) for t in texts])
    assert np.array_equal(a, b) and np.array_equal(a, extract_features(texts))


def test_estimator_onnx_parity(tmp_path):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(["alpha", "beta", "gamma", "x", "=", "1+2"], rng.integers(1, 30))) for _ in range(200)]
    x = extract_features(texts)
    y = (x[:, 0] > np.median(x[:, 0])).astype(int) + (x[:, 3] > 0)  # 3 classes from length and "code"
    model = train_estimator(x, y, 3, EstimatorTraining(epochs=3))
    diff = export_estimator(model, tmp_path / "est.onnx", x)
    assert diff <= 1e-5
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "est.onnx"), providers=["CPUExecutionProvider"])
    names_in, names_out = [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()]
    assert names_in == ["features"] and names_out == ["size_logits"]
    assert sess.run(None, {"features": x[:5]})[0].shape == (5, 3)
    m = estimator_metrics(predict_proba(model, x), y, ["s", "m", "l"])
    assert np.asarray(m["confusion_matrix"]).sum() == len(y) and 0 <= m["accuracy"] <= 1


def _outcomes(ok, conf, cost):
    return [Outcome(np.asarray(o, bool), np.asarray(c, float), np.asarray(k, float)) for o, c, k in zip(ok, conf, cost)]


def test_cascade_outcome_and_needed_size():
    logits = np.zeros((2, 3, 2))
    logits[0, :, 0] = [5, 0.1, -5]  # exit 1: confident right, unsure, confident wrong (label 0)
    logits[1, :, 0] = [5, 5, 5]
    cost = np.array([[1.0, 1, 1], [3, 3, 3]])
    o = cascade_outcome(logits, np.zeros(3, int), [0.9], "max_prob", cost)
    assert o.ok.tolist() == [True, True, False] and o.cost.tolist() == [1, 3, 1]
    full = cascade_outcome(logits, np.zeros(3, int), [0.9], "max_prob", cost, early_exit=False)
    assert full.ok.all() and full.cost.tolist() == [3, 3, 3]
    outs = _outcomes([[1, 0, 0], [0, 1, 0], [1, 1, 0]], [[1] * 3] * 3, [[1] * 3] * 3)
    assert needed_size(outs).tolist() == [0, 1, 2]


def test_start_sizes():
    p = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    assert start_sizes(p, 0.5).tolist() == [0, 1, 2]
    assert start_sizes(p, 0.0).tolist() == [0, 0, 0]
    assert start_sizes(p, 1.0).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match=r"between 0\.0 and 1\.0"):
        start_sizes(p, 1.5)


def test_escalation_when_last_exit_unsure():
    # Text 0: small is confident -> answers. Text 1: small unsure -> medium (also unsure) -> large. Costs add.
    outs = _outcomes(
        ok=[[1, 0], [1, 0], [1, 1]], conf=[[0.99, 0.3], [0.9, 0.4], [0.9, 0.9]], cost=[[1, 1], [3, 3], [10, 10]]
    )
    r = simulate(outs, np.zeros(2, int), [0.8, 0.8])
    assert r["final"].tolist() == [0, 2] and r["cost"].tolist() == [1, 14] and r["ok"].tolist() == [True, True]
    assert r["ran"][:, 1].tolist() == [True, True, True]
    r = simulate(outs, np.zeros(2, int), [0.0, 0.0])  # never escalate
    assert r["final"].tolist() == [0, 0] and r["ok"].tolist() == [True, False]
    r = simulate(outs, np.array([2, 1]), [0.8, 0.8])  # the largest size never escalates
    assert r["final"].tolist() == [2, 2] and r["cost"].tolist() == [10, 13]


def test_calibration_respects_knob():
    rng = np.random.default_rng(1)
    n = 2000
    hard = rng.random(n) < 0.3
    ok = [~hard | (rng.random(n) < 0.3), ~hard | (rng.random(n) < 0.6), np.ones(n, bool) & (rng.random(n) < 0.98)]
    conf = [np.where(o, 0.95, 0.5) + rng.normal(0, 0.05, n) for o in ok]
    outs = _outcomes(ok, conf, [np.full(n, 1.0), np.full(n, 4.0), np.full(n, 10.0)])
    score = np.clip(hard + rng.normal(0, 0.3, n), 0, 1)  # a noisy estimator
    probs = np.stack([1 - score, score / 2, score / 2], 1)
    target = float(outs[-1].ok.mean()) - 0.005
    cal = calibrate_router(outs, probs, target, RoutingConfig())
    assert cal["feasible"]
    r = simulate(outs, start_sizes(probs, cal["q"]), cal["escalate"])
    assert r["ok"].mean() >= target and r["cost"].mean() < 10.0
    assert r["cost"].mean() == pytest.approx(cal["mean_flops"])
    rep = policy_report({"early": outs, "full": outs}, probs, ["s", "m", "l"], cal["q"], cal["escalate"])
    assert rep["policies"]["always l (full depth)"]["relative_cost"] == pytest.approx(1.0)
    g = gap_recovery(outs, probs, RoutingConfig().q_grid)
    assert g["gap"] > 0 and 0 <= g["large_share_for_50pct"] <= g["large_share_for_80pct"] <= 1 and g["apgr"] > 0


def test_route_cli_smoke(tiny_export, capsys):
    assert main(["route", "--export", str(tiny_export)]) == 0
    router = json.loads((tiny_export / "complexity" / "router.json").read_text())
    assert router["sizes"] == ["tiny"] and router["estimator"] is None and router["num_features"] == NUM_FEATURES
    assert router["escalate_thresholds"] == {} and router["max_accuracy_loss"] == 0.005
    assert "router + early exit" in router["test"]["policies"]
    assert (tiny_export / "complexity" / "route_report.json").is_file()
    assert "size routing on test" in capsys.readouterr().out
