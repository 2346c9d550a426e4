"""torch.profiler over one stage call: top operators by self time (a table) and a Chrome trace."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

# Columns of the operator table; times in milliseconds, summed over the profiled calls.
OP_COLUMNS = ("name", "calls", "self_cpu_ms", "cpu_total_ms", "self_device_ms", "device_total_ms")


def profile_ops(
    fn: Callable[[], object], device: str, trace_path: Path, *, calls: int = 3, top: int = 15
) -> list[dict[str, object]]:
    """Run `fn` `calls` times under torch.profiler (CPU, and CUDA where the device is a GPU).

    Args:
        fn: one stage call.
        device: torch device the stage runs on.
        trace_path: where the Chrome trace (chrome://tracing, Perfetto) is written.
        calls: profiled calls (after one unprofiled warm-up).
        top: operators kept, by self time on the device that does the work (CUDA when present, else CPU).

    Returns:
        rows with `OP_COLUMNS`, largest self time first.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    gpu = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    fn()
    if gpu:
        torch.cuda.synchronize()
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in range(calls):
            fn()
        if gpu:
            torch.cuda.synchronize()
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace_path))
    rows = []
    for e in prof.key_averages():
        # `device_*` on torch >= 2.4; older releases name them `cuda_*`.
        self_dev = getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) or 0
        dev_total = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)) or 0
        rows.append(
            {
                "name": e.key,
                "calls": int(e.count),
                "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "cpu_total_ms": e.cpu_time_total / 1e3,
                "self_device_ms": self_dev / 1e3,
                "device_total_ms": dev_total / 1e3,
            }
        )
    key = "self_device_ms" if gpu else "self_cpu_ms"
    rows.sort(key=lambda r: r[key], reverse=True)
    return rows[:top]


def write_ops_csv(rows: list[dict[str, object]], path: Path) -> Path:
    """The operator table as CSV (`OP_COLUMNS`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=OP_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return path
