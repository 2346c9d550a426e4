"""Class order at the admission gate under contention, with more than one slot: when several requests wait and a slot
frees, the most urgent waiting class goes first, whatever arrived before it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import make_server, scrape_settled, set_params, set_thresholds

from adaptive_core import names
from adaptive_core.config import latency_class
from adaptive_core.metrics import metric_sum
from adaptive_ops.repository import RepositoryOptions, build_repository

pytestmark = pytest.mark.server

STAGE1_MS = 150
BATCH_REQUESTS = 20


def _send(
    client: grpcclient.InferenceServerClient, tag: str, klass: str, done: list[str], lock: threading.Lock
) -> None:
    data = np.array([[b"Shares in the bank fell"]], dtype=np.object_)  # (1, 1)
    inp = grpcclient.InferInput(names.TEXT, list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)

    def callback(result: object, error: object) -> None:
        with lock:
            done.append(tag if error is None else f"{tag}:error:{error}")

    cls = latency_class(klass)
    client.async_infer("adaptive", [inp], callback, priority=cls.priority, timeout=cls.queue_timeout_us)


def _send_and_wait(client: grpcclient.InferenceServerClient, count: int) -> None:
    done: list[str] = []
    lock = threading.Lock()
    for i in range(count):
        _send(client, f"warm{i}", "batch", done, lock)
    deadline = time.monotonic() + 30
    while len(done) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(done) == [f"warm{i}" for i in range(count)], done


def test_with_two_slots_a_freed_slot_goes_to_the_waiting_sensitive_request_not_the_batch_backlog(
    tiny_export: Path, tmp_path: Path
) -> None:
    """One gate, two slots for every class (caps 2/2/2, no room kept), every text answered by a stage 1 that
    takes 150 ms (stage 1 runs whatever the deadline, so each request holds its slot that long). Two sensitive
    requests hold both slots; 20 batch requests arrive and wait (every request in flight counts against the batch
    cap), then a third sensitive request waits too (two sensitive ones are in flight). When a sensitive request
    finishes, its slot must go to the waiting sensitive one, ahead of the 20 batch requests that came first: a
    first-come gate would admit batch work into it and hold the sensitive request behind the backlog (10 rounds of
    150 ms) until its 200 ms timeout expired."""
    repo = tmp_path / "repo"
    options = RepositoryOptions(entry_size="tiny", gate_instances=1, gate_slots=2, gate_reserve=0)
    build_repository(tiny_export, repo, options)
    set_thresholds(repo, [0.0])  # every text leaves at stage 1
    for lane in ("tiny_stage1", "tiny_stage1_express"):
        set_params(repo, lane, inject_delay_ms=STAGE1_MS)
    with make_server(repo, tmp_path) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        done: list[str] = []
        lock = threading.Lock()
        # Warm up first (a fresh server's first stage calls are slow): a request alone, then two together.
        for batch in (1, 2):
            _send_and_wait(client, batch)
        for i in range(2):
            _send(client, f"sensitive{i}", "sensitive", done, lock)
        for i in range(BATCH_REQUESTS):
            _send(client, f"batch{i}", "batch", done, lock)
        time.sleep(0.07)  # the two sensitive requests are in stage 1, the batch ones wait at the gate
        _send(client, "sensitive_late", "sensitive", done, lock)
        deadline = time.monotonic() + 60
        while len(done) < BATCH_REQUESTS + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        samples = scrape_settled(server)
    assert len(done) == BATCH_REQUESTS + 3 and not [d for d in done if ":error:" in d], done
    assert len([d for d in done[done.index("sensitive_late") :] if d.startswith("batch")]) >= BATCH_REQUESTS // 2, done
    labels = {"model": "cascade_tiny", "class": "sensitive"}
    waited_ms = metric_sum(samples, "adaptive_gate_wait_ms_sum", **labels)  # the late one's wait: the others had none
    assert metric_sum(samples, "adaptive_gate_wait_ms_count", **labels) == 3 and 10 < waited_ms < 200, waited_ms
    assert metric_sum(samples, "adaptive_gate_rejected_total", model="cascade_tiny") == 0
