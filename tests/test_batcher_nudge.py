"""The batcher nudge's timing logic (adaptive_serving.batcher_nudge), with a recording `send`; the real server side
(the nudges expire unrun, and a busy stage no longer stalls its queue) is in test_cascade_server.py."""

from __future__ import annotations

import threading
import time

import pytest

from adaptive_serving.batcher_nudge import MAX_PENDING, BatcherNudge, parse_delays_ms


def test_delays_parse_and_reject_bad_lists() -> None:
    assert parse_delays_ms("2,10") == (0.002, 0.010)
    assert parse_delays_ms("") == ()
    for bad in ("10,2", "0", "-1", "2,2"):
        with pytest.raises(ValueError, match="positive and increasing"):
            parse_delays_ms(bad)


def _recorder() -> tuple[list[float], callable]:
    sent: list[float] = []
    return sent, lambda: sent.append(time.monotonic())


def test_an_idle_instance_is_nudged_at_each_delay() -> None:
    sent, send = _recorder()
    nudge = BatcherNudge(send, (0.002, 0.010))
    try:
        nudge.begin()
        nudge.end()
        ended = time.monotonic()
        time.sleep(0.2)
        assert len(sent) == 2 and nudge.sent == 2
        assert 0.001 < sent[0] - ended < sent[1] - ended < 0.15
    finally:
        nudge.close()


def test_no_nudge_while_busy_or_once_the_next_call_began() -> None:
    sent, send = _recorder()
    nudge = BatcherNudge(send, (0.020, 0.040))
    try:
        nudge.begin()  # busy: nothing to wake
        time.sleep(0.1)
        nudge.end()
        nudge.begin()  # the next call began before the first delay: the batcher is awake
        time.sleep(0.1)
        assert sent == []
        nudge.end()
        time.sleep(0.03)
        nudge.begin()  # began between the delays: only the first nudge went out
        time.sleep(0.1)
        assert len(sent) == 1
    finally:
        nudge.close()


def test_nudges_waiting_for_an_answer_are_capped() -> None:
    release = threading.Event()
    calls: list[int] = []

    def send() -> None:  # Triton answers a nudge only when its batcher rejects it: here, never until released
        calls.append(1)
        release.wait()

    nudge = BatcherNudge(send, (0.001,))
    try:
        for _ in range(MAX_PENDING + 5):
            nudge.begin()
            nudge.end()
            time.sleep(0.01)
        assert len(calls) == MAX_PENDING
    finally:
        release.set()
        nudge.close()
