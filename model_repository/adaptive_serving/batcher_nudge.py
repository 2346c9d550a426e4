"""Wake Triton 2.51's dynamic batcher when a stage instance frees.

With every instance busy, the batcher waits for a free one (`WaitForPayloadSlotAvailable` in
`dynamic_batch_scheduler.cc`), but nothing signals it when an instance finishes: the instance's payload callback fires
when the instance *takes* a batch, not when it is done. The batcher then sleeps until its 500 ms timeout or the next
arrival. Under a closed loop no arrival comes (every client waits for an answer), so a model stalls for up to 500 ms
after each busy period: perf_analyzer at concurrency 16 on one standard stage gave p99 636-662 ms against 172-216 ms
with this module.

An arrival that finds an instance free does wake the batcher. So after each `execute`, while the instance stays
idle, the model sends itself a request whose 1 us timeout expires in its own queue: it is never run (the queue
policy rejects it), and its arrival wakes the batcher for the requests already waiting. Cost: at most
`len(delays_s)` rejected requests per execution followed by idleness, none while the model stays busy. They show
in Triton's failure counters of the model (reason: the request timeout).

Diagnosis only, off by default (`--batcher-nudge-ms`): in both full test runs with it on, the test session's shared
server aborted with heap corruption in tritonserver 2.51 (`malloc(): unaligned tcache chunk detected`, then
`malloc_consolidate(): unaligned fastbin chunk detected`, the second time in the 3x-overload test), never seen in
the runs without it. Requests expiring in a batched queue under load are the suspect; not root-caused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

# Sends that may be in flight at once (each waits in the queue until the batcher rejects it).
MAX_PENDING = 8


def parse_delays_ms(text: str) -> tuple[float, ...]:
    """'2,10' -> (0.002, 0.010) seconds; '' -> () (off).

    Raises:
        ValueError: a delay is not a positive number, or the delays do not increase.
    """
    delays = tuple(float(t) / 1e3 for t in text.split(",") if t.strip())
    if any(d <= 0 for d in delays) or list(delays) != sorted(set(delays)):
        raise ValueError(f"batcher nudge delays must be positive and increasing (ms), got {text!r}")
    return delays


class BatcherNudge:
    """Calls `send` at each of `delays_s` after an `execute` ends, while no new one has begun.

    Args:
        send: sends one request that expires in the model's own queue (blocking until Triton answers it);
            runs in a thread of its own.
        delays_s: when to nudge after an execution ends, increasing.
    """

    def __init__(self, send: Callable[[], None], delays_s: Sequence[float]) -> None:
        self.send = send
        self.delays_s = tuple(delays_s)
        self.sent = 0
        self._busy = False
        self._generation = 0  # executions begun
        self._pending = 0
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="batcher-nudge", daemon=True)
        self._thread.start()

    def begin(self) -> None:
        """An execution begins."""
        self._busy = True
        self._generation += 1

    def end(self) -> None:
        """An execution ended."""
        self._busy = False
        self._ended.set()

    def close(self) -> None:
        self._stop = True
        self._ended.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while True:
            self._ended.wait()
            self._ended.clear()
            if self._stop:
                return
            generation, ended = self._generation, time.monotonic()
            for delay in self.delays_s:
                time.sleep(max(0.0, ended + delay - time.monotonic()))
                if self._stop or self._busy or self._generation != generation:
                    break
                with self._lock:
                    if self._pending >= MAX_PENDING:
                        continue
                    self._pending += 1
                    self.sent += 1
                # Its own thread: the send waits until the batcher rejects it, and the next nudge must not wait.
                threading.Thread(target=self._send_one, daemon=True).start()

    def _send_one(self) -> None:
        try:
            self.send()
        except Exception:  # a nudge that fails changes nothing; the batcher's own timeout still applies
            pass
        finally:
            with self._lock:
                self._pending -= 1


def expiring_request(model_name: str, config: dict) -> Callable[[], None]:
    """A `send` for `BatcherNudge`: one request to `model_name` (batch 1, each variable dim 1, zeros) with a 1 us
    timeout, so the model's queue policy (which must allow a caller's timeout) rejects it unrun.

    Raises:
        ValueError: the model's queue does not honour a caller's timeout (the request would run).
    """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    policy = config.get("dynamic_batching", {}).get("default_queue_policy", {})
    if not policy.get("allow_timeout_override", False):
        raise ValueError(f"{model_name}: a batcher nudge needs default_queue_policy.allow_timeout_override, "
                         "or the nudge requests would run")
    inputs = [(i["name"], np.zeros([1, *(1 if d == -1 else d for d in i["dims"])],
                                   pb_utils.triton_string_to_numpy(i["data_type"]))) for i in config["input"]]
    wanted = [config["output"][0]["name"]]

    def send() -> None:
        tensors = [pb_utils.Tensor(name, value) for name, value in inputs]
        pb_utils.InferenceRequest(model_name=model_name, inputs=tensors, requested_output_names=wanted,
                                  timeout=1).exec()

    return send


@contextmanager
def executing(nudge: BatcherNudge | None) -> Iterator[None]:
    """Wrap a model's `execute` body: the nudge (if any) knows the instance is busy meanwhile."""
    if nudge is None:
        yield
        return
    nudge.begin()
    try:
        yield
    finally:
        nudge.end()


def from_config(model_name: str, config: dict, params: dict[str, str]) -> BatcherNudge | None:
    """The nudge a stage model's config asks for (`batcher_nudge_ms`, e.g. "2,10"), or None."""
    delays = parse_delays_ms(params.get("batcher_nudge_ms", ""))
    if not delays or "dynamic_batching" not in config:
        return None
    return BatcherNudge(expiring_request(model_name, config), delays)
