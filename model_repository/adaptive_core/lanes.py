"""Lanes and the gate's class caps: how a repository keeps latency classes apart past the admission gate.

BLS child requests cannot carry a priority (Triton 2.51 and later), so past the gate the class order is kept by lanes
(`LaneOptions`, docs/triton-2.51.md) and by per-class caps on the requests in flight (`class_caps`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adaptive_core.config import LATENCY_CLASSES


def class_caps(slots: int, reserve: int) -> dict[str, int]:
    """Gate caps per class: the least urgent class may fill `slots`, each more urgent class `reserve` more."""
    if slots < 1 or reserve < 0:
        raise ValueError(f"gate slots must be >= 1 and reserve >= 0, got {slots} and {reserve}")
    least_urgent_first = sorted(LATENCY_CLASSES.values(), key=lambda c: -c.priority)
    return {c.name: slots + i * reserve for i, c in enumerate(least_urgent_first)}


def format_caps(caps: Mapping[str, int]) -> str:
    """Caps as a config parameter value, e.g. "critical:16,sensitive:12,batch:8"."""
    return ",".join(f"{name}:{cap}" for name, cap in caps.items())


def parse_caps(text: str) -> dict[str, int]:
    """Inverse of `format_caps`, checked: every class once, caps >= 1 and never lower for a more urgent class.

    Raises:
        ValueError: the text is malformed or breaks one of the rules, named in the message.
    """
    caps = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition(":")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"gate caps: expected 'class:count' items, got {item!r}")
        caps[name.strip()] = int(value)
    if set(caps) != set(LATENCY_CLASSES):
        raise ValueError(f"gate caps: need exactly the classes {sorted(LATENCY_CLASSES)}, got {sorted(caps)}")
    by_urgency = sorted(LATENCY_CLASSES.values(), key=lambda c: c.priority)
    for more, less in zip(by_urgency, by_urgency[1:]):
        if caps[more.name] < caps[less.name] or caps[less.name] < 1:
            raise ValueError(
                f"gate caps: {more.name} ({caps[more.name]}) must be >= {less.name} ({caps[less.name]}) >= 1"
            )
    return caps


@dataclass(frozen=True)
class LaneOptions:
    """The lanes of a generated repository: the workarounds that keep urgent requests fast on Triton 2.51.

    Args:
        express_lane: add `<stage>_express` models: own instances at full CPU priority, no dynamic batcher, for
            requests with a critical-class deadline. Off: every request runs on the standard stages.
        express_instances: instances per express stage model. With one, a critical request whose stage call meets
            another one's waits for the whole of that call (there is no batcher to join); with more cores, raise it.
        solo_express: a request alone in the server's gate models takes the express lane too, skipping the standard
            batcher's `max_queue_delay_us` wait for company that cannot come (`adaptive_serving.inflight`).
        standard_router: with the router and the express lane, the router's work for standard-lane requests runs in
            `router_standard`, at the standard lane's CPU priority; `router` keeps the gate and the express lane.
        bls_handover: the router hands standard-lane requests to `router_standard` over BLS instead of a local socket
            (`adaptive_serving.handover`); the socket costs tritonserver less CPU per request.
        standard_nice: CPU niceness of standard-lane processes (local target).
        standard_idle: run the standard lane under Linux SCHED_IDLE (local target): it gets only the CPU that no
            normal-priority thread wants, so on a saturated CPU the express lane, the gate and the tokenizer go first.
    """

    express_lane: bool = True
    express_instances: int = 1
    solo_express: bool = True
    standard_router: bool = True
    bls_handover: bool = False
    standard_nice: int = 10
    standard_idle: bool = True

    def __post_init__(self) -> None:
        if self.express_instances < 1:
            raise ValueError(f"express_instances must be >= 1, got {self.express_instances}")
        if not 0 <= self.standard_nice <= 19:
            raise ValueError(f"standard_nice must be in [0, 19], got {self.standard_nice}")
