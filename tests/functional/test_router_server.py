"""The router on a real server, with the tiny model: routing by complexity, escalation, the complexity output,
the outcome log with audits, and a recalibration that the running server picks up without a restart."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_server
from onnx import TensorProto, helper

from adaptive_client.client import AdaptiveClient
from adaptive_core import names
from adaptive_core.complexity_features import HANDCRAFTED_NAMES, NUM_FEATURES
from adaptive_core.config import EarlyExitConfig
from adaptive_core.lanes import LaneOptions
from adaptive_core.router_plan import RouterPlan, RouteTarget
from adaptive_ops.recalibrate import main as recalibrate_main
from adaptive_ops.repository import (
    OUTPUT_TYPES,
    STANDARD_ROUTER,
    RepositoryOptions,
    _tensor,
    build_repository,
    ensemble_config,
    load_plan,
    router_configs,
)
from adaptive_ops.server import TritonServer
from adaptive_ops.watchdog import stub_models
from adaptive_serving.outcomes import read_outcomes

pytestmark = pytest.mark.server

SHORT = ["Shares fell", "Rain stopped play", "New chip"]
LONG = [
    "The striker scored twice as the champions won the cup final in front of a record crowd on Sunday",
    "Ministers defended the budget in a heated Commons debate that lasted well into the night again",
]


def _length_estimator(path: Path) -> None:
    """A linear 'estimator' that routes by length: texts over 8 words need target 1 (a stand-in for the trained
    one, so the test knows the right decision)."""
    w = np.zeros((NUM_FEATURES, 2), np.float32)
    w[HANDCRAFTED_NAMES.index("log_words"), 1] = 20.0
    b = np.array([0.0, -20.0 * np.log1p(8)], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["features", "W", "B"], ["size_logits"])],
        "length_router",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", NUM_FEATURES])],
        [helper.make_tensor_value_info("size_logits", TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor("B", TensorProto.FLOAT, [2], b),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def build_router_repo(
    tiny_export: Path,
    tmp_path: Path,
    *,
    second: str = "full",
    escalate: float = 0.0,
    gate_instances: int = RepositoryOptions.gate_instances,
    first_exit_only: bool = False,
    solo_express: bool = True,
    bls_handover: bool = False,
) -> Path:
    """Tiny repository plus a router over two targets: the tiny cascade, then `tiny_full` (a text -> logits model,
    `second="full"`) or the tiny cascade again (`second="cascade"`); texts below `escalate` go on to the second.
    `first_exit_only`: the routed cascades answer every text at stage 1."""
    repo = tmp_path / "repo"
    options = RepositoryOptions(
        entry_size="tiny",
        audit_rate=1.0,
        outcomes_file=str(tmp_path / "outcomes.jsonl"),
        gate_instances=gate_instances,
        lanes=LaneOptions(solo_express=solo_express, bls_handover=bls_handover),
    )
    build_repository(tiny_export, repo, options)
    cfg = EarlyExitConfig(**json.loads((tiny_export / "tiny" / "thresholds.json").read_text())["config"])
    cascade = load_plan(tiny_export, cfg)
    if first_exit_only:
        cascade = dataclasses.replace(cascade, thresholds=(0.0,) * len(cascade.thresholds))
    then = (
        RouteTarget("full", "logits_model", 1.0, model_name="tiny_full")
        if second == "full"
        else RouteTarget("tiny_again", "cascade", 1.0, cascade=cascade)
    )
    plan = RouterPlan(
        targets=(RouteTarget("tiny", "cascade", 0.5, cascade=cascade), then),
        route_threshold=0.5,
        escalate_thresholds=(escalate, 0.0),
        audit_rate=1.0,
    )
    warm = repo / "cascade_tiny" / "warmup"  # the warm-up request's files, the same for every gate model
    width = (warm / "ids").stat().st_size // 8  # int64 tokens of one text
    for name, config in router_configs(options, "tiny_full_encoder", "tokens", warm_width=width).items():
        (repo / name / "1").mkdir(parents=True)
        shutil.copytree(warm, repo / name / "warmup")
        (repo / name / "config.pbtxt").write_text(
            config.replace(
                'key: "sep_id"', 'key: "reload_interval_s" value: { string_value: "0.5" } }\nparameters { key: "sep_id"'
            )
        )
        shutil.copy2(Path(__file__).parents[2] / "model_repository/models/router/model.py", repo / name / "1")
    version = repo / "router" / "1"
    _length_estimator(version / plan.estimator_file)
    plan.write(version / "plan.json")
    outputs = list(names.ROUTER_OUTPUTS)
    (repo / "adaptive" / "config.pbtxt").write_text(
        ensemble_config(
            "adaptive",
            [
                ("tokenizer_tiny", {names.TEXT: names.TEXT}, {names.INPUT_IDS: "ids", names.ATTENTION_MASK: "mask"}),
                (
                    "router",
                    {names.TEXT: names.TEXT, names.INPUT_IDS: "ids", names.ATTENTION_MASK: "mask"},
                    {n: n for n in outputs},
                ),
            ],
            [_tensor(names.TEXT, "TYPE_STRING", [1])],
            [_tensor(n, OUTPUT_TYPES[n], [1]) for n in outputs],
        )
    )
    return repo


@pytest.fixture
def router_repo(tiny_export: Path, tmp_path: Path) -> Path:
    return build_router_repo(tiny_export, tmp_path)


def _classify(server: TritonServer, texts: list[str]) -> dict[str, np.ndarray]:
    with AdaptiveClient(server.grpc_url) as client:
        return client.infer_raw(texts, [names.MODEL_SIZE, names.ESCALATIONS, names.COMPLEXITY, names.EXIT_STAGE])


def test_router_routes_escalates_logs_and_reloads(router_repo: Path, tmp_path: Path) -> None:
    with make_server(router_repo, tmp_path) as server:
        out = _classify(server, SHORT + LONG)
        assert out[names.MODEL_SIZE].ravel().tolist() == [b"tiny"] * 3 + [b"full"] * 2
        complexity = out[names.COMPLEXITY].ravel()
        assert (complexity[:3] < 0.5).all() and (complexity[3:] > 0.5).all()
        assert out[names.ESCALATIONS].ravel().tolist() == [0] * 5

        # Escalation: the tiny target's answers now need confidence 1.0, so every short text goes on.
        plan_path = router_repo / "router" / "1" / "plan.json"
        plan = RouterPlan.read(plan_path)
        dataclasses.replace(plan, escalate_thresholds=(1.0, 0.0)).write(plan_path)
        time.sleep(1.5)  # the router re-reads its plan within its reload interval
        out = _classify(server, SHORT)
        assert out[names.MODEL_SIZE].ravel().tolist() == [b"full"] * 3
        assert out[names.ESCALATIONS].ravel().tolist() == [1] * 3
        plan.write(plan_path)
        time.sleep(1.5)

        # Outcomes are logged with audit labels; a recalibration with a generous knob routes cheaper (every
        # text to the tiny cascade), and the running server uses the new plan.
        for _ in range(10):
            _classify(server, SHORT + LONG)
        time.sleep(0.5)
        records = read_outcomes(tmp_path / "outcomes.jsonl")
        assert len(records) >= 50 and all(r["audit_label"] is not None for r in records)
        assert (
            recalibrate_main(
                [
                    "--outcomes",
                    str(tmp_path / "outcomes.jsonl"),
                    "--plan",
                    str(plan_path),
                    "--max-disagreement",
                    "1.0",
                    "--step",
                    "1.0",
                ]
            )
            == 0
        )
        assert RouterPlan.read(plan_path).route_threshold == 0.0
        time.sleep(1.5)
        out = _classify(server, LONG)
        assert out[names.MODEL_SIZE].ravel().tolist() == [b"tiny"] * 2


def test_escalation_that_would_overrun_the_deadline_is_cut(tiny_export: Path, tmp_path: Path) -> None:
    # Every text leaves the tiny cascade at stage 1 (so the cascade never cuts it) and escalates (threshold 1.0) to
    # the tiny cascade again; stage 1 takes >= 40 ms, so after one cascade a critical request (50 ms) has no room
    # for the second target's stage 1.
    repo = build_router_repo(
        tiny_export, tmp_path, second="cascade", escalate=1.0, gate_instances=1, first_exit_only=True
    )
    for stage in ("tiny_stage1", "tiny_stage1_express"):
        config = repo / stage / "config.pbtxt"
        config.write_text(config.read_text() + '\nparameters { key: "inject_delay_ms" value: { string_value: "40" } }')
    with make_server(repo, tmp_path) as server, AdaptiveClient(server.grpc_url) as client:
        wanted = [names.MODEL_SIZE, names.ESCALATIONS, names.DEADLINE_CUT]
        warm = client.infer_raw(SHORT[:1], wanted)  # no deadline: escalates, and teaches the router stage 1's latency
        assert warm[names.ESCALATIONS].ravel().tolist() == [1] and not warm[names.DEADLINE_CUT].any()
        out = client.infer_raw(SHORT[:1], wanted, latency_class="critical")
        assert out[names.MODEL_SIZE].ravel().tolist() == [b"tiny"]  # the first size's answer, not escalated
        assert out[names.ESCALATIONS].ravel().tolist() == [0] and out[names.DEADLINE_CUT].all()


@pytest.mark.parametrize("handover", ["socket", "bls"])
def test_standard_lane_requests_are_routed_by_router_standard_under_sched_idle(
    tiny_export: Path, tmp_path: Path, handover: str
) -> None:
    # Without the solo express lane, so that a request alone in the server keeps its class's lane.
    repo = build_router_repo(tiny_export, tmp_path, solo_express=False, bls_handover=handover == "bls")
    counted = ("router", STANDARD_ROUTER, "tiny_stage1", "tiny_stage1_express")
    with make_server(repo, tmp_path) as server, AdaptiveClient(server.grpc_url) as client:
        before = {m: _counts(server, m) for m in counted}  # the warm-up requests count too
        answers = {
            klass: client.classify(SHORT + LONG, latency_class=klass) for klass in ("batch", "sensitive", "critical")
        }
        stats = {m: _counts(server, m) - before[m] for m in counted}
        stubs = stub_models(server.pid)
        # Per thread: Linux keeps the scheduling class (and niceness) of each.
        policies = {pid: _thread_policies(pid) for pid in stubs}
        wakeups = _wakeups(list(stubs), 1.0)  # the server is idle now
    # Same answers in both lanes: router_standard runs the router's plan (routing by length: short texts on tiny).
    for klass, results in answers.items():
        assert [r.model_size for r in results] == ["tiny"] * 3 + ["full"] * 2, klass
        assert [r.label for r in results] == [r.label for r in answers["critical"]], klass
    # Every request passes the router's gate; the batch and sensitive ones then run in router_standard, whose stage
    # calls take the standard lane, and the critical one runs in the router, through the express lane. Handed over a
    # socket, router_standard never sees them as Triton requests: the router's only other way to it is BLS, which
    # Triton counts, and it says so in the log when it falls back to it.
    log = server.log_path.read_text()
    assert stats["router"] == 3 and stats[STANDARD_ROUTER] == (2 if handover == "bls" else 0)
    assert stats["tiny_stage1"] == 2 and stats["tiny_stage1_express"] == 1
    assert ("hand-over over BLS instead" in log) is False
    listeners = sorted(int(i) for i in re.findall(rf"{STANDARD_ROUTER}: hand-over listener (\d+)", log))
    assert listeners == list(range(RepositoryOptions.gate_instances)), log[-3000:]
    # The router's processes keep the normal class. router_standard's run every thread under SCHED_IDLE but the
    # stub's health thread (`model_args.stub_health_thread`), told here by its wake-ups every 300 ms while idle.
    assert {"router", STANDARD_ROUTER} <= set(stubs.values())
    for pid, model in stubs.items():
        normal = {tid for tid, policy in policies[pid].items() if policy == os.SCHED_OTHER}
        if model == "router":
            assert normal == set(policies[pid]), pid
        elif model == STANDARD_ROUTER:
            health = max(wakeups[pid], key=wakeups[pid].get)
            assert wakeups[pid][health] >= 2 and normal == {health}, (pid, wakeups[pid], normal)
            assert set(policies[pid].values()) == {os.SCHED_OTHER, os.SCHED_IDLE}, pid


@pytest.mark.parametrize("attempt", [1, 2])
def test_server_loads_while_busy_loops_hold_the_cores(router_repo: Path, tmp_path: Path, attempt: int) -> None:
    # From the moment a stub puts threads under SCHED_IDLE, 4 busy loops per core at normal priority for 5 s.
    # With the stubs' health threads under SCHED_IDLE too, Triton 2.51 gave up on a starved stub and waited for it
    # forever: 5 of 8 such starts never became ready (0 of 11 with the health thread left alone).
    server = make_server(router_repo, tmp_path)
    loops: list[subprocess.Popen] = []
    done = threading.Event()

    def hold_the_cores() -> None:
        while not _idle_threads(server):
            if done.wait(0.01):
                return
        loops.extend(
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4 * (os.cpu_count() or 1))
        )
        done.wait(5.0)
        for loop in loops:
            loop.kill()

    holder = threading.Thread(target=hold_the_cores, daemon=True)
    holder.start()
    try:
        server.start(ready_timeout_s=60)
        assert loops, "no stub went under SCHED_IDLE before the server was ready, so the cores were never held"
        with AdaptiveClient(server.grpc_url) as client:
            assert [r.model_size for r in client.classify(SHORT + LONG)] == ["tiny"] * 3 + ["full"] * 2
    finally:
        done.set()
        holder.join()
        for loop in loops:
            loop.kill()
            loop.wait()
        server.stop()


def _idle_threads(server: TritonServer) -> bool:
    """Whether any stub of `server` has a thread under SCHED_IDLE yet."""
    if not server.is_running():
        return False
    for pid in stub_models(server.pid):
        try:
            if os.SCHED_IDLE in _thread_policies(pid).values():
                return True
        except (FileNotFoundError, ProcessLookupError):  # a stub or thread that ended meanwhile
            continue
    return False


def _thread_policies(pid: int) -> dict[int, int]:
    """Scheduling policy of each thread of `pid` (Linux keeps it per thread)."""
    return {int(t): os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def _wakeups(pids: list[int], seconds: float) -> dict[int, dict[int, int]]:
    """Per process, per thread: how often it went to sleep of its own accord within `seconds`."""

    def switches() -> dict[int, dict[int, int]]:
        return {
            pid: {
                int(t): int(
                    Path(f"/proc/{pid}/task/{t}/status").read_text().split("voluntary_ctxt_switches:")[1].split()[0]
                )
                for t in os.listdir(f"/proc/{pid}/task")
            }
            for pid in pids
        }

    before = switches()
    time.sleep(seconds)
    return {pid: {tid: n - before[pid].get(tid, 0) for tid, n in counts.items()} for pid, counts in switches().items()}


def _counts(server: TritonServer, model: str) -> int:
    """Requests `model` has answered (Triton's statistics; `inference_count` would count samples)."""
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(model, as_json=True)
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))
