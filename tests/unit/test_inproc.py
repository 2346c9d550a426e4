"""The in-process cascade (`adaptive_serving.inproc`) on the CPU: the same answers as the stage chain it replaces,
survivors compacted between stages, and fused attention equal to the plain one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptive_core import names
from adaptive_core.cascade import CascadePlan, CascadeState
from adaptive_core.confidence import get_policy
from adaptive_core.config import EarlyExitConfig
from adaptive_ops.repository import load_plan
from adaptive_serving.encoder import load_weights, use_fused_attention
from adaptive_serving.inproc import InprocCascade
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


@pytest.fixture(scope="module")
def tokens(tiny_export: Path) -> tuple[np.ndarray, np.ndarray]:
    return TextTokenizer(tiny_export / "tokenizer" / "tokenizer.json", max_len=32)(TEXTS)


@pytest.fixture(scope="module")
def plan(tiny_export: Path) -> CascadePlan:
    raw = json.loads((tiny_export / "tiny" / "thresholds.json").read_text())
    return load_plan(tiny_export, EarlyExitConfig(**raw["config"]))


def chain(weights: Path, plan: CascadePlan, ids: np.ndarray, mask: np.ndarray) -> CascadeState:
    """The stage chain's answers, as the BLS cascade computes them: one TorchStage per stage, survivors' rows."""
    state = CascadeState(ids.shape[0], get_policy(plan.confidence))
    x, m = torch.from_numpy(ids), torch.from_numpy(mask)
    for stage in range(1, len(plan.stage_models) + 1):
        first, last = stage == 1, stage == len(plan.stage_models)
        out = TorchStage(weights, stage).run(
            {names.INPUT_IDS if first else names.HIDDEN_IN: x, names.ATTENTION_MASK: m}
        )
        stay = state.observe(stage, out[names.LOGITS].numpy(), None if last else plan.thresholds[stage - 1])
        if state.done:
            break
        x, m = out[names.HIDDEN][torch.from_numpy(stay)], m[torch.from_numpy(stay)]
    return state


def test_answers_match_the_stage_chain(tiny_export: Path, tokens, plan: CascadePlan) -> None:
    ids, mask = tokens
    weights = tiny_export / "tiny" / "weights.safetensors"
    # Thresholds at the median of stage 1's confidences, so samples leave early and late whatever the random weights.
    first = TorchStage(weights, 1).run(
        {names.INPUT_IDS: torch.from_numpy(ids), names.ATTENTION_MASK: torch.from_numpy(mask)}
    )
    mid = float(np.median(get_policy(plan.confidence)(first[names.LOGITS].numpy())))
    plan = CascadePlan(**{**plan.__dict__, "thresholds": (mid,) * len(plan.thresholds)})
    want = chain(weights, plan, ids, mask)
    got = InprocCascade(weights, plan, sep_id=102).run(ids, mask)
    assert 1 in want.exit_stage and len(set(want.exit_stage)) >= 2  # early and late exits both taken
    np.testing.assert_array_equal(got.exit_stage, want.exit_stage)
    np.testing.assert_array_equal(got.label, want.label)
    np.testing.assert_allclose(got.score, want.score, atol=1e-4)
    assert not got.deadline_cut.any()


def test_joined_requests_split_back(tiny_export: Path, tokens, plan: CascadePlan) -> None:
    ids, mask = tokens
    cascade = InprocCascade(tiny_export / "tiny" / "weights.safetensors", plan, sep_id=102)
    whole = cascade.run(ids, mask)
    narrow = int(mask[:2].sum(axis=1).max())  # a request of narrower texts joins a wider one
    parts = cascade.run_batched([(ids[:2, :narrow], mask[:2, :narrow]), (ids[2:], mask[2:])])
    assert [p.label.shape[0] for p in parts] == [2, len(TEXTS) - 2]
    np.testing.assert_array_equal(np.concatenate([p.exit_stage for p in parts]), whole.exit_stage)
    np.testing.assert_allclose(np.concatenate([p.score for p in parts]), whole.score, atol=1e-5)


def test_fused_attention_matches_the_plain_one(tiny_export: Path, tokens) -> None:
    ids, mask = (torch.from_numpy(t) for t in tokens)
    model = load_weights(tiny_export / "tiny" / "weights.safetensors")
    with torch.inference_mode():
        plain = model(ids, mask)
        fused = use_fused_attention(model)(ids, mask)
    for p, f in zip(plain, fused):
        torch.testing.assert_close(f, p, atol=1e-5, rtol=1e-5)


def test_reduced_precision_runs(tiny_export: Path, tokens, plan: CascadePlan) -> None:
    ids, mask = tokens
    state = InprocCascade(tiny_export / "tiny" / "weights.safetensors", plan, sep_id=102, dtype="bfloat16").run(
        ids, mask
    )
    assert (state.exit_stage >= 1).all() and np.isfinite(state.score).all()
    with pytest.raises(ValueError, match="dtype must be one of"):
        InprocCascade(tiny_export / "tiny" / "weights.safetensors", plan, sep_id=102, dtype="int8")
