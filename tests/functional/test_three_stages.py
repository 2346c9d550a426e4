"""A served cascade of three stages (TINY3, an exit after each of its 3 layers; the large size has 3): the middle
stage takes and gives hidden states, and the survivors of each exit are re-indexed twice, in both lanes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import expected_exits, local_exit_logits, make_server, set_thresholds, split_thresholds

from adaptive_core import names
from adaptive_core.confidence import max_prob
from adaptive_export.toy import toy_samples
from adaptive_ops.repository import RepositoryOptions, build_repository

pytestmark = pytest.mark.server

TEXTS = list(toy_samples(24, seed=3).texts)  # easy, hard and ambiguous toy texts: confidences spread out


def _infer(url: str, texts: list[str]) -> grpcclient.InferResult:
    data = np.array([[t.encode()] for t in texts], dtype=np.object_)  # (B, 1)
    inp = grpcclient.InferInput(names.TEXT, list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    return grpcclient.InferenceServerClient(url).infer("adaptive", [inp])


def _inferences(url: str, model: str) -> int:
    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(model, as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))


def test_three_stage_cascade_answers_each_text_at_its_first_confident_exit(tiny3_export: Path, tmp_path: Path) -> None:
    logits = local_exit_logits(tiny3_export, "tiny3", TEXTS)  # (3, N, C)
    conf = np.stack([max_prob(lg) for lg in logits])
    thresholds = split_thresholds(conf)
    want_stage = expected_exits(conf, thresholds)
    assert set(want_stage.tolist()) == {1, 2, 3}, want_stage  # every stage answers some texts
    want_label = logits[want_stage - 1, np.arange(len(TEXTS))].argmax(-1)
    want_conf = conf[want_stage - 1, np.arange(len(TEXTS))]
    repo = tmp_path / "repo"
    build_repository(tiny3_export, repo, RepositoryOptions(entry_size="tiny3"))
    set_thresholds(repo, thresholds, size="tiny3")
    with make_server(repo, tmp_path) as server:
        stages = [f"tiny3_stage{s}{lane}" for s in (1, 2, 3) for lane in ("", "_express")]
        before = {m: _inferences(server.grpc_url, m) for m in stages}
        results = [_infer(server.grpc_url, TEXTS)]  # alone in the server: the express lane

        def concurrent() -> None:
            results.append(_infer(server.grpc_url, TEXTS))

        threads = [threading.Thread(target=concurrent) for _ in range(6)]  # in company: the standard lane too
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        calls = {m: _inferences(server.grpc_url, m) - n for m, n in before.items()}
    assert len(results) == 7
    for result in results:
        assert result.as_numpy(names.EXIT_STAGE).ravel().tolist() == want_stage.tolist()
        assert result.as_numpy(names.EXIT_LAYER).ravel().tolist() == want_stage.tolist()  # one layer per stage
        assert result.as_numpy(names.LABEL).ravel().tolist() == want_label.tolist()
        np.testing.assert_allclose(result.as_numpy(names.CONFIDENCE).ravel(), want_conf, atol=1e-4)
        assert not result.as_numpy(names.DEADLINE_CUT).any()
    # Stage k saw exactly the texts that no earlier exit answered, in every request, summed over both lanes.
    for stage in (1, 2, 3):
        texts_in = int((want_stage >= stage).sum())
        assert calls[f"tiny3_stage{stage}"] + calls[f"tiny3_stage{stage}_express"] == 7 * texts_in, (stage, calls)
    assert calls["tiny3_stage3_express"] > 0 and calls["tiny3_stage3"] > 0, calls  # both lanes went three deep
