"""`ModelMetrics`: the custom metrics (`adaptive_core.metrics`) one Python model updates, from inside its stub."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from adaptive_core.config import LATENCY_CLASSES
from adaptive_core.metrics import (
    CUSTOM_METRICS,
    DEADLINE_CUTS,
    EXITS,
    GATE_REJECTED,
    GATE_WAIT,
    LATENCY_BUCKETS_MS,
    MODEL_LATENCY,
    ROUTED,
    MetricSpec,
    class_of_timeout,
    stage_counts,
)


class ModelMetrics:
    """The custom metrics one Python model (an instance) updates. Only works inside a Python-backend stub.

    Instances of a model share the same series (Triton keys them by name and labels), so counts add up across
    instances. Series of every known class, size and stage are created at start, so they read 0 before traffic.

    Updates are handed to a sender thread: each `pb_utils` metric call is a round trip to the server process, which on
    the event loop would stall every request in flight (measured: docs/lab-notes/2026-11-27-bench-classes.md). The
    thread sums counter updates between sends, and the round trips release the GIL, so a scrape lags the answers by a
    few milliseconds at most.

    Args:
        model: the Triton model name (the `model` label).
        stages_per_size: exit stages of each size this model can answer with.
        routes: whether this model routes (creates `adaptive_routed_total`).
    """

    def __init__(self, model: str, stages_per_size: Mapping[str, int], *, routes: bool = False) -> None:
        import triton_python_backend_utils as pb_utils

        self.model = model
        kinds = {"counter": pb_utils.MetricFamily.COUNTER, "histogram": pb_utils.MetricFamily.HISTOGRAM}
        self._families = {
            s.name: pb_utils.MetricFamily(name=s.name, description=s.description, kind=kinds[s.kind])
            for s in CUSTOM_METRICS
            if routes or s is not ROUTED
        }
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
                labels={"model": self.model, **{names.get(k, k): v for k, v in labels.items()}}
            )
        return self._series[key]

    def _histogram(self, spec: MetricSpec, klass: str) -> object:
        key = (spec.name, klass)
        if key not in self._series:
            self._series[key] = self._families[spec.name].Metric(
                labels={"model": self.model, "class": klass}, buckets=list(LATENCY_BUCKETS_MS)
            )
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

    def answered(
        self,
        timeout_us: int,
        sizes: str | np.ndarray,
        exit_stage: np.ndarray,
        deadline_cut: np.ndarray,
        started: float | None,
        routed: Iterable[str] = (),
    ) -> None:
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
