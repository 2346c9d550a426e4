"""`make load`: serve a repository on free ports, run locust headless against it, stop the server.

    python -m adaptive_bench.loadtest --repo build/model_repository --time 60s --out results/load
    python -m adaptive_bench.loadtest --url grpc://127.0.0.1:8001 --time 60s    # a server already running

Writes locust's CSV (`load_stats.csv`, ...) and HTML report plus `verdicts.json` under --out; exits with locust's
code, which is 1 when a class misses its p99 SLA (see locustfile.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def run_locust(
    url: str,
    out: Path,
    *,
    run_time: str,
    users: int,
    spawn_rate: float,
    texts_file: Path | None = None,
    model: str = "adaptive",
    timeout_s: float = 900.0,
    origin: dict[str, object] | None = None,
) -> int:
    """Run locust headless against `url` (grpc://host:port); returns its exit code.

    `origin` (the caller's provenance) goes into `verdicts.json`; without it the locustfile records its own.

    Raises:
        subprocess.TimeoutExpired: locust ran past `timeout_s`.
    """
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ADAPTIVE_VERDICT_JSON=str(out / "verdicts.json"), ADAPTIVE_MODEL=model)
    if origin is not None:
        env["ADAPTIVE_PROVENANCE"] = json.dumps(origin)
    if texts_file:
        env["ADAPTIVE_TEXTS_FILE"] = str(texts_file)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "-t",
        run_time,
        "--host",
        url,
        "--csv",
        str(out / "load"),
        "--html",
        str(out / "report.html"),
        "--only-summary",
        "--stop-timeout",
        "5",
    ]
    return subprocess.run(cmd, env=env, timeout=timeout_s).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_bench.loadtest", description=__doc__.split("\n\n")[0])
    srv = parser.add_argument_group("server (one of)")
    srv.add_argument("--url", default=None, help="a running server, grpc://host:port")
    srv.add_argument("--repo", type=Path, default=None, help="serve this repository on free ports for the run")
    run = parser.add_argument_group("load")
    run.add_argument("--time", default="60s", help="locust run time (e.g. 60s, 5m)")
    run.add_argument("--users", type=int, default=6)
    run.add_argument("--spawn-rate", type=float, default=6.0)
    run.add_argument("--export", type=Path, default=None, help="export build: texts from its evaluation mix")
    run.add_argument("--samples", type=int, default=256)
    run.add_argument("--out", type=Path, default=Path("results/load"))
    args = parser.parse_args(argv)
    if (args.url is None) == (args.repo is None):
        print("error: give exactly one of --url and --repo", file=sys.stderr)
        return 2
    from adaptive_bench.provenance import provenance
    from adaptive_ops.server import ServerError, TritonServer

    origin = provenance("python -m adaptive_bench.loadtest", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    texts_file = None
    if args.export is not None:
        from adaptive_bench.data import load_eval_samples

        texts_file = args.out / "texts.txt"
        texts = load_eval_samples(args.export, limit=args.samples).texts
        texts_file.write_text("\n".join(" ".join(t.split()) for t in texts) + "\n")  # one text per line
    settings = {
        "run_time": args.time,
        "users": args.users,
        "spawn_rate": args.spawn_rate,
        "texts_file": texts_file,
        "origin": origin,
    }
    if args.url:
        return run_locust(args.url, args.out, **settings)  # type: ignore[arg-type]
    try:
        with TritonServer.on_free_ports(args.repo, log_path=args.out / "tritonserver.log") as server:
            return run_locust(f"grpc://{server.grpc_url}", args.out, **settings)  # type: ignore[arg-type]
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
