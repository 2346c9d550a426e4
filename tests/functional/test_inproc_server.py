"""The in-process cascade served: `cascade_tiny_inproc` answers like the BLS stage chain (`cascade_tiny`) on the
same server, for the same tokens, and the entry models reach it through the ensembles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from conftest import make_server

from adaptive_client.client import AdaptiveClient
from adaptive_core import names
from adaptive_core.confidence import get_policy
from adaptive_core.lanes import LaneOptions
from adaptive_ops.repository import RepositoryOptions, build_repository
from adaptive_serving.tokenizer import TextTokenizer
from adaptive_serving.torch_stage import TorchStage

TEXTS = [
    "Shares in the bank fell after profits missed forecasts",
    "The striker scored twice",
    "Ministers defended the budget in a heated Commons debate",
    "A new phone",
    "Oil prices rose again",
    "The band announced a world tour and a new album after a long break from the stage",
]
# Cheap on a shared 2-core machine: one instance of everything, no express lane, no warm-up.
OPTIONS = RepositoryOptions(
    entry_size="tiny",
    inproc_cascade=True,
    tokenizer_instances=1,
    gate_instances=1,
    intra_op_threads=1,
    warmup=False,
    lanes=LaneOptions(express_lane=False),
)


def _infer(client: grpcclient.InferenceServerClient, model: str, ids: np.ndarray, mask: np.ndarray) -> dict:
    inputs = []
    for name, value in ((names.INPUT_IDS, ids), (names.ATTENTION_MASK, mask)):
        tensor = grpcclient.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value.astype(np.int64))
        inputs.append(tensor)
    wanted = [grpcclient.InferRequestedOutput(n) for n in names.CASCADE_OUTPUTS]
    result = client.infer(model, inputs, outputs=wanted)
    return {n: result.as_numpy(n).reshape(-1) for n in names.CASCADE_OUTPUTS}


@pytest.mark.server
def test_inproc_cascade_answers_like_the_stage_chain(tiny_export: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    build_repository(tiny_export, repo, OPTIONS)
    ids, mask = TextTokenizer(tiny_export / "tokenizer" / "tokenizer.json", max_len=32)(TEXTS)
    # Both cascades get the same threshold, at the median of stage 1's confidences: samples leave at both exits.
    plan_files = [repo / "cascade_tiny" / "1" / "plan.json", repo / "cascade_tiny_inproc" / "1" / "plan.json"]
    plan = json.loads(plan_files[0].read_text())
    first = TorchStage(tiny_export / "tiny" / "weights.safetensors", 1).run(
        {names.INPUT_IDS: torch.from_numpy(ids), names.ATTENTION_MASK: torch.from_numpy(mask)}
    )
    mid = float(np.median(get_policy(plan["confidence"])(first[names.LOGITS].numpy())))
    for path in plan_files:
        raw = json.loads(path.read_text())
        path.write_text(json.dumps({**raw, "thresholds": [mid] * len(raw["thresholds"])}))
    with make_server(repo, tmp_path) as server, grpcclient.InferenceServerClient(server.grpc_url.split("//")[-1]) as c:
        chain = _infer(c, "cascade_tiny", ids, mask)
        inproc = _infer(c, "cascade_tiny_inproc", ids, mask)
        assert 1 in chain[names.EXIT_STAGE] and len(set(chain[names.EXIT_STAGE])) == 2  # both exits taken
        for name in (names.LABEL, names.EXIT_STAGE, names.EXIT_LAYER, names.MODEL_SIZE, names.LABEL_NAME):
            np.testing.assert_array_equal(inproc[name], chain[name], err_msg=name)
        np.testing.assert_allclose(inproc[names.CONFIDENCE], chain[names.CONFIDENCE], atol=1e-4)
        assert not inproc[names.DEADLINE_CUT].any()
        # The entries reach it with each class's priority (and the critical class's queue timeout).
        for model in ("tiny_exit", "adaptive"):
            with AdaptiveClient(server.grpc_url, model) as client:
                for latency_class in ("batch", "critical"):
                    got = client.classify(TEXTS, latency_class=latency_class)
                    assert [r.exit_stage for r in got] == list(chain[names.EXIT_STAGE])
                    assert [r.label_name for r in got] == [b.decode() for b in chain[names.LABEL_NAME]]
                    np.testing.assert_allclose([r.confidence for r in got], chain[names.CONFIDENCE], atol=1e-4)
