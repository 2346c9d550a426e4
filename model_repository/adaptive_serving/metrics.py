"""Custom Prometheus metrics of the Python models, served on Triton's metrics port beside `nv_inference_*`.

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
tests/test_metrics.py checks that the local server really exports every one of them.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from adaptive_serving.config import LATENCY_CLASSES


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


EXITS = MetricSpec("adaptive_exits_total", "Samples answered at each exit stage, per latency class and model size",
                   ("model", "class", "size", "stage"))
DEADLINE_CUTS = MetricSpec("adaptive_deadline_cuts_total",
                           "Samples answered at an earlier exit because the next stage would overrun the deadline",
                           ("model", "class", "size"))
ROUTED = MetricSpec("adaptive_routed_total", "Samples the router started on each model size, per latency class",
                    ("model", "class", "size"))
MODEL_LATENCY = MetricSpec("adaptive_model_latency_ms",
                           "Time from a request's arrival at the cascade or router model to its answer "
                           "(admission gate included), ms", ("model", "class"), kind="histogram")
GATE_WAIT = MetricSpec("adaptive_gate_wait_ms", "Time admitted requests waited at the admission gate, ms",
                       ("model", "class"), kind="histogram")
GATE_REJECTED = MetricSpec("adaptive_gate_rejected_total",
                           "Requests the admission gate refused (timeout expired while waiting, or queue full)",
                           ("model", "class"))
CUSTOM_METRICS = (EXITS, DEADLINE_CUTS, ROUTED, MODEL_LATENCY, GATE_WAIT, GATE_REJECTED)
# Bucket bounds (ms) of the latency histogram: the classes' budgets (50 ms critical, 200 ms sensitive queue
# timeouts; 250/1000 ms p99 SLAs) fall on bucket edges, so their percentiles interpolate within one bucket.
LATENCY_BUCKETS_MS = (2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0)

# Triton's own metric families that the dashboard, the autoscaler and the alert rules use. All of them are in
# tritonserver 2.51.0's default metrics (checked against a live scrape in tests/test_metrics.py).
TRITON_METRICS = (
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us", "nv_inference_pending_request_count",
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


class ModelMetrics:
    """The custom metrics one Python model (an instance) updates. Only works inside a Python-backend stub.

    Instances of a model share the same series (Triton keys them by name and labels), so counts add up across
    instances. Series of every known class, size and stage are created at start, so they read 0 before traffic.

    Updates are handed to a sender thread: each `pb_utils` metric call is a round trip to the server process
    (0.7 ms a request, 7 ms at p99, measured in the router under overload), which on the event loop would stall
    every request in flight. The thread sums counter updates between sends, and the round trips release the
    GIL, so a scrape lags the answers by a few milliseconds at most.

    Args:
        model: the Triton model name (the `model` label).
        stages_per_size: exit stages of each size this model can answer with.
        routes: whether this model routes (creates `adaptive_routed_total`).
    """

    def __init__(self, model: str, stages_per_size: Mapping[str, int], *, routes: bool = False) -> None:
        import triton_python_backend_utils as pb_utils

        self.model = model
        kinds = {"counter": pb_utils.MetricFamily.COUNTER, "histogram": pb_utils.MetricFamily.HISTOGRAM}
        self._families = {s.name: pb_utils.MetricFamily(name=s.name, description=s.description, kind=kinds[s.kind])
                          for s in CUSTOM_METRICS if routes or s is not ROUTED}
        self._series: dict[tuple, object] = {}  # (metric name, label values) -> pb_utils Metric, kept alive here
        self._counts: Counter[tuple[MetricSpec, tuple[tuple[str, str], ...]]] = Counter()  # not yet sent
        self._observed: list[tuple[MetricSpec, str, float]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        for klass in LATENCY_CLASSES:
            self._histogram(MODEL_LATENCY, klass)
            self._histogram(GATE_WAIT, klass)
            self._counter(GATE_REJECTED, klass=klass)
            for size, stages in stages_per_size.items():
                self._counter(DEADLINE_CUTS, klass=klass, size=size)
                if routes:
                    self._counter(ROUTED, klass=klass, size=size)
                for stage in range(1, stages + 1):
                    self._counter(EXITS, klass=klass, size=size, stage=str(stage))
        threading.Thread(target=self._send_forever, name=f"{model}-metrics", daemon=True).start()

    def _counter(self, spec: MetricSpec, **labels: str) -> object:
        key = (spec.name, *labels.values())
        if key not in self._series:
            names = {"klass": "class"}
            self._series[key] = self._families[spec.name].Metric(
                labels={"model": self.model, **{names.get(k, k): v for k, v in labels.items()}})
        return self._series[key]

    def _histogram(self, spec: MetricSpec, klass: str) -> object:
        key = (spec.name, klass)
        if key not in self._series:
            self._series[key] = self._families[spec.name].Metric(
                labels={"model": self.model, "class": klass}, buckets=list(LATENCY_BUCKETS_MS))
        return self._series[key]

    def _count(self, spec: MetricSpec, n: int, **labels: str) -> None:
        with self._lock:
            self._counts[(spec, tuple(labels.items()))] += n
        self._wake.set()

    def _observe(self, spec: MetricSpec, klass: str, value: float) -> None:
        with self._lock:
            self._observed.append((spec, klass, value))
        self._wake.set()

    def _send_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                counts, self._counts = self._counts, Counter()
                observed, self._observed = self._observed, []
            for (spec, labels), n in counts.items():
                self._counter(spec, **dict(labels)).increment(n)
            for spec, klass, value in observed:
                self._histogram(spec, klass).observe(value)

    def gate_passed(self, klass: str, waited_s: float, *, admitted: bool) -> None:
        """Count one request leaving the admission gate: its wait when admitted, else one rejection."""
        if admitted:
            self._observe(GATE_WAIT, klass, waited_s * 1e3)
        else:
            self._count(GATE_REJECTED, 1, klass=klass)

    def answered(self, timeout_us: int, sizes: str | np.ndarray, exit_stage: np.ndarray, deadline_cut: np.ndarray,
                 started: float | None, routed: Iterable[str] = ()) -> None:
        """Count one answered request.

        Args:
            timeout_us: the request's timeout (`request.timeout()`), which gives its class.
            sizes: the size that answered, one for the request or one per sample.
            exit_stage: (n,) 1-based exit stage per sample.
            deadline_cut: (n,) whether each sample was cut short by the deadline.
            started: `time.monotonic()` when the request arrived at the model; None = its latency is counted by
                the gate model that handed it over (`latency`).
            routed: the size each sample was started on (router only).
        """
        klass = class_of_timeout(timeout_us)
        exit_stage = np.asarray(exit_stage).reshape(-1)
        cut = np.asarray(deadline_cut, dtype=bool).reshape(-1)
        per_sample = np.full(exit_stage.shape, sizes, dtype=object) if isinstance(sizes, str) else np.asarray(sizes)
        for size in np.unique(per_sample):
            rows = per_sample == size
            for stage, n in stage_counts(exit_stage[rows]).items():
                self._count(EXITS, n, klass=klass, size=str(size), stage=str(stage))
            if cut[rows].any():
                self._count(DEADLINE_CUTS, int(cut[rows].sum()), klass=klass, size=str(size))
        for size, n in zip(*np.unique(np.asarray(list(routed), dtype=object), return_counts=True)):
            self._count(ROUTED, int(n), klass=klass, size=str(size))
        if started is not None:
            self.latency(timeout_us, started)

    def latency(self, timeout_us: int, started: float) -> None:
        """Observe one answered request's time in the model, from `started` (`time.monotonic()` at its arrival)."""
        self._observe(MODEL_LATENCY, class_of_timeout(timeout_us), (time.monotonic() - started) * 1e3)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
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
