"""Typed client for the `adaptive` entry model, over gRPC or HTTP.

    with AdaptiveClient("grpc://127.0.0.1:8001") as client:
        results = client.classify(["Shares fell sharply"], latency_class="critical")

A latency class maps to a request priority and queue timeout from the one class config. tritonclient errors
become the small hierarchy below (`raise ... from e`), so callers can tell bad input from shedding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adaptive_serving import names
from adaptive_serving.config import latency_class as lookup_class


class AdaptiveClientError(RuntimeError):
    """Base class of the client's errors."""


class InvalidInputError(AdaptiveClientError):
    """The server refused the input (INVALID_ARG); the message says what is wrong. Never retried."""


class RejectedError(AdaptiveClientError):
    """The server shed the request (UNAVAILABLE: queue timeout expired or queue full)."""


class ServerUnavailableError(AdaptiveClientError):
    """The server could not be reached (connection refused, restarting)."""


@dataclass(frozen=True)
class CascadeResult:
    """One text's answer.

    Args:
        label: predicted class index.
        confidence: exit confidence in [0, 1].
        exit_stage: 1-based stage that answered.
        exit_layer: encoder layer after which it answered.
        model_size: size of the family that answered.
        deadline_cut: True when the answer was cut short by the request's deadline.
        latency_ms: round-trip time of the request that carried this text.
    """

    label: int
    confidence: float
    exit_stage: int
    exit_layer: int
    model_size: str
    deadline_cut: bool
    latency_ms: float


def split_url(url: str) -> tuple[str, str]:
    """`grpc://h:p`, `http://h:p` or bare `h:p` (gRPC) -> (protocol, host:port).

    Raises:
        ValueError: an unknown scheme.
    """
    if "://" not in url:
        return "grpc", url
    scheme, rest = url.split("://", 1)
    if scheme not in ("grpc", "http"):
        raise ValueError(f"url scheme must be grpc:// or http://, got {scheme!r}")
    return scheme, rest


def _translate(e: Exception) -> AdaptiveClientError:
    """Map a tritonclient exception to the client's hierarchy."""
    status = str(getattr(e, "status", lambda: "")() or "")
    message = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
    text = f"{status} {message}".lower()
    if "invalid_arg" in text or "400" in status:
        return InvalidInputError(message)
    if "timeout expired" in text or "exceeds maximum queue size" in text:
        return RejectedError(message)
    if "unavailable" in text or "connection refused" in text or "failed to connect" in text:
        return ServerUnavailableError(message)
    return AdaptiveClientError(message)


class AdaptiveClient:
    """Client of one model (default `adaptive`) on one server.

    Args:
        url: `grpc://host:port`, `http://host:port` or `host:port` (gRPC).
        model_name: entry model to call.
        network_timeout_s: client-side network timeout per request.
    """

    def __init__(self, url: str, model_name: str = "adaptive", *, network_timeout_s: float = 60.0) -> None:
        self.protocol, self.address = split_url(url)
        self.model_name = model_name
        self.network_timeout_s = network_timeout_s
        if self.protocol == "grpc":
            import tritonclient.grpc as module
            self._client = module.InferenceServerClient(self.address)
        else:
            import tritonclient.http as module
            self._client = module.InferenceServerClient(self.address, network_timeout=network_timeout_s)
        self._module = module

    def infer_raw(self, texts: Sequence[str], outputs: Sequence[str], *,
                  latency_class: str = "batch") -> dict[str, np.ndarray]:
        """Send texts as one request; returns the named outputs as arrays.

        Raises:
            ValueError: unknown latency class, or no texts.
            InvalidInputError, RejectedError, ServerUnavailableError, AdaptiveClientError: see the classes.
        """
        cls = lookup_class(latency_class)
        if not texts:
            raise ValueError("classify needs at least one text")
        data = np.array([[t.encode("utf-8") if isinstance(t, str) else t] for t in texts], dtype=np.object_)
        inp = self._module.InferInput(names.TEXT, list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        kwargs = {"priority": cls.priority}
        if cls.queue_timeout_us:
            kwargs["timeout"] = cls.queue_timeout_us
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.network_timeout_s
        try:
            result = self._client.infer(self.model_name, [inp], **kwargs)
        except Exception as e:  # tritonclient raises InferenceServerException, gRPC/HTTP errors below it
            raise _translate(e) from e
        return {name: result.as_numpy(name) for name in outputs}

    def classify(self, texts: Sequence[str], *, latency_class: str = "batch") -> list[CascadeResult]:
        """Classify texts through the cascade, one request.

        Raises:
            ValueError: unknown latency class, or no texts.
            InvalidInputError, RejectedError, ServerUnavailableError, AdaptiveClientError: see the classes.
        """
        start = time.perf_counter()
        out = self.infer_raw(texts, [names.LABEL, names.CONFIDENCE, names.EXIT_STAGE, names.EXIT_LAYER,
                                     names.MODEL_SIZE, names.DEADLINE_CUT], latency_class=latency_class)
        latency_ms = (time.perf_counter() - start) * 1e3
        return [
            CascadeResult(label=int(out[names.LABEL][i, 0]), confidence=float(out[names.CONFIDENCE][i, 0]),
                          exit_stage=int(out[names.EXIT_STAGE][i, 0]), exit_layer=int(out[names.EXIT_LAYER][i, 0]),
                          model_size=out[names.MODEL_SIZE][i, 0].decode(),
                          deadline_cut=bool(out[names.DEADLINE_CUT][i, 0]), latency_ms=latency_ms)
            for i in range(len(texts))
        ]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AdaptiveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
