"""The provenance object every results JSON carries: real git, real host facts, nothing invented."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest

from adaptive_bench.provenance import git_commit, machine, machine_text, provenance
from adaptive_core.config import PROJECT_ROOT

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.invalid")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


@needs_git
def test_commit_is_the_short_head_and_dirty_only_for_code(repo: Path) -> None:
    head = _git(repo, "rev-parse", "--short", "HEAD")
    assert git_commit(repo) == head
    (repo / "results" / "r.json").write_text('{"new": 1}\n')  # a run's own output does not make the code dirty
    assert git_commit(repo) == head
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(repo) == f"{head}-dirty"


def test_no_commit_outside_a_checkout(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None


@needs_git
def test_provenance_of_this_checkout() -> None:
    p = provenance("python -m adaptive_bench", ["exit", "--quick"])
    assert set(p) == {"commit", "machine", "date", "command"}
    assert p["commit"].split("-")[0] == _git(PROJECT_ROOT, "rev-parse", "--short", "HEAD")
    assert p["command"] == ["python", "-m", "adaptive_bench", "exit", "--quick"]
    assert datetime.datetime.fromisoformat(p["date"]).tzinfo is not None
    assert p["machine"] == machine()


def test_machine_text() -> None:
    m = machine()
    assert isinstance(m["cpu_count"], int) and isinstance(m["gpus"], list)
    assert machine_text(None) == "not recorded"
    assert machine_text({"platform": "Linux x86_64", "cpu_count": 2, "cpu": "AMD EPYC", "gpus": []}) == (
        "Linux x86_64, 2 CPUs (AMD EPYC), no GPU"
    )
    h100 = {"platform": "Linux x86_64", "cpu_count": 16, "cpu": None, "gpus": ["NVIDIA H100 80GB HBM3"]}
    assert machine_text(h100) == "Linux x86_64, 16 CPUs, 1x NVIDIA H100 80GB HBM3"
