"""Overload: open-loop Poisson arrivals at a multiple of capacity. Nothing may be lost.

1. capacity: closed loop (batch class), the best requests/s over a few concurrencies;
2. the server's memory (server + stub processes) after that warm-up;
3. Poisson arrivals at `load_factor` x capacity for `duration_s`, the latency-class mix of the classes benchmark;
   every request carries a queue timeout (its class's; the batch class, which has none, gets `batch_timeout_us`,
   so its backlog is shed instead of growing for the whole run);
4. checks: sent = answered + typed rejections (UNAVAILABLE, queue timeout), no other error, none lost, no outcome
   later than its deadline, and the server's memory after the drain within `max_rss_growth` of step 2.

A request's deadline is its queue timeout in each of the entry's two queued steps (tokenizer, then the gate) plus
`grace_s`: Triton's queue timeout bounds waiting in a queue, not execution, and past the gate the first stage runs
without one (an admitted request gets at least one exit).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from adaptive_bench.capacity import CapacityConfig, measure_capacity
from adaptive_bench.classes_bench import CLASS_MIX
from adaptive_bench.load import ClientPool, open_loop, percentiles_ms
from adaptive_bench.reliability.target import tree_rss_bytes
from adaptive_bench.requests import RequestKwargs
from adaptive_core.config import LATENCY_CLASSES
from adaptive_ops.repository import ENTRY_MODEL
from adaptive_ops.server import TritonServer

QUEUED_STEPS = 2  # the entry's steps with a class queue (tokenizer, then router or cascade)


@dataclass(frozen=True)
class OverloadConfig:
    """Knobs of the overload run.

    Args:
        load_factor: arrival rate as a multiple of the measured capacity.
        duration_s: seconds of arrivals.
        capacity: how capacity is measured (`adaptive_bench.capacity`).
        texts_per_request: texts in each request (capacity is measured with the same requests).
        batch_timeout_us: queue timeout given to batch-class requests (their class has none).
        grace_s: time on top of the queue timeouts for execution and the first stage's queue (a shared CPU, and
            the standard lane runs at a lower CPU priority).
        settle_s: wait after the drain before the memory is read again.
        max_rss_growth: allowed growth of the server's memory across the run (0.25 = 25%; the first overload
            raises the stubs' allocator and shared-memory high-water marks once).
        seed: seeds arrivals and class draws.
    """

    load_factor: float = 3.0
    duration_s: float = 60.0
    capacity: CapacityConfig = field(default_factory=lambda: CapacityConfig(concurrency=(8, 16)))
    texts_per_request: int = 1
    batch_timeout_us: int = 1_000_000
    grace_s: float = 5.0
    settle_s: float = 3.0
    max_rss_growth: float = 0.25
    seed: int = 0


def class_kwargs(config: OverloadConfig) -> dict[str, RequestKwargs]:
    """Priority and queue timeout per class; every class has a timeout here."""
    out = {}
    for name in CLASS_MIX:
        kwargs = RequestKwargs.for_class(LATENCY_CLASSES[name])
        out[name] = RequestKwargs(kwargs.priority, kwargs.timeout or config.batch_timeout_us)
    return out


async def entry_capacity(
    pool: ClientPool, texts: Sequence[str], config: CapacityConfig, texts_per_request: int = 1
) -> tuple[float, dict[str, dict]]:
    """Capacity of the entry (answered requests/s, batch class) with requests of `texts_per_request` texts."""
    k = texts_per_request
    requests = [[texts[(i * k + j) % len(texts)] for j in range(k)] for i in range(max(len(texts), 8))]
    return await measure_capacity(
        pool, ENTRY_MODEL, requests, kwargs=RequestKwargs.for_class(LATENCY_CLASSES["batch"]), config=config
    )


def summarize(
    sent: Sequence[str], outcomes: dict, lost: Sequence[int], kwargs: dict[str, RequestKwargs], grace_s: float
) -> dict[str, dict[str, object]]:
    """Per class: sent, answered, typed rejections, other errors, lost, late (past timeout + grace), latency."""
    out = {}
    for name in kwargs:
        idx = [i for i, c in enumerate(sent) if c == name]
        got = [outcomes[i] for i in idx if i in outcomes]
        deadline_ms = QUEUED_STEPS * (kwargs[name].timeout or 0) / 1e3 + grace_s * 1e3
        rejected = [o for o in got if o.rejected]
        others = [o for o in got if not o.ok and not o.rejected]
        out[name] = {
            "sent": len(idx),
            "answered": sum(o.ok for o in got),
            "rejected": len(rejected),
            "errors": len(others),
            "lost": sum(1 for i in idx if i not in outcomes),
            "late": sum(o.latency_ms > deadline_ms for o in got),
            "deadline_ms": deadline_ms,
            "max_latency_ms": max((o.latency_ms for o in got), default=None),
            "error_messages": sorted({f"{o.error_status}: {o.error_message[:160]}" for o in others})[:3],
            "rejected_by_status": dict(Counter(o.error_status for o in rejected)),
            **percentiles_ms([o.latency_ms for o in got if o.ok]),
        }
    return out


def verdicts(result: dict[str, object], config: OverloadConfig) -> dict[str, bool]:
    classes = result["classes"].values()
    return {
        "sent_equals_answered_plus_typed_rejections": all(c["sent"] == c["answered"] + c["rejected"] for c in classes),
        "no_untyped_errors": all(c["errors"] == 0 for c in classes),
        "none_lost": all(c["lost"] == 0 for c in classes),
        "none_past_deadline": all(c["late"] == 0 for c in classes),
        "overloaded": result["rejected"] > 0,  # at 3x capacity the server must have shed something
        "memory_stable": result["rss_growth"] <= config.max_rss_growth,
    }


async def _run(server: TritonServer, texts: Sequence[str], config: OverloadConfig) -> dict[str, object]:
    pool = ClientPool(server.grpc_url)
    kwargs = class_kwargs(config)
    names_ = list(CLASS_MIX)
    probs = np.array([CLASS_MIX[n] for n in names_])

    def pick(rng: np.random.Generator) -> tuple[str, RequestKwargs]:
        name = names_[int(rng.choice(len(names_), p=probs))]
        return name, kwargs[name]

    try:
        capacity, points = await entry_capacity(pool, texts, config.capacity, config.texts_per_request)
        rss_before = tree_rss_bytes(server.pid)
        rate = config.load_factor * capacity
        longest_s = QUEUED_STEPS * max(k.timeout or 0 for k in kwargs.values()) / 1e6 + config.grace_s
        load = await open_loop(
            pool,
            ENTRY_MODEL,
            texts,
            rate_per_s=rate,
            duration_s=config.duration_s,
            pick_class=pick,
            drain_timeout_s=longest_s + 10.0,
            seed=config.seed,
            texts_per_request=config.texts_per_request,
        )
    finally:
        await pool.close()
    await asyncio.sleep(config.settle_s)
    rss_after = tree_rss_bytes(server.pid)
    classes = summarize(load.sent, load.outcomes, load.lost, kwargs, config.grace_s)
    result: dict[str, object] = {
        "capacity_rps": capacity,
        "capacity_points": points,
        "rate_per_s": rate,
        "achieved_rate_per_s": len(load.sent) / load.send_s if load.send_s else 0.0,
        "send_lag_p99_ms": percentiles_ms(load.send_lag_ms)["p99_ms"],
        "wall_s": load.wall_s,
        "sent": len(load.sent),
        "answered": sum(c["answered"] for c in classes.values()),
        "rejected": sum(c["rejected"] for c in classes.values()),
        "errors": sum(c["errors"] for c in classes.values()),
        "lost": sum(c["lost"] for c in classes.values()),
        "late": sum(c["late"] for c in classes.values()),
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_growth": (rss_after - rss_before) / rss_before if rss_before else float("inf"),
        "server_running": server.is_running(),
        "classes": classes,
    }
    result["verdicts"] = verdicts(result, config)
    return result


def run_overload(
    server: TritonServer, texts: Sequence[str], config: OverloadConfig = OverloadConfig()
) -> dict[str, object]:
    """Capacity, then the open-loop overload on `server` (see the module docstring).

    Raises:
        RuntimeError: the entry answered nothing while measuring capacity.
    """
    started = time.time()
    result = asyncio.run(_run(server, texts, config))
    return {"check": "overload", "config": asdict(config), "class_mix": CLASS_MIX, "started_unix_s": started, **result}
