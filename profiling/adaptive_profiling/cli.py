"""Thin CLI: `python -m adaptive_profiling [--size S ...] [--model M ...] [--out DIR] [--device cpu|cuda] ...`.

Runs latency, memory and throughput against batch size, the roofline, torch.profiler operator tables, NVML
sampling and the per-hop server statistics, and writes JSON, PNGs and `report.md` into `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from adaptive_core.config import PATHS

DEFAULT_OUT = PATHS.results / "profile" / "cpu"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adaptive_profiling", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--export", type=Path, default=PATHS.export_dir, help="export build (manifest + weights)")
    io.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    io.add_argument("--size", nargs="+", default=None, help="sizes to profile (default: all in the manifest)")
    io.add_argument("--quick", action="store_true", help="tiny sweeps and short timings (tests, smoke runs)")
    off = p.add_argument_group("offline (torch)")
    off.add_argument("--device", default="", help="cpu, cuda or cuda:N (default: cuda when available)")
    off.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    off.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 1 8 32 64")
    off.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: each size's max)")
    off.add_argument("--profile-batch", type=int, default=None, help="torch.profiler batch size (default 8)")
    off.add_argument("--min-time-s", type=float, default=None, help="least seconds per timing (default 0.3)")
    srv = p.add_argument_group("server side")
    srv.add_argument("--model", nargs="+", default=None, help="entry models to drive (default <size>_exit)")
    srv.add_argument("--repo", type=Path, default=None, help=f"repository to serve (default {PATHS.repository})")
    srv.add_argument("--url", default=None, help="gRPC URL of a running server instead of starting one")
    srv.add_argument("--metrics-url", default=None, help="its metrics endpoint (default http://<host>:8002/metrics)")
    srv.add_argument("--requests", type=int, default=None, help="requests per entry model (default 150)")
    srv.add_argument("--concurrency", type=int, default=None, help="requests in flight (default 4)")
    srv.add_argument("--no-server", action="store_true", help="skip the server-side part")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .runner import QUICK, ProfileConfig, run_profile  # torch loads here, after --help

    base = QUICK if args.quick else ProfileConfig()
    fields = {
        "export_dir": args.export,
        "out": args.out,
        "sizes": tuple(args.size) if args.size else None,
        "models": tuple(args.model) if args.model else None,
        "device": args.device or None,
        "dtype": args.dtype,
        "batch_sizes": tuple(args.batch_sizes) if args.batch_sizes else None,
        "seq_len": args.seq_len,
        "profile_batch": args.profile_batch,
        "min_time_s": args.min_time_s,
        "repo": args.repo,
        "url": args.url,
        "metrics_url": args.metrics_url,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "server": False if args.no_server else None,
        "argv": tuple(argv if argv is not None else sys.argv[1:]),
    }
    cfg = dataclasses.replace(base, **{k: v for k, v in fields.items() if v is not None})
    bad = [b for b in cfg.batch_sizes if b < 1] + ([cfg.profile_batch] if cfg.profile_batch < 1 else [])
    if bad or cfg.requests < 1 or cfg.concurrency < 1:
        print("error: batch sizes, --requests and --concurrency must be >= 1", file=sys.stderr)
        return 2
    try:
        result = run_profile(cfg)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(result['files'])} files to {cfg.out}: {cfg.out / 'report.md'}", file=sys.stderr)
    if not result["ok"]:
        print(f"error: server part failed: {result['server_error']}", file=sys.stderr)
        return 1
    return 0
