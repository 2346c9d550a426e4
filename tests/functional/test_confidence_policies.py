"""Confidence policies other than max-prob, served: the margin and entropy policies decide the exits of the router's
cascade targets and of a cascade model, as the policies computed locally on the exported stages say."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import expected_exits, local_exit_logits, make_server, set_thresholds, split_thresholds
from test_router_server import build_router_repo

from adaptive_client.client import AdaptiveClient
from adaptive_core import names
from adaptive_core.confidence import get_policy
from adaptive_core.router_plan import RouterPlan
from adaptive_export.toy import toy_samples
from adaptive_serving.tokenizer import TextTokenizer

pytestmark = pytest.mark.server

_POOL = toy_samples(600, seed=5).texts
SHORT = [t for t in _POOL if len(t.split()) <= 6][:12]  # the test router's length estimator: the first target
LONG = [t for t in _POOL if len(t.split()) >= 12][:12]  # ... and the second


def _expected(
    tiny_export: Path, texts: list[str], policy: str
) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
    """Split thresholds under `policy`, and the exit stage, label and confidence each text must get with them."""
    logits = local_exit_logits(tiny_export, "tiny", texts)
    conf = np.stack([get_policy(policy)(lg) for lg in logits])
    thresholds = split_thresholds(conf)
    stage = expected_exits(conf, thresholds)
    rows = np.arange(len(texts))
    return thresholds, stage, logits[stage - 1, rows].argmax(-1), conf[stage - 1, rows]


def test_margin_and_entropy_policies_decide_the_exits_on_a_server(tiny_export: Path, tmp_path: Path) -> None:
    margin = _expected(tiny_export, SHORT, "margin")
    entropy = _expected(tiny_export, LONG, "entropy")
    repo = build_router_repo(tiny_export, tmp_path, second="cascade")
    plan_path = repo / "router" / "1" / "plan.json"
    plan = RouterPlan.read(plan_path)
    targets = [
        dataclasses.replace(t, cascade=dataclasses.replace(t.cascade, confidence=policy, thresholds=tuple(thr)))
        for t, (policy, thr) in zip(plan.targets, (("margin", margin[0]), ("entropy", entropy[0])))
    ]
    dataclasses.replace(plan, targets=tuple(targets)).write(plan_path)
    # The cascade model on its own, with the entropy policy, answers the long texts the same way.
    set_thresholds(repo, entropy[0])
    cascade_plan = repo / "cascade_tiny" / "1" / "plan.json"
    cascade_plan.write_text(cascade_plan.read_text().replace('"max_prob"', '"entropy"'))
    assert '"entropy"' in cascade_plan.read_text()
    with make_server(repo, tmp_path) as server:
        with AdaptiveClient(server.grpc_url) as client:
            routed = client.classify(SHORT + LONG)
        ids, mask = TextTokenizer(tiny_export / "tokenizer" / "tokenizer.json", max_len=32)(LONG)
        inputs = []
        for name, value in ((names.INPUT_IDS, ids), (names.ATTENTION_MASK, mask)):
            inputs.append(grpcclient.InferInput(name, list(value.shape), "INT64"))
            inputs[-1].set_data_from_numpy(value)
        direct = grpcclient.InferenceServerClient(server.grpc_url).infer("cascade_tiny", inputs)
    for results, (_, stage, label, conf), size in ((routed[:12], margin, "tiny"), (routed[12:], entropy, "tiny_again")):
        assert [r.model_size for r in results] == [size] * 12
        assert [r.exit_stage for r in results] == stage.tolist() and set(stage.tolist()) == {1, 2}
        assert [r.label for r in results] == label.tolist()
        np.testing.assert_allclose([r.confidence for r in results], conf, atol=1e-4)
    _, stage, label, conf = entropy
    assert direct.as_numpy(names.EXIT_STAGE).ravel().tolist() == stage.tolist()
    assert direct.as_numpy(names.LABEL).ravel().tolist() == label.tolist()
    np.testing.assert_allclose(direct.as_numpy(names.CONFIDENCE).ravel(), conf, atol=1e-4)
