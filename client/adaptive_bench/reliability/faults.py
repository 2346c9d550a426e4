"""Faults under load: a stage unloaded and reloaded, a stub process killed, the server restarted.

Each run keeps closed-loop streams of requests going (one request in flight per stream), injects the fault, and
times every request. A request with no outcome after `hang_s` is lost. What each run checks:

  unload_reload  (explicit model control) the stage of the cheapest size goes away for `down_s`: only requests
                 that need it fail, with a typed error naming it; the express lane and a model that does not use
                 the stage keep answering; the first answer after the reload gives the recovery time.
  kill_stub      the entry tokenizer's stub process is SIGKILLed: requests fail with a typed error (none hang),
                 the stub watchdog reloads the model (explicit control) or restarts the server, and the entry
                 answers again; kill to first answer is the recovery time.
  restart        the server is stopped (SIGTERM) and started again on the same ports: the typed client's retry
                 rule (retry only what the server never answered) brings every request to an answer.
  crash          tritonserver gets SIGSEGV or SIGABRT: the supervisor restarts it, and the typed client's retries
                 bring every request to an answer; kill to first answer is the time to serving again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import psutil

from adaptive_bench.load import ClientPool
from adaptive_bench.reliability.target import SAMPLE_TEXTS, FaultTargets
from adaptive_bench.requests import RequestKwargs, infer
from adaptive_core.config import LATENCY_CLASSES
from adaptive_ops.repository import ENTRY_MODEL
from adaptive_ops.server import TritonServer
from adaptive_ops.supervisor import RestartCounter, RestartPolicy, Supervisor
from adaptive_ops.watchdog import StubWatchdog, stub_models

# Requests with no outcome after this long count as lost (far above any timeout the runs use).
HANG_S = 60.0
BIN_S = 0.5  # timeline resolution
# The crash drill's restart policy: the first restart after half a second.
CRASH_POLICY = RestartPolicy(backoff_s=0.5)


def timeline(events: list[tuple[float, float, str]], t0: float) -> list[tuple[float, int, int]]:
    """(bin start s, answered, failed) per BIN_S, by completion time; queue-timeout rejections count as neither."""
    bins: dict[int, list[int]] = {}
    for sent, latency, outcome in events:
        row = bins.setdefault(int((sent + latency - t0) / BIN_S), [0, 0])
        if outcome == "ok":
            row[0] += 1
        elif outcome != "rejected":
            row[1] += 1
    return [(k * BIN_S, *bins.get(k, [0, 0])) for k in range(max(bins, default=-1) + 1)]


@dataclass
class Stream:
    """Closed-loop requests of one kind, and what came back.

    Args:
        name: label in reports.
        model: model called.
        latency_class: class of every request.
        affected: whether the fault is meant to touch this stream.
        events: (sent at, latency s, outcome) per request; outcome is "ok", "rejected" (queue timeout), "lost"
            or "<STATUS>: <message>".
    """

    name: str
    model: str
    latency_class: str
    affected: bool
    events: list[tuple[float, float, str]] = field(default_factory=list)

    def failures(self) -> list[tuple[float, float, str]]:
        return [e for e in self.events if e[2] not in ("ok", "rejected")]

    def summary(self, t0: float) -> dict[str, object]:
        fails = self.failures()
        return {
            "model": self.model,
            "class": self.latency_class,
            "affected": self.affected,
            "sent": len(self.events),
            "answered": sum(e[2] == "ok" for e in self.events),
            "rejected": sum(e[2] == "rejected" for e in self.events),
            "failed": len(fails),
            "lost": sum(e[2] == "lost" for e in self.events),
            "max_latency_s": max((e[1] for e in self.events), default=None),
            "failed_between_s": [round(fails[0][0] - t0, 3), round(fails[-1][0] + fails[-1][1] - t0, 3)]
            if fails
            else None,
            "failure_messages": dict(Counter(e[2][:200] for e in fails).most_common(3)),
        }


async def _stream_worker(pool: ClientPool, stream: Stream, stop: asyncio.Event) -> None:
    """One request at a time until `stop`; outcomes are typed (bench `infer` never raises on a server error)."""
    cls = LATENCY_CLASSES[stream.latency_class]
    kwargs = RequestKwargs.for_class(cls)
    i = 0
    while not stop.is_set():
        sent = time.monotonic()
        try:
            out = await asyncio.wait_for(
                infer(pool.next(), stream.model, [SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]], kwargs), timeout=HANG_S
            )
            outcome = "ok" if out.ok else ("rejected" if out.rejected else f"{out.error_status}: {out.error_message}")
        except asyncio.TimeoutError:
            outcome = "lost"
        except Exception as e:  # a connection the fault broke under the client: typed by its exception
            outcome = f"{type(e).__name__}: {e}"
        stream.events.append((sent, time.monotonic() - sent, outcome))
        i += 1
        if outcome not in ("ok", "rejected"):
            await asyncio.sleep(0.02)  # do not spin on a fast failure


async def _under_load(
    server: TritonServer, streams: list[Stream], fault: Callable[[], Awaitable[dict[str, float]]]
) -> tuple[dict[str, float], float]:
    """Run the streams, then `fault` (returns its event times), then stop the streams; (events, start time)."""
    pool = ClientPool(server.grpc_url)
    stop = asyncio.Event()
    t0 = time.monotonic()
    workers = [asyncio.create_task(_stream_worker(pool, s, stop)) for s in streams]
    try:
        events = await fault()
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await pool.close()
    return events, t0


def _first_ok_after(stream: Stream, t: float) -> float | None:
    done = [e[0] + e[1] for e in stream.events if e[2] == "ok" and e[0] >= t]
    return min(done) if done else None


def _post(server: TritonServer, path: str) -> None:
    request = urllib.request.Request(
        f"http://{server.http_url}{path}",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json", **server.admin_headers("http")},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def unload_reload(
    server: TritonServer, targets: FaultTargets, *, before_s: float = 2.0, down_s: float = 2.0, after_s: float = 3.0
) -> dict[str, object]:
    """Unload `targets.stage` under load, reload it after `down_s` (see the module docstring).

    Raises:
        ValueError: the server does not run with explicit model control.
    """
    if server.model_control != "explicit":
        raise ValueError("unload_reload needs a server started with model_control='explicit'")
    streams = [
        Stream("entry, standard lane", targets.entry, "batch", affected=True),
        Stream("entry, express lane", targets.entry, "critical", affected=not targets.express_stage),
        Stream(f"{targets.unaffected} (no {targets.stage})", targets.unaffected, "batch", affected=False),
    ]

    async def fault() -> dict[str, float]:
        await asyncio.sleep(before_s)
        t_unload = time.monotonic()
        await asyncio.to_thread(_post, server, f"/v2/repository/models/{targets.stage}/unload")
        await asyncio.sleep(down_s)
        t_load = time.monotonic()
        await asyncio.to_thread(_post, server, f"/v2/repository/models/{targets.stage}/load")
        t_loaded = time.monotonic()
        await asyncio.sleep(after_s)
        return {"unload": t_unload, "load": t_load, "loaded": t_loaded}

    events, t0 = asyncio.run(_under_load(server, streams, fault))
    first_ok = _first_ok_after(streams[0], events["load"])
    affected_fails = streams[0].failures()
    # Only requests sent while the stage was away may fail (plus one in flight when it went).
    outside = [e for e in affected_fails if not events["unload"] - 1.0 <= e[0] <= events["loaded"] + 0.5]
    result = {
        "fault": "unload_reload",
        "stage": targets.stage,
        "events_s": {k: round(v - t0, 3) for k, v in events.items()},
        "streams": {s.name: s.summary(t0) for s in streams},
        "timelines": {s.name: timeline(s.events, t0) for s in streams},
        "recovery_s": None if first_ok is None else first_ok - events["load"],
        "server_recovery_s": events["loaded"] - events["load"],
        "reload_took_s": events["loaded"] - events["load"],
    }
    result["verdicts"] = {
        "affected_requests_failed": bool(affected_fails),
        "failures_name_the_stage": all(targets.stage in e[2] for e in affected_fails),
        "failures_only_while_unloaded": not outside,
        "unaffected_streams_never_failed": all(not s.failures() for s in streams if not s.affected),
        "unaffected_streams_answered_during_outage": all(
            any(e[2] == "ok" and events["unload"] <= e[0] <= events["load"] for e in s.events)
            for s in streams
            if not s.affected
        ),
        "recovered": first_ok is not None,
        "none_lost": all(s.summary(t0)["lost"] == 0 for s in streams),
    }
    return result


def kill_stub(
    server: TritonServer, model: str, *, before_s: float = 2.0, after_s: float = 3.0, recover_timeout_s: float = 90.0
) -> dict[str, object]:
    """SIGKILL one stub process of `model` under load, with the stub watchdog running (see the module docstring)."""
    streams = [
        Stream("entry, standard lane", ENTRY_MODEL, "batch", affected=True),
        Stream("entry, sensitive", ENTRY_MODEL, "sensitive", affected=True),
    ]
    watchdog = StubWatchdog(server)
    kill_unix_s: dict[str, float] = {}

    async def fault() -> dict[str, float]:
        await asyncio.sleep(before_s)
        pid = next(p for p, m in stub_models(server.pid).items() if m == model)
        t_kill = time.monotonic()
        kill_unix_s["at"] = time.time()
        psutil.Process(pid).kill()
        deadline = t_kill + recover_timeout_s
        # Until the restarted server answers a request sent after the restart. A request sent after the kill may
        # still be answered before it, by another instance of the killed model; that says nothing of the restart.
        times = {"kill": t_kill}
        while time.monotonic() < deadline:
            if "restarted_seen" not in times and watchdog.recoveries:
                times["restarted_seen"] = time.monotonic()
            if "restarted_seen" in times and _first_ok_after(streams[0], times["restarted_seen"]):
                break
            await asyncio.sleep(0.2)
        times["recovered_seen"] = time.monotonic()
        await asyncio.sleep(after_s)
        return times

    with watchdog:
        events, t0 = asyncio.run(_under_load(server, streams, fault))
    recoveries = [asdict(r) for r in watchdog.recoveries]
    first_ok = _first_ok_after(streams[0], events["restarted_seen"]) if "restarted_seen" in events else None
    fails = [e for s in streams for e in s.failures()]
    result = {
        "fault": "kill_stub",
        "model": model,
        "action": watchdog.action,
        "events_s": {k: round(v - t0, 3) for k, v in events.items()},
        "streams": {s.name: s.summary(t0) for s in streams},
        "watchdog": recoveries,
        "timelines": {s.name: timeline(s.events, t0) for s in streams},
        "recovery_s": None if first_ok is None else first_ok - events["kill"],
        # Kill to the watchdog's recovery done; clients answer later by their own reconnect backoff (gRPC).
        "server_recovery_s": (recoveries[0]["detected_unix_s"] + recoveries[0]["took_s"] - kill_unix_s["at"])
        if recoveries
        else None,
    }
    result["verdicts"] = {
        "requests_failed_typed": all(e[2] != "lost" and ":" in e[2] for e in fails),
        "watchdog_recovered": bool(recoveries) and all(r["ok"] for r in recoveries),
        "entry_answers_again": first_ok is not None,
        "none_lost": not any(e[2] == "lost" for e in fails),
    }
    return result


def restart(
    server: TritonServer,
    *,
    workers: int = 4,
    before_s: float = 2.0,
    after_s: float = 3.0,
    max_retries: int = 9,
    backoff_s: float = 0.2,
) -> dict[str, object]:
    """Stop and start the server under load from typed clients with retries (see the module docstring)."""

    def fault() -> dict[str, float]:
        t_stop = time.monotonic()
        server.stop()
        t_start = time.monotonic()
        server.start()
        return {"stop": t_stop, "start": t_start, "ready": time.monotonic()}

    return _typed_load_across("restart", server, fault, workers, before_s, after_s, max_retries, backoff_s)


def crash(
    server: TritonServer,
    sig: signal.Signals = signal.SIGSEGV,
    *,
    workers: int = 4,
    before_s: float = 2.0,
    after_s: float = 3.0,
    max_retries: int = 12,
    backoff_s: float = 0.2,
    policy: RestartPolicy = CRASH_POLICY,
) -> dict[str, object]:
    """`sig` (SIGSEGV, SIGABRT) to tritonserver under load from typed clients with retries; the supervisor
    (`adaptive_ops.supervisor`) sees it die and starts it again; every request must come to an answer."""
    counter = RestartCounter()
    supervisor = Supervisor(server, policy, counter, log=lambda line: None)

    def fault() -> dict[str, float]:
        t_kill = time.monotonic()
        os.kill(server.pid, sig)
        while server.is_running() and time.monotonic() < t_kill + HANG_S:
            time.sleep(0.01)
        t_dead = time.monotonic()
        supervisor.check()
        return {"stop": t_kill, "start": t_dead, "ready": time.monotonic()}

    result = _typed_load_across(f"crash_{sig.name}", server, fault, workers, before_s, after_s, max_retries, backoff_s)
    result["restarts_counted"] = dict(counter.counts)
    result["verdicts"]["supervisor_restarted_it"] = counter.total == 1 and server.is_ready()
    return result


def _typed_load_across(
    name: str,
    server: TritonServer,
    fault: Callable[[], dict[str, float]],
    workers: int,
    before_s: float,
    after_s: float,
    max_retries: int,
    backoff_s: float,
) -> dict[str, object]:
    """Closed-loop typed clients with retries across `fault()` (which takes the server down and brings it back and
    returns the times "stop", "start" and "ready"); every request must end answered."""
    from adaptive_client.client import AdaptiveClientError, AsyncAdaptiveClient

    log: list[tuple[float, float, str]] = []  # sent, latency s, outcome

    async def run() -> dict[str, float]:
        stop = asyncio.Event()

        async def worker(k: int) -> None:
            async with AsyncAdaptiveClient(
                f"grpc://{server.grpc_url}", max_retries=max_retries, backoff_s=backoff_s, network_timeout_s=HANG_S
            ) as client:
                i = k
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        await client.classify([SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]], latency_class="batch")
                        outcome = "ok"
                    except AdaptiveClientError as e:
                        outcome = f"{type(e).__name__}: {e}"
                    log.append((sent, time.monotonic() - sent, outcome))
                    i += workers

        tasks = [asyncio.create_task(worker(k)) for k in range(workers)]
        await asyncio.sleep(before_s)
        events = await asyncio.to_thread(fault)
        while (
            not any(s >= events["stop"] and o == "ok" for s, _, o in log)
            and time.monotonic() < events["ready"] + HANG_S
        ):
            await asyncio.sleep(0.1)
        await asyncio.sleep(after_s)
        stop.set()
        await asyncio.gather(*tasks)
        return events

    t0 = time.monotonic()
    events = asyncio.run(run())
    across = [e for e in log if e[0] <= events["ready"] and e[0] + e[1] >= events["stop"]]
    first_ok = min((s + lat for s, lat, o in log if o == "ok" and s + lat >= events["start"]), default=None)
    failed = [e for e in log if e[2] != "ok"]
    result = {
        "fault": name,
        "events_s": {k: round(v - t0, 3) for k, v in events.items()},
        "sent": len(log),
        "answered": sum(e[2] == "ok" for e in log),
        "failed": len(failed),
        "failure_messages": dict(Counter(e[2][:200] for e in failed).most_common(3)),
        "requests_across_the_restart": len(across),
        "max_latency_s": max((e[1] for e in log), default=None),
        "stop_took_s": events["start"] - events["stop"],
        "start_took_s": events["ready"] - events["start"],
        "recovery_s": None if first_ok is None else first_ok - events["stop"],
        "server_recovery_s": events["ready"] - events["stop"],
        "timelines": {f"{workers} typed clients": timeline(log, t0)},
    }
    result["verdicts"] = {
        "every_request_answered": not failed and bool(log),
        "requests_spanned_the_restart": bool(across),
    }
    return result
