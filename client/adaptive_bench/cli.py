"""Thin CLI: `python -m adaptive_bench <exit|classes> [--repo DIR] [--export DIR] [--out DIR] [--quick]`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from adaptive_core.config import PATHS

DEFAULT_OUT = {
    "exit": PATHS.results / "bench-exit",
    "classes": PATHS.results / "bench-classes",
    "route": PATHS.results / "bench-route",
}
PLOT_NAME = {
    "exit": "throughput_vs_concurrency.png",
    "classes": "latency_per_class.png",
    "route": "cost_vs_accuracy.png",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adaptive_bench", description=__doc__)
    parser.add_argument("benchmark", choices=sorted(DEFAULT_OUT), help="which benchmark to run")
    common = parser.add_argument_group("inputs and outputs")
    common.add_argument("--repo", type=Path, default=PATHS.repository, help="model repository to serve")
    common.add_argument("--export", type=Path, default=PATHS.export_dir, help="export build (label order check)")
    common.add_argument("--out", type=Path, default=None, help="results folder (default results/bench-<name>)")
    common.add_argument("--quick", action="store_true", help="few samples, short sweeps (tests, smoke runs)")
    common.add_argument("--seed", type=int, default=0)
    ex = parser.add_argument_group("exit")
    ex.add_argument("--batch-size", type=int, default=None, help="texts per request (default 1)")
    ex.add_argument("--concurrency", type=int, nargs="+", default=None, help="closed-loop sweep (default 1 4 8 16)")
    ex.add_argument("--samples", type=int, default=None, help="evaluation-mix samples (default all; --quick 64)")
    ex.add_argument("--entry", default=None, help="entry model measured against the baselines (default adaptive)")
    ex.add_argument("--also", nargs="+", default=None, help="more entries to measure, e.g. large_exit")
    cl = parser.add_argument_group("classes")
    cl.add_argument("--duration-s", type=float, default=None, help="open-loop seconds (default 30; --quick 5)")
    cl.add_argument("--load-factor", type=float, default=None, help="open-loop rate / capacity (default 2)")
    cl.add_argument(
        "--sweep",
        type=float,
        nargs="*",
        default=None,
        metavar="X",
        help="load-sweep points, x capacity (default 0.5 1 1.5; none given: no sweep)",
    )
    cl.add_argument(
        "--one-client",
        action="store_true",
        help="send every class from one client event loop (default: one client process per class)",
    )
    return parser


def _overrides(args: argparse.Namespace, **fields: object) -> dict[str, object]:
    return {k: v for k, v in fields.items() if v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Heavy imports after parsing, so --help is instant.
    from adaptive_bench import classes_bench, exit_bench, route_bench
    from adaptive_bench.data import load_eval_samples
    from adaptive_bench.provenance import provenance
    from adaptive_ops.server import ServerError, TritonServer

    origin = provenance("python -m adaptive_bench", argv)

    out: Path = args.out or DEFAULT_OUT[args.benchmark]
    out.mkdir(parents=True, exist_ok=True)
    if args.benchmark == "exit":
        module = exit_bench
        base = exit_bench.QUICK if args.quick else exit_bench.ExitBenchConfig()
        config = dataclasses.replace(
            base,
            **_overrides(
                args,
                batch_size=args.batch_size,
                samples=args.samples,
                seed=args.seed,
                concurrency=tuple(args.concurrency) if args.concurrency else None,
                entry=args.entry,
                extra_entries=tuple(args.also) if args.also else None,
            ),
        )
        limit = config.samples
    elif args.benchmark == "route":
        module = route_bench
        limit = args.samples or (64 if args.quick else None)
    else:
        module = classes_bench
        base = classes_bench.QUICK if args.quick else classes_bench.ClassesBenchConfig()
        config = dataclasses.replace(
            base,
            **_overrides(
                args,
                duration_s=args.duration_s,
                load_factor=args.load_factor,
                seed=args.seed,
                client_per_class=False if args.one_client else None,
                sweep_factors=None if args.sweep is None else tuple(args.sweep),
            ),
        )
        limit = args.samples or (64 if args.quick else None)
    try:
        samples = load_eval_samples(args.export, limit=limit, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    started = time.time()
    try:
        with TritonServer.on_free_ports(args.repo, log_path=out / "tritonserver.log") as server:
            print(
                f"tritonserver ready on {server.grpc_url} (repository {args.repo}); running {args.benchmark}",
                file=sys.stderr,
                flush=True,
            )
            if args.benchmark == "route":
                results = route_bench.run_route_bench(
                    server.grpc_url,
                    samples,
                    args.export,
                    concurrency=(args.concurrency or [route_bench.CONCURRENCY])[0],
                )
            elif args.benchmark == "exit":
                results = exit_bench.run_exit_bench(server.grpc_url, samples, config, metrics_url=server.metrics_url)
            else:
                results = classes_bench.run_classes_bench(
                    server.grpc_url, samples, config, metrics_url=server.metrics_url, server_pid=server.pid
                )
    except (ServerError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    results["dataset"] = {
        "split": "test",
        "samples": len(samples),
        "mix_size": samples.mix_size,
        "dataset_hash": samples.dataset_hash,
        "label_names": list(samples.label_names),
    }
    results["run"] = {
        "repository": str(Path(args.repo).resolve()),
        "export": str(Path(args.export).resolve()),
        "quick": args.quick,
        "started_unix": started,
        "seconds": time.time() - started,
        "argv": list(argv if argv is not None else sys.argv[1:]),
    }
    results["provenance"] = origin
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_jsonable))
    (out / "results.md").write_text(module.markdown(results))
    module.plot(results, out / PLOT_NAME[args.benchmark])
    print(module.markdown(results))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / PLOT_NAME[args.benchmark]}", file=sys.stderr)
    return 0


def _jsonable(x: object) -> object:
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
