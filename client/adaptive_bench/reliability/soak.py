"""Soak: a long open-loop run at a share of capacity, in windows; memory growth and latency drift.

After the capacity measurement and a warm-up window (allocators and shared-memory pools reach their working set),
the server's memory (server + stub processes) is the baseline. Then Poisson arrivals at `load_factor` x capacity,
the latency-class mix, in consecutive windows of `window_s`; after each window the memory is read again.
Verdicts: memory at the end within `max_rss_growth` of the baseline, and median latency of the last third of the
windows within `max_p50_drift` (p99: `max_p99_drift`) of the first third's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from adaptive_bench.capacity import CapacityConfig
from adaptive_bench.classes_bench import class_picker
from adaptive_bench.load import ClientPool, open_loop, percentiles_ms
from adaptive_bench.reliability.overload import entry_capacity
from adaptive_bench.reliability.target import tree_rss_bytes
from adaptive_ops.repository import ENTRY_MODEL
from adaptive_ops.server import TritonServer


@dataclass(frozen=True)
class SoakConfig:
    """Knobs of the soak.

    Args:
        duration_s: measured seconds (after the warm-up).
        load_factor: arrival rate as a share of the measured capacity.
        window_s: seconds per window.
        warmup_s: seconds of the same load before the memory baseline is taken.
        capacity: how capacity is measured (`adaptive_bench.capacity`).
        max_rss_growth: allowed memory growth over the measured run (0.05 = 5%).
        max_p50_drift: allowed ratio of late-window to early-window median latency.
        max_p99_drift: the same for p99 (noisier on a shared machine).
        seed: seeds arrivals and class draws.
    """

    duration_s: float = 600.0
    load_factor: float = 0.7
    window_s: float = 30.0
    warmup_s: float = 30.0
    capacity: CapacityConfig = field(default_factory=lambda: CapacityConfig(concurrency=(8, 16)))
    max_rss_growth: float = 0.05
    max_p50_drift: float = 1.25
    max_p99_drift: float = 1.5
    seed: int = 0


def drift(values: Sequence[float | None]) -> float | None:
    """Median of the last third of `values` over the median of the first third (None when too few)."""
    vals = [v for v in values if v is not None]
    third = len(vals) // 3
    if third < 1:
        return None
    first, last = float(np.median(vals[:third])), float(np.median(vals[-third:]))
    return last / first if first > 0 else None


def _window(load: object, index: int, t_s: float, rss: int) -> dict[str, object]:
    outcomes = list(load.outcomes.values())
    ok = [o for o in outcomes if o.ok]
    return {
        "window": index,
        "t_s": t_s,
        "sent": len(load.sent),
        "answered": len(ok),
        "rejected": sum(o.rejected for o in outcomes),
        "errors": sum(not o.ok and not o.rejected for o in outcomes),
        "lost": len(load.lost),
        "rate_per_s": len(load.sent) / load.send_s if load.send_s else 0.0,
        "rss_mb": rss / 2**20,
        **percentiles_ms([o.latency_ms for o in ok]),
    }


async def _run(
    server: TritonServer, texts: Sequence[str], config: SoakConfig, progress: Callable[[dict[str, object]], None] | None
) -> dict[str, object]:
    pool = ClientPool(server.grpc_url)
    windows: list[dict[str, object]] = []
    try:
        capacity, points = await entry_capacity(pool, texts, config.capacity)
        rate = config.load_factor * capacity
        pick = class_picker()
        start = time.monotonic()

        async def window(seconds: float, seed: int) -> object:
            return await open_loop(
                pool,
                ENTRY_MODEL,
                texts,
                rate_per_s=rate,
                duration_s=seconds,
                pick_class=pick,
                drain_timeout_s=60.0,
                seed=seed,
            )

        await window(config.warmup_s, config.seed)
        rss_baseline = tree_rss_bytes(server.pid)
        count = max(1, round(config.duration_s / config.window_s))
        for i in range(count):
            load = await window(config.duration_s / count, config.seed + 1 + i)
            windows.append(_window(load, i + 1, time.monotonic() - start, tree_rss_bytes(server.pid)))
            if progress:
                progress(windows[-1])
    finally:
        await pool.close()
    rss_end = windows[-1]["rss_mb"] * 2**20
    p50_drift = drift([w["p50_ms"] for w in windows])
    p99_drift = drift([w["p99_ms"] for w in windows])
    result: dict[str, object] = {
        "capacity_rps": capacity,
        "capacity_points": points,
        "rate_per_s": rate,
        "rss_baseline_mb": rss_baseline / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "rss_max_mb": max(w["rss_mb"] for w in windows),
        "rss_growth": (rss_end - rss_baseline) / rss_baseline if rss_baseline else float("inf"),
        "p50_drift": p50_drift,
        "p99_drift": p99_drift,
        "sent": sum(w["sent"] for w in windows),
        "answered": sum(w["answered"] for w in windows),
        "rejected": sum(w["rejected"] for w in windows),
        "errors": sum(w["errors"] for w in windows),
        "lost": sum(w["lost"] for w in windows),
        "windows": windows,
    }
    result["verdicts"] = {
        "rss_growth_within_bound": result["rss_growth"] <= config.max_rss_growth,
        "no_p50_drift": p50_drift is not None and p50_drift <= config.max_p50_drift,
        "no_p99_drift": p99_drift is not None and p99_drift <= config.max_p99_drift,
        "none_lost": result["lost"] == 0,
        "no_untyped_errors": result["errors"] == 0,
    }
    return result


def run_soak(
    server: TritonServer,
    texts: Sequence[str],
    config: SoakConfig = SoakConfig(),
    progress: Callable[[dict[str, object]], None] | None = None,
) -> dict[str, object]:
    """Capacity, warm-up, then the windows (see the module docstring); `progress` gets each window's row.

    Raises:
        RuntimeError: the entry answered nothing while measuring capacity.
    """
    started = time.time()
    result = asyncio.run(_run(server, texts, config, progress))
    return {"check": "soak", "config": asdict(config), "started_unix_s": started, **result}


def plot(result: dict[str, object], path: Path) -> Path:
    """Server memory and latency percentiles per window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = result["windows"]
    t = [w["t_s"] / 60 for w in windows]
    fig, (mem, lat) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    mem.plot(t, [w["rss_mb"] for w in windows], marker="o")
    mem.axhline(result["rss_baseline_mb"], color="gray", linestyle="--", label="baseline (after warm-up)")
    mem.axhline(
        result["rss_baseline_mb"] * (1 + result["config"]["max_rss_growth"]),
        color="red",
        linestyle=":",
        label=f"+{result['config']['max_rss_growth']:.0%} bound",
    )
    mem.set_ylabel("server RSS (MB)")
    mem.legend(fontsize=8)
    for key in ("p50_ms", "p99_ms"):
        lat.plot(t, [w[key] or np.nan for w in windows], marker="o", label=key.removesuffix("_ms"))
    lat.set_yscale("log")
    lat.set_ylabel("latency (ms)")
    lat.set_xlabel("minutes")
    lat.legend(fontsize=8)
    fig.suptitle(f"soak at {result['config']['load_factor']:.0%} of capacity ({result['rate_per_s']:.0f} req/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
