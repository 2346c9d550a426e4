"""The stub watchdog when recovery goes wrong or its first guess is impossible, and the `adaptive-serve` run loop
(adaptive_ops.serve) as a process: it restarts the server when a stub dies, stops clean on SIGTERM, and exits 1 when
the server dies on its own. Each test runs servers of its own."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import SAMPLE_REPOSITORY, free_ports, make_server

from adaptive_client.client import AdaptiveClient
from adaptive_ops.repository import RepositoryOptions, build_repository
from adaptive_ops.watchdog import StubWatchdog, dead_stubs, stub_models

pytestmark = pytest.mark.server


def _pid_of(server_pid: int, model: str) -> int:
    return next(pid for pid, name in stub_models(server_pid).items() if name == model)


def _kill_and_wait_for_zombie(server_pid: int, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid not in dead_stubs(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid in dead_stubs(server_pid), "the killed stub did not show up as a zombie of the server"


@pytest.fixture
def tiny_repo(tiny_export: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    build_repository(tiny_export, repo, RepositoryOptions(entry_size="tiny"))
    return repo


def test_a_failed_reload_is_reported_and_a_stub_nobody_saw_restarts_the_server(tiny_repo: Path, tmp_path: Path) -> None:
    """Explicit model control. (1) A stub dies and its model cannot load again (its model.py now raises): the
    watchdog reports the reload as failed, with Triton's reason, and does not raise. (2) A stub dies before a fresh
    watchdog ever saw it: which model it served is unknown, so the watchdog restarts the whole server instead."""
    model_py = tiny_repo / "tiny_stage2" / "1" / "model.py"
    intact = model_py.read_text()
    with make_server(tiny_repo, tmp_path, model_control="explicit", load_models=["*"]) as server:
        watchdog = StubWatchdog(server, restart_grace_s=3.0, load_timeout_s=60.0)
        assert watchdog.poll() is None  # learns the live stubs
        model_py.write_text('raise RuntimeError("planted load failure")\n')
        _kill_and_wait_for_zombie(server.pid, _pid_of(server.pid, "tiny_stage2"))
        failed = watchdog.poll()
        assert failed is not None and (failed.models, failed.action, failed.ok) == (("tiny_stage2",), "reload", False)
        assert "tiny_stage2/load: HTTP 400" in failed.error and "planted load failure" in failed.error, failed
        assert watchdog.poll() is None  # reported once, not retried in a loop
        model_py.write_text(intact)
        old_pid = server.pid
        fresh = StubWatchdog(server, restart_grace_s=3.0)  # has seen no stub yet
        _kill_and_wait_for_zombie(server.pid, _pid_of(server.pid, "tokenizer_tiny"))
        restarted = fresh.poll()
        assert restarted is not None and (restarted.models, restarted.action, restarted.ok) == (("?",), "restart", True)
        assert server.pid != old_pid and not psutil.pid_exists(old_pid) and server.is_ready()
        with AdaptiveClient(server.grpc_url) as client:  # every model back, tiny_stage2 included
            assert [r.model_size for r in client.classify(["Shares fell", "A coin toss"])] == ["tiny", "tiny"]


def _launch(repo: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, dict[str, int]]:
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adaptive_ops.serve",
            "--repo",
            str(repo),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
            "--log",
            str(tmp_path / "serve.log"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, {"http": http, "grpc": grpc}


def _line(proc: subprocess.Popen, timeout_s: float) -> str:
    """The launcher's next stdout line ("" when none comes in time or it exited)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    return proc.stdout.readline() if ready else ""


def _tritonserver(launcher_pid: int) -> psutil.Process:
    return next(p for p in psutil.Process(launcher_pid).children() if p.name() == "tritonserver")


def test_adaptive_serve_restarts_the_server_when_a_stub_dies_and_stops_on_sigterm(
    tiny_repo: Path, tmp_path: Path
) -> None:
    proc, ports = _launch(tiny_repo, tmp_path)
    try:
        assert "tritonserver ready" in _line(proc, 120), proc.stderr.read() if proc.poll() is not None else ""
        first = _tritonserver(proc.pid)
        time.sleep(1.0)  # the watchdog's first polls see every stub alive
        _kill_and_wait_for_zombie(first.pid, _pid_of(first.pid, "cascade_tiny"))
        line = _line(proc, 120)
        assert line.startswith("stub watchdog: stub of cascade_tiny died; restart recovered"), line
        second = _tritonserver(proc.pid)
        assert second.pid != first.pid and not first.is_running()
        with AdaptiveClient(f"127.0.0.1:{ports['grpc']}", max_retries=5, backoff_s=0.5) as client:
            assert client.classify(["The striker scored twice"])[0].model_size == "tiny"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not second.is_running() or second.status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_adaptive_serve_restarts_a_dead_server_and_exits_1_once_its_budget_is_spent(tmp_path: Path) -> None:
    metrics = tmp_path / "restarts.prom"
    proc, _ = _launch(
        SAMPLE_REPOSITORY,
        tmp_path,
        "--max-restarts",
        "1",
        "--restart-backoff-s",
        "0.2",
        "--restart-metrics-file",
        str(metrics),
    )
    try:
        assert "tritonserver ready" in _line(proc, 120)
        first = _tritonserver(proc.pid)
        first.kill()  # not a stub: the supervisor restarts the server
        deadline = time.monotonic() + 120
        while True:
            servers = [p for p in psutil.Process(proc.pid).children() if p.name() == "tritonserver"]
            if servers and servers[0].pid != first.pid and "adaptive_server_up 1" in metrics.read_text():
                break
            assert time.monotonic() < deadline and proc.poll() is None, "the supervisor did not restart the server"
            time.sleep(0.2)
        assert 'adaptive_server_restarts_total{reason="signal 9 (SIGKILL)"} 1' in metrics.read_text()
        servers[0].kill()  # a second exit within the window spends the budget of one restart: the loop ends
        assert proc.wait(timeout=60) == 1
        assert "tritonserver keeps exiting" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
