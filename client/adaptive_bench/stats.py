"""Triton's statistics API, before/after: per-model queue and compute time per request, and the cost of a BLS hop."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

ROUTER = "router"  # the cross-size orchestrator, when the entry routes
# Wait before reading the models' custom metrics after their answers: the models send them from a thread.
METRICS_SETTLE_S = 0.3

# inference_stats fields that make up a request's time inside one model.
_COMPUTE_FIELDS = ("compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class ModelTime:
    """Totals of one model over a window (deltas of Triton's cumulative counters).

    Args:
        requests: successful requests.
        executions: model executions (batches).
        queue_ns: time requests waited in the model's queue, summed over requests.
        compute_ns: input + infer + output time, summed over requests (a batch's time counts for each request).
    """

    requests: int
    executions: int
    queue_ns: int
    compute_ns: int

    def per_request_ms(self) -> dict[str, float]:
        n = max(self.requests, 1)
        return {
            "queue_ms": self.queue_ns / n / 1e6,
            "compute_ms": self.compute_ns / n / 1e6,
            "total_ms": (self.queue_ns + self.compute_ns) / n / 1e6,
        }


Snapshot = dict[str, ModelTime]


def parse_statistics(raw: Mapping[str, object]) -> Snapshot:
    """`get_inference_statistics(as_json=True)` -> model name -> cumulative ModelTime (versions summed)."""
    out: Snapshot = {}
    for m in raw.get("model_stats", []):  # type: ignore[union-attr]
        s = m.get("inference_stats", {})
        ns = {key: int(s.get(key, {}).get("ns", 0)) for key in ("queue", *_COMPUTE_FIELDS)}
        t = ModelTime(
            int(s.get("success", {}).get("count", 0)),
            int(m.get("execution_count", 0)),
            ns["queue"],
            sum(ns[k] for k in _COMPUTE_FIELDS),
        )
        prev = out.get(m["name"])
        out[m["name"]] = t if prev is None else _add(prev, t)
    return out


def _add(a: ModelTime, b: ModelTime) -> ModelTime:
    return ModelTime(
        a.requests + b.requests, a.executions + b.executions, a.queue_ns + b.queue_ns, a.compute_ns + b.compute_ns
    )


def delta(before: Snapshot, after: Snapshot) -> Snapshot:
    """Per-model activity between two snapshots (models absent before count from zero)."""
    zero = ModelTime(0, 0, 0, 0)
    return {
        name: ModelTime(
            a.requests - before.get(name, zero).requests,
            a.executions - before.get(name, zero).executions,
            a.queue_ns - before.get(name, zero).queue_ns,
            a.compute_ns - before.get(name, zero).compute_ns,
        )
        for name, a in after.items()
    }


def cascade_stages(cascade: str, models: Sequence[str]) -> list[str]:
    """Stage models of `cascade_<size>` among `models`, in stage order, each stage's standard lane before its express
    lane (a cascade calls both: critical requests and requests alone in the server take the express lane); for the
    `router`, every size's stages."""
    if cascade == ROUTER:
        return sorted(name for name in models if re.match(r"^.+_stage\d+(_express)?$", name))
    size = cascade.removeprefix("cascade_")
    pattern = re.compile(rf"^{re.escape(size)}_stage(\d+)(_express)?$")
    found = [(int(m.group(1)), name) for name in models if (m := pattern.match(name))]
    return [name for _, name in sorted(found)]


def hop_costs(
    window: Snapshot, cascade: str, stages: Sequence[str], gate: Mapping[str, float] | None = None
) -> dict[str, object]:
    """Orchestration overhead of one BLS cascade over a window.

    The time a request spends inside the cascade past its admission gate (it runs while its stage calls are in
    flight) minus its stages' queue + compute time, both per cascade request, is what the BLS orchestration itself
    costs: tensor copies to and from the stub, building child requests, the asyncio round trips. The gate models
    answer through the response sender, so Triton's compute time for them ends when `execute` hands the requests
    to the gate; `gate` (from `gate_model_times`, over the same window) gives the time inside and the gate wait
    instead. Admission wait is reported but not subtracted. Per hop divides by the stage calls per request.

    Returns:
        JSON-ready dict; `None` overhead when the cascade served nothing in the window.
    """
    c = window.get(cascade, ModelTime(0, 0, 0, 0))
    if gate is not None and gate.get("requests"):
        c = ModelTime(
            int(gate["requests"]), c.executions, int(gate["gate_wait_ms"] * 1e6), int(gate["inside_ms"] * 1e6)
        )
    per_model = {
        name: {**asdict(window[name]), **window[name].per_request_ms()} for name in (cascade, *stages) if name in window
    }
    if c.requests == 0:
        return {
            "cascade": cascade,
            "stages": list(stages),
            "per_model": per_model,
            "cascade_requests": 0,
            "hops_per_request": None,
            "overhead_ms_per_request": None,
            "overhead_ms_per_hop": None,
        }
    hops = sum(window[s].requests for s in stages if s in window)
    stage_ns = sum(window[s].queue_ns + window[s].compute_ns for s in stages if s in window)
    overhead_ms = (c.compute_ns - stage_ns) / c.requests / 1e6
    hops_per_request = hops / c.requests
    return {
        "cascade": cascade,
        "stages": list(stages),
        "per_model": per_model,
        "cascade_requests": c.requests,
        "cascade_queue_ms_per_request": c.queue_ns / c.requests / 1e6,
        "cascade_compute_ms_per_request": c.compute_ns / c.requests / 1e6,
        "stages_ms_per_request": stage_ns / c.requests / 1e6,
        "hops_per_request": hops_per_request,
        "overhead_ms_per_request": overhead_ms,
        "overhead_ms_per_hop": overhead_ms / hops_per_request if hops_per_request else None,
        "definition": (
            "time inside the cascade past its gate - sum(stage queue + compute), per cascade request; "
            "per hop: / stage calls"
        ),
    }


async def snapshot(client: object) -> Snapshot:
    """Cumulative statistics of every model (asyncio gRPC client)."""
    return parse_statistics(await client.get_inference_statistics(as_json=True))  # type: ignore[attr-defined]


def gate_snapshot(metrics_url: str) -> dict[str, dict[str, float]]:
    """Cumulative admission-gate counters per latency class (router and cascades summed), from the metrics port:
    requests admitted, their summed gate wait (ms), requests refused."""
    from adaptive_core.config import LATENCY_CLASSES
    from adaptive_core.metrics import GATE_REJECTED, GATE_WAIT, metric_sum

    samples = _scrape(metrics_url)
    return {
        c: {
            "admitted": metric_sum(samples, f"{GATE_WAIT.name}_count", **{"class": c}),
            "wait_ms_sum": metric_sum(samples, f"{GATE_WAIT.name}_sum", **{"class": c}),
            "rejected": metric_sum(samples, GATE_REJECTED.name, **{"class": c}),
        }
        for c in LATENCY_CLASSES
    }


def gate_delta(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """Gate activity per class between two `gate_snapshot`s: admitted, mean wait (ms), refused."""
    out = {}
    for c, a in after.items():
        d = {k: a[k] - before.get(c, {}).get(k, 0.0) for k in a}
        out[c] = {
            "admitted": int(d["admitted"]),
            "wait_ms_mean": d["wait_ms_sum"] / d["admitted"] if d["admitted"] else 0.0,
            "rejected": int(d["rejected"]),
        }
    return out


def gate_model_times(metrics_url: str) -> dict[str, dict[str, float]]:
    """Cumulative time per gate model (router, cascades), all classes: requests answered, their summed time inside
    the model past the gate (ms), their summed gate wait (ms); from the models' custom metrics."""
    from adaptive_core.metrics import GATE_WAIT, MODEL_LATENCY

    samples = _scrape(metrics_url)
    out: dict[str, dict[str, float]] = {}
    for (name, labels), value in samples.items():
        model = dict(labels).get("model")
        key = {
            f"{MODEL_LATENCY.name}_count": "requests",
            f"{MODEL_LATENCY.name}_sum": "latency_ms",
            f"{GATE_WAIT.name}_sum": "gate_wait_ms",
        }.get(name)
        if model is None or key is None:
            continue
        m = out.setdefault(model, {"requests": 0.0, "latency_ms": 0.0, "gate_wait_ms": 0.0})
        m[key] += value
    for m in out.values():
        m["inside_ms"] = m["latency_ms"] - m["gate_wait_ms"]
    return out


def gate_model_window(metrics_url: str, before: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """`gate_model_times` activity since the snapshot `before`, read once the models have sent their metrics (from a
    thread, a few ms behind their answers)."""
    time.sleep(METRICS_SETTLE_S)
    after = gate_model_times(metrics_url)
    return {model: {k: v - before.get(model, {}).get(k, 0.0) for k, v in a.items()} for model, a in after.items()}


def _scrape(metrics_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One scrape of the server's metrics port, parsed (`adaptive_serving.metrics.parse_metrics`)."""
    import urllib.request

    from adaptive_core.metrics import parse_metrics

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        return parse_metrics(response.read().decode())
