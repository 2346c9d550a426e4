"""`adaptive-serve` (`make serve`): run a model repository on a local tritonserver until Ctrl-C, with the stub
watchdog (a dead Python stub) and the supervisor (a dead tritonserver, restarted within a budget:
`adaptive_ops.supervisor`).

python -m adaptive_ops.serve --repo build/model_repository          # serve until Ctrl-C
python -m adaptive_ops.serve --repo tests/... --http-port 18000 --check
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from adaptive_core.config import SERVER
from adaptive_ops.server import ServerError, TritonServer, tail
from adaptive_ops.supervisor import RestartCounter, RestartPolicy, Supervisor
from adaptive_ops.watchdog import StubWatchdog, describe


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptive-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="model repository folder")
    net = parser.add_argument_group("network (loopback by default)")
    net.add_argument("--host", default=SERVER.host)
    net.add_argument("--http-port", type=int, default=SERVER.http_port)
    net.add_argument("--grpc-port", type=int, default=SERVER.grpc_port)
    net.add_argument("--metrics-port", type=int, default=SERVER.metrics_port)
    run = parser.add_argument_group("run")
    run.add_argument("--ready-timeout-s", type=float, default=SERVER.ready_timeout_s)
    run.add_argument("--log", type=Path, default=None, help="server log file (default: a temp file)")
    run.add_argument("--log-verbose", type=int, default=0)
    run.add_argument("--check", action="store_true", help="start, report ready, stop (a smoke test)")
    sup = parser.add_argument_group("supervision (tritonserver restarted when it exits on its own)")
    sup.add_argument("--max-restarts", type=int, default=RestartPolicy.max_restarts, help="restarts per window")
    sup.add_argument("--restart-window-s", type=float, default=RestartPolicy.window_s)
    sup.add_argument("--restart-backoff-s", type=float, default=RestartPolicy.backoff_s, help="first wait, doubling")
    sup.add_argument("--restart-metrics-file", type=Path, default=None, help="Prometheus text file of restarts")
    run.add_argument(
        "--no-watchdog",
        action="store_true",
        help="do not restart the server when a Python backend stub dies (see adaptive_ops.watchdog)",
    )
    args = parser.parse_args(argv)

    server = TritonServer(
        args.repo,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_path=args.log,
        log_verbose=args.log_verbose,
    )
    try:
        server.start(ready_timeout_s=args.ready_timeout_s)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"tritonserver ready: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}"
        f"  (log {server.log_path})",
        flush=True,
    )
    if args.check:
        server.stop()
        return 0
    stop = {"now": False}

    def _on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    watchdog = StubWatchdog(server, on_recovery=lambda r: print(describe(r), flush=True))
    if not args.no_watchdog:
        watchdog.start()
    policy = RestartPolicy(args.max_restarts, args.restart_window_s, args.restart_backoff_s)
    supervisor = Supervisor(
        server, policy, RestartCounter(args.restart_metrics_file), log=lambda s: print(s, flush=True)
    )
    try:
        # A watchdog restart leaves the server stopped for a moment: the supervisor only acts on a server that died.
        while not stop["now"] and (watchdog.restarting or supervisor.check()):
            time.sleep(0.5)
    finally:
        watchdog.stop()
        server.stop()
    if supervisor.gave_up and not stop["now"]:
        print(f"error: tritonserver keeps exiting; log tail:\n{tail(server.log_path, 40)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
