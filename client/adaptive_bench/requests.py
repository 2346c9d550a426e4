"""One benchmark request over gRPC (asyncio client): inputs, latency class, typed outcome."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from adaptive_core import names
from adaptive_core.config import LatencyClass
from adaptive_core.shedding import SHED_REASONS, shed_reason

# Outputs read back per model kind: the entry answers a label, the full baselines answer logits.
ADAPTIVE_OUTPUTS = (names.LABEL, names.EXIT_STAGE, names.DEADLINE_CUT, names.MODEL_SIZE)
FULL_OUTPUTS = (names.LOGITS,)


@dataclass
class Outcome:
    """What came back for one request.

    Args:
        latency_ms: send to answer (or error), client side.
        labels: predicted class per text (None when rejected).
        exit_stage: exit stage per text (entry model only).
        deadline_cut: deadline flag per text (entry model only).
        model_size: size that answered, per text (entry model only).
        escalations: times each text was escalated to a larger size (router entry only).
        error_status: gRPC status name of the error (e.g. "UNAVAILABLE"); None when answered.
        error_reason: "queue_timeout" or "queue_full" when the server shed the request (`adaptive_core.shedding`),
            else "other"; None when answered.
        error_message: the server's message.
    """

    latency_ms: float
    labels: np.ndarray | None = None
    exit_stage: np.ndarray | None = None
    deadline_cut: np.ndarray | None = None
    model_size: np.ndarray | None = None
    escalations: np.ndarray | None = None
    error_status: str | None = None
    error_reason: str | None = None
    error_message: str = ""

    @property
    def ok(self) -> bool:
        return self.error_status is None

    @property
    def rejected(self) -> bool:
        """The server shed the request on purpose (a typed rejection, not an error)."""
        return self.error_reason in SHED_REASONS


@dataclass
class RequestKwargs:
    """Keyword arguments of `infer` for one latency class (priority always, timeout only when nonzero)."""

    priority: int = 0
    timeout: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def for_class(cls, latency_class: LatencyClass | None) -> RequestKwargs:
        if latency_class is None:
            return cls()
        return cls(priority=latency_class.priority, timeout=latency_class.queue_timeout_us or None)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"priority": self.priority, **self.extra}
        if self.timeout:
            out["timeout"] = self.timeout
        return out


def text_input(texts: Sequence[str]) -> object:
    """The `text` BYTES input, shape [B, 1]."""
    from tritonclient.grpc import aio

    data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)  # (B, 1)
    inp = aio.InferInput(names.TEXT, list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    return inp


def classify_error(status: str, message: str) -> str:
    """'queue_timeout' or 'queue_full' when the server shed the request (Triton's queue policy or the admission
    gate), else 'other'."""
    return shed_reason(message) or "other"


def status_name(status: object) -> str:
    """'StatusCode.UNAVAILABLE' -> 'UNAVAILABLE' (None -> 'UNKNOWN')."""
    return str(status or "UNKNOWN").rsplit(".", 1)[-1]


async def infer(client: object, model: str, texts: Sequence[str], kwargs: RequestKwargs) -> Outcome:
    """Send one request and wait for its answer; an error comes back typed, never raised.

    Args:
        client: a `tritonclient.grpc.aio.InferenceServerClient`.
        model: `adaptive` or a `<size>_full` model.
        texts: the request's texts (its batch).
        kwargs: priority and timeout of the request's latency class.
    """
    from tritonclient.utils import InferenceServerException

    wanted = FULL_OUTPUTS if model.endswith("_full") else ADAPTIVE_OUTPUTS
    inp = text_input(texts)
    t0 = time.perf_counter()
    try:
        result = await client.infer(model, [inp], **kwargs.as_dict())  # type: ignore[attr-defined]
    except InferenceServerException as e:
        status, message = status_name(e.status()), e.message() or str(e)
        return Outcome(
            (time.perf_counter() - t0) * 1e3,
            error_status=status,
            error_reason=classify_error(status, message),
            error_message=message,
        )
    latency_ms = (time.perf_counter() - t0) * 1e3
    if names.LOGITS in wanted:
        return Outcome(latency_ms, labels=result.as_numpy(names.LOGITS).argmax(axis=-1))  # (B, C) -> (B,)
    escalations = result.as_numpy(names.ESCALATIONS)  # None unless the entry is the router
    return Outcome(
        latency_ms,
        labels=result.as_numpy(names.LABEL).reshape(-1),
        exit_stage=result.as_numpy(names.EXIT_STAGE).reshape(-1),
        deadline_cut=result.as_numpy(names.DEADLINE_CUT).reshape(-1),
        model_size=result.as_numpy(names.MODEL_SIZE).reshape(-1),
        escalations=None if escalations is None else escalations.reshape(-1),
    )
