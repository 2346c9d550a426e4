"""The launcher against the real server: inference over both protocols, priority and timeout, clean stops."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import SAMPLE_REPOSITORY, free_ports, make_server
from tritonclient.utils import InferenceServerException

from adaptive_bench.perf import priority_counts
from adaptive_ops import serve
from adaptive_ops import server as server_module
from adaptive_ops.server import ServerError, TritonServer

pytestmark = pytest.mark.server

TEXTS = np.array([[b"hello triton"], [b"caf\xc3\xa9"]], dtype=np.object_)


def _grpc_infer(url: str, model: str, texts: np.ndarray, **kwargs: object) -> grpcclient.InferResult:
    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput("text", list(texts.shape), "BYTES")
    inp.set_data_from_numpy(texts)
    return client.infer(model, [inp], **kwargs)


def _http_infer(url: str, model: str, texts: np.ndarray, **kwargs: object) -> httpclient.InferResult:
    client = httpclient.InferenceServerClient(url)
    inp = httpclient.InferInput("text", list(texts.shape), "BYTES")
    inp.set_data_from_numpy(texts)
    return client.infer(model, [inp], **kwargs)


@pytest.mark.parametrize("model", ["sample_text", "sample_ensemble"])
def test_grpc_infer_with_priority_and_timeout(sample_server: TritonServer, model: str) -> None:
    result = _grpc_infer(sample_server.grpc_url, model, TEXTS, priority=1, timeout=5_000_000)
    assert result.as_numpy("num_bytes").reshape(-1).tolist() == [12, 5]


# A timeout no other request of the session sends, per model: the log line it leaves can only be this request's.
HTTP_TIMEOUT_US = {"sample_text": 5_000_123, "sample_ensemble": 5_000_456}


@pytest.mark.parametrize("model", ["sample_text", "sample_ensemble"])
def test_http_infer_with_priority_and_timeout(sample_server: TritonServer, model: str) -> None:
    """Over HTTP too, the request's priority and timeout reach the server: the verbose log shows them on the
    request the model received (and, for the ensemble, on its step)."""
    timeout_us = HTTP_TIMEOUT_US[model]
    result = _http_infer(sample_server.http_url, model, TEXTS, priority=2, timeout=timeout_us)
    assert result.as_numpy("num_bytes").reshape(-1).tolist() == [12, 5]
    log = sample_server.log_path.read_text(errors="replace")
    for logged in [model] + (["sample_text"] if model == "sample_ensemble" else []):
        assert priority_counts(log, logged)[(2, timeout_us)] == 1, (logged, priority_counts(log, logged))


def test_python_model_output(sample_server: TritonServer) -> None:
    result = _grpc_infer(sample_server.grpc_url, "sample_text", TEXTS)
    assert result.as_numpy("text_out").reshape(-1).tolist() == [b"HELLO TRITON", "CAFÉ".encode()]


def test_priority_and_timeout_reach_the_server(sample_server: TritonServer) -> None:
    """With --log-verbose=1 the server logs each request's priority and timeout: proof they arrive."""
    _grpc_infer(sample_server.grpc_url, "sample_text", TEXTS, priority=3, timeout=4_321_000)
    log = sample_server.log_path.read_text(errors="replace")
    assert "priority: 3" in log
    assert "4321000" in log


def test_bad_input_is_invalid_arg_and_server_keeps_serving(sample_server: TritonServer) -> None:
    with pytest.raises(InferenceServerException) as err:
        _grpc_infer(sample_server.grpc_url, "sample_text", np.array([[b""]], dtype=np.object_))
    assert "INVALID_ARG" in str(err.value.status()) and "empty element" in err.value.message()
    assert _grpc_infer(sample_server.grpc_url, "sample_text", TEXTS).as_numpy("num_bytes").size == 2


def test_endpoints_bind_to_loopback(sample_server: TritonServer) -> None:
    listening = {c.laddr for c in psutil.Process(sample_server.pid).net_connections() if c.status == "LISTEN"}
    ours = {
        addr
        for addr in listening
        if addr.port in (sample_server.http_port, sample_server.grpc_port, sample_server.metrics_port)
    }
    assert {a.port for a in ours} == {sample_server.http_port, sample_server.grpc_port, sample_server.metrics_port}
    assert all(_is_loopback(a.ip) for a in ours), ours


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # gRPC listens on [::ffff:127.0.0.1]
    return (mapped or addr).is_loopback


def test_model_load_failure_reports_log_tail(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPOSITORY, repo)
    (repo / "sample_text" / "1" / "model.py").write_text("raise ImportError('planted failure')\n")
    server = make_server(repo, tmp_path)
    with pytest.raises(ServerError) as err:
        server.start(ready_timeout_s=60)
    message = str(err.value)
    assert "sample_text" in message and "planted failure" in message and "log tail" in message
    assert not server.is_running()


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="does not exist"):
        make_server(tmp_path / "nope", tmp_path).start()


def test_server_nice_and_cpus_parse_or_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTIVE_SERVER_NICE", "5")
    monkeypatch.setenv("ADAPTIVE_SERVER_CPUS", "0-1,3")
    assert server_module.server_nice() == 5 and server_module.server_cpus() == {0, 1, 3}
    monkeypatch.setenv("ADAPTIVE_SERVER_NICE", "-3")
    with pytest.raises(ServerError, match="niceness in 0-19"):
        server_module.server_nice()
    monkeypatch.setenv("ADAPTIVE_SERVER_CPUS", "zero")
    with pytest.raises(ServerError, match="expected cores"):
        server_module.server_cpus()


def test_niced_server_stubs_inherit_the_niceness_in_our_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The niceness holds against the clients too: the server shares their session (one Linux autogroup, where a
    session of its own would be scheduled as one unit against them), in a process group of its own for stop()."""
    monkeypatch.setenv("ADAPTIVE_SERVER_NICE", "3")
    repo = tmp_path / "repository"
    shutil.copytree(SAMPLE_REPOSITORY, repo)
    with make_server(repo, tmp_path) as server:
        procs = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        assert procs and {p.nice() for p in procs} == {3}, [(p.name(), p.nice()) for p in procs]
        assert {os.getsid(p.pid) for p in procs} == {os.getsid(0)}
        assert {os.getpgid(p.pid) for p in procs} == {server.pid} != {os.getpgid(0)}


def test_stop_leaves_no_processes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPOSITORY, repo)
    server = make_server(repo, tmp_path).start()
    family = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    assert any(p.name() == "triton_python_backend_stub" for p in family)
    server.stop()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)


def test_a_killed_server_leaves_no_shared_memory(tmp_path: Path) -> None:
    """A server killed before it could stop cleanly leaves its stubs' regions in /dev/shm; stop() removes them."""
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPOSITORY, repo)
    server = make_server(repo, tmp_path).start()
    regions = server_module.shm_regions(server.pid)
    assert regions and all(r.exists() for r in regions)
    server.stop(grace_s=0)  # no grace: SIGKILL at once
    assert not [r for r in regions if r.exists()]


def test_a_server_that_aborts_by_itself_leaves_no_shared_memory(tmp_path: Path) -> None:
    """tritonserver 2.51 can abort on heap corruption under load (SIGABRT, Known limits); once it is gone its
    mappings are too, so stop() removes the regions it kept when the server became ready."""
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPOSITORY, repo)
    server = make_server(repo, tmp_path).start()
    regions = server_module.shm_regions(server.pid)
    assert regions and all(r.exists() for r in regions)
    os.kill(server.pid, signal.SIGABRT)
    psutil.Process(server.pid).wait(timeout=30)  # gone now: no /proc/<pid>/maps to read
    server.stop()
    assert not [r for r in regions if r.exists()]


def test_cli_check_starts_and_stops(tmp_path: Path) -> None:
    http, grpc, metrics = free_ports(3)
    code = serve.main(
        [
            "--repo",
            str(SAMPLE_REPOSITORY),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
            "--log",
            str(tmp_path / "cli.log"),
            "--check",
        ]
    )
    assert code == 0
    assert "Started GRPCInferenceService" in (tmp_path / "cli.log").read_text()


def test_server_stops_when_its_launcher_is_killed(tmp_path: Path) -> None:
    """A launcher killed before it can stop the server (SIGKILL) takes the server with it."""
    import subprocess
    import sys
    import time

    http, grpc, metrics = free_ports(3)
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adaptive_ops.serve",
            "--repo",
            str(SAMPLE_REPOSITORY),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
            "--log",
            str(tmp_path / "orphan.log"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert "tritonserver ready" in launcher.stdout.readline()
    server = next(p for p in psutil.Process(launcher.pid).children() if p.name() == "tritonserver")
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 30
    while server.is_running() and server.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
