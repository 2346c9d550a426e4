"""Faults under load on real servers (the tiny family): a stage unloaded and reloaded (explicit model control, in
this module only), a stub process killed (the watchdog reloads its model, or restarts the server), and the server
restarted (the typed client's retries bring every request to an answer)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_server

from adaptive_bench.reliability import faults, report
from adaptive_bench.reliability.target import FaultTargets, fault_targets
from adaptive_ops import supervisor
from adaptive_ops.repository import RepositoryOptions, build_repository
from adaptive_ops.server import TritonServer
from adaptive_ops.watchdog import StubWatchdog

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def repo(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "repo"
    build_repository(tiny_export, out, RepositoryOptions(entry_size="tiny"))
    return out


@pytest.fixture(scope="module")
def targets(repo: Path) -> FaultTargets:
    return fault_targets(repo)


def _serve(repo: Path, **kwargs: object) -> Iterator[TritonServer]:
    server = make_server(repo, repo.parent, **kwargs).start()
    yield server
    server.stop(grace_s=3.0)  # a killed stub holds Triton's graceful shutdown for its whole exit timeout


@pytest.fixture(scope="module")
def explicit_server(repo: Path) -> Iterator[TritonServer]:
    yield from _serve(repo, model_control="explicit", load_models=["*"])


@pytest.fixture(scope="module")
def plain_server(repo: Path) -> Iterator[TritonServer]:
    yield from _serve(repo)


def _failed(result: dict) -> str:
    return f"{result['verdicts']} {result.get('streams', '')} {result.get('watchdog', '')}"


def test_fault_targets_come_from_the_repository(targets: FaultTargets) -> None:
    assert targets == FaultTargets(
        entry="adaptive",
        tokenizer="tokenizer_tiny",
        stage="tiny_stage1",
        express_stage="tiny_stage1_express",
        unaffected="tiny_full",
    )


def test_unloaded_stage_fails_only_its_requests(explicit_server: TritonServer, targets: FaultTargets) -> None:
    # The watchdog runs too: a stage unloaded on purpose is not a dead stub, so it must leave it alone.
    with StubWatchdog(explicit_server) as watchdog:
        result = faults.unload_reload(explicit_server, targets, before_s=1.5, down_s=1.5, after_s=2.0)
    assert all(result["verdicts"].values()), _failed(result)
    assert watchdog.recoveries == []
    assert result["recovery_s"] < 10, result["recovery_s"]
    assert [r[0] for r in report.rows({"unload_reload": result})] == ["stage tiny_stage1 unloaded + reloaded"]


def test_killed_stub_gets_its_model_reloaded(explicit_server: TritonServer, targets: FaultTargets) -> None:
    result = faults.kill_stub(explicit_server, targets.tokenizer, before_s=1.5, after_s=1.5)
    assert all(result["verdicts"].values()), _failed(result)
    assert result["action"] == "reload" and result["recovery_s"] < 15, result["recovery_s"]


def test_killed_stub_restarts_the_server(plain_server: TritonServer, targets: FaultTargets) -> None:
    pid = plain_server.pid
    result = faults.kill_stub(plain_server, targets.tokenizer, before_s=1.5, after_s=1.5)
    assert all(result["verdicts"].values()), _failed(result)
    assert result["action"] == "restart" and plain_server.pid != pid and plain_server.is_ready()


def test_restart_under_load_answers_every_request(plain_server: TritonServer, tmp_path: Path) -> None:
    result = faults.restart(plain_server, workers=3, before_s=1.5, after_s=1.0)
    assert all(result["verdicts"].values()), (result["verdicts"], result["failure_messages"])
    assert result["answered"] == result["sent"] and result["requests_across_the_restart"] > 0
    assert report.plot_faults({"restart": result}, tmp_path / "faults.png").stat().st_size > 0


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT])
def test_crashed_server_is_restarted_by_the_supervisor(
    plain_server: TritonServer, sig: signal.Signals, tmp_path: Path
) -> None:
    pid = plain_server.pid
    result = faults.crash(plain_server, sig, workers=3, before_s=1.0, after_s=1.0)
    assert all(result["verdicts"].values()), (result["verdicts"], result["failure_messages"])
    assert result["answered"] == result["sent"] and result["requests_across_the_restart"] > 0
    assert plain_server.pid != pid and result["restarts_counted"] == {supervisor.exit_reason(-sig): 1}
    assert report.plot_faults({f"crash_{sig.name}": result}, tmp_path / "faults.png").stat().st_size > 0
