"""Run the bad-input suite: the hand-picked cases, then hypothesis's, with good traffic beside them; count
crashes (the server process died or stopped answering its health endpoint) and lost requests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from adaptive_bench.reliability.cases import CASE_TIMEOUT_S, Case, CaseResult, hand_picked_cases, known_triton_crashers
from adaptive_bench.reliability.sender import Sender, judge
from adaptive_bench.reliability.target import SAMPLE_TEXTS, is_live
from adaptive_ops.server import TritonServer


@dataclass
class GoodTraffic:
    """Counts of the good requests sent beside the cases.

    Args:
        sent: requests sent.
        answered: requests answered with a valid result.
        failed: requests that got anything else, with the first few messages.
    """

    sent: int = 0
    answered: int = 0
    failed: list[str] = field(default_factory=list)


class _GoodTrafficThread:
    """Ordinary requests in a loop on the typed client, until stopped."""

    def __init__(self, grpc_url: str) -> None:
        self.url = grpc_url
        self.result = GoodTraffic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="good-traffic", daemon=True)

    def _run(self) -> None:
        from adaptive_client.client import AdaptiveClient, AdaptiveClientError

        with AdaptiveClient(f"grpc://{self.url}", network_timeout_s=CASE_TIMEOUT_S) as client:
            i = 0
            while not self._stop.is_set():
                self.result.sent += 1
                try:
                    [answer] = client.classify([SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]], latency_class="batch")
                    self.result.answered += answer.exit_stage >= 1
                except AdaptiveClientError as e:
                    self.result.failed.append(f"{type(e).__name__}: {e}"[:300])
                i += 1

    def __enter__(self) -> _GoodTrafficThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=CASE_TIMEOUT_S + 5)


@dataclass
class CaseSuite:
    """Results of a bad-input run.

    Args:
        results: one per case, in the order sent.
        crashes: times the server process was found dead (the run stops at the first).
        good: the good traffic sent beside the cases.
        falsified: hypothesis's minimal failing example, when the property failed ("" otherwise).
        wall_s: run time.
    """

    results: list[CaseResult] = field(default_factory=list)
    crashes: int = 0
    good: GoodTraffic = field(default_factory=GoodTraffic)
    falsified: str = ""
    wall_s: float = 0.0

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    @property
    def lost(self) -> int:
        return sum(r.got == "lost" for r in self.results)

    def summary(self) -> dict[str, object]:
        return {
            "cases": len(self.results),
            "passed": len(self.results) - len(self.failures),
            "failed": len(self.failures),
            "crashes": self.crashes,
            "lost": self.lost,
            "outcomes": dict(Counter(r.got for r in self.results)),
            "by_protocol": dict(Counter(r.protocol for r in self.results)),
            "good_sent": self.good.sent,
            "good_answered": self.good.answered,
            "good_failed": len(self.good.failed),
            "good_failures": self.good.failed[:5],
            "falsified": self.falsified,
            "wall_s": self.wall_s,
            "first_failures": [r.__dict__ for r in self.failures[:10]],
        }


class _Runner:
    def __init__(self, server: TritonServer, suite: CaseSuite) -> None:
        self.server, self.suite = server, suite
        self.sender = Sender(server)

    def run(self, case: Case) -> CaseResult:
        t0 = time.perf_counter()
        got, status, message, outputs, count = self.sender.send(case)
        latency_ms = (time.perf_counter() - t0) * 1e3
        if not self.server.is_running():
            self.suite.crashes += 1
            got = "crash"
        why = judge(case, got, message, outputs, count, status)
        result = CaseResult(case.name, case.protocol, case.expect, got, status, message[:300], not why, why, latency_ms)
        self.suite.results.append(result)
        return result


def run_cases(
    server: TritonServer, *, generated: int = 500, progress: Callable[[int], None] | None = None
) -> CaseSuite:
    """Send the hand-picked cases, then `generated` hypothesis cases (derandomized: the same cases every run),
    with good traffic running beside them.

    Args:
        server: a started server serving the generated repository.
        generated: hypothesis examples to send.
        progress: called with the number of cases done so far.

    Raises:
        ImportError: hypothesis is not installed (it is in the dev extra).
    """
    import warnings

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import HypothesisWarning

    from adaptive_bench.reliability.strategies import cases as case_strategy

    suite = CaseSuite()
    runner = _Runner(server, suite)
    start = time.perf_counter()
    try:
        with _GoodTrafficThread(server.grpc_url) as good:
            for case in hand_picked_cases():
                runner.run(case)
                if progress:
                    progress(len(suite.results))
                if suite.crashes:
                    break

            @settings(
                max_examples=generated,
                derandomize=True,
                database=None,
                deadline=None,
                print_blob=False,
                suppress_health_check=list(HealthCheck),
                phases=(Phase.generate, Phase.shrink),
            )
            @given(case=case_strategy())
            def bad_inputs_get_typed_answers(case: Case) -> None:
                result = runner.run(case)
                if progress:
                    progress(len(suite.results))
                assert result.passed, f"{case.name}: {result.why}"

            if not suite.crashes and generated > 0:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", HypothesisWarning)  # reprs of 1 MB texts
                        bad_inputs_get_typed_answers()
                except AssertionError as e:
                    suite.falsified = str(e)[:1000]
        suite.good = good.result
    finally:
        runner.sender.close()
    if not suite.crashes and not is_live(server.http_url):
        suite.crashes += 1  # dead, or alive but no longer answering its health endpoint
    suite.wall_s = time.perf_counter() - start
    return suite


def run_known_crashers(server: TritonServer) -> dict[str, object]:
    """Send `known_triton_crashers()` to a throwaway server; how many left it dead (upstream bugs, kept visible)."""
    sender = Sender(server)
    tried, crashes, outcomes = 0, 0, []
    try:
        for case in known_triton_crashers():
            tried += 1
            got, status, _message, _, _ = sender.send(case)
            time.sleep(1.0)  # abort() takes a moment after the connection drops
            dead = not server.is_running()
            crashes += dead
            outcomes.append({"case": case.name, "got": got, "status": status, "server_died": dead})
            if dead:
                break
    finally:
        sender.close()
    return {"tried": tried, "crashes": crashes, "outcomes": outcomes}
