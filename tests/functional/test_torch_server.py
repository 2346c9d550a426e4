"""The torch stage runtime served: a repository built with `--runtime torch` answers like the ONNX one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_server

from adaptive_client.client import AdaptiveClient
from adaptive_core import names
from adaptive_ops.repository import RepositoryOptions, build_repository
from adaptive_ops.server import TritonServer

TEXTS = [
    "Shares in the bank fell after profits missed forecasts",
    "The striker scored twice",
    "Ministers defended the budget in a heated Commons debate",
    "A new phone",
    "Oil prices rose again",
    "The band announced a world tour and a new album after a long break from the stage",
]


@pytest.mark.server
def test_torch_repository_answers_like_the_onnx_one(
    tiny_export: Path, tiny_server: TritonServer, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    build_repository(tiny_export, repo, RepositoryOptions(entry_size="tiny", runtime="torch", intra_op_threads=1))
    with (
        make_server(repo, tmp_path) as server,
        AdaptiveClient(server.grpc_url) as torch_client,
        AdaptiveClient(tiny_server.grpc_url) as onnx_client,
    ):
        for latency_class in ("batch", "critical"):  # standard and express lanes
            got = torch_client.classify(TEXTS, latency_class=latency_class)
            want = onnx_client.classify(TEXTS)
            assert [r.exit_stage for r in got if not r.deadline_cut] == [
                w.exit_stage for r, w in zip(got, want) if not r.deadline_cut
            ]
            for r, w in zip(got, want):
                if not r.deadline_cut:
                    assert r.label == w.label and abs(r.confidence - w.confidence) < 1e-4
        full = AdaptiveClient(server.grpc_url, "tiny_full").infer_raw(TEXTS, [names.LOGITS])[names.LOGITS]
        ref = AdaptiveClient(tiny_server.grpc_url, "tiny_full").infer_raw(TEXTS, [names.LOGITS])[names.LOGITS]
        np.testing.assert_allclose(full, ref, atol=1e-4)
