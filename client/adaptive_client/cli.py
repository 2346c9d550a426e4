"""Thin CLI of the client package.

    python -m adaptive_client classify --url grpc://127.0.0.1:8001 --class critical "some text"
    printf 'one\ntwo\n' | python -m adaptive_client classify --url http://127.0.0.1:8000

`classify` prints one JSON line per text (texts from arguments, else `--file`, else stdin, one per line).
Heavy imports (tritonclient, numpy) happen after parsing, so --help is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

CLASSES = ("critical", "sensitive", "batch")  # mirrors adaptive_core.config.LATENCY_CLASSES (checked in tests)


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
                chunk = texts[i : i + args.batch_size]
                for text, r in zip(chunk, client.classify(chunk, latency_class=args.latency_class)):
                    print(json.dumps({"text": text, **r.__dict__}), flush=True)
    except (AdaptiveClientError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _classify(args)
