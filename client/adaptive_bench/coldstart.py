"""`coldstart`: the first requests after a fresh server reports ready, against the requests after them, per class.

    python -m adaptive_bench.coldstart --export build/export --out results/coldstart [--requests 1000] [--quick]

For each variant (the repository with its warm-up samples, and the same repository without them), a fresh server is
started and timed to readiness; then one text per request goes out in a closed loop, the classes taking turns, so the
first `first` requests of every class are the first that class sends after ready. Per class: p50/p99 of the first
requests against the next `requests`, and the deadline cuts in each. The warm repository must keep the first requests
within `RATIO_TARGET` of the rest and cut no more of them short than the rest's cut rate allows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_core.config import LATENCY_CLASSES, PATHS

RATIO_TARGET = 1.5  # first requests' p50 and p99 over the rest's (issue: warm before ready)
VARIANTS = {"warm": True, "no_warmup": False}


def measure(url: str, texts: Sequence[str], *, first: int, requests: int) -> dict[str, dict[str, object]]:
    """Per class: latency (ms) and deadline cuts of its first `first` requests and of the next `requests`."""
    from adaptive_client.client import AdaptiveClient

    latencies: dict[str, list[float]] = {c: [] for c in LATENCY_CLASSES}
    cuts: dict[str, list[bool]] = {c: [] for c in LATENCY_CLASSES}
    with AdaptiveClient(url) as client:
        client.output_names()  # the client's own first call (connection, metadata) is not the server's cold start
        for i in range(first + requests):
            for klass in LATENCY_CLASSES:
                result = client.classify([texts[i % len(texts)]], latency_class=klass)[0]
                latencies[klass].append(result.latency_ms)
                cuts[klass].append(result.deadline_cut)
    report = {}
    for klass in LATENCY_CLASSES:
        head, rest = np.array(latencies[klass][:first]), np.array(latencies[klass][first:])
        head_cuts, rest_cuts = sum(cuts[klass][:first]), sum(cuts[klass][first:])
        report[klass] = {
            "first_p50_ms": float(np.percentile(head, 50)),
            "first_p99_ms": float(np.percentile(head, 99)),
            "rest_p50_ms": float(np.percentile(rest, 50)),
            "rest_p99_ms": float(np.percentile(rest, 99)),
            "first_cuts": int(head_cuts),
            "rest_cuts": int(rest_cuts),
            # The cuts a warm server would make among `first` requests, at the rest's rate (rounded up).
            "cuts_allowed": math.ceil(rest_cuts / max(len(rest), 1) * first),
        }
        row = report[klass]
        row["p50_ratio"] = row["first_p50_ms"] / row["rest_p50_ms"]
        row["p99_ratio"] = row["first_p99_ms"] / row["rest_p99_ms"]
        row["met"] = bool(
            row["p50_ratio"] <= RATIO_TARGET and row["p99_ratio"] <= RATIO_TARGET and head_cuts <= row["cuts_allowed"]
        )
    return report


def run(export: Path, out: Path, *, first: int, requests: int, samples: int) -> dict[str, object]:
    """Build each variant's repository, serve it fresh, measure; returns the results (also written under `out`)."""
    from adaptive_bench.data import load_eval_samples
    from adaptive_ops.repository import RepositoryOptions, build_repository
    from adaptive_ops.server import TritonServer

    texts = load_eval_samples(export, limit=samples, seed=0).texts
    results: dict[str, object] = {"first": first, "requests": requests, "ratio_target": RATIO_TARGET, "variants": {}}
    for variant, warm in VARIANTS.items():
        repo = PATHS.root / "coldstart" / variant
        build_repository(export, repo, dataclasses.replace(RepositoryOptions(), warmup=warm))
        started = time.monotonic()
        with TritonServer.on_free_ports(repo, log_path=out / f"tritonserver-{variant}.log") as server:
            ready_s = time.monotonic() - started
            print(f"{variant}: ready after {ready_s:.1f} s; measuring", file=sys.stderr, flush=True)
            per_class = measure(server.grpc_url, texts, first=first, requests=requests)
        results["variants"][variant] = {"ready_s": ready_s, "classes": per_class}
    warm, cold = (results["variants"][v]["ready_s"] for v in VARIANTS)
    results["added_startup_s"] = warm - cold
    results["met"] = all(row["met"] for row in results["variants"]["warm"]["classes"].values())
    return results


def markdown(results: dict[str, object]) -> str:
    first, requests = results["first"], results["requests"]
    lines = [
        f"First {first} requests per class after ready against the next {requests} (one text per request, "
        f"classes taking turns; target: first/rest <= {results['ratio_target']}x at p50 and p99, no more cuts than "
        "the rest's rate).",
        "",
        "| variant | ready s | class | first p50 ms | rest p50 ms | first p99 ms | rest p99 ms | p50 x | p99 x "
        "| first cuts | rest cuts | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, v in results["variants"].items():
        for klass, r in v["classes"].items():
            lines.append(
                f"| {variant} | {v['ready_s']:.1f} | {klass} | {r['first_p50_ms']:.1f} | {r['rest_p50_ms']:.1f} "
                f"| {r['first_p99_ms']:.1f} | {r['rest_p99_ms']:.1f} | {r['p50_ratio']:.2f} | {r['p99_ratio']:.2f} "
                f"| {r['first_cuts']} | {r['rest_cuts']} | {'yes' if r['met'] else 'no'} |"
            )
    lines += ["", f"Warm-up adds {results['added_startup_s']:.1f} s to the time to ready."]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(LATENCY_CLASSES)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, q in zip(axes, ("p50", "p99")):
        x = np.arange(len(classes))
        for k, (variant, v) in enumerate(results["variants"].items()):
            first = [v["classes"][c][f"first_{q}_ms"] for c in classes]
            rest = [v["classes"][c][f"rest_{q}_ms"] for c in classes]
            ax.bar(x + k * 0.4 - 0.2, first, 0.18, label=f"{variant}: first {results['first']}")
            ax.bar(x + k * 0.4 - 0.02, rest, 0.18, label=f"{variant}: next {results['requests']}", alpha=0.6)
        ax.set_xticks(x, classes)
        ax.set_title(f"{q} latency after a fresh start")
        ax.set_ylabel("ms")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_bench.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, default=PATHS.export_dir, help="export build")
    parser.add_argument("--out", type=Path, default=PATHS.results / "coldstart", help="results folder")
    parser.add_argument("--first", type=int, default=20, help="first requests per class after ready")
    parser.add_argument("--requests", type=int, default=1000, help="requests per class after the first ones")
    parser.add_argument("--samples", type=int, default=256, help="evaluation-mix texts to cycle through")
    parser.add_argument("--quick", action="store_true", help="100 requests per class (tests, smoke runs)")
    args = parser.parse_args(argv)
    from adaptive_bench.provenance import provenance
    from adaptive_ops.server import ServerError

    origin = provenance("python -m adaptive_bench.coldstart", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        results = run(
            args.export, args.out, first=args.first, requests=100 if args.quick else args.requests, samples=args.samples
        )
    except (ServerError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    results["run"] = {"export": str(args.export.resolve()), "quick": args.quick}
    results["provenance"] = origin
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown(results))
    plot(results, args.out / "first_vs_rest.png")
    print(markdown(results))
    return 0 if results["met"] else 2


if __name__ == "__main__":
    sys.exit(main())
