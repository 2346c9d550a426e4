"""The torch stage runtime served: a repository built with `--runtime torch` answers like the ONNX one, on texts
the calibrated threshold splits between the two exits, in both lanes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import expected_exits, local_exit_logits, make_server

from adaptive_client.client import AdaptiveClient, CascadeResult, RejectedError
from adaptive_core import names
from adaptive_core.confidence import max_prob
from adaptive_export.toy import toy_samples
from adaptive_ops.repository import RepositoryOptions, build_repository
from adaptive_ops.server import TritonServer

MARGIN = 0.01  # confidence kept from the threshold, so float32 differences between the runtimes cannot flip an exit


def _texts_split_by_the_threshold(tiny_export: Path) -> tuple[list[str], float]:
    """Four toy texts that leave at stage 1 and four that go on to stage 2, each clear of the calibrated threshold."""
    threshold = json.loads((tiny_export / "tiny" / "thresholds.json").read_text())["thresholds"][0]
    pool = list(toy_samples(400, seed=11).texts)
    conf1 = max_prob(local_exit_logits(tiny_export, "tiny", pool)[0])
    early = [t for t, c in zip(pool, conf1) if c >= threshold + MARGIN][:4]
    late = [t for t, c in zip(pool, conf1) if c <= threshold - MARGIN][:4]
    assert len(early) == len(late) == 4, (threshold, np.sort(conf1))
    return early + late, threshold


def _classify_uncut(client: AdaptiveClient, texts: list[str], latency_class: str) -> list[CascadeResult]:
    """Answers with no row cut short: a critical request's 50 ms deadline may cut it, or shed it, on a busy machine
    (both by design, neither what is compared here), so such a request is sent again, up to 5 times."""
    for _ in range(5):
        try:
            results = client.classify(texts, latency_class=latency_class)
        except RejectedError:
            continue
        if not any(r.deadline_cut for r in results):
            return results
    raise AssertionError(f"no {latency_class} answer without a deadline cut in 5 tries")


@pytest.mark.server
def test_torch_repository_answers_like_the_onnx_one(
    tiny_export: Path, tiny_server: TritonServer, tmp_path: Path
) -> None:
    texts, threshold = _texts_split_by_the_threshold(tiny_export)
    logits = local_exit_logits(tiny_export, "tiny", texts)
    want_stage = expected_exits(np.stack([max_prob(lg) for lg in logits]), [threshold])
    assert want_stage.tolist() == [1] * 4 + [2] * 4
    repo = tmp_path / "repo"
    build_repository(tiny_export, repo, RepositoryOptions(entry_size="tiny", runtime="torch", intra_op_threads=1))
    with (
        make_server(repo, tmp_path) as server,
        AdaptiveClient(server.grpc_url) as torch_client,
        AdaptiveClient(tiny_server.grpc_url) as onnx_client,
    ):
        for latency_class in ("batch", "critical"):  # a request alone, and a critical one: the express lane
            got = _classify_uncut(torch_client, texts, latency_class)
            want = _classify_uncut(onnx_client, texts, latency_class)
            assert [r.exit_stage for r in got] == [w.exit_stage for w in want] == want_stage.tolist(), latency_class
            for r, w in zip(got, want):
                assert r.label == w.label and abs(r.confidence - w.confidence) < 1e-4, (latency_class, r, w)
        full = AdaptiveClient(server.grpc_url, "tiny_full").infer_raw(texts, [names.LOGITS])[names.LOGITS]
        ref = AdaptiveClient(tiny_server.grpc_url, "tiny_full").infer_raw(texts, [names.LOGITS])[names.LOGITS]
        np.testing.assert_allclose(full, ref, atol=1e-4)
        np.testing.assert_allclose(full, logits[-1], atol=1e-4)
