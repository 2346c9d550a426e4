"""`make docker-check` (docker/check.py): the deployment files pass the real linters and validators, and a
planted error in a copy of docker/ fails the check that should catch it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (file under docker/, text to replace, replacement, check that must fail, text its report must contain)
PLANTED = {
    "dockerfile": ("Dockerfile", "python3 -m pip install --no-cache-dir -r", "pip install -r", "hadolint", "DL3042"),
    "yaml": ("k8s/pdb.yaml", "  minAvailable: 1", "  minAvailable: 1 ", "yamllint", "trailing-spaces"),
    "compose": ("compose.yaml", "shm_size: 1gb", "shm_sise: 1gb", "compose", "'shm_sise' was unexpected"),
    "dashboard-schema": (
        "grafana/dashboards/adaptive-serving.json",
        '"refId": "A"',
        '"refId": "a1"',
        "schemas",
        "does not match",
    ),
    "k8s-schema": ("k8s/deployment.yaml", "containerPort: 8002", "containerPrt: 8002", "k8s", "containerPort"),
    "metric-name": (
        "grafana/dashboards/adaptive-serving.json",
        "rate(adaptive_exits_total[",
        "rate(adaptive_exit_total[",
        "consistency",
        "unknown metric 'adaptive_exit_total'",
    ),
    "hpa-metric": (
        "k8s/hpa.yaml",
        "name: triton_gate_wait_ms",
        "name: triton_gate_wait_us",
        "consistency",
        "served by no adapter rule",
    ),
    "probe": (
        "k8s/deployment.yaml",
        "path: /v2/health/live",
        "path: /healthz",
        "consistency",
        "must GET /v2/health/live",
    ),
}


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "docker" / "check.py"), *args], capture_output=True, text=True, timeout=120
    )


def test_make_docker_check_passes() -> None:
    proc = subprocess.run(["make", "-s", "docker-check"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6/6 checks passed" in proc.stdout


def test_make_docker_check_fails_on_a_planted_error(tmp_path: Path) -> None:
    copy = tmp_path / "docker"
    shutil.copytree(ROOT / "docker", copy, ignore=shutil.ignore_patterns("__pycache__"))
    hpa = copy / "k8s" / "hpa.yaml"
    hpa.write_text(hpa.read_text().replace("kind: Deployment", "kind: Deploymnt"))
    proc = subprocess.run(
        ["make", "-s", "docker-check", f"DOCKER_DIR={copy}"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0, proc.stdout
    assert "scaleTargetRef Deploymnt/triton-adaptive is not in k8s/" in proc.stdout, proc.stdout


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_planted_error_fails_its_check(case: str, tmp_path: Path) -> None:
    rel, old, new, check, expected = PLANTED[case]
    copy = tmp_path / "docker"
    shutil.copytree(ROOT / "docker", copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / rel
    text = path.read_text()
    assert old in text, f"the planted case {case} no longer matches {rel}"
    path.write_text(text.replace(old, new, 1))
    proc = _check("--dir", str(copy))
    assert proc.returncode == 1, proc.stdout
    status, report = _sections(proc.stdout)[check]
    assert status == "FAILED", proc.stdout
    assert expected in report, proc.stdout


def _sections(stdout: str) -> dict[str, tuple[str, str]]:
    """check name -> (ok/FAILED, its indented report lines)."""
    sections: dict[str, tuple[str, str]] = {}
    name = ""
    for line in stdout.splitlines():
        if line.startswith("    ") and name:
            status, text = sections[name]
            sections[name] = (status, text + line.strip() + "\n")
        elif len(line.split()) == 2:
            name, status = line.split()
            sections[name] = (status, "")
    return sections
