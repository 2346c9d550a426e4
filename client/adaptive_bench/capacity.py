"""Closed-loop capacity measured until it is stable, the way perf_analyzer measures a point.

One 5 s window per concurrency is one noisy sample (on the 2-core VM one concurrency's window moved by more than 2x
across runs: docs/lab-notes/2026-11-29-bench-classes.md), the best of a few such samples runs high, and the classes
benchmark sends 2x the best. Here each concurrency runs without pause while throughput is counted in back-to-back
windows (by answer time, so no window pays for a drain); the point is the mean of the last `stable_windows` once they
agree within `tolerance` of their mean (perf_analyzer's stability rule, on throughput only), or of the last ones when
`max_windows` pass first (flagged unstable).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from adaptive_bench.load import ClientPool, closed_loop, percentiles_ms
from adaptive_bench.requests import RequestKwargs, infer


@dataclass(frozen=True)
class CapacityConfig:
    """How a capacity point is measured.

    Args:
        concurrency: closed-loop concurrencies tried; capacity is the best point.
        window_s: seconds per measurement window.
        stable_windows: consecutive windows that must agree.
        tolerance: how far (share of their mean) each of those windows may stray from their mean.
        max_windows: windows per point before giving up on stability.
    """

    concurrency: tuple[int, ...] = (4, 8, 16, 32)
    window_s: float = 3.0
    stable_windows: int = 3
    tolerance: float = 0.10
    max_windows: int = 6

    def __post_init__(self) -> None:
        if not 1 <= self.stable_windows <= self.max_windows:
            raise ValueError(f"need 1 <= stable_windows <= max_windows, got {self.stable_windows}, {self.max_windows}")


def is_stable(rates: Sequence[float], n: int, tolerance: float) -> bool:
    """Whether each of the last `n` window rates lies within `tolerance` x their mean of that mean."""
    if len(rates) < n:
        return False
    last = rates[-n:]
    mean = sum(last) / n
    return mean > 0 and all(abs(r - mean) <= tolerance * mean for r in last)


async def capacity_point(
    pool: ClientPool,
    model: str,
    requests: Sequence[Sequence[str]],
    *,
    concurrency: int,
    kwargs: RequestKwargs,
    config: CapacityConfig,
    desc: str = "",
) -> dict[str, object]:
    """Answered requests/s of `concurrency` closed-loop workers, windowed until stable.

    Returns:
        throughput_sps (mean of the last `stable_windows` windows), stable, window_sps (every window), errors, and
        latency percentiles of the answers inside those last windows.
    """
    done: list[tuple[float, bool, float]] = []  # (answer time, ok, latency ms)
    counter = iter(range(10**12))
    stop = asyncio.Event()
    bar = tqdm(total=config.max_windows, desc=desc, unit="window", leave=False)

    async def worker() -> None:
        client = pool.next()
        while not stop.is_set():
            o = await infer(client, model, requests[next(counter) % len(requests)], kwargs)
            done.append((time.perf_counter(), o.ok, o.latency_ms))

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    start = time.perf_counter()
    rates: list[float] = []
    try:
        while len(rates) < config.max_windows and not is_stable(rates, config.stable_windows, config.tolerance):
            lo = start + len(rates) * config.window_s
            await asyncio.sleep(max(0.0, lo + config.window_s - time.perf_counter()))
            rates.append(sum(1 for t, ok, _ in done if ok and lo <= t < lo + config.window_s) / config.window_s)
            bar.update(1)
            bar.set_postfix(sps=f"{rates[-1]:.1f}")
    finally:
        stop.set()
        await asyncio.gather(*workers)  # in-flight requests are answered; their answers count in no window
        bar.close()
    since = start + (len(rates) - config.stable_windows) * config.window_s
    until = start + len(rates) * config.window_s
    counted = [(ok, ms) for t, ok, ms in done if since <= t < until]
    return {
        "throughput_sps": sum(rates[-config.stable_windows :]) / config.stable_windows,
        "stable": is_stable(rates, config.stable_windows, config.tolerance),
        "window_sps": rates,
        "errors": sum(1 for ok, _ in counted if not ok),
        **percentiles_ms([ms for ok, ms in counted if ok]),
    }


async def measure_capacity(
    pool: ClientPool, model: str, requests: Sequence[Sequence[str]], *, kwargs: RequestKwargs, config: CapacityConfig
) -> tuple[float, dict[str, dict]]:
    """Best stable throughput over `config.concurrency`, after a short warm-up, and every point.

    Raises:
        RuntimeError: the model answered nothing.
    """
    await closed_loop(pool, model, requests[:8], concurrency=4, kwargs=kwargs, desc="warm-up")
    points = {
        str(c): await capacity_point(
            pool, model, requests, concurrency=c, kwargs=kwargs, config=config, desc=f"capacity c={c}"
        )
        for c in config.concurrency
    }
    capacity = max(p["throughput_sps"] for p in points.values())
    if capacity <= 0:
        raise RuntimeError(f"{model} answered nothing while measuring capacity: {points}")
    return capacity, points
