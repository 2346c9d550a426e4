"""Shared fixtures: a real tritonserver on free loopback ports. Triton is never mocked."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import psutil
import pytest

from adaptive_ops.server import TritonServer, free_ports  # noqa: F401 - tests import free_ports from here

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_REPOSITORY = ROOT / "model_repository" / "sample"
SERVER_PROCESS_NAMES = ("tritonserver", "triton_python_backend_stub")

# Every server and stub started by this session inherits this tag, so the leftover check at the end
# finds exactly our processes (and not a server someone runs beside the tests).
SESSION_TAG = uuid.uuid4().hex
os.environ["ADAPTIVE_TEST_SESSION"] = SESSION_TAG


def scrape_settled(server: TritonServer, timeout_s: float = 10.0) -> dict:
    """The server's metrics once the custom ones stop changing: the models send them from a thread, so a scrape
    right after an answer may miss the last few milliseconds of updates."""
    from adaptive_core.metrics import parse_metrics

    def scrape() -> dict:
        with urllib.request.urlopen(server.metrics_url, timeout=10) as resp:
            samples = parse_metrics(resp.read().decode())
        return {k: v for k, v in samples.items() if k[0].startswith("adaptive_")}, samples

    custom, samples = scrape()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again, samples = scrape()
        if again == custom:
            break
        custom = again
    return samples


def set_params(repo: Path, model: str, **params: object) -> None:
    """Append config parameters to `repo/model/config.pbtxt` (e.g. a stage's `inject_delay_ms`, `inject_error`)."""
    config = repo / model / "config.pbtxt"
    extra = "".join(f'\nparameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    config.write_text(config.read_text() + extra)


def set_thresholds(repo: Path, thresholds: list[float], size: str = "tiny") -> None:
    """Replace the exit thresholds in the plan of `repo`'s `cascade_<size>`."""
    plan = repo / f"cascade_{size}" / "1" / "plan.json"
    raw = json.loads(plan.read_text())
    raw["thresholds"] = thresholds
    plan.write_text(json.dumps(raw))


def local_exit_logits(export: Path, size: str, texts: Sequence[str]) -> np.ndarray:
    """Every exit's logits for `texts`, (K, N, C), from the exported stage files run directly with onnxruntime (each
    stage on the previous one's hidden states): the reference a served cascade must agree with."""
    from adaptive_core import names
    from adaptive_serving.onnx_stage import OnnxStage
    from adaptive_serving.tokenizer import TextTokenizer

    exported = json.loads((export / size / "thresholds.json").read_text())
    tokenize = TextTokenizer(export / "tokenizer" / "tokenizer.json", max_len=exported["config"]["max_seq_len"])
    ids, mask = tokenize(list(texts))
    feed = {names.INPUT_IDS: ids, names.ATTENTION_MASK: mask}
    logits = []
    for stage in range(1, len(exported["exit_layers"]) + 1):
        out = OnnxStage(export / size / f"stage{stage}.onnx").run(feed)
        logits.append(out[names.LOGITS])
        feed = {names.HIDDEN_IN: out.get(names.HIDDEN), names.ATTENTION_MASK: mask}
    return np.stack(logits)


def split_thresholds(conf: np.ndarray, margin: float = 1e-3) -> list[float]:
    """Thresholds for the early exits of confidences `conf` (K, N) that send some texts out at every stage: each one
    sits in the widest gap near the middle of the confidences still in play at its exit, at least `margin` from
    any of them (so float rounding between runtimes cannot flip a decision).

    Raises:
        ValueError: an exit has fewer than two texts left to split, or no gap wider than 2 * margin.
    """
    left = np.ones(conf.shape[1], bool)
    out = []
    for k in range(conf.shape[0] - 1):
        s = np.sort(conf[k][left])
        if len(s) < 2:
            raise ValueError(f"exit {k + 1}: {len(s)} texts left, cannot split them")
        mid = len(s) // 2
        candidates = range(max(0, mid - 3), min(len(s) - 1, mid + 3))
        i = max(candidates, key=lambda j: s[j + 1] - s[j])
        if s[i + 1] - s[i] <= 2 * margin:
            raise ValueError(f"exit {k + 1}: no gap wider than {2 * margin} near the middle of {s}")
        out.append(float((s[i] + s[i + 1]) / 2))
        left &= conf[k] < out[-1]
    return out


def expected_exits(conf: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """1-based exit stage per text: the first early exit whose confidence clears its threshold, else the last."""
    stage = np.full(conf.shape[1], conf.shape[0])
    for k in reversed(range(len(thresholds))):
        stage = np.where(conf[k] >= thresholds[k], k + 1, stage)
    return stage


def make_server(repo: Path, tmp: Path, **kwargs: object) -> TritonServer:
    return TritonServer.on_free_ports(repo, log_path=tmp / f"tritonserver-{uuid.uuid4().hex[:8]}.log", **kwargs)


@pytest.fixture(scope="session")
def sample_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The foundation sample repository (a Python model and an ensemble over it), served once per session."""
    tmp = tmp_path_factory.mktemp("sample")
    repo = tmp / "repository"
    shutil.copytree(SAMPLE_REPOSITORY, repo)
    with make_server(repo, tmp, log_verbose=1) as server:
        yield server


def export_tiny(out: Path, size: str = "tiny") -> Path:
    """`adaptive_export build --tiny <size>` into `out`: the toy keyword task, a backbone trained on it for a few
    seconds, calibrated thresholds that let the easy texts leave at stage 1 (about 20 s of CPU)."""
    from adaptive_export.cli import main as export_main

    assert export_main(["build", "--tiny", size, "--out", str(out), "--no-tensorrt"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny configuration (two stages) exported once per session."""
    return export_tiny(tmp_path_factory.mktemp("tiny_export"))


@pytest.fixture(scope="session")
def tiny3_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three-stage tiny configuration (TINY3: an exit after each of 3 layers) exported once per session."""
    return export_tiny(tmp_path_factory.mktemp("tiny3_export"), "tiny3")


def serve_tiny(tiny_export: Path, tmp: Path) -> Iterator[TritonServer]:
    """The tiny family's generated repository (entry size tiny) under `tmp`, served until the generator closes."""
    from adaptive_ops.repository import RepositoryOptions, build_repository

    build_repository(tiny_export, tmp / "repo", RepositoryOptions(entry_size="tiny"))
    with make_server(tmp / "repo", tmp) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_server(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The tiny family's server, shared by the session."""
    yield from serve_tiny(tiny_export, tmp_path_factory.mktemp("tiny_server"))


def leftover_server_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] in SERVER_PROCESS_NAMES and proc.environ().get("ADAPTIVE_TEST_SESSION") == SESSION_TAG:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftovers = leftover_server_processes()
    if leftovers:
        names = ", ".join(f"{p.pid}:{p.name()}" for p in leftovers)
        print(f"\nERROR: the test session left server processes running: {names}")
        for p in leftovers:
            p.kill()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
