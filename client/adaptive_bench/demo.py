"""`make demo`: the main job, end to end on this machine.

1. builds the model family if `build/export` has none (`python -m adaptive_export build`),
2. generates the model repository and starts the local tritonserver on free loopback ports,
3. runs a mixed workload on the `adaptive` entry (router + early exit): the three latency classes at once,
   closed loop, over the evaluation mix of the test split,
4. runs the same texts through `large_full` (full depth, no exits),
5. prints per-class latency, routing shares and escalations, exit shares per size, accuracy of both, cost against
   always-large and the speed-up; stops the server.

The workload is the export's (Rotten Tomatoes snippets by default: `adaptive_core.config.DATA`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_core.config import LATENCY_CLASSES, PATHS
from adaptive_ops.repository import build_repository
from adaptive_ops.server import ServerError, TritonServer

# Concurrent closed-loop workers per class on `adaptive`: the mixed workload.
CLASS_WORKERS = {"critical": 1, "sensitive": 2, "batch": 5}
BASELINE = "large_full"
BASELINE_WORKERS = sum(CLASS_WORKERS.values())


async def _workload(url: str, texts: Sequence[str]) -> dict[str, object]:
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
        baseline = await closed_loop(
            pool,
            BASELINE,
            [[t] for t in texts],
            concurrency=BASELINE_WORKERS,
            kwargs=RequestKwargs.for_class(LATENCY_CLASSES["batch"]),
            desc=BASELINE,
        )
    finally:
        await pool.close()
    return {
        "slices": slices,
        "runs": dict(zip(CLASS_WORKERS, runs)),
        "adaptive_wall_s": adaptive_wall,
        "baseline": baseline,
    }


def _report(samples, result: dict[str, object]) -> str:
    from adaptive_bench.load import percentiles_ms

    lines = [
        f"{'class':<10} {'requests':>8} {'answered':>8} {'rejected':>8} {'p50 ms':>8} {'p99 ms':>8} {'cut short':>9}"
    ]
    correct = answered = 0
    stages: Counter[int] = Counter()
    sizes: Counter[str] = Counter()
    escalated = 0
    by_view: dict[int, Counter[int]] = {}
    by_size: dict[str, Counter[int]] = {}
    for (name, run), idx in zip(result["runs"].items(), result["slices"]):
        ok = [o for o in run.outcomes if o.ok]
        lat = percentiles_ms([o.latency_ms for o in ok])
        cut = sum(int(o.deadline_cut.sum()) for o in ok)
        lines.append(
            f"{name:<10} {len(run.outcomes):>8} {len(ok):>8} {len(run.outcomes) - len(ok):>8} "
            f"{lat['p50_ms'] or 0:>8.1f} {lat['p99_ms'] or 0:>8.1f} {cut:>9}"
        )
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
            by_size.setdefault(o.model_size[0].decode(), Counter())[int(o.exit_stage[0])] += 1
    base = result["baseline"]
    base_ok = [(j, o) for j, o in zip(base.items, base.outcomes) if o.ok]
    base_correct = sum(int(o.labels[0] == samples.labels[j]) for j, o in base_ok)
    n = len(samples)
    adaptive_tput = answered / result["adaptive_wall_s"]
    base_tput = len(base_ok) / base.wall_s
    lines += [
        "",
        "answered by size: "
        + ", ".join(f"{k} {v / max(answered, 1):.0%}" for k, v in sorted(sizes.items()))
        + f"; escalated to a larger size: {escalated / max(answered, 1):.1%}",
        "exit shares (stage of the size that answered): "
        + ", ".join(f"stage {s}: {stages[s] / max(answered, 1):.0%}" for s in sorted(stages)),
    ]
    for size in sorted(by_size):
        counts = by_size[size]
        total = sum(counts.values())
        lines.append(
            f"  {size + ' (' + str(total) + ' texts)':<22} "
            + ", ".join(f"stage {s}: {counts[s] / total:.0%}" for s in sorted(counts))
        )
    if len(by_view) > 1:
        for view in sorted(by_view):
            counts = by_view[view]
            total = sum(counts.values())
            label = "whole text" if view < 0 else f"first {view} words"
            lines.append(f"  {label:<22} " + ", ".join(f"stage {s}: {counts[s] / total:.0%}" for s in sorted(counts)))
    lines += [
        "",
        f"{'model':<12} {'answered':>8} {'accuracy':>9} {'samples/s':>10}",
        f"{'adaptive':<12} {answered:>8} {correct / max(answered, 1):>9.4f} {adaptive_tput:>10.1f}",
        f"{BASELINE:<12} {len(base_ok):>8} {base_correct / max(len(base_ok), 1):>9.4f} {base_tput:>10.1f}",
        "",
        f"cost against always-large: {1e3 / adaptive_tput:.1f} ms of server time per text for adaptive, "
        f"{1e3 / base_tput:.1f} ms for {BASELINE}",
        f"speed-up of adaptive over {BASELINE}: {adaptive_tput / base_tput:.2f}x throughput, accuracy "
        f"{100 * (correct / max(answered, 1) - base_correct / max(len(base_ok), 1)):+.2f} points "
        f"({n} texts of the test evaluation mix, same server, same run)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_bench.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, default=PATHS.export_dir)
    parser.add_argument("--repo", type=Path, default=PATHS.repository)
    parser.add_argument("--samples", type=int, default=600, help="texts of the evaluation mix to send")
    args = parser.parse_args(argv)

    from adaptive_bench.data import load_eval_samples

    if not (args.export / "manifest.json").exists():
        from adaptive_export.cli import main as export_main

        print(f"[1/4] building the model family into {args.export} (first run only)", flush=True)
        if export_main(["build", "--out", str(args.export)]) != 0:
            return 1
    print(f"[2/4] generating {args.repo}", flush=True)
    build_repository(args.export, args.repo)
    samples = load_eval_samples(args.export, limit=args.samples, seed=0)
    print(f"[3/4] starting tritonserver on {args.repo}", flush=True)
    try:
        server = TritonServer.on_free_ports(args.repo, log_path=PATHS.root / "demo-server.log").start()
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        print(
            f"[4/4] mixed workload: {len(samples)} texts on adaptive with classes {CLASS_WORKERS} "
            f"(closed-loop workers), then on {BASELINE}",
            flush=True,
        )
        result = asyncio.run(_workload(server.grpc_url, samples.texts))
    finally:
        server.stop()
    print()
    print(_report(samples, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
