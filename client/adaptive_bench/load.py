"""Load generators on one asyncio gRPC client pool: closed loop (N workers) and open loop (Poisson arrivals)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from adaptive_bench.requests import Outcome, RequestKwargs, infer

# gRPC channels per pool: open-loop traffic spreads over a few HTTP/2 connections, so a per-connection
# stream limit never holds a send back.
CHANNELS = 4


class ClientPool:
    """A few asyncio gRPC clients on one server, used round-robin (create inside a running event loop).

    Args:
        url: the server's gRPC address (host:port).
        channels: clients (connections) in the pool.
    """

    def __init__(self, url: str, channels: int = CHANNELS) -> None:
        from tritonclient.grpc import aio

        self.clients = [aio.InferenceServerClient(url) for _ in range(channels)]
        self._next = 0

    def next(self) -> object:
        self._next = (self._next + 1) % len(self.clients)
        return self.clients[self._next]

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


@dataclass
class ClosedLoopResult:
    """Outcomes of a closed-loop run, in completion order.

    Args:
        outcomes: one per request.
        items: index into the request list, per outcome.
        wall_s: first send to last answer.
    """

    outcomes: list[Outcome] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    wall_s: float = 0.0


async def closed_loop(
    pool: ClientPool,
    model: str,
    requests: Sequence[Sequence[str]],
    *,
    concurrency: int,
    kwargs: RequestKwargs,
    duration_s: float | None = None,
    desc: str = "",
) -> ClosedLoopResult:
    """`concurrency` workers, each sending its next request as soon as its previous one is answered.

    Args:
        pool: clients.
        model: model name.
        requests: the texts of each request.
        concurrency: workers (requests in flight).
        kwargs: latency class of every request.
        duration_s: None: send each request once; else cycle through them until this many seconds passed.
        desc: progress bar label.
    """
    result = ClosedLoopResult()
    counter = iter(range(10**12))
    total = None if duration_s else len(requests)
    bar = tqdm(total=total, desc=desc, unit="req", leave=False, mininterval=0.5)
    start = time.perf_counter()

    async def worker() -> None:
        client = pool.next()
        while True:
            i = next(counter)
            if duration_s is None and i >= len(requests):
                return
            if duration_s is not None and time.perf_counter() - start >= duration_s:
                return
            j = i % len(requests)
            result.outcomes.append(await infer(client, model, requests[j], kwargs))
            result.items.append(j)
            bar.update(1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - start
    bar.close()
    return result


@dataclass
class OpenLoopResult:
    """Outcomes of an open-loop run.

    Args:
        sent: requests sent, with their class name.
        outcomes: request index -> outcome, for every request that got one before the final wait ended.
        lost: indices of requests with no answer and no error when the final wait ended.
        send_lag_ms: per request, how late it left against its Poisson schedule (client overload shows here).
        send_s: first to last send.
        wall_s: first send to the end of the final wait.
    """

    sent: list[str] = field(default_factory=list)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)
    send_s: float = 0.0
    wall_s: float = 0.0


async def open_loop(
    pool: ClientPool,
    model: str,
    texts: Sequence[str],
    *,
    rate_per_s: float,
    duration_s: float,
    pick_class: Callable[[np.random.Generator], tuple[str, RequestKwargs]],
    drain_timeout_s: float,
    seed: int = 0,
    texts_per_request: int = 1,
) -> OpenLoopResult:
    """Poisson arrivals at `rate_per_s` for `duration_s`; each arrival is sent without waiting for any answer.

    Every request becomes a task; after the last send one wait with `drain_timeout_s` collects them, and any
    still pending then is counted lost (and cancelled).

    Args:
        pool: clients.
        model: model name.
        texts: texts cycled through, one per request.
        rate_per_s: mean arrival rate.
        duration_s: how long arrivals keep coming.
        pick_class: draws a latency class (name, request kwargs) for each arrival.
        drain_timeout_s: final wait for answers after the last send.
        seed: seeds arrival times, classes and text order.
        texts_per_request: texts in each request (consecutive texts of `texts`, cycled).
    """
    rng = np.random.default_rng(seed)
    result = OpenLoopResult()
    tasks: dict[asyncio.Task[Outcome], int] = {}
    bar = tqdm(
        total=int(rate_per_s * duration_s),
        desc=f"open loop {rate_per_s:.0f}/s",
        unit="req",
        leave=False,
        mininterval=0.5,
    )
    start = time.perf_counter()
    due = 0.0
    i = 0
    while True:
        due += rng.exponential(1.0 / rate_per_s)
        if due >= duration_s:
            break
        wait = start + due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        result.send_lag_ms.append(max(0.0, -wait) * 1e3)
        name, kwargs = pick_class(rng)
        result.sent.append(name)
        batch = [texts[(i * texts_per_request + j) % len(texts)] for j in range(texts_per_request)]
        tasks[asyncio.create_task(infer(pool.next(), model, batch, kwargs))] = i
        i += 1
        bar.update(1)
    result.send_s = time.perf_counter() - start
    bar.close()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=drain_timeout_s)
        for t in done:
            # infer() returns server errors as outcomes; anything raised here is a client-side fault, kept typed.
            e = t.exception()
            result.outcomes[tasks[t]] = (
                t.result()
                if e is None
                else Outcome(0.0, error_status=f"CLIENT_{type(e).__name__}", error_reason="other", error_message=str(e))
            )
        for t in pending:
            result.lost.append(tasks[t])
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    result.wall_s = time.perf_counter() - start
    return result


def percentiles_ms(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/mean/max of latencies (None for an empty list)."""
    if not latencies_ms:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    a = np.asarray(latencies_ms, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "max_ms": float(a.max()),
    }


def _class_process(
    url: str,
    model: str,
    texts: Sequence[str],
    name: str,
    rate_per_s: float,
    duration_s: float,
    drain_timeout_s: float,
    seed: int,
) -> OpenLoopResult:
    """One class's open loop in a process of its own (run by `open_loop_per_class`)."""
    from adaptive_core.config import LATENCY_CLASSES

    kwargs = RequestKwargs.for_class(LATENCY_CLASSES[name])

    async def run() -> OpenLoopResult:
        pool = ClientPool(url)
        try:
            return await open_loop(
                pool,
                model,
                texts,
                rate_per_s=rate_per_s,
                duration_s=duration_s,
                pick_class=lambda rng: (name, kwargs),
                drain_timeout_s=drain_timeout_s,
                seed=seed,
            )
        finally:
            await pool.close()

    return asyncio.run(run())


def open_loop_per_class(
    url: str,
    model: str,
    texts: Sequence[str],
    *,
    rate_per_s: float,
    duration_s: float,
    mix: dict[str, float],
    drain_timeout_s: float,
    seed: int = 0,
) -> OpenLoopResult:
    """Poisson arrivals of each class from its own client process (rate x its share), merged into one result.

    In production the classes come from different clients; one event loop sending all of them would make a
    critical answer wait behind the callbacks of thousands of pending batch requests, a client-side delay the
    server did not cause. Each class's Poisson stream is independent, so their sum is the same Poisson mix.

    Args:
        url: the server's gRPC address.
        model: model name.
        texts: texts cycled through (each class starts at another offset).
        rate_per_s: total mean arrival rate.
        duration_s: how long arrivals keep coming.
        mix: class name -> share of the arrivals.
        drain_timeout_s: final wait for answers after the last send (per process).
        seed: base seed; class k uses seed + k.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    names = [n for n, share in mix.items() if share > 0]
    offset = len(texts) // max(len(names), 1)
    # spawn: a fresh interpreter per class (no forked gRPC state).
    with ProcessPoolExecutor(len(names), mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = [
            ex.submit(
                _class_process,
                url,
                model,
                [*texts[k * offset :], *texts[: k * offset]],
                name,
                rate_per_s * mix[name],
                duration_s,
                drain_timeout_s,
                seed + k,
            )
            for k, name in enumerate(names)
        ]
        parts = [f.result() for f in futures]
    merged = OpenLoopResult()
    for part in parts:
        base = len(merged.sent)
        merged.sent += part.sent
        merged.outcomes.update({base + i: o for i, o in part.outcomes.items()})
        merged.lost += [base + i for i in part.lost]
        merged.send_lag_ms += part.send_lag_ms
        merged.send_s = max(merged.send_s, part.send_s)
        merged.wall_s = max(merged.wall_s, part.wall_s)
    return merged
