"""Thin CLI of the client package.

    python -m adaptive_client classify --url grpc://127.0.0.1:8001 --class critical "some text"
    printf 'one\ntwo\n' | python -m adaptive_client classify --url http://127.0.0.1:8000
    python -m adaptive_client batching-bench --url 127.0.0.1:8001 --samples 256 --out results/batching

`classify` prints one JSON line per text (texts from arguments, else `--file`, else stdin, one per line).
Heavy imports (tritonclient, numpy, the data loader) happen after parsing, so --help is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

CLASSES = ("critical", "sensitive", "batch")  # mirrors adaptive_serving.config.LATENCY_CLASSES (checked in tests)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adaptive_client", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cl = sub.add_parser("classify", help="classify texts, one JSON line each")
    cl.add_argument("texts", nargs="*", help="texts (default: --file, else stdin, one per line)")
    conn = cl.add_argument_group("server")
    conn.add_argument("--url", default="grpc://127.0.0.1:8001", help="grpc://host:port or http://host:port")
    conn.add_argument("--model", default="adaptive", help="entry model")
    conn.add_argument("--class", dest="latency_class", default="batch", choices=CLASSES, help="latency class")
    conn.add_argument("--max-retries", type=int, default=3, help="retries while the server is unreachable")
    conn.add_argument("--backoff-s", type=float, default=0.2, help="first retry delay, doubling")
    inp = cl.add_argument_group("input")
    inp.add_argument("--file", type=Path, default=None, help="read texts from this file, one per line")
    inp.add_argument("--batch-size", type=int, default=16, help="texts per request")

    bb = sub.add_parser("batching-bench", help="batching helpers vs naive fixed-size batching (JSON + markdown)")
    srv = bb.add_argument_group("server (one of)")
    srv.add_argument("--url", default=None, help="a running server's gRPC address")
    srv.add_argument("--repo", type=Path, default=None, help="serve this repository on free ports for the run")
    data = bb.add_argument_group("data and output")
    data.add_argument("--export", type=Path, default=None, help="export build (label order check)")
    data.add_argument("--samples", type=int, default=256, help="evaluation-mix samples")
    data.add_argument("--repeats", type=int, default=2, help="runs per variant (best kept)")
    data.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    data.add_argument("--out", type=Path, default=Path("results/batching"), help="results folder")
    data.add_argument("--seed", type=int, default=0)
    return parser


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        return list(args.texts)
    lines = args.file.read_text().splitlines() if args.file else sys.stdin.read().splitlines()
    return [line for line in lines if line.strip()]


def _classify(args: argparse.Namespace) -> int:
    from adaptive_client.client import AdaptiveClient, AdaptiveClientError

    texts = _read_texts(args)
    if not texts:
        print("error: no texts given (arguments, --file or stdin)", file=sys.stderr)
        return 2
    try:
        with AdaptiveClient(args.url, args.model, max_retries=args.max_retries, backoff_s=args.backoff_s) as client:
            for i in range(0, len(texts), args.batch_size):
                chunk = texts[i:i + args.batch_size]
                for text, r in zip(chunk, client.classify(chunk, latency_class=args.latency_class)):
                    print(json.dumps({"text": text, **r.__dict__}), flush=True)
    except (AdaptiveClientError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


def _batching_bench(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from adaptive_client.batching import batching_bench, markdown
    from adaptive_client.bench.data import load_eval_samples
    from adaptive_client.client import AdaptiveClientError
    from adaptive_serving.server import ServerError, TritonServer

    if (args.url is None) == (args.repo is None):
        print("error: give exactly one of --url and --repo", file=sys.stderr)
        return 2
    samples = load_eval_samples(args.export, limit=args.samples, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    server = (TritonServer.on_free_ports(args.repo, log_path=args.out / "tritonserver.log") if args.repo
              else contextlib.nullcontext())
    try:
        with server as s:
            url = s.grpc_url if args.repo else args.url
            report = asyncio.run(batching_bench(url, samples.texts, samples.labels, repeats=args.repeats,
                                                concurrency=args.concurrency, seed=args.seed))
    except (ServerError, AdaptiveClientError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    report["dataset"] = {"split": "test", "samples": len(samples), "mix_size": samples.mix_size,
                         "dataset_hash": samples.dataset_hash}
    (args.out / "batching.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (args.out / "batching.md").write_text(table)
    print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _classify(args) if args.command == "classify" else _batching_bench(args)
