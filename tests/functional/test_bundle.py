"""The offline bundle (adaptive_ops.bundle): built for this Python from the tiny repository, unpacked in a
temp folder, started with its own start.sh on free loopback ports; it answers, and stops leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import free_ports
from test_router_server import router_repo  # noqa: F401 - the tiny family behind the router

from adaptive_client.client import AdaptiveClient
from adaptive_ops.bundle import BundleError, BundleOptions, build_bundle
from adaptive_ops.bundle import main as bundle_main

PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"


def _ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def test_bundle_refuses_a_python_without_stub_and_a_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no Python backend stub for Python 2\.7; the wheel has \[.*'3\.12'"):
        build_bundle(BundleOptions(repository=tmp_path, python="2.7", out=tmp_path))
    with pytest.raises(BundleError, match="is not a model repository"):
        build_bundle(BundleOptions(repository=tmp_path / "none", python=PYVER, out=tmp_path))
    assert bundle_main(["--repo", str(tmp_path / "none"), "--out", str(tmp_path)]) == 1


@pytest.mark.server
@pytest.mark.slow
def test_unpacked_bundle_starts_answers_and_stops(router_repo: Path, tmp_path: Path) -> None:  # noqa: F811
    # xz level 0: the test checks what is inside, not how small it gets (make bundle uses 6).
    assert bundle_main(["--repo", str(router_repo), "--out", str(tmp_path / "out"), "--xz-level", "0"]) == 0
    archive = tmp_path / "out" / f"triton-adaptive-{PYVER}.tar.xz"
    manifest = json.loads((tmp_path / "out" / f"triton-adaptive-{PYVER}.manifest.json").read_text())
    assert manifest["python"] == PYVER and {"router", "cascade_tiny"} <= set(manifest["models"])
    assert not any(lib.startswith("libpython") for lib in manifest["libraries"]), "only what the binaries load"

    unpacked = tmp_path / "elsewhere"
    unpacked.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="tar")
    top = unpacked / f"triton-adaptive-{PYVER}"
    http, grpc, metrics = free_ports(3)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "HTTP_PORT": str(http),
        "GRPC_PORT": str(grpc),
        "METRICS_PORT": str(metrics),
    }
    log = open(tmp_path / "bundle-server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(top / "start.sh")], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while not _ready(http):
            assert proc.poll() is None, (tmp_path / "bundle-server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "bundle server not ready in 120 s"
            time.sleep(0.5)
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        # start.sh execs the supervisor, which runs the bundle's tritonserver as its child and counts restarts.
        servers = [Path(p.exe()) for p in family if p.name() == "tritonserver"]
        assert servers and all(e.is_relative_to(top) for e in servers), (
            f"the server must run from the bundle: {servers}"
        )
        assert "adaptive_ops.supervisor" in " ".join(family[0].cmdline())
        assert "adaptive_server_up 1" in (top / "state" / "supervisor.prom").read_text()
        # The stubs see what the bundle's venv sees: the project from the bundle's wheel, not this checkout's
        # editable install (start.sh lists $PYTHON's site-packages as plain paths, whose .pth hooks do not run).
        probe = [str(top / "venv" / "bin" / "python3"), "-c", "import adaptive_serving as a; print(a.__file__)"]
        where = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
        assert Path(where).is_relative_to(top / "python"), where
        with AdaptiveClient(f"grpc://127.0.0.1:{grpc}") as client:
            [result] = client.classify(["Shares fell sharply on Monday"], latency_class="critical")
        assert result.model_size == "tiny" and result.exit_stage >= 1
        # start.sh pointed the router's outcome log (an absolute path of the build host) into the bundle.
        router_config = (top / "models" / "router" / "config.pbtxt").read_text()
        assert f'string_value: "{top}/outcomes/router.jsonl"' in router_config
        deadline = time.monotonic() + 10
        while not (top / "outcomes" / "router.jsonl").exists():
            assert time.monotonic() < deadline, "the router logged no outcome inside the bundle"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
    _gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"left running: {[p.pid for p in alive]}"
