"""Custom metrics of the Python models (adaptive_serving.metrics), read from the real server's metrics port:
counters move by exactly what the answers say, per latency class; Triton's own metric names the dashboard and
the autoscaler use exist."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import make_server, scrape_settled
from test_router_server import LONG, SHORT, router_repo  # noqa: F401 - the router fixture on the tiny family

from adaptive_client.client import AdaptiveClient, RejectedError
from adaptive_core.config import LATENCY_CLASSES
from adaptive_core.metrics import (
    DEADLINE_CUTS,
    EXITS,
    KNOWN_METRICS,
    MODEL_LATENCY,
    ROUTED,
    TRITON_METRICS,
    class_of_timeout,
    metric_sum,
    parse_metrics,
    stage_counts,
)
from adaptive_ops.server import TritonServer

TEXTS = [
    "Shares fell sharply on Monday",
    "The striker scored twice",
    "Parliament debated the bill",
    "A new phone was unveiled",
    "The film won three awards",
]


def _delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)


def test_class_of_timeout_matches_the_class_table() -> None:
    for cls in LATENCY_CLASSES.values():
        assert class_of_timeout(cls.queue_timeout_us) == cls.name
    assert class_of_timeout(1) == "critical"
    assert class_of_timeout(LATENCY_CLASSES["critical"].queue_timeout_us + 1) == "sensitive"
    assert class_of_timeout(10 * LATENCY_CLASSES["sensitive"].queue_timeout_us) == "batch"


def test_parse_metrics_reads_labels_and_histograms() -> None:
    text = (
        '# HELP x_total c\n# TYPE x_total counter\nx_total{model="m",class="critical",stage="1"} 3\n'
        'x_total{model="m",class="batch",stage="1"} 4\nh_ms_bucket{class="a",le="+Inf"} 2\nplain 1.5\n'
    )
    samples = parse_metrics(text)
    assert metric_sum(samples, "x_total", model="m") == 7
    assert metric_sum(samples, "x_total", **{"class": "critical"}) == 3
    assert metric_sum(samples, "h_ms_bucket", le="+Inf") == 2
    assert metric_sum(samples, "plain") == 1.5
    assert stage_counts([1, 1, 3, 0]) == {1: 2, 3: 1}


def _send(server: TritonServer, plan: list[tuple[str, int]]) -> dict[str, list]:
    """Send one request per (class, batch) entry; the answers per class (a shed request is left out: it never
    reached the model, so it must not count)."""
    answers: dict[str, list] = {c: [] for c in LATENCY_CLASSES}
    with AdaptiveClient(server.grpc_url) as client:
        for i, (klass, batch) in enumerate(plan):
            texts = [TEXTS[(i + j) % len(TEXTS)] for j in range(batch)]
            try:
                answers[klass].append(client.classify(texts, latency_class=klass))
            except RejectedError:
                continue
    return answers


@pytest.mark.server
def test_cascade_counts_exits_cuts_and_latency_per_class(tiny_server: TritonServer) -> None:
    before = scrape_settled(tiny_server)
    answers = _send(tiny_server, [("critical", 3), ("batch", 5), ("critical", 1), ("batch", 2), ("critical", 4)])
    after = scrape_settled(tiny_server)
    assert answers["critical"] and answers["batch"], "both classes must have answers to compare"
    for klass, requests in answers.items():
        results = [r for request in requests for r in request]
        labels = {"model": "cascade_tiny", "class": klass, "size": "tiny"}
        for stage, n in Counter(r.exit_stage for r in results).items():
            assert _delta(before, after, EXITS.name, **labels, stage=str(stage)) == n, (klass, stage)
        assert _delta(before, after, EXITS.name, **labels) == len(results), klass
        assert _delta(before, after, DEADLINE_CUTS.name, **labels) == sum(r.deadline_cut for r in results), klass
        count = _delta(before, after, f"{MODEL_LATENCY.name}_count", model="cascade_tiny", **{"class": klass})
        assert count == len(requests), klass
    # Every series exists before traffic and the metric families the dashboard names are all exported.
    exported = {name for name, _ in after}
    assert KNOWN_METRICS - {f"{ROUTED.name}"} <= exported, sorted(KNOWN_METRICS - exported)
    assert set(TRITON_METRICS) <= exported


@pytest.mark.server
def test_router_counts_routed_sizes_per_class(router_repo: Path, tmp_path: Path) -> None:  # noqa: F811
    with make_server(router_repo, tmp_path) as server:
        before = scrape_settled(server)
        answers: dict[str, list] = {"critical": [], "sensitive": []}
        with AdaptiveClient(server.grpc_url) as client:
            for klass, texts in (("critical", SHORT), ("sensitive", LONG), ("sensitive", SHORT[:1])):
                try:
                    answers[klass].append(client.classify(texts, latency_class=klass))
                except RejectedError:
                    continue
        after = scrape_settled(server)
    assert answers["sensitive"], "the sensitive requests must be answered"
    for klass, requests in answers.items():
        results = [r for request in requests for r in request]
        # Without escalation thresholds a text is answered where it was routed: short ones on tiny, long on full.
        for size in ("tiny", "full"):
            routed = _delta(before, after, ROUTED.name, model="router", size=size, **{"class": klass})
            answered = sum(r.model_size == size for r in results)
            assert routed == answered, (klass, size)
            assert _delta(before, after, EXITS.name, model="router", size=size, **{"class": klass}) == answered
    assert _delta(before, after, ROUTED.name, model="router", size="full", **{"class": "sensitive"}) == len(LONG)
    assert _delta(before, after, ROUTED.name, model="router", **{"class": "batch"}) == 0
