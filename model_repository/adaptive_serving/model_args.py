"""`initialize` helper shared by the Python-backend models: config parameters and the version folder."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def model_params(args: dict, required: Sequence[str] = ()) -> tuple[dict[str, str], Path]:
    """Parse a Python model's `initialize` args into (string parameters, version folder).

    Raises:
        TritonModelException: a required parameter is missing (the message names the model and the key).
    """
    import triton_python_backend_utils as pb_utils

    config = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    for key in required:
        if key not in params:
            raise pb_utils.TritonModelException(f"{args['model_name']}: config parameter '{key}' is missing")
    return params, Path(args["model_repository"]) / args["model_version"]


def lower_cpu_priority(params: dict[str, str]) -> None:
    """Lower the CPU priority of every thread of this process but the stub's health thread, as the config
    parameters ask; threads started afterwards (the runtime's thread pools, the gate's event loop) inherit it.
    `nice`: niceness 0-19 on top of the process's. `sched_idle` = "1": Linux SCHED_IDLE, so the threads run only on
    cores no normal thread wants (unprivileged, unlike raising a priority, so it works in a container without extra
    capabilities). Linux keeps both per thread, and the stub has threads of its own before `initialize` runs."""
    nice, idle = int(params.get("nice", "0")), params.get("sched_idle", "0") == "1"
    if not nice and not idle:
        return
    health = stub_health_thread()
    for tid in map(int, os.listdir("/proc/self/task")):
        if tid == health:
            continue
        try:
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
            if idle:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # the thread ended meanwhile
            continue


def stub_health_thread() -> int | None:
    """The Python-backend stub's health thread: the first thread the stub starts after its main one (pb_stub.cc
    starts it right after the interpreter, before any model code). None outside a stub with threads.

    It must keep its priority. It sets a health flag every 300 ms, and Triton 2.51's backend declares the stub dead
    when the flag stays unset for 1 s while it waits for the stub's answer. During a load it then waits forever for
    the stub to exit, which it never does: the server never becomes ready. Under SCHED_IDLE, on cores busy loading
    the other models, the thread missed that second (docs/lab-notes/2026-11-29-startup-hang.md).
    """
    main, started = os.getpid(), {}
    for tid in map(int, os.listdir("/proc/self/task")):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        if tid != main:
            started[tid] = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time, after the name
    return min(started, key=lambda tid: (started[tid], tid), default=None)


@dataclass
class FaultInjection:
    """Faults a stage model can be told to inject (tests and drills; off by default).

    The faults start after the model's warm-up calls: Triton 2.51 kills the server (SIGSEGV) when a warm-up request
    fails, and a stage told to fail must still load (docs/triton-2.51.md).

    Args:
        delay_s: sleep before each execute call (`inject_delay_ms` parameter).
        error: fail every call with this message (`inject_error` parameter); "" = never.
        spared: the first calls that run untouched (the config's `model_warmup` samples).
    """

    delay_s: float = 0.0
    error: str = ""
    spared: int = 0

    @classmethod
    def from_params(cls, params: dict[str, str], config: dict | None = None) -> FaultInjection:
        """The faults a model's parameters ask for; `config` (the parsed model config) gives its warm-up count."""
        warmups = len((config or {}).get("model_warmup", []))
        return cls(float(params.get("inject_delay_ms", "0")) / 1e3, params.get("inject_error", ""), warmups)

    def apply(self) -> None:
        """Sleep, then raise RuntimeError when an error is set (call inside the model's error handling)."""
        if self.spared > 0:
            self.spared -= 1
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.error:
            raise RuntimeError(self.error)
