"""CPU time over a run: the server (tritonserver, each model's stubs) and the load generator beside it.

On a CPU the latency classes rest on what runs at normal priority: the standard lane's stubs run under Linux
`SCHED_IDLE`, everything else (gRPC, ensemble, tokenizer, gate, express stages, and a generator sharing the cores)
competes for the CPU as equals. Per request sent, this shows what each part costs and in which CPU class.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

import psutil

from adaptive_ops.watchdog import stub_models

SERVER = "tritonserver"
GENERATOR = "load generator"


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far: per process group, and which groups run under SCHED_IDLE."""

    seconds: dict[str, float]
    idle: frozenset[str]


def _rusage_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _process_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _is_idle(pid: int) -> bool:
    try:
        return os.sched_getscheduler(pid) == os.SCHED_IDLE
    except OSError:
        return False


def cpu_snapshot(server_pid: int | None) -> CpuSnapshot:
    """CPU seconds of the server, of each model's stubs (summed over instances), and of this process with its
    finished children (the per-class client processes, once joined)."""
    seconds = {GENERATOR: _rusage_s(resource.RUSAGE_SELF) + _rusage_s(resource.RUSAGE_CHILDREN)}
    idle = set()
    if server_pid is not None:
        try:
            seconds[SERVER] = _process_s(server_pid)
        except psutil.NoSuchProcess:
            pass
        for pid, model in stub_models(server_pid).items():
            try:
                seconds[model] = seconds.get(model, 0.0) + _process_s(pid)
            except psutil.NoSuchProcess:
                continue
            if _is_idle(pid):
                idle.add(model)
    return CpuSnapshot(seconds, frozenset(idle))


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot, requests: int) -> dict[str, dict[str, object]]:
    """Per group, most CPU first: CPU ms per request sent, share of the CPU used by all groups, CPU class.
    The server's own CPU excludes its stubs' (psutil counts a process's own threads only)."""
    spent = {k: after.seconds[k] - before.seconds.get(k, 0.0) for k in after.seconds}
    total = sum(spent.values()) or 1.0
    return {
        k: {
            "ms_per_request": 1e3 * v / max(requests, 1),
            "share": v / total,
            "cpu_class": "idle" if k in after.idle else "normal",
        }
        for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
        if v > 0
    }
