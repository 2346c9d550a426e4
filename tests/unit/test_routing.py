"""The route/escalate loop (`adaptive_core.routing.route`) and the gate's lane choice, without a server."""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
import pytest

from adaptive_core.cascade import CascadePlan
from adaptive_core.config import LATENCY_CLASSES
from adaptive_core.lanes import LaneOptions, class_caps
from adaptive_core.router_plan import RouterPlan, RouteTarget
from adaptive_core.routing import TargetAnswer, route
from adaptive_ops.options_cli import add_arguments, field_docs, from_arguments
from adaptive_ops.repository import RepositoryOptions
from adaptive_serving.gate import Gate


def _plan(escalate: tuple[float, ...] = (0.7, 0.8, 0.0)) -> RouterPlan:
    def cascade(size: str) -> CascadePlan:
        return CascadePlan(size, (f"{size}_stage1", f"{size}_stage2"), (1, 2), (0.5,), "max_prob", 64)

    return RouterPlan(
        targets=(
            RouteTarget("small", "cascade", 0.1, cascade=cascade("small")),
            RouteTarget("medium", "cascade", 0.4, cascade=cascade("medium")),
            RouteTarget("large", "logits_model", 1.0, model_name="large_full"),
        ),
        route_threshold=0.5,
        escalate_thresholds=escalate,
    )


class FakeTargets:
    """Targets that answer from a table: `scores[t][row]` is target t's confidence on row, its label is `10 * t`."""

    def __init__(self, scores: list[list[float]], *, too_slow: set[int] = frozenset()) -> None:
        self.scores = np.array(scores, np.float32)
        self.too_slow = too_slow
        self.calls: list[tuple[int, list[int]]] = []

    async def run(self, t: int, rows: np.ndarray) -> TargetAnswer:
        self.calls.append((t, rows.tolist()))
        n = rows.size
        stage = np.full(n, 2, np.int32)
        return TargetAnswer(np.full(n, 10 * t), self.scores[t, rows], stage, 2 * stage, np.zeros(n, bool))

    def fits(self, t: int, rows: np.ndarray) -> bool:
        return t not in self.too_slow


def _route(plan: RouterPlan, start: list[int], targets: FakeTargets):
    return asyncio.run(route(plan, np.array(start), targets.run, targets.fits))


def test_texts_start_where_routed_and_escalate_while_unsure() -> None:
    # row 0: small is sure; row 1: small unsure, medium sure; row 2: unsure everywhere; row 3: starts at medium.
    targets = FakeTargets([[0.9, 0.2, 0.1, 0.0], [0.0, 0.95, 0.3, 0.9], [0.0, 0.0, 0.4, 0.0]])
    routed = _route(_plan(), [0, 0, 0, 1], targets)
    assert targets.calls == [(0, [0, 1, 2]), (1, [1, 2, 3]), (2, [2])]  # each target runs once, rows joined
    assert routed.target.tolist() == [0, 1, 2, 1]
    assert routed.label.tolist() == [0, 10, 20, 10]
    assert routed.escalations.tolist() == [0, 1, 2, 0]
    np.testing.assert_allclose(routed.score, [0.9, 0.95, 0.4, 0.9])
    assert not routed.cut.any()


def test_the_exit_decision_is_at_or_above_the_threshold() -> None:
    # Exactly at the escalate threshold counts as sure (`confidence.should_exit`), just below does not.
    targets = FakeTargets([[0.7, 0.6999], [0.0, 0.9], [0.0, 0.0]])
    routed = _route(_plan(), [0, 0], targets)
    assert routed.target.tolist() == [0, 1]


def test_an_escalation_that_would_overrun_the_deadline_keeps_the_answer_flagged() -> None:
    targets = FakeTargets([[0.1, 0.9], [0.0, 0.0], [0.0, 0.0]], too_slow={1})
    routed = _route(_plan(), [0, 0], targets)
    assert targets.calls == [(0, [0, 1])]
    assert routed.target.tolist() == [0, 0] and routed.cut.tolist() == [True, False]
    assert routed.escalations.tolist() == [0, 0]
    # Texts that start at the slow target still run there: only escalations are judged.
    targets = FakeTargets([[0.1, 0.0], [0.0, 0.99], [0.0, 0.0]], too_slow={1})
    routed = _route(_plan(), [0, 1], targets)
    assert targets.calls == [(0, [0]), (1, [1])] and routed.cut.tolist() == [True, False]


def test_the_last_target_always_answers() -> None:
    targets = FakeTargets([[0.0], [0.0], [0.01]])
    routed = _route(_plan(escalate=(1.0, 1.0, 1.0)), [2], targets)
    assert routed.target.tolist() == [2] and routed.escalations.tolist() == [0]


def test_the_gate_picks_the_lane() -> None:
    critical = LATENCY_CLASSES["critical"].queue_timeout_us
    caps = class_caps(1, 1)
    plain = Gate("m", caps, express_max_timeout_us=critical)
    assert plain.express(critical) and plain.express(1)
    assert not plain.express(0) and not plain.express(critical + 1)  # no board: never "alone"
    assert not Gate("m", caps).express(critical)  # no express lane at all

    class Board:  # the server-wide count of requests in flight
        count = 1

        def total(self) -> int:
            return self.count

    board = Board()
    solo = Gate("m", caps, board=board, express_max_timeout_us=critical)
    assert solo.express(0)  # alone in the server: express
    board.count = 2
    assert not solo.express(0) and solo.express(critical)


def test_repository_flags_are_generated_from_the_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, RepositoryOptions)
    defaults = from_arguments(RepositoryOptions, parser.parse_args([]))
    assert defaults == RepositoryOptions()
    args = parser.parse_args(["--no-router", "--no-solo-express", "--express-instances", "2", "--runtime", "torch"])
    opts = from_arguments(RepositoryOptions, args)
    assert (opts.router, opts.runtime) == (False, "torch")
    assert opts.lanes == LaneOptions(solo_express=False, express_instances=2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--runtime", "tensorrt"])  # choices come from the field's metadata
    # Every field has help text from the docstring: a new option without a description fails here.
    for cls in (RepositoryOptions, LaneOptions):
        docs = field_docs(cls)
        assert set(docs) == set(cls.__dataclass_fields__), cls.__name__
        assert all(docs.values())
