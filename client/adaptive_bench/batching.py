"""The batching helpers (`adaptive_client.batching`) against naive fixed-size batching, on a real server.

python -m adaptive_bench.batching --url 127.0.0.1:8001 --samples 256 --out results/batching
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_client.batching import (
    COMPLEXITY_BUCKETS,
    CONCURRENCY,
    LATENCY_BATCH_SIZES,
    NAIVE_BATCH_SIZE,
    Request,
    RunResult,
    plan_complexity,
    plan_latency,
    plan_naive,
    run_plan,
)
from adaptive_client.client import AsyncAdaptiveClient
from adaptive_core.config import LATENCY_CLASSES


def _summary(run: RunResult, labels: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    m = np.ones(len(labels), bool) if mask is None else mask
    answered = np.array([r is not None for r in run.results]) & m
    pred = np.array([-1 if r is None else r.label for r in run.results])
    done = run.done_ms[answered]
    pct = (lambda q: float(np.percentile(done, q))) if answered.any() else (lambda q: float("nan"))
    return {
        "texts": int(m.sum()),
        "rejected": int(m.sum() - answered.sum()),
        "requests": run.requests,
        "wall_s": run.wall_s,
        "texts_per_s": int(answered.sum()) / run.wall_s,
        "accuracy": float((pred[answered] == labels[answered]).mean()) if answered.any() else float("nan"),
        "p50_done_ms": pct(50),
        "p99_done_ms": pct(99),
    }


async def batching_bench(
    url: str,
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    model_name: str = "adaptive",
    repeats: int = 2,
    concurrency: int = CONCURRENCY,
    seed: int = 0,
) -> dict[str, object]:
    """Compare each helper against naive fixed-size batching on the same texts, alternating runs.

    Complexity: all texts at class `batch`, complexity plan vs naive batches of NAIVE_BATCH_SIZE in input order.
    Latency: each text gets a class (1:1:2 critical:sensitive:batch, seeded); latency plan vs naive batches of
    NAIVE_BATCH_SIZE per class. `*_done_ms` is when a text's answer arrived, counted from the start of the run
    (all texts are handed over at once). Returns the best-of-`repeats` (by wall time) run per variant.

    Raises:
        AdaptiveClientError: a request failed.
    """
    rng = np.random.default_rng(seed)
    classes = list(rng.choice(["critical", "sensitive", "batch", "batch"], size=len(texts)))
    naive_by_class = [
        r for c in sorted(set(classes), key=lambda c: LATENCY_CLASSES[c].priority) for r in _naive_subset(classes, c)
    ]
    plans = {
        "complexity": {"helper": plan_complexity(texts), "naive": plan_naive(len(texts))},
        "latency": {"helper": plan_latency(classes), "naive": naive_by_class},
    }
    report: dict[str, object] = {
        "texts": len(texts),
        "naive_batch_size": NAIVE_BATCH_SIZE,
        "concurrency": concurrency,
        "repeats": repeats,
        "complexity_buckets": [[str(b), s] for b, s in COMPLEXITY_BUCKETS],
        "latency_batch_sizes": LATENCY_BATCH_SIZES,
    }
    async with AsyncAdaptiveClient(url, model_name) as client:
        await client.classify([texts[0]])  # warm-up: metadata and connection
        for name, variants in plans.items():
            best: dict[str, RunResult] = {}
            for _ in range(repeats):
                for variant, plan in variants.items():
                    run = await run_plan(client, texts, plan, concurrency=concurrency, allow_rejected=True)
                    if variant not in best or run.wall_s < best[variant].wall_s:
                        best[variant] = run
            entry: dict[str, object] = {v: _summary(r, labels) for v, r in best.items()}
            if name == "latency":
                cls = np.array(classes)
                entry["per_class"] = {
                    v: {c: _summary(r, labels, cls == c) for c in LATENCY_CLASSES if (cls == c).any()}
                    for v, r in best.items()
                }
            report[name] = entry
    return report


def _naive_subset(classes: Sequence[str], c: str) -> list[Request]:
    idx = [i for i, x in enumerate(classes) if x == c]
    return [Request(tuple(idx[j : j + NAIVE_BATCH_SIZE]), c) for j in range(0, len(idx), NAIVE_BATCH_SIZE)]


def markdown(report: dict[str, object]) -> str:
    """The benchmark as a markdown table, with a one-line verdict per helper."""
    lines = [
        f"Batching helpers vs naive fixed batches of {report['naive_batch_size']} "
        f"({report['texts']} texts, {report['concurrency']} requests in flight, best of {report['repeats']})",
        "",
        "| helper | variant | requests | rejected texts | wall s | answered/s | accuracy | p50 done ms | p99 done ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("complexity", "latency"):
        entry = report[name]
        for v in ("helper", "naive"):
            s = entry[v]
            lines.append(
                f"| {name} | {v} | {s['requests']} | {s['rejected']} | {s['wall_s']:.2f} | {s['texts_per_s']:.1f} | "
                f"{s['accuracy']:.4f} | {s['p50_done_ms']:.0f} | {s['p99_done_ms']:.0f} |"
            )
    lines += [
        "",
        "| latency class | variant | texts | rejected | p50 done ms | p99 done ms |",
        "|---|---|---|---|---|---|",
    ]
    for v, per in report["latency"]["per_class"].items():
        for c, s in per.items():
            lines.append(
                f"| {c} | {v} | {s['texts']} | {s['rejected']} | {s['p50_done_ms']:.0f} | {s['p99_done_ms']:.0f} |"
            )
    c, lat = report["complexity"], report["latency"]["per_class"]
    speed = c["helper"]["texts_per_s"] / c["naive"]["texts_per_s"]
    lines += [
        "",
        f"complexity-aware throughput vs naive: {speed:.2f}x "
        f"({'helps' if speed > 1.05 else 'no clear gain' if speed > 0.95 else 'hurts'})",
    ]
    if "critical" in lat["helper"]:
        helper_ms, naive_ms = lat["helper"]["critical"]["p99_done_ms"], lat["naive"]["critical"]["p99_done_ms"]
        ratio = naive_ms / helper_ms  # > 1: the helper answers critical texts sooner
        lines.append(
            f"latency-aware critical p99 answer time: {helper_ms:.0f} ms vs {naive_ms:.0f} ms naive "
            f"({'helps' if ratio > 1.05 else 'no clear gain' if ratio > 0.95 else 'hurts'}), critical "
            f"rejected {lat['helper']['critical']['rejected']} vs {lat['naive']['critical']['rejected']}; "
            f"total wall {report['latency']['helper']['wall_s']:.2f} s vs "
            f"{report['latency']['naive']['wall_s']:.2f} s"
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adaptive_bench.batching", description=__doc__.split("\n\n")[0])
    srv = parser.add_argument_group("server (one of)")
    srv.add_argument("--url", default=None, help="a running server's gRPC address")
    srv.add_argument("--repo", type=Path, default=None, help="serve this repository on free ports for the run")
    data = parser.add_argument_group("data and output")
    data.add_argument("--export", type=Path, default=None, help="export build (label order check)")
    data.add_argument("--samples", type=int, default=256, help="evaluation-mix samples")
    data.add_argument("--repeats", type=int, default=2, help="runs per variant (best kept)")
    data.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    data.add_argument("--out", type=Path, default=Path("results/batching"), help="results folder")
    data.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import asyncio
    import contextlib

    from adaptive_bench.data import load_eval_samples
    from adaptive_bench.provenance import provenance
    from adaptive_client.client import AdaptiveClientError
    from adaptive_ops.server import ServerError, TritonServer

    origin = provenance("python -m adaptive_bench.batching", argv)

    if (args.url is None) == (args.repo is None):
        print("error: give exactly one of --url and --repo", file=sys.stderr)
        return 2
    samples = load_eval_samples(args.export, limit=args.samples, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    server = (
        TritonServer.on_free_ports(args.repo, log_path=args.out / "tritonserver.log")
        if args.repo
        else contextlib.nullcontext()
    )
    try:
        with server as s:
            url = s.grpc_url if args.repo else args.url
            report = asyncio.run(
                batching_bench(
                    url,
                    samples.texts,
                    samples.labels,
                    repeats=args.repeats,
                    concurrency=args.concurrency,
                    seed=args.seed,
                )
            )
    except (ServerError, AdaptiveClientError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    report["dataset"] = {
        "split": "test",
        "samples": len(samples),
        "mix_size": samples.mix_size,
        "dataset_hash": samples.dataset_hash,
    }
    report["provenance"] = origin
    (args.out / "batching.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (args.out / "batching.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
