"""The gate's class caps as config text: how many requests of each latency class may be in flight past a gate."""

from __future__ import annotations

from collections.abc import Mapping

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
