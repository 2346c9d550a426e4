"""A benchmark's own tritonserver on free loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

from adaptive_serving.server import TritonServer


def free_ports(count: int) -> list[int]:
    """Ports the OS says are free right now (bound then released together, so they are distinct)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def bench_server(repo: Path, log_path: Path) -> TritonServer:
    """A not-yet-started server on `repo`, bound to loopback on free ports; use it as a context manager.

    Args:
        repo: model repository folder.
        log_path: where the server writes its log (kept next to the results).
    """
    http, grpc, metrics = free_ports(3)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, log_path=log_path)
