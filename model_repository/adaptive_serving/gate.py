"""The admission gate of the router and cascade models: which requests run now, in latency-class order.

Triton 2.51 hands a request to a model instance only when one is free, and cannot keep instances for a
priority level. With Triton's queue as the gate, a critical request waited for one of the requests in flight to
finish, which under overload often took longer than its queue timeout. So `execute` hands
each request to this gate and returns at once; the answer goes out later through the request's response sender
(allowed for non-decoupled models in 2.51: exactly one response, flagged final). The gate decides:

- Each class has a cap on the requests in flight past the gate. A request is admitted while the requests in flight
  of its own class and the more urgent ones are under its class's cap: it never waits for a less urgent request to
  finish (those run in the standard lane, which under overload gets only the CPU nobody else wants: a critical
  request that waited for sensitive ones to free a slot expired at the gate). Caps rise with urgency, so the room
  between two caps is kept for the more urgent classes: batch traffic fills its own cap, never the room kept for
  critical requests.
- Waiting requests are admitted in class order, first come first served within a class.
- A request that waits past its timeout is answered UNAVAILABLE, as Triton's own queue would answer it; the
  class without a timeout waits, up to `untimed_cap` waiting requests (0 = no cap), and absorbs the overload.
- Every request gets exactly one response: the handler's, or a typed error.

The gate runs on an event loop of its own, in a thread of its own: `execute` (a plain function) hands it each request
and returns at once. With `async def execute` the stub's main thread waited on its loop for every call to finish,
two thread hand-offs per call on the path of every request.

The gate also sizes the threads that carry BLS calls. The 2.51 stub runs each `async_exec` as a blocking call on
the event loop's default executor, which Python sizes by core count (min(32, cores + 4)). A call holds its thread
until the stage answers, including its wait in a stage queue, so a few batch calls waiting in the low-priority lane
could hold every thread while a critical call waited for one. Each admitted request makes one BLS call at a time, and
each class is held to its own cap, so the sum of the caps plus the model's background calls (`background_calls`) is
enough threads for no call ever to wait for one.

A Python model cannot read its request's priority, only its timeout, so the class comes from the timeout
(`class_of_timeout`), as for the metrics.

The gate also picks each admitted request's lane (`Admission.express`; `adaptive_core.lanes.LaneOptions` says which
lanes a repository has). BLS child requests cannot carry a priority, so past the gate the class order is kept by
lanes: a request with a critical-class deadline runs on the express stage instances, and so does a request alone in
the server, which the standard lane's batcher would only hold for company that cannot come. To see that, the gate
counts its requests from arrival to answer on a server-wide board (`adaptive_serving.inflight`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from adaptive_core.config import LATENCY_CLASSES
from adaptive_core.lanes import parse_caps
from adaptive_core.metrics import class_of_timeout
from adaptive_serving.inflight import InFlightBoard, server_board_path

T = TypeVar("T")


@dataclass(frozen=True)
class Admission:
    """What the gate tells an admitted request's handler.

    Args:
        arrived: `time.monotonic()` when the request reached the gate.
        express: run the request's stage calls in the express lane.
    """

    arrived: float
    express: bool


# (request, admission) -> pb_utils.InferenceResponse
Handler = Callable[[object, Admission], Awaitable[object]]


class Refused(Exception):
    """The gate refused a request; the message says why (Triton's UNAVAILABLE)."""


class Gate:
    """One model instance's gate and the event loop it runs on (`loop`, in a daemon thread started here). `submit` may
    be called from any thread; everything else runs on `loop`.

    Args:
        model: the Triton model name, for error messages.
        caps: requests in flight past the gate per class (`parse_caps` rules).
        untimed_cap: waiting requests of the class without a timeout past which new ones are rejected; 0 = none.
        metrics: the model's `ModelMetrics`, which counts gate waits and rejections; None = not counted.
        background_calls: BLS calls the model makes outside admitted requests (e.g. audits), at most.
        board: the server-wide board of requests in flight; None = `alone` is always False.
        express_max_timeout_us: requests whose timeout is nonzero and at most this take the express lane, and so
            does a request alone in the server (with a board); 0 = the model has no express lane.
    """

    def __init__(
        self,
        model: str,
        caps: Mapping[str, int],
        *,
        untimed_cap: int = 0,
        metrics: object = None,
        background_calls: int = 0,
        board: InFlightBoard | None = None,
        express_max_timeout_us: int = 0,
    ) -> None:
        self.model = model
        self.board = board
        self.express_max_timeout_us = express_max_timeout_us
        self.caps = dict(caps)
        self.untimed_cap = untimed_cap
        self.metrics = metrics
        self.bls_threads = sum(self.caps.values()) + background_calls
        self.in_flight = dict.fromkeys(self.caps, 0)  # admitted and not yet answered, per class
        self.untimed_waiting = 0
        self._rank = {c.name: c.priority for c in LATENCY_CLASSES.values()}
        # The classes whose requests in flight count against each class's cap: its own and the more urgent ones.
        self._counted = {k: [c for c in self.caps if self._rank[c] <= self._rank[k]] for k in self.caps}
        self._waiting: list[tuple[int, int, str, asyncio.Future]] = []  # (priority, arrival order, class, future)
        self._order = itertools.count()
        self._tasks: set[asyncio.Task] = set()  # strong references until each request is answered
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(self.bls_threads, thread_name_prefix=f"{model}-bls"))
        threading.Thread(target=self.loop.run_forever, name=f"{model}-gate", daemon=True).start()

    @classmethod
    def from_params(
        cls,
        model: str,
        params: Mapping[str, str],
        metrics: object = None,
        *,
        background_calls: int = 0,
        express_max_timeout_us: int = 0,
    ) -> Gate:
        """The gate a model's config parameters describe (`gate_caps`, optional `gate_untimed_cap`, and
        `solo_lane` = "express" for a board of requests in flight), with the express lane's timeout bound from the
        model's plan (0 = no express lane).

        Raises:
            TritonModelException: a parameter is missing or malformed (the message names it).
        """
        import triton_python_backend_utils as pb_utils

        try:
            caps, untimed_cap = parse_caps(params["gate_caps"]), int(params.get("gate_untimed_cap", "0"))
        except (KeyError, ValueError) as e:
            raise pb_utils.TritonModelException(f"{model}: bad gate parameters: {e}") from e
        board = None
        if params.get("solo_lane", "") == "express" and express_max_timeout_us:
            try:
                board = InFlightBoard(server_board_path())
            except OSError as e:  # only a speed-up is lost: requests alone then wait in the batcher as before
                pb_utils.Logger.log_warn(f"{model}: no board of requests in flight, lone requests keep their lane: {e}")
        return cls(
            model,
            caps,
            untimed_cap=untimed_cap,
            metrics=metrics,
            background_calls=background_calls,
            board=board,
            express_max_timeout_us=express_max_timeout_us,
        )

    def alone(self) -> bool:
        """Whether exactly one request is in flight in the server's gate models: the caller's own."""
        return self.board is not None and self.board.total() <= 1

    def express(self, timeout_us: int) -> bool:
        """The lane of a request with this timeout: express for a critical-class deadline, or when alone."""
        if not self.express_max_timeout_us:
            return False
        return 0 < timeout_us <= self.express_max_timeout_us or self.alone()

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    def submit(self, request: object, handler: Handler, *, counted: bool = True) -> None:
        """Take `request` (from any thread); `handler` runs on `loop` once it is admitted, and its response is sent
        through the request's response sender. Returns at once. `counted`: the gate's metrics count it (not a
        warm-up)."""
        self.loop.call_soon_threadsafe(self._start, request, handler, counted)

    def _start(self, request: object, handler: Handler, counted: bool) -> None:
        task = self.loop.create_task(self._serve(request, handler, counted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, timeout_us: int, work: Callable[[Admission], Awaitable[T]], *, counted: bool = True) -> T:
        """Admit a request with this timeout (its class comes from it), pick its lane, run `work(admission)` and
        return its result. For requests that come without a Triton request object
        (`router_standard`'s hand-overs); `submit` answers Triton requests through it.

        Raises:
            Refused: the request's timeout expired while it waited, or the untimed class's queue is full.
        """
        arrived = time.monotonic()
        klass = class_of_timeout(timeout_us)
        board = self.board
        if board is not None:
            board.add(1)
        try:
            refused = await self._admit(klass, timeout_us / 1e6)
            if self.metrics is not None and counted:
                self.metrics.gate_passed(klass, time.monotonic() - arrived, admitted=refused is None)
            if refused is not None:
                raise Refused(f"{self.model}: {refused}")
            try:
                return await work(Admission(arrived, self.express(timeout_us)))
            finally:
                self._release(klass)
        finally:
            if board is not None:
                board.add(-1)

    async def _serve(self, request: object, handler: Handler, counted: bool = True) -> None:
        import triton_python_backend_utils as pb_utils

        sender = request.get_response_sender()
        try:
            response = await self.run(request.timeout(), lambda admission: handler(request, admission), counted=counted)
        except Refused as e:
            response = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), pb_utils.TritonError.UNAVAILABLE))
        except Exception as e:  # a fault in one request must still answer it, and only it
            response = pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{self.model}: internal error: {type(e).__name__}: {e}")
            )
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def _admit(self, klass: str, timeout_s: float) -> str | None:
        """Wait for room; None when admitted, else why the request is refused."""
        if self._fits(klass):
            self.in_flight[klass] += 1
            return None
        timed = timeout_s > 0
        if not timed and self.untimed_cap and self.untimed_waiting >= self.untimed_cap:
            return f"admission queue full ({self.untimed_waiting} {klass} requests waiting at the gate)"
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (self._rank[klass], next(self._order), klass, future))
        if timed:
            timer = asyncio.get_running_loop().call_later(timeout_s, _expire, future)
            admitted = await future
            timer.cancel()
        else:
            self.untimed_waiting += 1
            try:
                admitted = await future
            finally:
                self.untimed_waiting -= 1
        return None if admitted else f"request timeout expired at the admission gate ({klass} class)"

    def _fits(self, klass: str) -> bool:
        return sum(self.in_flight[c] for c in self._counted[klass]) < self.caps[klass]

    def _release(self, klass: str) -> None:
        self.in_flight[klass] -= 1
        # Admit in class order while the most urgent waiting request fits; a less urgent one never fits when a
        # more urgent one does not (its cap is no higher, and it counts at least the same requests).
        while self._waiting:
            _, _, head, future = self._waiting[0]
            if future.done():  # expired while waiting
                heapq.heappop(self._waiting)
                continue
            if not self._fits(head):
                break
            heapq.heappop(self._waiting)
            self.in_flight[head] += 1
            future.set_result(True)


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(False)
