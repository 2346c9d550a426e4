"""`make demo`: the main job, end to end on this machine.

1. builds the model family if `build/export` has none (`python -m adaptive_export build`),
2. generates the model repository and starts the local tritonserver on free loopback ports,
3. runs a mixed workload on the `adaptive` entry (router + early exit): the three latency classes at once,
   closed loop, over the evaluation mix of the test split,
4. runs the same texts through `large_full` (full depth, no exits),
5. prints per-class latency, routing shares and escalations, exit shares, accuracy of both, cost against
   always-large and the speed-up, and writes them with the run's provenance to `results/demo/demo.json`;
   stops the server.

`--quick` (tests, smoke runs): the tiny family (`build --tiny`, seconds) when the export folder has none, 48 texts.
The baseline is the export's largest size at full depth (`large_full` for the project's family).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_core.config import LATENCY_CLASSES, PATHS
from adaptive_ops.repository import RepositoryOptions, build_repository, exported_sizes
from adaptive_ops.server import ServerError, TritonServer

# Concurrent closed-loop workers per class on `adaptive`: the mixed workload.
CLASS_WORKERS = {"critical": 1, "sensitive": 2, "batch": 5}
BASELINE_WORKERS = sum(CLASS_WORKERS.values())
SAMPLES, QUICK_SAMPLES = 600, 48


def largest_size(export: Path) -> str:
    """The export's largest size: the demo's entry size, and its `<size>_full` the baseline."""
    return max(exported_sizes(export).values(), key=lambda c: (c.num_layers, c.max_seq_len)).name


async def _workload(url: str, texts: Sequence[str], baseline: str) -> dict[str, object]:
    """Run the classes together on `adaptive`, then the baseline alone; returns outcomes and wall times."""
    from adaptive_bench.load import ClientPool, closed_loop
    from adaptive_bench.requests import RequestKwargs

    pool = ClientPool(url)
    try:
        # Each class walks its own slice of the texts, so the whole mix is classified exactly once.
        slices = np.array_split(np.arange(len(texts)), len(CLASS_WORKERS))
        start = time.perf_counter()
        runs = await asyncio.gather(
            *(
                closed_loop(
                    pool,
                    "adaptive",
                    [[texts[i]] for i in idx],
                    concurrency=CLASS_WORKERS[name],
                    kwargs=RequestKwargs.for_class(LATENCY_CLASSES[name]),
                    desc=f"adaptive {name}",
                )
                for name, idx in zip(CLASS_WORKERS, slices)
            )
        )
        adaptive_wall = time.perf_counter() - start
        base = await closed_loop(
            pool,
            baseline,
            [[t] for t in texts],
            concurrency=BASELINE_WORKERS,
            kwargs=RequestKwargs.for_class(LATENCY_CLASSES["batch"]),
            desc=baseline,
        )
    finally:
        await pool.close()
    return {
        "slices": slices,
        "runs": dict(zip(CLASS_WORKERS, runs)),
        "adaptive_wall_s": adaptive_wall,
        "baseline": base,
        "baseline_model": baseline,
    }


def _summary(samples, result: dict[str, object]) -> dict[str, object]:
    """The numbers the demo prints, as JSON-ready data (`results/demo/demo.json`)."""
    from adaptive_bench.load import percentiles_ms

    classes = {}
    correct = answered = 0
    stages: Counter[int] = Counter()
    sizes: Counter[str] = Counter()
    escalated = 0
    by_view: dict[int, Counter[int]] = {}
    for (name, run), idx in zip(result["runs"].items(), result["slices"]):
        ok = [o for o in run.outcomes if o.ok]
        lat = percentiles_ms([o.latency_ms for o in ok])
        classes[name] = {
            "requests": len(run.outcomes),
            "answered": len(ok),
            "rejected": len(run.outcomes) - len(ok),
            "p50_ms": lat["p50_ms"],
            "p99_ms": lat["p99_ms"],
            "deadline_cut": sum(int(o.deadline_cut.sum()) for o in ok),
        }
        for j, o in zip(run.items, run.outcomes):
            if not o.ok:
                continue
            sample = idx[j]
            answered += 1
            correct += int(o.labels[0] == samples.labels[sample])
            stages[int(o.exit_stage[0])] += 1
            sizes[o.model_size[0].decode()] += 1
            escalated += int(o.escalations is not None and o.escalations[0] > 0)
            by_view.setdefault(int(samples.views[sample]), Counter())[int(o.exit_stage[0])] += 1
    base, base_name = result["baseline"], result["baseline_model"]
    base_ok = [(j, o) for j, o in zip(base.items, base.outcomes) if o.ok]
    base_correct = sum(int(o.labels[0] == samples.labels[j]) for j, o in base_ok)
    adaptive = {
        "answered": answered,
        "accuracy": correct / max(answered, 1),
        "samples_per_s": answered / result["adaptive_wall_s"],
    }
    baseline = {
        "answered": len(base_ok),
        "accuracy": base_correct / max(len(base_ok), 1),
        "samples_per_s": len(base_ok) / base.wall_s,
    }
    return {
        "texts": len(samples),
        "class_workers": dict(CLASS_WORKERS),
        "classes": classes,
        "size_shares": {k: v / max(answered, 1) for k, v in sorted(sizes.items())},
        "escalated_share": escalated / max(answered, 1),
        "stage_shares": {str(s): stages[s] / max(answered, 1) for s in sorted(stages)},
        "stage_shares_by_view": {
            str(view): {str(s): c / sum(counts.values()) for s, c in sorted(counts.items())}
            for view, counts in sorted(by_view.items())
        },
        "models": {"adaptive": adaptive, base_name: baseline},
        "baseline": base_name,
        "throughput_ratio": adaptive["samples_per_s"] / baseline["samples_per_s"],
        "accuracy_diff_points": 100 * (adaptive["accuracy"] - baseline["accuracy"]),
        "load_average": result.get("load_average"),
    }


def report(summary: dict[str, object]) -> str:
    """What the demo prints: per-class latency, routing and exit shares, accuracy, cost and speed-up."""
    lines = [
        f"{'class':<10} {'requests':>8} {'answered':>8} {'rejected':>8} {'p50 ms':>8} {'p99 ms':>8} {'cut short':>9}"
    ]
    for name, c in summary["classes"].items():
        lines.append(
            f"{name:<10} {c['requests']:>8} {c['answered']:>8} {c['rejected']:>8} "
            f"{c['p50_ms'] or 0:>8.1f} {c['p99_ms'] or 0:>8.1f} {c['deadline_cut']:>9}"
        )
    lines += [
        "",
        "answered by size: "
        + ", ".join(f"{k} {v:.0%}" for k, v in summary["size_shares"].items())
        + f"; escalated to a larger size: {summary['escalated_share']:.1%}",
        "exit shares (stage of the size that answered): "
        + ", ".join(f"stage {s}: {v:.0%}" for s, v in summary["stage_shares"].items()),
    ]
    for view, shares in summary["stage_shares_by_view"].items():
        label = "whole text" if int(view) < 0 else f"first {view} words"
        lines.append(f"  {label:<16} " + ", ".join(f"stage {s}: {v:.0%}" for s, v in shares.items()))
    base = summary["baseline"]
    a, b = summary["models"]["adaptive"], summary["models"][base]
    lines += [
        "",
        f"{'model':<12} {'answered':>8} {'accuracy':>9} {'samples/s':>10}",
        f"{'adaptive':<12} {a['answered']:>8} {a['accuracy']:>9.4f} {a['samples_per_s']:>10.1f}",
        f"{base:<12} {b['answered']:>8} {b['accuracy']:>9.4f} {b['samples_per_s']:>10.1f}",
        "",
        f"cost against always-large: {1e3 / a['samples_per_s']:.1f} ms of server time per text for adaptive, "
        f"{1e3 / b['samples_per_s']:.1f} ms for {base}",
        f"speed-up of adaptive over {base}: {summary['throughput_ratio']:.2f}x throughput, accuracy "
        f"{summary['accuracy_diff_points']:+.2f} points "
        f"({summary['texts']} texts of the test evaluation mix, same server, same run)",
    ]
    load = summary.get("load_average")
    if load:  # other work on the host moves both numbers, the baseline (run second) most when it comes and goes
        lines.append(
            f"host load average (1 min): {load['start']:.1f} at the start, {load['end']:.1f} at the end, "
            f"on {load['cpus']} CPUs"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_bench.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, default=PATHS.export_dir)
    parser.add_argument("--repo", type=Path, default=PATHS.repository)
    parser.add_argument("--samples", type=int, default=None, help=f"texts of the evaluation mix to send ({SAMPLES})")
    parser.add_argument("--quick", action="store_true", help=f"tiny family if none is built, {QUICK_SAMPLES} texts")
    parser.add_argument("--out", type=Path, default=PATHS.results / "demo", help="where demo.json goes")
    args = parser.parse_args(argv)

    from adaptive_bench.data import load_eval_samples
    from adaptive_bench.provenance import provenance

    origin = provenance("python -m adaptive_bench.demo", argv)

    if not (args.export / "manifest.json").exists():
        from adaptive_export.cli import main as export_main

        family = "the tiny family" if args.quick else "the model family"
        print(f"[1/4] building {family} into {args.export} (first run only)", flush=True)
        if export_main(["build", "--out", str(args.export), *(["--tiny"] if args.quick else [])]) != 0:
            return 1
    size = largest_size(args.export)
    baseline = f"{size}_full"
    print(f"[2/4] generating {args.repo}", flush=True)
    build_repository(args.export, args.repo, RepositoryOptions(entry_size=size))
    samples = load_eval_samples(args.export, limit=args.samples or (QUICK_SAMPLES if args.quick else SAMPLES), seed=0)
    print(f"[3/4] starting tritonserver on {args.repo}", flush=True)
    try:
        server = TritonServer.on_free_ports(args.repo, log_path=args.repo.parent / "demo-server.log").start()
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        print(
            f"[4/4] mixed workload: {len(samples)} texts on adaptive with classes {CLASS_WORKERS} "
            f"(closed-loop workers), then on {baseline}",
            flush=True,
        )
        load_start = os.getloadavg()[0]
        result = asyncio.run(_workload(server.grpc_url, samples.texts, baseline))
        result["load_average"] = {"start": load_start, "end": os.getloadavg()[0], "cpus": os.cpu_count()}
    finally:
        server.stop()
    summary = _summary(samples, result)
    text = report(summary)
    print()
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps({**summary, "report": text, "provenance": origin}, indent=1) + "\n")
    print(f"\nwrote {args.out / 'demo.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
