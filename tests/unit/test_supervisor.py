"""The supervisor's restart policy, its restart counter file, and its command mode, without a server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptive_core.metrics import parse_metrics
from adaptive_ops.supervisor import RESTARTS_METRIC, UP_METRIC, RestartCounter, RestartPolicy, exit_reason


def test_backoff_doubles_up_to_its_cap_and_the_budget_is_per_window() -> None:
    policy = RestartPolicy(max_restarts=3, window_s=10.0, backoff_s=1.0, max_backoff_s=3.0)
    assert policy.delay([], now=100.0) == 1.0
    assert policy.delay([99.0], now=100.0) == 2.0
    assert policy.delay([98.0, 99.0], now=100.0) == 3.0  # 4 s capped at 3
    assert policy.delay([97.0, 98.0, 99.0], now=100.0) is None  # budget spent: give up
    assert policy.delay([80.0, 85.0, 99.0], now=100.0) == 2.0  # only restarts within the window count
    with pytest.raises(ValueError):
        RestartPolicy(max_backoff_s=0.5, backoff_s=1.0)


def test_exit_reasons_name_the_signal() -> None:
    assert exit_reason(-signal.SIGSEGV) == "signal 11 (SIGSEGV)"
    assert exit_reason(-signal.SIGABRT) == "signal 6 (SIGABRT)"
    assert exit_reason(1) == "exit code 1"


def test_restart_counter_writes_prometheus_text(tmp_path: Path) -> None:
    path = tmp_path / "state" / "supervisor.prom"
    counter = RestartCounter(path)
    counter.set_up(True)
    counter.count(exit_reason(-signal.SIGABRT))
    counter.count(exit_reason(-signal.SIGABRT))
    counter.set_up(False)
    samples = parse_metrics(path.read_text())
    assert samples[(RESTARTS_METRIC, frozenset({("reason", "signal 6 (SIGABRT)")}))] == 2
    assert samples[(UP_METRIC, frozenset())] == 0


def _supervise(tmp_path: Path, script: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adaptive_ops.supervisor",
            "--metrics-file",
            str(tmp_path / "m.prom"),
            *extra,
            "--",
            sys.executable,
            "-c",
            script,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_command_mode_restarts_a_crashing_child_then_gives_up(tmp_path: Path) -> None:
    # The child aborts at once every time: two restarts are allowed, the third exit ends the run with status 1.
    proc = _supervise(tmp_path, "import os; os.abort()", "--max-restarts", "2", "--backoff-s", "0.05")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert out.count("exited (signal 6 (SIGABRT)); restarting") == 2 and "giving up" in out
    samples = parse_metrics((tmp_path / "m.prom").read_text())
    assert samples[(RESTARTS_METRIC, frozenset({("reason", "signal 6 (SIGABRT)")}))] == 2


def test_command_mode_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = _supervise(tmp_path, "import time; time.sleep(60)")
    deadline = time.monotonic() + 20
    while not (tmp_path / "m.prom").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "restarting" not in out
