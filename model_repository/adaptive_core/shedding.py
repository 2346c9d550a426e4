"""How a shed request reads on the client side: the one place that tells shedding from every other error.

The server sheds load on purpose in four ways, each answered UNAVAILABLE with its own message:

    Triton's queue policy, timeout expired   "Request timeout expired"
    Triton's queue policy, max_queue_size    "Exceeds maximum queue size"
    the admission gate, timeout expired      "<model>: request timeout expired at the admission gate (<class> class)"
    the admission gate, batch waiting room   "<model>: admission queue full (<n> batch requests waiting at the gate)"
                                             (`RepositoryOptions.batch_queue_cap` > 0)

A shed request must never be retried (retrying only adds the load that got it shed) and counts as a typed
rejection, never as an error. UNAVAILABLE alone does not say it: a server that is restarting or unreachable gives
the same status, and that request was never admitted, so it may be sent again.
"""

from __future__ import annotations

QUEUE_TIMEOUT = "queue_timeout"
QUEUE_FULL = "queue_full"
SHED_REASONS = (QUEUE_TIMEOUT, QUEUE_FULL)

# Lower-case message fragments -> reason. "timeout expired" covers Triton's queue policy and the gate alike.
_MARKERS = (
    ("timeout expired", QUEUE_TIMEOUT),
    ("exceeds maximum queue size", QUEUE_FULL),
    ("admission queue full", QUEUE_FULL),
)


def shed_reason(message: str) -> str | None:
    """`QUEUE_TIMEOUT` or `QUEUE_FULL` when `message` is the server shedding the request, else None."""
    text = message.lower()
    for marker, reason in _MARKERS:
        if marker in text:
            return reason
    return None
