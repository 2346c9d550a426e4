"""The generated repository on a real server, with the tiny model: per-sample exits, re-batching of
survivors, class priority, deadline cuts, stage failures and input errors."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import make_server, scrape_settled
from tritonclient.utils import InferenceServerException

from adaptive_bench.reliability.target import SAMPLE_TEXTS
from adaptive_core import names
from adaptive_core.confidence import max_prob
from adaptive_core.config import LATENCY_CLASSES, MAX_TEXT_BYTES, latency_class
from adaptive_core.metrics import metric_sum
from adaptive_ops.repository import RepositoryOptions, build_repository
from adaptive_ops.server import TritonServer
from adaptive_serving.inflight import board_path
from adaptive_serving.onnx_stage import OnnxStage
from adaptive_serving.tokenizer import TextTokenizer

pytestmark = pytest.mark.server

TEXTS = list(SAMPLE_TEXTS)


def _texts(batch: list[str]) -> np.ndarray:
    return np.array([[t.encode()] for t in batch], dtype=np.object_)


def _infer(url: str, texts: np.ndarray, model: str = "adaptive", **kwargs: object) -> grpcclient.InferResult:
    inp = grpcclient.InferInput(names.TEXT, list(texts.shape), "BYTES")
    inp.set_data_from_numpy(texts)
    return grpcclient.InferenceServerClient(url).infer(model, [inp], **kwargs)


def _set_params(repo: Path, model: str, **params: object) -> None:
    config = repo / model / "config.pbtxt"
    extra = "".join(f'\nparameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    config.write_text(config.read_text() + extra)


def _set_thresholds(repo: Path, thresholds: list[float]) -> None:
    plan = repo / "cascade_tiny" / "1" / "plan.json"
    raw = json.loads(plan.read_text())
    raw["thresholds"] = thresholds
    plan.write_text(json.dumps(raw))


@pytest.fixture(scope="module")
def local_outputs(tiny_export: Path) -> dict[str, np.ndarray]:
    """Stage logits computed directly with onnxruntime, to check the server's per-sample decisions."""
    tokenize = TextTokenizer(tiny_export / "tokenizer" / "tokenizer.json", max_len=32)
    ids, mask = tokenize(TEXTS)
    stage1 = OnnxStage(tiny_export / "tiny" / "stage1.onnx").run({names.INPUT_IDS: ids, names.ATTENTION_MASK: mask})
    stage2 = OnnxStage(tiny_export / "tiny" / "stage2.onnx").run(
        {names.HIDDEN_IN: stage1[names.HIDDEN], names.ATTENTION_MASK: mask}
    )
    return {"logits1": stage1[names.LOGITS], "logits2": stage2[names.LOGITS]}


def _split_threshold(conf: np.ndarray) -> float:
    """A threshold halfway inside the widest gap near the median, so rounding cannot flip a decision."""
    s = np.sort(conf)
    mid = len(s) // 2
    i = max(range(mid - 2, mid + 2), key=lambda k: s[k + 1] - s[k])
    return float((s[i] + s[i + 1]) / 2)


@pytest.fixture
def tiny_repo(tiny_export: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    build_repository(tiny_export, repo, RepositoryOptions(entry_size="tiny"))
    return repo


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[callable]:
    started: list[TritonServer] = []

    def start(repo: Path) -> TritonServer:
        server = make_server(repo, tmp_path).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_every_sample_leaves_at_its_first_confident_exit(tiny_repo: Path, serve, local_outputs) -> None:
    conf1 = max_prob(local_outputs["logits1"])
    threshold = _split_threshold(conf1)
    _set_thresholds(tiny_repo, [threshold])
    server = serve(tiny_repo)
    result = _infer(server.grpc_url, _texts(TEXTS), priority=1, timeout=5_000_000)
    early = conf1 >= threshold
    assert 0 < early.sum() < len(TEXTS)
    assert result.as_numpy(names.EXIT_STAGE).ravel().tolist() == np.where(early, 1, 2).tolist()
    assert result.as_numpy(names.EXIT_LAYER).ravel().tolist() == np.where(early, 2, 4).tolist()
    expected = np.where(early, local_outputs["logits1"].argmax(-1), local_outputs["logits2"].argmax(-1))
    assert result.as_numpy(names.LABEL).ravel().tolist() == expected.tolist()
    assert not result.as_numpy(names.DEADLINE_CUT).any()
    assert set(result.as_numpy(names.MODEL_SIZE).ravel()) == {b"tiny"}
    # The same answers over HTTP.
    inp = httpclient.InferInput(names.TEXT, [len(TEXTS), 1], "BYTES")
    inp.set_data_from_numpy(_texts(TEXTS))
    http_result = httpclient.InferenceServerClient(server.http_url).infer("adaptive", [inp], priority=2)
    assert http_result.as_numpy(names.EXIT_STAGE).ravel().tolist() == np.where(early, 1, 2).tolist()


def _stage_counts(url: str, model: str) -> tuple[int, int]:
    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(model, as_json=True)
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


def test_survivors_of_concurrent_requests_are_rebatched(tiny_export: Path, tiny_repo: Path, serve) -> None:
    # Standard lane only: the first request, alone for a moment, would take the express lane.
    build_repository(tiny_export, tiny_repo, RepositoryOptions(entry_size="tiny", solo_express=False))
    _set_thresholds(tiny_repo, [1.0])  # nobody leaves at stage 1: every sample reaches stage 2
    _set_params(tiny_repo, "tiny_stage2", inject_delay_ms=100)  # stage 2 busy: survivors queue up behind it
    server = serve(tiny_repo)
    before = _stage_counts(server.grpc_url, "tiny_stage2")
    threads = [threading.Thread(target=_infer, args=(server.grpc_url, _texts([t]))) for t in TEXTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    inferences, executions = (a - b for a, b in zip(_stage_counts(server.grpc_url, "tiny_stage2"), before))
    assert inferences == len(TEXTS)
    assert executions < inferences, "survivors of separate requests should share stage-2 executions"


def _send_async(
    client: grpcclient.InferenceServerClient,
    tag: str,
    klass: str,
    done: list[str],
    lock: threading.Lock,
    batch: int = 64,
) -> None:
    """Send `batch` texts in the given class; append `tag` (or `tag:error:...`) to `done` when answered."""
    inp = grpcclient.InferInput(names.TEXT, [batch, 1], "BYTES")
    inp.set_data_from_numpy(_texts((TEXTS * (batch // len(TEXTS) + 1))[:batch]))

    def callback(result, error) -> None:
        with lock:
            done.append(tag if error is None else f"{tag}:error:{error}")

    cls = latency_class(klass)
    client.async_infer("adaptive", [inp], callback, priority=cls.priority, timeout=cls.queue_timeout_us)


def _wait_for(done: list[str], count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(done) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _slowed_gate(
    tiny_export: Path,
    tiny_repo: Path,
    serve,
    *,
    stage2_delay_ms: int,
    slots: int = RepositoryOptions.gate_slots,
    reserve: int = RepositoryOptions.gate_reserve,
) -> TritonServer:
    """Serve the tiny repository with one gate whose batch class has `slots` slots (more urgent classes `reserve`
    more each; the repository's defaults unless given) and whose texts all reach the slowed standard stage 2.
    Requests alone in the server keep the standard lane, so the first one sent also meets the slow stage."""
    build_repository(
        tiny_export,
        tiny_repo,
        RepositoryOptions(
            entry_size="tiny", gate_instances=1, gate_slots=slots, gate_reserve=reserve, solo_express=False
        ),
    )
    _set_thresholds(tiny_repo, [1.0])
    _set_params(tiny_repo, "tiny_stage2", inject_delay_ms=stage2_delay_ms)
    return serve(tiny_repo)


def test_gate_keeps_room_for_urgent_classes(tiny_export: Path, tiny_repo: Path, serve) -> None:
    """Batch traffic fills its one gate slot and queues behind it; a sensitive and a critical request sent later
    are admitted at once into the room kept for them (caps 1/3/5) and overtake the batch backlog, without expiring."""
    server = _slowed_gate(tiny_export, tiny_repo, serve, slots=1, reserve=2, stage2_delay_ms=60)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    done: list[str] = []
    lock = threading.Lock()
    for i in range(8):
        _send_async(client, f"batch{i}", "batch", done, lock, batch=8)  # small: the box stays light
    time.sleep(0.3)  # one batch request runs, the rest wait at the gate
    _send_async(client, "sensitive", "sensitive", done, lock)
    _send_async(client, "critical", "critical", done, lock, batch=4)
    _wait_for(done, 10)
    assert len(done) == 10 and not any(":error" in d for d in done), "\n".join(done)
    # A FIFO gate would answer them last; here they pass the batch requests still waiting (each of which holds the
    # one batch slot for >= 60 ms), so they finish before the last of them.
    last_batch = max(i for i, d in enumerate(done) if d.startswith("batch"))
    assert done.index("critical") < last_batch and done.index("sensitive") < last_batch, done
    samples = scrape_settled(server)

    def gate_wait(klass: str) -> tuple[float, float]:
        labels = {"model": "cascade_tiny", "class": klass}
        return (
            metric_sum(samples, "adaptive_gate_wait_ms_count", **labels),
            metric_sum(samples, "adaptive_gate_wait_ms_sum", **labels),
        )

    assert gate_wait("batch")[0] == 8 and gate_wait("batch")[1] / 8 > 50  # batch queued behind its one slot
    for klass in ("critical", "sensitive"):  # admitted at once into the room kept for them
        count, total_ms = gate_wait(klass)
        assert count == 1 and total_ms < 20, (klass, count, total_ms)
    assert metric_sum(samples, "adaptive_gate_rejected_total", model="cascade_tiny") == 0


def test_gate_never_holds_a_request_for_a_less_urgent_one_and_rejects_one_that_waits_past_its_timeout(
    tiny_export: Path, tiny_repo: Path, serve
) -> None:
    """With one slot per class and no room kept (caps 1/1/1), a slow batch request holds the batch slot: a sensitive
    request sent next is still admitted at once (it never waits for a less urgent request to finish), a second one
    waits behind the first sensitive one and is answered UNAVAILABLE when its 200 ms timeout passes, and a critical
    request passes both and is answered first. Every other request is answered."""
    server = _slowed_gate(tiny_export, tiny_repo, serve, slots=1, reserve=0, stage2_delay_ms=600)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    done: list[str] = []
    lock = threading.Lock()
    _send_async(client, "batch", "batch", done, lock, batch=2)
    time.sleep(0.2)  # the batch request holds its slot for ~600 ms
    _send_async(client, "sensitive1", "sensitive", done, lock, batch=2)
    time.sleep(0.05)
    _send_async(client, "sensitive2", "sensitive", done, lock, batch=2)
    time.sleep(0.05)
    _send_async(client, "critical", "critical", done, lock, batch=2)
    _wait_for(done, 4)
    errors = [d for d in done if ":error:" in d]
    assert len(errors) == 1 and errors[0].startswith("sensitive2:error:") and "UNAVAILABLE" in errors[0], done
    assert "timeout expired at the admission gate (sensitive class)" in errors[0], done
    assert done.index("critical") < done.index("batch"), done
    assert "sensitive1" in done, done
    assert _infer(server.grpc_url, _texts(TEXTS[:2])).as_numpy(names.LABEL).shape == (2, 1)
    samples = scrape_settled(server)
    assert metric_sum(samples, "adaptive_gate_rejected_total", model="cascade_tiny", **{"class": "sensitive"}) == 1
    assert metric_sum(samples, "adaptive_gate_rejected_total", model="cascade_tiny", **{"class": "critical"}) == 0
    for klass in ("sensitive", "critical"):  # sensitive1 and the critical request were admitted at once
        labels = {"model": "cascade_tiny", "class": klass}
        count = metric_sum(samples, "adaptive_gate_wait_ms_count", **labels)
        total_ms = metric_sum(samples, "adaptive_gate_wait_ms_sum", **labels)
        assert count == 1 and total_ms < 20, (klass, count, total_ms)


def test_batch_calls_waiting_in_a_slow_stage_hold_no_thread_a_critical_call_needs(
    tiny_export: Path, tiny_repo: Path, serve
) -> None:
    """Admitted batch requests wait in the slowed standard stage 2, each holding the thread that carries its BLS
    call; a critical request sent then runs through the express lane at once. With the stub's default executor
    (min(32, cores + 4) threads: 6 on 2 cores) its calls waited for one of those threads: 0.39 s against 0.04 s
    on 2 cores with a 600 ms stage. More batch requests than those threads, but fewer than the 32 threads the
    server side keeps per instance for BLS calls."""
    n = min((os.cpu_count() or 1) + 8, 28)
    server = _slowed_gate(tiny_export, tiny_repo, serve, slots=n, reserve=2, stage2_delay_ms=1000)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    done: list[str] = []
    lock = threading.Lock()
    for i in range(n):
        _send_async(client, f"batch{i}", "batch", done, lock, batch=1)
    time.sleep(0.3)  # all admitted, past stage 1, waiting on stage 2
    critical = latency_class("critical")
    started = time.monotonic()
    answer = _infer(server.grpc_url, _texts(TEXTS[:2]), priority=critical.priority, timeout=critical.queue_timeout_us)
    took_s = time.monotonic() - started
    assert answer.as_numpy(names.LABEL).shape == (2, 1)
    assert took_s < 0.3, f"critical request took {took_s * 1e3:.0f} ms behind batch calls waiting in stage 2"
    _wait_for(done, n)
    assert len(done) == n and not any(":error" in d for d in done), done


def test_deadline_cuts_the_cascade_short(tiny_export: Path, tiny_repo: Path, serve) -> None:
    # One cascade instance: each instance learns its own stage-latency estimate.
    server = _slowed_gate(tiny_export, tiny_repo, serve, stage2_delay_ms=400)
    warm = _infer(server.grpc_url, _texts(TEXTS[:2]))  # teaches the cascade that stage 2 takes ~400 ms
    assert warm.as_numpy(names.EXIT_STAGE).ravel().tolist() == [2, 2]
    cut = _infer(server.grpc_url, _texts(TEXTS[:2]), priority=2, timeout=200_000)
    assert cut.as_numpy(names.DEADLINE_CUT).ravel().tolist() == [True, True]
    assert cut.as_numpy(names.EXIT_STAGE).ravel().tolist() == [1, 1]
    relaxed = _infer(server.grpc_url, _texts(TEXTS[:2]), priority=2, timeout=5_000_000)
    assert relaxed.as_numpy(names.DEADLINE_CUT).ravel().tolist() == [False, False]


def test_the_deadline_counts_from_the_entry(tiny_export: Path, tiny_repo: Path, serve) -> None:
    """The gate models count a request's deadline from the tokenizer's stamp (`entered_ns`), so the time it spent
    before them is not budgeted twice; without a stamp it counts from the gate, and a stamp from the future cannot
    extend it."""
    server = _slowed_gate(tiny_export, tiny_repo, serve, stage2_delay_ms=400)
    _infer(server.grpc_url, _texts(TEXTS[:2]))  # teaches the cascade that stage 2 takes ~400 ms
    ids, mask = TextTokenizer(tiny_export / "tokenizer" / "tokenizer.json", max_len=32)(TEXTS[:2])
    client = grpcclient.InferenceServerClient(server.grpc_url)

    def cut(entered_ns: int | None, timeout_us: int) -> list[bool]:
        tensors = {names.INPUT_IDS: ids, names.ATTENTION_MASK: mask}
        if entered_ns is not None:
            tensors[names.ENTERED_NS] = np.full((2, 1), entered_ns, np.int64)
        inputs = []
        for name, value in tensors.items():
            inputs.append(grpcclient.InferInput(name, list(value.shape), "INT64"))
            inputs[-1].set_data_from_numpy(value)
        result = client.infer("cascade_tiny", inputs, priority=2, timeout=timeout_us)
        return result.as_numpy(names.DEADLINE_CUT).ravel().tolist()

    assert cut(None, 2_000_000) == [False, False]  # 2 s from the gate: stage 2 fits
    assert cut(time.monotonic_ns() - 1_800_000_000, 2_000_000) == [True, True]  # entered 1.8 s ago: 0.2 s left
    assert cut(time.monotonic_ns() + 10**10, 200_000) == [True, True]  # 200 ms however late the stamp


def test_a_slow_standard_lane_does_not_cut_critical_requests_short(tiny_export: Path, tiny_repo: Path, serve) -> None:
    # Each lane keeps its own stage-latency estimate: a shared one judged critical requests by the standard
    # lane's queue and cut them short at stage 1 while their express stage 2 was idle.
    server = _slowed_gate(tiny_export, tiny_repo, serve, stage2_delay_ms=400)  # the standard lane's stage 2 only
    critical = LATENCY_CLASSES["critical"]
    _infer(server.grpc_url, _texts(TEXTS[:2]), priority=critical.priority, timeout=critical.queue_timeout_us)
    slow = _infer(server.grpc_url, _texts(TEXTS[:2]))  # batch: standard stage 2, ~400 ms
    assert slow.as_numpy(names.EXIT_STAGE).ravel().tolist() == [2, 2]
    fast = _infer(server.grpc_url, _texts(TEXTS[:2]), priority=critical.priority, timeout=critical.queue_timeout_us)
    assert fast.as_numpy(names.DEADLINE_CUT).ravel().tolist() == [False, False]
    assert fast.as_numpy(names.EXIT_STAGE).ravel().tolist() == [2, 2]


def test_failing_stage_fails_only_its_requests(tiny_repo: Path, serve, local_outputs) -> None:
    conf1 = max_prob(local_outputs["logits1"])
    threshold = _split_threshold(conf1)
    _set_thresholds(tiny_repo, [threshold])
    for lane in ("tiny_stage2", "tiny_stage2_express"):  # a request alone takes the express lane
        _set_params(tiny_repo, lane, inject_error="planted stage failure")
    server = serve(tiny_repo)
    early = [t for t, c in zip(TEXTS, conf1) if c >= threshold]
    late = [t for t, c in zip(TEXTS, conf1) if c < threshold]
    ok = _infer(server.grpc_url, _texts(early))
    assert set(ok.as_numpy(names.EXIT_STAGE).ravel()) == {1}
    with pytest.raises(InferenceServerException, match=r"tiny_stage2.*planted stage failure"):
        _infer(server.grpc_url, _texts(late), timeout=5_000_000)
    assert _infer(server.grpc_url, _texts(early)).as_numpy(names.LABEL).size == len(early)  # still serving


BAD_TEXTS = {
    "empty": (b"", "empty"),
    "whitespace": (b" \t\n", "empty"),
    "invalid utf-8": (b"caf\xe9", "not valid UTF-8"),
    "NUL byte": (b"a\x00b", "NUL"),
    "over the cap": (b"x" * (MAX_TEXT_BYTES + 1), "cap is"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXTS))
def test_bad_text_is_invalid_arg(tiny_server: TritonServer, case: str) -> None:
    text, message = BAD_TEXTS[case]
    with pytest.raises(InferenceServerException) as err:
        _infer(tiny_server.grpc_url, np.array([[b"fine text"], [text]], dtype=np.object_))
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in err.value.message() and "element 1" in err.value.message()


def test_wrong_dtype_shape_and_batch_are_invalid_arg(tiny_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(tiny_server.grpc_url)
    wrong_dtype = grpcclient.InferInput(names.TEXT, [1, 1], "INT32")
    wrong_dtype.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    wrong_shape = grpcclient.InferInput(names.TEXT, [1, 2], "BYTES")
    wrong_shape.set_data_from_numpy(np.array([[b"a", b"b"]], dtype=np.object_))
    too_big = grpcclient.InferInput(names.TEXT, [65, 1], "BYTES")
    too_big.set_data_from_numpy(_texts(["a text"] * 65))
    wrong_name = grpcclient.InferInput("txt", [1, 1], "BYTES")
    wrong_name.set_data_from_numpy(_texts(["a text"]))
    for inputs, message in [
        ([wrong_dtype], "data-type"),
        ([wrong_shape], "shape"),
        ([too_big], "batch-size"),
        ([wrong_name], "unexpected inference input"),
        ([], "expected 1 inputs"),
    ]:
        with pytest.raises(InferenceServerException) as err:
            client.infer("adaptive", inputs)
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value
        assert message in err.value.message(), err.value.message()
    with pytest.raises(InferenceServerException, match="unexpected inference output"):
        inp = grpcclient.InferInput(names.TEXT, [1, 1], "BYTES")
        inp.set_data_from_numpy(_texts(["a text"]))
        client.infer("adaptive", [inp], outputs=[grpcclient.InferRequestedOutput("no_such_output")])
    assert _infer(tiny_server.grpc_url, _texts(["still serving"])).as_numpy(names.LABEL).size == 1


def test_unknown_class_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown latency class 'urgent'.*batch.*critical.*sensitive"):
        latency_class("urgent")


def test_full_baseline_matches_local_full_depth(tiny_server: TritonServer, tiny_export: Path, local_outputs) -> None:
    result = _infer(tiny_server.grpc_url, _texts(TEXTS), model="tiny_full")
    np.testing.assert_allclose(result.as_numpy(names.LOGITS), local_outputs["logits2"], atol=1e-4)


def test_critical_deadline_takes_the_express_lane(tiny_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(tiny_server.grpc_url)

    def calls(model: str) -> int:
        return int(client.get_inference_statistics(model, as_json=True)["model_stats"][0].get("inference_count", 0))

    before = calls("tiny_stage1_express"), calls("tiny_stage1")
    critical = LATENCY_CLASSES["critical"]
    _infer(tiny_server.grpc_url, _texts(TEXTS[:3]), priority=critical.priority, timeout=critical.queue_timeout_us)
    assert (calls("tiny_stage1_express") - before[0], calls("tiny_stage1") - before[1]) == (3, 0)
    # A batch request alone in the server takes it too: the standard batcher would only hold it for company.
    _infer(tiny_server.grpc_url, _texts(TEXTS[:2]), priority=LATENCY_CLASSES["batch"].priority)
    assert (calls("tiny_stage1_express") - before[0], calls("tiny_stage1") - before[1]) == (5, 0)


def test_a_request_alone_skips_the_standard_batcher_and_one_with_company_does_not(tiny_repo: Path, serve) -> None:
    """The first batch request is alone in the server and runs on the express stage (slowed to hold it there); one
    sent while it runs has company, so it goes to the standard lane, where survivors of concurrent requests meet."""
    _set_thresholds(tiny_repo, [0.0])  # everyone leaves at stage 1: one stage call per text
    _set_params(tiny_repo, "tiny_stage1_express", inject_delay_ms=400)
    server = serve(tiny_repo)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = {m: _stage_counts(server.grpc_url, m)[0] for m in ("tiny_stage1_express", "tiny_stage1")}
    done: list[str] = []
    lock = threading.Lock()
    _send_async(client, "first", "batch", done, lock, batch=1)
    time.sleep(0.15)  # the first request now waits on its express stage
    _send_async(client, "second", "batch", done, lock, batch=1)
    _wait_for(done, 2)
    assert sorted(done) == ["first", "second"]
    calls = {m: _stage_counts(server.grpc_url, m)[0] - n for m, n in before.items()}
    assert calls == {"tiny_stage1_express": 1, "tiny_stage1": 1}
    board = board_path(server.pid)
    assert board.exists()
    server.stop()
    assert not board.exists()  # removed by the last gate model, or by the launcher
