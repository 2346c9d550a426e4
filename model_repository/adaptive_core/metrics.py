"""The custom Prometheus metrics of the Python models (names, labels, buckets) and a reader of the exposition.

Triton's own metrics are per model and know nothing of latency classes or of what the cascade and the router
decided. These do (one row per time series; `model` is the Triton model that counted):

    adaptive_exits_total{model, class, size, stage}   samples answered at each exit stage of each size
    adaptive_deadline_cuts_total{model, class, size}  samples answered early because the deadline was near
    adaptive_routed_total{model, class, size}         samples the router started on each size
    adaptive_model_latency_ms{model, class, le}       histogram: time from a request's arrival at the cascade/router
                                                      model to its answer, admission gate included
    adaptive_gate_wait_ms{model, class, le}           histogram: time admitted requests waited at the gate
    adaptive_gate_rejected_total{model, class}        requests the gate refused (timeout expired, or queue full)

A Python model cannot read its request's priority, only its timeout, so the class is read from the timeout the
same way the cascade picks its express lane (`class_of_timeout`). The dashboards, the Prometheus rules and the
autoscaler's adapter rules may only name metrics listed here (`KNOWN_METRICS`); `make docker-check` checks it and
tests/functional/test_metrics.py checks that the local server really exports every one of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from adaptive_core.config import LATENCY_CLASSES


@dataclass(frozen=True)
class MetricSpec:
    """One custom metric family.

    Args:
        name: Prometheus name (Triton exports it as is; histograms add `_bucket`, `_sum`, `_count`).
        description: HELP text.
        labels: label names, in the order the dashboards group by them.
        kind: "counter" or "histogram".
    """

    name: str
    description: str
    labels: tuple[str, ...]
    kind: str = "counter"


EXITS = MetricSpec(
    "adaptive_exits_total",
    "Samples answered at each exit stage, per latency class and model size",
    ("model", "class", "size", "stage"),
)
DEADLINE_CUTS = MetricSpec(
    "adaptive_deadline_cuts_total",
    "Samples answered at an earlier exit because the next stage would overrun the deadline",
    ("model", "class", "size"),
)
ROUTED = MetricSpec(
    "adaptive_routed_total",
    "Samples the router started on each model size, per latency class",
    ("model", "class", "size"),
)
MODEL_LATENCY = MetricSpec(
    "adaptive_model_latency_ms",
    "Time from a request's arrival at the cascade or router model to its answer (admission gate included), ms",
    ("model", "class"),
    kind="histogram",
)
GATE_WAIT = MetricSpec(
    "adaptive_gate_wait_ms",
    "Time admitted requests waited at the admission gate, ms",
    ("model", "class"),
    kind="histogram",
)
GATE_REJECTED = MetricSpec(
    "adaptive_gate_rejected_total",
    "Requests the admission gate refused (timeout expired while waiting, or queue full)",
    ("model", "class"),
)
CUSTOM_METRICS = (EXITS, DEADLINE_CUTS, ROUTED, MODEL_LATENCY, GATE_WAIT, GATE_REJECTED)
# Bucket bounds (ms) of the latency histogram: the classes' budgets (50 ms critical, 200 ms sensitive queue
# timeouts; 250/1000 ms p99 SLAs) fall on bucket edges, so their percentiles interpolate within one bucket.
LATENCY_BUCKETS_MS = (2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0)

# Triton's own metric families that the dashboard, the autoscaler and the alert rules use. All of them are in
# tritonserver 2.51.0's default metrics (checked against a live scrape in tests/functional/test_metrics.py).
TRITON_METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_pending_request_count",
)
KNOWN_METRICS = frozenset(
    [*TRITON_METRICS]
    + [s.name for s in CUSTOM_METRICS if s.kind == "counter"]
    + [f"{s.name}_{suffix}" for s in CUSTOM_METRICS if s.kind == "histogram" for suffix in ("bucket", "sum", "count")]
)


def class_of_timeout(timeout_us: int) -> str:
    """The latency class a request belongs to, from its timeout (what a Python model can see).

    Clients send each class's queue timeout (`LATENCY_CLASSES`); a class without one sends none (0). A timeout
    maps to the tightest class whose timeout it fits under, as the cascade's express lane does for critical;
    0, or a timeout longer than every class's, is the class without a timeout (the most patient one).
    """
    timed = sorted((c for c in LATENCY_CLASSES.values() if c.queue_timeout_us), key=lambda c: c.queue_timeout_us)
    if timeout_us > 0:
        for c in timed:
            if timeout_us <= c.queue_timeout_us:
                return c.name
    patient = [c for c in LATENCY_CLASSES.values() if not c.queue_timeout_us]
    return (patient or timed)[-1].name


def stage_counts(exit_stage: np.ndarray) -> dict[int, int]:
    """Samples per exit stage (1-based), only the stages that occur."""
    stages, counts = np.unique(np.asarray(exit_stage).reshape(-1), return_counts=True)
    return {int(s): int(n) for s, n in zip(stages, counts) if s > 0}


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a Prometheus text exposition: (name, frozenset of label pairs) -> value. Comments are skipped."""
    samples = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m is None or line.startswith("#"):
            continue
        name, labels, value = m.groups()
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def metric_sum(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (a PromQL `sum(name{labels})`)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)
