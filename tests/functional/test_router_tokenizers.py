"""Per-size tokenization in the router, on a real server: a routed size with its own vocabulary gets its texts
tokenized with its own tokenizer (not the entry's tokens), and answers exactly as its own entry (`<size>_exit`) does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_server
from onnx import TensorProto, helper

from adaptive_client.client import AdaptiveClient
from adaptive_core import names
from adaptive_core.complexity_features import NUM_FEATURES
from adaptive_core.router_plan import RouterPlan
from adaptive_ops.repository import RepositoryOptions, build_repository

pytestmark = pytest.mark.server

# Capitals: the cased tokenizer splits them into other word pieces (or [UNK]) than the uncased one does.
TEXTS = ["HOLLYWOOD Blockbuster Bores", "A QUIET, Tender Film", "the plot is thin", "MAGNIFICENT"]


def _constant_estimator(path: Path) -> None:
    """An 'estimator' that gives both targets equal probability: with route threshold 0.5 every text starts at the
    first target."""
    w = np.zeros((NUM_FEATURES, 2), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["features", "W", "B"], ["size_logits"])],
        "constant_router",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", NUM_FEATURES])],
        [helper.make_tensor_value_info("size_logits", TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor("B", TensorProto.FLOAT, [2], np.zeros(2, np.float32)),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def two_vocabulary_export(tiny_export: Path, tmp: Path) -> Path:
    """The tiny export plus a size `cased`: the same weights, but its tokenizer keeps case (a different file and,
    for these texts, different tokens); a router over (tiny, cased) that sends every text on to `cased`."""
    export = tmp / "export"
    shutil.copytree(tiny_export, export)
    shutil.copytree(export / "tiny", export / "cased")
    thr = json.loads((export / "cased" / "thresholds.json").read_text())
    thr["size"], thr["config"]["name"] = "cased", "cased"
    thr["stage_models"] = [m.replace("tiny", "cased") for m in thr["stage_models"]]
    (export / "cased" / "thresholds.json").write_text(json.dumps(thr))
    tok = json.loads((export / "tokenizer" / "tokenizer.json").read_text())
    tok["normalizer"]["lowercase"] = False
    (export / "cased" / "tokenizer").mkdir(exist_ok=True)
    (export / "cased" / "tokenizer" / "tokenizer.json").write_text(json.dumps(tok))
    manifest = json.loads((export / "manifest.json").read_text())
    flops = manifest["flops_per_sample_eval_mix"]
    manifest["flops_per_sample_eval_mix"] = {"tiny": flops["tiny"], "cased": 2 * flops["tiny"]}
    (export / "manifest.json").write_text(json.dumps(manifest))
    (export / "complexity").mkdir(exist_ok=True)
    _constant_estimator(export / "complexity" / "estimator.onnx")
    router = {
        "sizes": ["tiny", "cased"],
        "estimator": "complexity/estimator.onnx",
        "q": 0.5,
        "escalate_thresholds": {"tiny": 1.0},  # no answer is that sure: every text goes on to `cased`
        "max_accuracy_loss": 0.005,
    }
    (export / "complexity" / "router.json").write_text(json.dumps(router))
    return export


def test_router_tokenizes_for_a_size_with_its_own_vocabulary(tiny_export: Path, tmp_path: Path) -> None:
    export = two_vocabulary_export(tiny_export, tmp_path)
    repo = tmp_path / "repo"
    build_repository(export, repo, RepositoryOptions(entry_size="tiny", audit_rate=0.0, outcomes_file=""))
    plan = RouterPlan.read(repo / "router" / "1" / "plan.json")
    # The entry tokenizes for the cheapest target; only `cased` names a tokenizer, copied beside the plan.
    assert [t.cascade.tokenizer for t in plan.targets] == ["", "tokenizer_cased.json"]
    assert (repo / "router" / "1" / "tokenizer_cased.json").read_bytes() == (
        export / "cased" / "tokenizer" / "tokenizer.json"
    ).read_bytes()
    assert 'model_name: "tokenizer_tiny"' in (repo / "adaptive" / "config.pbtxt").read_text()

    wanted = [names.LABEL, names.CONFIDENCE, names.MODEL_SIZE, names.ESCALATIONS]
    answers = [names.LABEL, names.CONFIDENCE]
    with make_server(repo, tmp_path) as server:
        with AdaptiveClient(server.grpc_url) as client:
            routed = client.infer_raw(TEXTS, wanted)
        with AdaptiveClient(server.grpc_url, "cased_exit") as client:
            own = client.infer_raw(TEXTS, answers)
        with AdaptiveClient(server.grpc_url, "tiny_exit") as client:
            entry_tokens = client.infer_raw(TEXTS, answers)
    assert routed[names.MODEL_SIZE].ravel().tolist() == [b"cased"] * len(TEXTS)
    assert routed[names.ESCALATIONS].ravel().tolist() == [1] * len(TEXTS)
    # Exactly what `cased` answers through its own tokenizer model ...
    np.testing.assert_array_equal(routed[names.LABEL], own[names.LABEL])
    np.testing.assert_allclose(routed[names.CONFIDENCE], own[names.CONFIDENCE], atol=1e-6)
    # ... and not what the same weights answer on the entry's (uncased) tokens.
    assert not np.allclose(own[names.CONFIDENCE], entry_tokens[names.CONFIDENCE], atol=1e-6)
