"""The router's route/escalate loop, apart from Triton: start each text at its routed target, escalate while unsure.

The router model (`adaptive_serving.router`) supplies two callables: `run(t, rows)` answers the texts `rows` with
target `t` (an early-exit cascade, or a text -> logits model), and `fits(t, rows)` says whether escalating `rows` to
target `t` is likely to finish within the request's deadline. Everything else is decided here, so the loop is tested
without a server (tests/unit/test_routing.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from adaptive_core.confidence import should_exit
from adaptive_core.router_plan import RouterPlan


@dataclass(frozen=True)
class TargetAnswer:
    """One target's answer for the rows it ran, in row order.

    Args:
        label: (n,) int64 predicted class.
        score: (n,) float32 confidence of the answer (the target's policy).
        exit_stage: (n,) int32 1-based exit stage (1 for a model without exits).
        exit_layer: (n,) int32 encoder layer of that exit (0 for a model without exits).
        cut: (n,) bool answered early because the next stage would overrun the deadline.
    """

    label: np.ndarray
    score: np.ndarray
    exit_stage: np.ndarray
    exit_layer: np.ndarray
    cut: np.ndarray


@dataclass(frozen=True)
class Routed:
    """Every text's final answer, the target that gave it, and how it got there.

    Args:
        label, score, exit_stage, exit_layer, cut: as in `TargetAnswer`, for all texts.
        target: (n,) int32 index of the answering target in `RouterPlan.targets`.
        escalations: (n,) int32 targets a text went on to after its start.
    """

    label: np.ndarray
    score: np.ndarray
    exit_stage: np.ndarray
    exit_layer: np.ndarray
    cut: np.ndarray
    target: np.ndarray
    escalations: np.ndarray


RunTarget = Callable[[int, np.ndarray], Awaitable[TargetAnswer]]
FitsTarget = Callable[[int, np.ndarray], bool]


async def route(plan: RouterPlan, start: np.ndarray, run: RunTarget, fits: FitsTarget) -> Routed:
    """Run each text at its start target (`start`, from `RouterPlan.start_targets`), then escalate the texts whose
    answer is below the target's escalate threshold to the next target, cheapest first. Texts escalated to a target
    join the texts that start there, so each target runs once. An escalation that `fits` judges too slow is not made:
    those texts keep their answer, flagged `cut`. The last target always answers."""
    n = start.size
    label = np.zeros(n, np.int64)
    score = np.zeros(n, np.float32)
    exit_stage = np.zeros(n, np.int32)
    exit_layer = np.zeros(n, np.int32)
    cut = np.zeros(n, bool)
    target = np.zeros(n, np.int32)
    escalations = np.zeros(n, np.int32)
    pending = np.zeros(0, np.int64)  # rows escalated to the next target
    last = len(plan.targets) - 1
    for t in range(len(plan.targets)):
        if pending.size and not fits(t, pending):
            cut[pending] = True  # keep the smaller target's answer, flagged
            escalations[pending] -= 1
            pending = pending[:0]
        rows = np.sort(np.concatenate([pending, np.flatnonzero(start == t)]))
        if rows.size == 0:
            continue
        answer = await run(t, rows)
        label[rows], score[rows], exit_stage[rows] = answer.label, answer.score, answer.exit_stage
        exit_layer[rows], cut[rows], target[rows] = answer.exit_layer, answer.cut, t
        if t == last:
            break
        unsure = ~should_exit(score[rows], plan.escalate_thresholds[t]) & ~cut[rows]
        pending = rows[unsure]
        escalations[pending] += 1
    return Routed(label, score, exit_stage, exit_layer, cut, target, escalations)
