"""Benchmark tooling without a server: statistics deltas, hop cost, class mix, per-class accounting, verdicts,
the capacity stability rule, CPU deltas."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_bench import classes_bench, exit_bench, stats
from adaptive_bench.capacity import CapacityConfig, is_stable
from adaptive_bench.cli import main
from adaptive_bench.cpu import CpuSnapshot, cpu_delta
from adaptive_bench.load import percentiles_ms
from adaptive_bench.requests import Outcome, RequestKwargs, classify_error, status_name
from adaptive_core.config import LATENCY_CLASSES


def _raw(models: dict[str, tuple[int, int, int, int]]) -> dict[str, object]:
    """Statistics JSON as Triton 2.51 returns it: name -> (success count, executions, queue ns, infer ns)."""
    return {
        "model_stats": [
            {
                "name": n,
                "version": "1",
                "execution_count": str(e),
                "inference_stats": {
                    "success": {"count": str(c), "ns": "0"},
                    "queue": {"count": str(c), "ns": str(q)},
                    "compute_input": {"count": str(c), "ns": "0"},
                    "compute_infer": {"count": str(c), "ns": str(i)},
                    "compute_output": {},
                },
            }
            for n, (c, e, q, i) in models.items()
        ]
    }


def test_hop_costs_subtract_stage_time_from_cascade_compute() -> None:
    before = stats.parse_statistics(_raw({"cascade_tiny": (10, 10, 0, 0), "tiny_stage1": (10, 10, 0, 0)}))
    after = stats.parse_statistics(
        _raw(
            {
                "cascade_tiny": (20, 15, 5_000_000, 100_000_000),  # 10 requests: 10 ms compute each
                "tiny_stage1": (20, 15, 1_000_000, 29_000_000),  # 10 calls, 3 ms each
                "tiny_stage2": (5, 5, 0, 20_000_000),  # 5 calls, 4 ms each
            }
        )
    )
    window = stats.delta(before, after)
    h = stats.hop_costs(window, "cascade_tiny", stats.cascade_stages("cascade_tiny", list(after)))
    assert h["stages"] == ["tiny_stage1", "tiny_stage2"]
    assert h["cascade_requests"] == 10
    assert h["hops_per_request"] == pytest.approx(1.5)
    assert h["stages_ms_per_request"] == pytest.approx(5.0)  # (30 + 20 ms) / 10
    assert h["overhead_ms_per_request"] == pytest.approx(5.0)  # 10 - 5
    assert h["overhead_ms_per_hop"] == pytest.approx(5.0 / 1.5)


def test_hop_costs_of_an_idle_cascade_are_none() -> None:
    h = stats.hop_costs({}, "cascade_tiny", ["tiny_stage1"])
    assert h["overhead_ms_per_request"] is None and h["cascade_requests"] == 0


def test_cascade_stages_are_ordered_numerically() -> None:
    models = ["large_stage10", "large_stage2_express", "large_stage2", "large_stage1", "large_full", "small_stage1"]
    assert stats.cascade_stages("cascade_large", models) == [
        "large_stage1",
        "large_stage2",
        "large_stage2_express",
        "large_stage10",
    ]


def test_reference_is_large_full_else_the_largest() -> None:
    assert exit_bench.full_models(["large_full", "small_full", "adaptive", "medium_full"]) == [
        "small_full",
        "medium_full",
        "large_full",
    ]
    assert exit_bench.reference_model(["small_full", "large_full"]) == "large_full"
    assert exit_bench.reference_model(["tiny_full"]) == "tiny_full"
    assert exit_bench.reference_model([]) is None


def test_request_kwargs_send_timeout_only_when_nonzero() -> None:
    assert RequestKwargs.for_class(LATENCY_CLASSES["critical"]).as_dict() == {
        "priority": 1,
        "timeout": LATENCY_CLASSES["critical"].queue_timeout_us,
    }
    assert RequestKwargs.for_class(LATENCY_CLASSES["batch"]).as_dict() == {"priority": 3}


# What the server says when it sheds a request, each way it can (Triton 2.51's queue policy, the admission gate).
SHED_MESSAGES = {
    "in ensemble 'adaptive', Request timeout expired": "queue_timeout",
    "in ensemble 'adaptive', Exceeds maximum queue size": "queue_full",
    "in ensemble 'adaptive', cascade_tiny: request timeout expired at the admission gate (sensitive class)": (
        "queue_timeout"
    ),
    "in ensemble 'adaptive', cascade_tiny: admission queue full (1 batch requests waiting at the gate)": "queue_full",
}


def test_errors_are_typed() -> None:
    assert status_name("StatusCode.UNAVAILABLE") == "UNAVAILABLE"
    for message, reason in SHED_MESSAGES.items():
        assert classify_error("UNAVAILABLE", message) == reason, message
        assert Outcome(1.0, error_status="UNAVAILABLE", error_reason=reason, error_message=message).rejected
    assert classify_error("INTERNAL", "stage failed: boom") == "other"
    assert not Outcome(1.0, error_status="INTERNAL", error_reason="other").rejected
    assert not Outcome(1.0, labels=np.zeros(1)).rejected


def test_client_types_every_shed_message_as_a_rejection() -> None:
    """The typed client never retries a shed request (RejectedError), and still retries a server it cannot reach."""
    from tritonclient.utils import InferenceServerException

    from adaptive_client.client import RejectedError, ServerUnavailableError, _translate

    for message in SHED_MESSAGES:
        assert isinstance(_translate(InferenceServerException(message, "StatusCode.UNAVAILABLE")), RejectedError)
    for message in ("failed to connect to all addresses", "Request for unknown model: 'adaptive' is not ready"):
        error = _translate(InferenceServerException(message, "StatusCode.UNAVAILABLE"))
        assert isinstance(error, ServerUnavailableError), message


def test_class_picker_follows_the_mix() -> None:
    pick = classes_bench.class_picker()
    rng = np.random.default_rng(0)
    drawn = [pick(rng)[0] for _ in range(5000)]
    for name, share in classes_bench.CLASS_MIX.items():
        assert abs(drawn.count(name) / len(drawn) - share) < 0.03, name
    with pytest.raises(ValueError, match="sum to 1"):
        classes_bench.class_picker({"critical": 0.5})
    with pytest.raises(ValueError, match="unknown latency classes"):
        classes_bench.class_picker({"urgent": 1.0})


def test_per_class_accounting_and_verdicts() -> None:
    sent = ["critical", "sensitive", "batch", "batch", "batch"]
    ok = np.zeros(1, dtype=bool)
    outcomes = {
        0: Outcome(5.0, labels=np.zeros(1), deadline_cut=ok),
        1: Outcome(
            3.0, error_status="UNAVAILABLE", error_reason="queue_timeout", error_message="Request timeout expired"
        ),
        2: Outcome(900.0, labels=np.zeros(1), deadline_cut=ok),
        3: Outcome(800.0, labels=np.zeros(1), deadline_cut=ok),
    }  # request 4 never answered: lost
    unloaded = {"critical": 4.0, "sensitive": 4.0, "batch": 4.0}
    classes = classes_bench.per_class_summary(sent, outcomes, [4], unloaded)
    assert classes["sensitive"]["rejected_by_status"] == {"UNAVAILABLE": 1}
    assert classes["batch"]["lost"] == 1
    assert classes["batch"]["sent"] == 3 and classes["batch"]["answered"] == 2 and classes["batch"]["late"] == 2
    v = classes_bench.verdicts(classes, unloaded)
    assert v["critical_p99_within_factor"] and v["no_critical_rejections"] and v["batch_takes_shedding"]
    assert not v["none_lost"] and not v["sent_equals_answered_plus_rejected"]


def test_percentiles_of_nothing_are_none() -> None:
    assert percentiles_ms([])["p99_ms"] is None
    assert percentiles_ms([1.0, 2.0, 3.0])["p50_ms"] == pytest.approx(2.0)


def test_capacity_is_stable_only_when_the_last_windows_agree() -> None:
    assert not is_stable([100.0, 100.0], 3, 0.1)  # too few windows yet
    assert is_stable([40.0, 100.0, 105.0, 95.0], 3, 0.1)  # a slow ramp-up window before them does not count
    assert not is_stable([100.0, 100.0, 130.0], 3, 0.1)  # 130 is 18% above the mean of 110
    assert not is_stable([0.0, 0.0, 0.0], 3, 0.1)  # nothing answered is not a capacity
    with pytest.raises(ValueError, match="stable_windows"):
        CapacityConfig(stable_windows=4, max_windows=3)


def test_cpu_delta_per_request_share_and_class() -> None:
    before = CpuSnapshot({"tritonserver": 10.0, "small_stage1": 1.0, "load generator": 2.0}, frozenset())
    after = CpuSnapshot(
        {"tritonserver": 13.0, "small_stage1": 2.5, "load generator": 3.0, "router": 0.5}, frozenset({"small_stage1"})
    )
    out = cpu_delta(before, after, requests=1000)
    assert list(out) == ["tritonserver", "small_stage1", "load generator", "router"]  # most CPU first
    assert out["tritonserver"] == {
        "ms_per_request": pytest.approx(3.0),
        "share": pytest.approx(0.5),
        "cpu_class": "normal",
    }
    assert out["small_stage1"]["cpu_class"] == "idle"
    assert out["router"]["ms_per_request"] == pytest.approx(0.5)  # a group first seen after the start counts whole


def test_cli_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "exit" in capsys.readouterr().out
