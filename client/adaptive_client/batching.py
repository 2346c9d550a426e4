"""Client-side batching helpers: complexity-aware and latency-aware request plans.

Benchmarked against naive fixed-size batching in `adaptive_bench.batching`.

Complexity-aware: texts are grouped by a cheap complexity proxy (word count buckets) and each group is sent with
a batch size suited to it (short texts in big batches, long ones in small). The server's tokenizer pads a request
to its longest text, so mixing one full article into a batch of 5-word headlines makes every row pay for the
article's tokens; grouping by length removes that padding.

Latency-aware: the class picks the batch size: critical texts go one per request (priority 1, nothing waits for
a batch to fill), sensitive ones in medium batches, batch traffic in large batches.

Every helper returns results in the order of its input and uses one `AsyncAdaptiveClient`, with at most
`concurrency` non-critical requests in flight (critical requests are all sent at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adaptive_client.client import AsyncAdaptiveClient, CascadeResult, RejectedError
from adaptive_core.config import LATENCY_CLASSES, MAX_BATCH_SIZE

# (upper bound on words, batch size): short texts are cheap per row, so big batches amortise the per-request
# overhead; long texts are truncated at the size's token budget (256 for large) and cost many headlines per row,
# so small batches keep one request's latency bounded. Bounds follow the evaluation views (8, 32, 128, full).
COMPLEXITY_BUCKETS: tuple[tuple[float, int], ...] = ((16, 64), (48, 32), (160, 16), (float("inf"), 8))
LATENCY_BATCH_SIZES: dict[str, int] = {"critical": 1, "sensitive": 8, "batch": 32}
NAIVE_BATCH_SIZE = 16
CONCURRENCY = 2  # requests in flight per helper; 2 CPU cores serve this machine
UNGATED = ("critical",)  # classes sent at once, not counted against CONCURRENCY


def complexity_bucket(text: str) -> int:
    """Index into COMPLEXITY_BUCKETS by word count (a cheap proxy for token count and exit depth)."""
    words = len(text.split())
    return next(i for i, (bound, _) in enumerate(COMPLEXITY_BUCKETS) if words <= bound)


@dataclass(frozen=True)
class Request:
    """One planned request: which input positions it carries and its latency class."""

    indices: tuple[int, ...]
    latency_class: str


def plan_naive(count: int, latency_class: str = "batch", batch_size: int = NAIVE_BATCH_SIZE) -> list[Request]:
    """Fixed-size batches in input order."""
    return [Request(tuple(range(i, min(i + batch_size, count))), latency_class) for i in range(0, count, batch_size)]


def plan_complexity(texts: Sequence[str], latency_class: str = "batch") -> list[Request]:
    """Group by complexity bucket, each bucket in chunks of its batch size (capped at MAX_BATCH_SIZE)."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(complexity_bucket(t), []).append(i)
    plan = []
    for bucket in sorted(groups):
        idx, size = groups[bucket], min(COMPLEXITY_BUCKETS[bucket][1], MAX_BATCH_SIZE)
        plan += [Request(tuple(idx[j : j + size]), latency_class) for j in range(0, len(idx), size)]
    return plan


def plan_latency(classes: Sequence[str], batch_sizes: dict[str, int] | None = None) -> list[Request]:
    """Group by latency class; critical first so it is sent first, each class in chunks of its batch size.

    Raises:
        ValueError: an unknown class name.
    """
    sizes = batch_sizes or LATENCY_BATCH_SIZES
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(classes):
        if c not in LATENCY_CLASSES:
            raise ValueError(f"unknown latency class {c!r}; expected one of {sorted(LATENCY_CLASSES)}")
        groups.setdefault(c, []).append(i)
    order = sorted(groups, key=lambda c: LATENCY_CLASSES[c].priority)
    return [Request(tuple(groups[c][j : j + sizes[c]]), c) for c in order for j in range(0, len(groups[c]), sizes[c])]


@dataclass
class RunResult:
    """Results in input order (None where the server shed the request: RejectedError), with each text's completion
    time (from the start of the run) and the wall time."""

    results: list[CascadeResult | None]
    done_ms: np.ndarray
    wall_s: float
    requests: int


async def run_plan(
    client: AsyncAdaptiveClient,
    texts: Sequence[str],
    plan: Sequence[Request],
    *,
    concurrency: int = CONCURRENCY,
    allow_rejected: bool = False,
) -> RunResult:
    """Send the planned requests, at most `concurrency` in flight, in plan order.

    Raises:
        RejectedError: the server shed a request (queue timeout), unless `allow_rejected`.
        AdaptiveClientError: any other request failure (typed, see adaptive_client.client).
    """
    results: list[CascadeResult | None] = [None] * len(texts)
    done_ms = np.zeros(len(texts))
    gate = asyncio.Semaphore(concurrency)
    start = time.perf_counter()

    async def send(req: Request) -> None:
        # Critical requests skip the in-flight gate: waiting behind bulk requests on the client would undo the
        # priority they carry; the server's priority queue orders them instead.
        async with gate if req.latency_class not in UNGATED else contextlib.nullcontext():
            try:
                answers: Sequence[CascadeResult | None] = await client.classify(
                    [texts[i] for i in req.indices], latency_class=req.latency_class
                )
            except RejectedError:
                if not allow_rejected:
                    raise
                answers = [None] * len(req.indices)
        now_ms = (time.perf_counter() - start) * 1e3
        for i, r in zip(req.indices, answers):
            results[i], done_ms[i] = r, now_ms

    await asyncio.gather(*(send(r) for r in plan))
    return RunResult(results, done_ms, time.perf_counter() - start, len(plan))


async def classify_complexity_batched(
    client: AsyncAdaptiveClient, texts: Sequence[str], *, latency_class: str = "batch", concurrency: int = CONCURRENCY
) -> list[CascadeResult]:
    """Classify `texts` in complexity-bucketed batches; results in input order.

    Raises:
        AdaptiveClientError: any request failed.
    """
    return (
        await run_plan(
            client,
            texts,
            plan_complexity(texts, latency_class),  # type: ignore[return-value]
            concurrency=concurrency,
        )
    ).results


async def classify_latency_batched(
    client: AsyncAdaptiveClient, texts: Sequence[str], classes: Sequence[str], *, concurrency: int = CONCURRENCY
) -> list[CascadeResult]:
    """Classify `texts`, each with its latency class, batched per class; results in input order.

    Raises:
        ValueError: lengths differ or an unknown class.
        AdaptiveClientError: any request failed.
    """
    if len(texts) != len(classes):
        raise ValueError(f"{len(texts)} texts but {len(classes)} classes")
    return (
        await run_plan(
            client,
            texts,
            plan_latency(classes),  # type: ignore[return-value]
            concurrency=concurrency,
        )
    ).results
