"""Where time goes per hop on a live Triton server: statistics API and metrics endpoint around a short load.

For one entry model (say `large_exit`: tokenizer -> cascade -> stages), it snapshots Triton's statistics and its
Prometheus metrics, sends a short closed-loop load, snapshots again, and reports per model that served requests
in the window: requests, executions, queue and compute time per request, from both sources. Statistics parsing
and the BLS hop cost are the benchmark package's (`adaptive_bench.stats`).
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from adaptive_bench import stats
from adaptive_core import names

# Triton per-model counters (cumulative; microsecond durations), summed over versions.
METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_request_duration_us",
)
_LINE = re.compile(r"^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)$")
_MODEL = re.compile(r'model="([^"]+)"')


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text from Triton's metrics endpoint -> metric -> model -> value (only `METRICS`)."""
    out: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m or m.group(1) not in out:
            continue
        model = _MODEL.search(m.group(2))
        if model:
            per = out[m.group(1)]
            per[model.group(1)] = per.get(model.group(1), 0.0) + float(m.group(3))
    return out


def fetch_metrics(metrics_url: str, timeout_s: float = 10.0) -> dict[str, dict[str, float]]:
    """GET and parse the metrics endpoint.

    Raises:
        OSError: the endpoint cannot be reached.
    """
    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as r:
        return parse_metrics(r.read().decode())


def metrics_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """model -> metric -> increase over the window."""
    models = {m for per in after.values() for m in per}
    return {
        model: {metric: after[metric].get(model, 0.0) - before.get(metric, {}).get(model, 0.0) for metric in METRICS}
        for model in sorted(models)
    }


def hop_rank(model: str) -> tuple[int, int, str]:
    """Sort key putting a request's path in order: entry, tokenizer, router, cascade, stages, full encoders."""
    stage = re.match(r"^.+_stage(\d+)(_express)?$", model)
    if model.startswith("tokenizer_"):
        return 1, 0, model
    if model.startswith(stats.ROUTER):  # the router, then router_standard (its standard lane)
        return 2, 0, model
    if model.startswith("cascade_"):
        return 3, 0, model
    if stage:
        return 4, int(stage.group(1)), model
    if model.endswith("_full_encoder"):
        return 5, 0, model
    return 0, 0, model


def _model_kind(client: object, model: str) -> str:
    """ "ensemble" (its time is the sum of its steps), or the model's backend ("python", "onnxruntime")."""
    config = client.get_model_config(model, as_json=True).get("config", {})  # type: ignore[attr-defined]
    return config.get("platform") or config.get("backend") or "unknown"


def _client_load(url: str, model: str, texts: Sequence[str], concurrency: int, batch_size: int) -> dict[str, object]:
    """Closed loop: `concurrency` threads, each with its own gRPC client, send `texts` in batches of `batch_size`."""
    import tritonclient.grpc as grpcclient

    target = url.removeprefix("grpc://")
    batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    local = threading.local()

    def send(batch: list[str]) -> None:
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(target)
        data = np.array([[t.encode("utf-8")] for t in batch], dtype=np.object_)  # (B, 1)
        inp = grpcclient.InferInput(names.TEXT, list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        t0 = time.perf_counter()
        try:
            local.client.infer(model, [inp])
        except Exception as e:  # InferenceServerException: counted and reported, the load goes on
            with lock:
                errors.append(str(e))
            return
        with lock:
            latencies.append((time.perf_counter() - t0) * 1e3)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, batches))
    seconds = time.perf_counter() - start
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {
        "requests": len(batches),
        "answered": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": seconds,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "requests_per_s": len(latencies) / seconds,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_ms": float(lat.mean()),
    }


def profile_entry(
    url: str, metrics_url: str | None, model: str, texts: Sequence[str], *, concurrency: int = 4, batch_size: int = 1
) -> dict[str, object]:
    """Drive `model` with `texts` and report per hop where the time went.

    Args:
        url: gRPC URL of the server (`grpc://host:port` or `host:port`).
        metrics_url: the metrics endpoint (`http://host:port/metrics`); None skips the metrics side.
        model: entry model to load (e.g. `large_exit`, `adaptive`).
        texts: one request per `batch_size` texts.
        concurrency: requests in flight.
        batch_size: texts per request.

    Returns:
        {"model", "client": latency summary, "hops": rows in path order, "hop_cost": BLS orchestration cost or
        None, "metrics_available", "metrics_error"}; each hop row has statistics-API numbers and, where the metrics
        endpoint answered, the metrics' own counts and times.
    """
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url.removeprefix("grpc://"))
    if not client.is_model_ready(model):
        raise RuntimeError(f"model {model!r} is not ready on {url}")
    m_before, m_error = None, None
    if metrics_url:
        try:
            m_before = fetch_metrics(metrics_url)
        except OSError as e:
            m_error = f"metrics endpoint {metrics_url} unreachable: {e}"
    s_before = stats.parse_statistics(client.get_inference_statistics(as_json=True))
    g_before = stats.gate_model_times(metrics_url) if m_before is not None else None
    load = _client_load(url, model, texts, concurrency, batch_size)
    s_after = stats.parse_statistics(client.get_inference_statistics(as_json=True))
    gate = stats.gate_model_window(metrics_url, g_before) if g_before is not None else {}
    window = {k: v for k, v in stats.delta(s_before, s_after).items() if v.requests > 0}
    m_window = metrics_delta(m_before, fetch_metrics(metrics_url)) if m_before is not None else {}
    hops = []
    for name in sorted(window, key=hop_rank):
        t = window[name]
        row: dict[str, object] = {
            "model": name,
            "kind": _model_kind(client, name),
            "requests": t.requests,
            "executions": t.executions,
            "requests_per_execution": t.requests / max(t.executions, 1),
            **t.per_request_ms(),
        }
        mm = m_window.get(name)
        if mm:
            n = max(mm["nv_inference_request_success"], 1.0)
            compute_us = sum(
                mm[k]
                for k in (
                    "nv_inference_compute_input_duration_us",
                    "nv_inference_compute_infer_duration_us",
                    "nv_inference_compute_output_duration_us",
                )
            )
            row["metrics"] = {
                "requests": mm["nv_inference_request_success"],
                "failures": mm["nv_inference_request_failure"],
                "executions": mm["nv_inference_exec_count"],
                "queue_ms": mm["nv_inference_queue_duration_us"] / n / 1e3,
                "compute_ms": compute_us / n / 1e3,
                "request_ms": mm["nv_inference_request_duration_us"] / n / 1e3,
            }
        hops.append(row)
    orchestrators = [n for n in window if n == stats.ROUTER or n.startswith("cascade_")]
    hop_cost = None
    if orchestrators:
        o = orchestrators[0]
        hop_cost = stats.hop_costs(window, o, stats.cascade_stages(o, list(window)), gate.get(o))
        hop_cost.pop("per_model", None)  # the same numbers are in `hops`
    return {
        "model": model,
        "client": load,
        "hops": hops,
        "hop_cost": hop_cost,
        "metrics_available": m_before is not None,
        "metrics_error": m_error,
    }
