"""Routing decisions, plan round trips and recalibration, without a server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from adaptive_core.cascade import DEADLINE_MARGIN, CascadePlan, StageLatency
from adaptive_core.router_plan import RouterPlan, RouteTarget
from adaptive_ops.recalibrate import MIN_AUDITED, exit_threshold, recalibrate
from adaptive_serving.outcomes import OutcomeRecorder, read_outcomes


def _cascade(size: str, thresholds: tuple[float, ...]) -> CascadePlan:
    stages = tuple(f"{size}_stage{i}" for i in range(1, len(thresholds) + 2))
    return CascadePlan(
        size=size,
        stage_models=stages,
        exit_layers=tuple(range(2, 2 * len(stages) + 1, 2)),
        thresholds=thresholds,
        confidence="max_prob",
        max_seq_len=64,
    )


def _plan(route: float = 0.8) -> RouterPlan:
    return RouterPlan(
        targets=(
            RouteTarget("small", "cascade", 0.1, cascade=_cascade("small", (0.6,))),
            RouteTarget("medium", "cascade", 0.4, cascade=_cascade("medium", (0.8,))),
            RouteTarget("large", "logits_model", 1.0, model_name="large_full"),
        ),
        route_threshold=route,
        escalate_thresholds=(0.7, 0.8, 0.0),
        audit_rate=0.1,
    )


def test_start_target_is_the_cheapest_likely_enough() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0]])
    assert _plan(0.8).start_targets(probs).tolist() == [0, 1, 2, 2]
    assert _plan(0.4).start_targets(probs).tolist() == [0, 0, 2, 2]
    assert _plan(1.0).start_targets(probs).tolist() == [2, 2, 2, 2]
    np.testing.assert_allclose(RouterPlan.complexity(probs), [0.075, 0.3, 0.85, 1.0], atol=1e-6)


def test_plan_round_trip_and_validation(tmp_path: Path) -> None:
    plan = _plan()
    plan.write(tmp_path / "plan.json")
    assert RouterPlan.read(tmp_path / "plan.json") == plan
    with pytest.raises(ValueError, match="outside the allowed range"):
        dataclasses.replace(plan, route_threshold=1.5)
    with pytest.raises(ValueError, match="escalate thresholds"):
        dataclasses.replace(plan, escalate_thresholds=(0.5,))
    with pytest.raises(ValueError, match="kind"):
        RouteTarget("x", "llm", 1.0, model_name="m")


def test_stage_latency_judges_each_width_by_its_own_calls() -> None:
    latency = StageLatency(alpha=0.5, margin=0.0)
    latency.update("stage2", 16, 0.002)
    latency.update("stage2", 256, 0.020)
    assert latency.fits("stage2", 16, 0.040, 0.050)  # a short text's call fits the 10 ms left
    assert not latency.fits("stage2", 256, 0.040, 0.050)  # a long one's does not
    assert latency.fits("stage2", 64, 0.049, 0.050)  # a width not seen yet is assumed to fit
    assert latency.fits("stage2_express", 256, 0.049, 0.050)  # and so is a model not seen yet
    assert latency.fits("stage2", 256, 1.0, 0.0)  # no deadline
    latency.update("stage2", 256, 0.010)  # moving average: 0.015
    assert latency.fits("stage2", 256, 0.034, 0.050) and not latency.fits("stage2", 256, 0.036, 0.050)


def test_stage_latency_keeps_a_margin_for_calls_whose_time_spreads() -> None:
    steady, spread = StageLatency(alpha=0.5, beta=0.5, margin=2.0), StageLatency(alpha=0.5, beta=0.5, margin=2.0)
    for seconds in (0.010, 0.010, 0.010):
        steady.update("stage2", 64, seconds)
    for seconds in (0.010, 0.002, 0.018):  # calls that come and go
        spread.update("stage2", 64, seconds)
    assert steady.estimate("stage2", 64) == pytest.approx(0.010)  # no spread: the mean alone
    # mean 0.012; mean deviation 0.004, then 0.004 + 0.5 * (0.012 - 0.004) = 0.008: judged by 0.012 + 2 * 0.008
    assert spread.estimate("stage2", 64) == pytest.approx(0.028)
    assert steady.fits("stage2", 64, 0.035, 0.050) and not spread.fits("stage2", 64, 0.035, 0.050)
    assert StageLatency(margin=0.0).estimate("unseen", 16) == 0.0
    # A gate model reads its margin from its config, the default when the config has none.
    assert StageLatency.from_params({"deadline_margin": "0.0"}).margin == 0.0
    assert StageLatency.from_params({}).margin == DEADLINE_MARGIN


def test_exit_threshold_rises_to_meet_the_knob() -> None:
    conf = np.array([0.99, 0.98, 0.97, 0.9, 0.85, 0.8])
    wrong = np.array([0, 0, 0, 1, 0, 1], dtype=bool)
    assert exit_threshold(conf, wrong, 0.5, knob=0.0) == pytest.approx(0.9, abs=1e-6)  # only the top 3 stay
    assert exit_threshold(conf, np.zeros(6, bool), 0.5, knob=0.0) == 0.5  # nothing wrong: unchanged
    assert exit_threshold(conf, np.ones(6, bool), 0.5, knob=0.0) == 1.0  # all wrong: exit closed


def _records(n: int, wrong_share: float, rng: np.random.Generator) -> list[dict]:
    out = []
    for i in range(n):
        label = int(rng.integers(5))
        wrong = i < wrong_share * n
        out.append(
            {
                "target": 0,
                "exit_stage": 1,
                "confidence": float(rng.uniform(0.6, 1.0)),
                "label": label,
                "audit_label": (label + 1) % 5 if wrong else label,
            }
        )
    return out


def test_recalibration_moves_toward_the_knob() -> None:
    rng = np.random.default_rng(0)
    plan = _plan(0.5)
    worse, report = recalibrate(plan, _records(200, 0.2, rng), knob=0.01)
    assert worse.route_threshold > plan.route_threshold and "over the knob" in report["decision"]
    assert worse.targets[0].cascade.thresholds[0] > plan.targets[0].cascade.thresholds[0]
    cheaper, report = recalibrate(plan, _records(200, 0.0, rng), knob=0.01)
    assert cheaper.route_threshold < plan.route_threshold
    same, report = recalibrate(plan, _records(MIN_AUDITED - 1, 0.5, rng), knob=0.01)
    assert same == plan and "unchanged" in report["decision"]


def test_outcome_recorder_writes_lines(tmp_path: Path) -> None:
    recorder = OutcomeRecorder(tmp_path / "log" / "outcomes.jsonl", max_pending=1000)
    for i in range(50):
        recorder.record({"i": i})
    recorder.close()
    assert [r["i"] for r in read_outcomes(tmp_path / "log" / "outcomes.jsonl")] == list(range(50))
