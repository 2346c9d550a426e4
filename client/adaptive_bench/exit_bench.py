"""`exit`: early exit (`adaptive`) against the full-depth baselines (`<size>_full`) on one server, same run.

For each concurrency, every model serves the same evaluation-mix samples in a closed loop; the entry's run is
bracketed by statistics snapshots to measure what each BLS hop costs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from adaptive_bench import stats
from adaptive_bench.data import EvalSamples
from adaptive_bench.load import ClientPool, closed_loop, percentiles_ms
from adaptive_bench.requests import RequestKwargs
from adaptive_core.config import LATENCY_CLASSES, SIZES

ENTRY = "adaptive"
REFERENCE = "large_full"  # the ratio's baseline; the largest full model present stands in when it is absent
# Every request goes as the batch class: this benchmark measures model cost, not class priority.
EXIT_CLASS = "batch"


@dataclass(frozen=True)
class ExitBenchConfig:
    """Knobs of the exit benchmark.

    Args:
        concurrency: closed-loop workers per sweep point.
        batch_size: texts per request.
        samples: evaluation-mix samples (None = the whole mix).
        warmup_requests: unmeasured requests per model before each sweep point.
        seed: seeds the sample subset.
        entry: the entry measured against the `<size>_full` baselines (hop costs and ratios are its).
        extra_entries: more text-in models measured in the same sweep (e.g. `large_exit`: early exit alone).
    """

    concurrency: tuple[int, ...] = (1, 4, 8, 16)
    batch_size: int = 1
    samples: int | None = None
    warmup_requests: int = 8
    seed: int = 0
    entry: str = ENTRY
    extra_entries: tuple[str, ...] = ()


QUICK = ExitBenchConfig(concurrency=(1, 4), samples=64, warmup_requests=4)


def _size_order(model: str) -> tuple[int, str]:
    size = model.removesuffix("_full")
    order = list(SIZES)
    return (order.index(size) if size in order else -1, size)


def full_models(ready: list[str]) -> list[str]:
    """`<size>_full` baselines among ready models, smallest size first (unknown sizes, like tiny, first)."""
    return sorted((m for m in ready if m.endswith("_full")), key=_size_order)


def reference_model(fulls: list[str]) -> str | None:
    return REFERENCE if REFERENCE in fulls else (fulls[-1] if fulls else None)


def _score(samples: EvalSamples, items: list[int], outcomes: list, batches: list[np.ndarray]) -> dict[str, object]:
    """Accuracy, latency and (entry only) exit stages of one closed-loop run."""
    correct = answered = errors = 0
    stages: Counter[int] = Counter()
    cut = 0
    for j, o in zip(items, outcomes, strict=True):
        if not o.ok:
            errors += 1
            continue
        idx = batches[j]
        answered += len(idx)
        correct += int((o.labels == samples.labels[idx]).sum())
        if o.exit_stage is not None:
            stages.update(int(s) for s in o.exit_stage)
            cut += int(o.deadline_cut.sum())
    lat = [o.latency_ms for o in outcomes if o.ok]
    out: dict[str, object] = {
        "requests": len(outcomes),
        "samples_answered": answered,
        "errors": errors,
        "accuracy": correct / answered if answered else None,
        **percentiles_ms(lat),
    }
    if stages:
        out["exit_stage_distribution"] = {str(k): stages[k] / answered for k in sorted(stages)}
        out["exit_stage_counts"] = {str(k): stages[k] for k in sorted(stages)}
        out["deadline_cut"] = cut
    first_error = next((o for o in outcomes if not o.ok), None)
    if first_error is not None:
        out["first_error"] = f"{first_error.error_status}: {first_error.error_message}"
    return out


async def _run(url: str, samples: EvalSamples, config: ExitBenchConfig, metrics_url: str | None) -> dict[str, object]:
    pool = ClientPool(url)
    client = pool.clients[0]
    try:
        index = await client.get_model_repository_index(as_json=True)
        ready = sorted(m["name"] for m in index.get("models", []) if m.get("state") == "READY")
        entry = config.entry
        if entry not in ready:
            raise RuntimeError(f"model {entry!r} is not ready on {url}; ready models: {ready}")
        fulls = full_models(ready)
        models = [entry, *[m for m in config.extra_entries if m in ready], *fulls]
        cascades = [m for m in ready if m.startswith("cascade_") or m == stats.ROUTER]
        texts = samples.texts
        b = config.batch_size
        batches = [np.arange(i, min(i + b, len(texts))) for i in range(0, len(texts), b)]
        requests = [[texts[k] for k in idx] for idx in batches]
        kwargs = RequestKwargs.for_class(LATENCY_CLASSES[EXIT_CLASS])
        runs: dict[str, dict[str, dict[str, object]]] = {m: {} for m in models}
        hops: dict[str, dict[str, object]] = {}
        for c in config.concurrency:
            for model in models:
                warm = requests[: max(1, min(config.warmup_requests, len(requests)))]
                await closed_loop(
                    pool, model, warm, concurrency=min(c, len(warm)), kwargs=kwargs, desc=f"warmup {model}"
                )
                before = await stats.snapshot(client)
                gate_before = await asyncio.to_thread(stats.gate_model_times, metrics_url) if metrics_url else {}
                run = await closed_loop(pool, model, requests, concurrency=c, kwargs=kwargs, desc=f"{model} c={c}")
                after = await stats.snapshot(client)
                gate = await asyncio.to_thread(stats.gate_model_window, metrics_url, gate_before) if metrics_url else {}
                scored = _score(samples, run.items, run.outcomes, batches)
                scored["wall_s"] = run.wall_s
                scored["throughput_sps"] = scored["samples_answered"] / run.wall_s if run.wall_s else 0.0
                runs[model][str(c)] = scored
                if model == entry:
                    window = stats.delta(before, after)
                    hops[str(c)] = {
                        cas: stats.hop_costs(window, cas, stats.cascade_stages(cas, ready), gate.get(cas))
                        for cas in cascades
                        if window.get(cas) and window[cas].requests
                    }
    finally:
        await pool.close()
    ref = reference_model(fulls)
    comparison = {}
    if ref is not None:
        for c in map(str, config.concurrency):
            a, r = runs[entry][c], runs[ref][c]
            comparison[c] = {
                "throughput_ratio": a["throughput_sps"] / r["throughput_sps"] if r["throughput_sps"] else None,
                "accuracy_diff": (
                    a["accuracy"] - r["accuracy"] if a["accuracy"] is not None and r["accuracy"] is not None else None
                ),
            }
    return {
        "entry": entry,
        "models": models,
        "reference": ref,
        "runs": runs,
        "comparison": comparison,
        "hop_costs": hops,
    }


def run_exit_bench(
    url: str, samples: EvalSamples, config: ExitBenchConfig, *, metrics_url: str | None = None
) -> dict[str, object]:
    """Measure every model at every concurrency on the server at `url` (gRPC); `metrics_url` gives the gate models'
    own timing for the hop costs (without it, their Triton compute time, which ends when `execute` returns).

    Returns:
        JSON-ready results: per-model runs keyed by concurrency, the adaptive/reference comparison, and the
        hop costs of each cascade that served traffic.

    Raises:
        RuntimeError: the entry model is not ready.
    """
    results = asyncio.run(_run(url, samples, config, metrics_url))
    return {"benchmark": "exit", "config": asdict(config), "request_class": EXIT_CLASS, **results}


def markdown(results: dict[str, object]) -> str:
    """Tables of the exit benchmark."""
    lines = [
        "# bench-exit",
        "",
        (
            f"Evaluation mix: {results['dataset']['samples']} samples (of {results['dataset']['mix_size']}), "
            f"batch size {results['config']['batch_size']}, gRPC closed loop, class `{results['request_class']}`."
        ),
        "",
        "| model | concurrency | samples/s | p50 ms | p99 ms | accuracy | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, by_c in results["runs"].items():
        for c, r in by_c.items():
            acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
            lines.append(
                f"| {model} | {c} | {r['throughput_sps']:.1f} | {_f(r['p50_ms'])} | {_f(r['p99_ms'])} "
                f"| {acc} | {r['errors']} |"
            )
    if results["comparison"]:
        lines += [
            "",
            f"## {results['entry']} vs {results['reference']}",
            "",
            "| concurrency | throughput ratio | accuracy diff (points) |",
            "|---|---|---|",
        ]
        for c, r in results["comparison"].items():
            diff = "n/a" if r["accuracy_diff"] is None else f"{100 * r['accuracy_diff']:+.2f}"
            lines.append(f"| {c} | {_f(r['throughput_ratio'], 3)} | {diff} |")
    lines += [
        "",
        f"## Exit stages of {results['entry']}",
        "",
        "| concurrency | distribution | deadline cuts |",
        "|---|---|---|",
    ]
    for c, r in results["runs"][results["entry"]].items():
        dist = ", ".join(f"stage {k}: {v:.1%}" for k, v in r.get("exit_stage_distribution", {}).items())
        lines.append(f"| {c} | {dist} | {r.get('deadline_cut', 0)} |")
    lines += [
        "",
        "## BLS hop cost (Triton statistics API and the gate's metrics)",
        "",
        (
            "| concurrency | cascade | hops/request | gate wait ms | inside cascade ms | stages ms "
            "| overhead ms/request | overhead ms/hop |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, per in results["hop_costs"].items():
        for cas, h in per.items():
            lines.append(
                f"| {c} | {cas} | {_f(h['hops_per_request'], 2)} "
                f"| {_f(h['cascade_queue_ms_per_request'])} "
                f"| {_f(h['cascade_compute_ms_per_request'])} | {_f(h['stages_ms_per_request'])} "
                f"| {_f(h['overhead_ms_per_request'])} | {_f(h['overhead_ms_per_hop'])} |"
            )
    lines += [
        "",
        (
            "Overhead = time inside the cascade past its admission gate minus its stages' queue + compute time, "
            "per cascade request (Triton counts a batch's time for each request in it)."
        ),
        "",
    ]
    return "\n".join(lines)


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def plot(results: dict[str, object], path: Path) -> Path:
    """Throughput vs concurrency, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model, by_c in results["runs"].items():
        cs = [int(c) for c in by_c]
        ax.plot(cs, [by_c[str(c)]["throughput_sps"] for c in cs], marker="o", label=model)
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("throughput (samples/s)")
    ax.set_xscale("log", base=2)
    ax.set_title("bench-exit: throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
