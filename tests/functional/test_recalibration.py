"""Recalibration in the stricter direction, reaching the running server: audited outcomes where early exits disagree
with the audit model raise the exit threshold (and the routing and escalation thresholds), and the router picks the
new plan up without a restart. (test_router_server checks the cheaper direction.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import local_exit_logits, make_server
from test_router_server import build_router_repo

from adaptive_client.client import AdaptiveClient
from adaptive_core import names
from adaptive_core.confidence import max_prob
from adaptive_core.router_plan import RouterPlan
from adaptive_export.toy import toy_samples
from adaptive_ops.recalibrate import main as recalibrate_main
from adaptive_serving.outcomes import read_outcomes

pytestmark = pytest.mark.server

# Ambiguous toy texts (a keyword of two classes: where the exits can disagree) of at most 6 words: the test router's
# length estimator gives them P(tiny is enough) > 0.99, so they start at the tiny cascade before and after the
# routing threshold steps from 0.5 to 0.9.
_POOL = toy_samples(4000, seed=21)
TRAFFIC = [t for t, k in zip(_POOL.texts, _POOL.kinds) if k == "ambiguous" and len(t.split()) <= 6][:160]
REQUEST = 32  # texts per request: each request is audited as one


def _answers(server: object) -> dict[str, np.ndarray]:
    got: dict[str, list[np.ndarray]] = {names.EXIT_STAGE: [], names.MODEL_SIZE: []}
    with AdaptiveClient(server.grpc_url) as client:
        for start in range(0, len(TRAFFIC), REQUEST):
            out = client.infer_raw(TRAFFIC[start : start + REQUEST], list(got))
            for name in got:
                got[name].append(out[name].ravel())
    return {name: np.concatenate(v) for name, v in got.items()}


def test_a_strict_recalibration_raises_the_exit_threshold_of_the_running_router(
    tiny_export: Path, tmp_path: Path
) -> None:
    repo = build_router_repo(tiny_export, tmp_path)
    plan_path = repo / "router" / "1" / "plan.json"
    old = RouterPlan.read(plan_path)
    t_old = old.targets[0].cascade.thresholds[0]
    logits = local_exit_logits(tiny_export, "tiny", TRAFFIC)
    conf1 = max_prob(logits[0])
    early = conf1 >= t_old
    disagree = early & (logits[0].argmax(-1) != logits[-1].argmax(-1))  # audit: tiny_full, the last exit's answer
    assert len(TRAFFIC) == 160 and disagree.any(), "the traffic must hold early exits the audit disagrees with"
    with make_server(repo, tmp_path) as server:
        before = _answers(server)
        assert set(before[names.MODEL_SIZE].tolist()) == {b"tiny"}
        assert before[names.EXIT_STAGE].tolist() == np.where(early, 1, 2).tolist()
        deadline = time.monotonic() + 30
        while len(read_outcomes(tmp_path / "outcomes.jsonl")) < len(TRAFFIC) and time.monotonic() < deadline:
            time.sleep(0.2)  # audits run after the answers
        records = read_outcomes(tmp_path / "outcomes.jsonl")
        assert len(records) == len(TRAFFIC) and all(r["audit_label"] is not None for r in records)
        args = ["--outcomes", str(tmp_path / "outcomes.jsonl"), "--plan", str(plan_path)]
        assert recalibrate_main([*args, "--max-disagreement", "0.0", "--step", "0.4"]) == 0
        new = RouterPlan.read(plan_path)
        t_new = new.targets[0].cascade.thresholds[0]
        # Just above the most confident early exit the audit disagreed with; routing and escalation went up too.
        assert t_new == pytest.approx(float(conf1[disagree].max()), abs=1e-4) and t_new > t_old
        assert new.route_threshold == pytest.approx(old.route_threshold + 0.4)
        assert new.escalate_thresholds == pytest.approx(tuple(min(1.0, e + 0.4) for e in old.escalate_thresholds))
        time.sleep(1.5)  # the router re-reads its plan within its reload interval (0.5 s here)
        after = _answers(server)
    moved = early & (conf1 < t_new - 1e-4)  # left at stage 1 before, not confident enough now
    stays = conf1 >= t_new + 1e-4
    assert moved.sum() >= 1 and (before[names.EXIT_STAGE][moved] == 1).all()
    # Now past stage 1: answered at stage 2, or escalated to the full model (whose one stage reads as stage 1).
    tiny_stage1 = (after[names.EXIT_STAGE] == 1) & (after[names.MODEL_SIZE] == b"tiny")
    assert not tiny_stage1[moved].any(), (after[names.EXIT_STAGE][moved], after[names.MODEL_SIZE][moved])
    assert (after[names.EXIT_STAGE][stays] == 1).all() and set(after[names.MODEL_SIZE][stays].tolist()) == {b"tiny"}
    assert json.loads(plan_path.read_text())["targets"][0]["cascade"]["thresholds"][0] == t_new
