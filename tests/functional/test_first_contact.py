"""First contact with a fresh server: warm when it says ready, and answers in the export's label names."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import make_server

from adaptive_client.cli import main as client_main
from adaptive_client.client import AdaptiveClient
from adaptive_core import names
from adaptive_ops.repository import LABELS_FILE, RepositoryOptions, build_repository
from adaptive_ops.server import TritonServer

TEXTS = ["Shares in the bank fell after profits missed forecasts", "The striker scored twice", "A new phone"]
# Slack for this 2-core machine on top of the 1.5x rule: a few ms of scheduling noise is not a cold start.
MARGIN_MS = 15.0


def _label_names(export: Path) -> list[str]:
    return json.loads((export / "tiny" / "thresholds.json").read_text())["label_names"]


def _round(client: AdaptiveClient) -> tuple[float, int]:
    """The critical texts sent at once, one request each: (slowest latency ms, answers cut short)."""
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        results = list(pool.map(lambda t: client.classify([t], latency_class="critical")[0], TEXTS))
    return max(r.latency_ms for r in results), sum(r.deadline_cut for r in results)


@pytest.mark.server
def test_a_fresh_server_is_warm_when_it_says_ready(tiny_export: Path, tmp_path: Path) -> None:
    build_repository(tiny_export, tmp_path / "repo", RepositoryOptions(entry_size="tiny"))
    with make_server(tmp_path / "repo", tmp_path) as server, AdaptiveClient(server.grpc_url) as client:
        client.output_names()  # the client's own first call (connection, metadata) is not the server's cold start
        cold_ms, cold_cuts = _round(client)
        warm = [_round(client) for _ in range(20)]
    warm_ms = float(np.percentile([ms for ms, _ in warm], 90))
    assert cold_cuts == 0, "the first critical requests after ready were cut short by their deadline"
    assert cold_ms <= 1.5 * warm_ms + MARGIN_MS, f"first round {cold_ms:.1f} ms against warm p90 {warm_ms:.1f} ms"


@pytest.mark.server
def test_the_entry_answers_with_label_names(tiny_export: Path, tiny_server: TritonServer) -> None:
    label_names = _label_names(tiny_export)
    with AdaptiveClient(tiny_server.grpc_url) as client:
        results = client.classify(TEXTS)
    assert [r.label_name for r in results] == [label_names[r.label] for r in results]


@pytest.mark.server
def test_classification_extension_reads_the_labels_file(tiny_export: Path, tiny_server: TritonServer) -> None:
    label_names = _label_names(tiny_export)
    client = grpcclient.InferenceServerClient(tiny_server.grpc_url)
    text = grpcclient.InferInput(names.TEXT, [len(TEXTS), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t.encode()] for t in TEXTS], dtype=np.object_))
    logits = client.infer("tiny_full", [text]).as_numpy(names.LOGITS)
    top = client.infer("tiny_full", [text], outputs=[grpcclient.InferRequestedOutput(names.LOGITS, class_count=2)])
    for row, classes in zip(logits, top.as_numpy(names.LOGITS)):
        score, index, label = classes[0].decode().split(":")
        assert int(index) == int(row.argmax()) and label == label_names[int(index)]
        assert abs(float(score) - float(row.max())) < 1e-4
    # Every model that returns logits carries the file, in label order.
    labels_file = (tiny_server.model_repository / "tiny_full_encoder" / LABELS_FILE).read_text().split()
    assert labels_file == label_names


@pytest.mark.server
def test_the_cli_prints_label_names(tiny_export: Path, tiny_server: TritonServer, capsys) -> None:
    assert client_main(["classify", "--url", tiny_server.grpc_url, "--class", "batch", TEXTS[0]]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["label_name"] == _label_names(tiny_export)[line["label"]]
