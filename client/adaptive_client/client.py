"""Typed client for the `adaptive` entry model, over gRPC or HTTP, sync and asyncio.

    with AdaptiveClient("grpc://127.0.0.1:8001") as client:
        results = client.classify(["Shares fell sharply"], latency_class="critical")

    async with AsyncAdaptiveClient("http://127.0.0.1:8000", max_retries=5) as client:
        results = await client.classify(["Shares fell sharply"], latency_class="critical")

A latency class maps to a request priority and queue timeout from the one class config. tritonclient errors
become the small hierarchy below (`raise ... from e`), so callers can tell bad input from shedding.

Retries: only `ServerUnavailableError` (connection refused, the server restarting: the request was never
admitted) is retried, with exponential backoff `backoff_s * 2**attempt`. Invalid input is the caller's bug and a
rejection (a queue timeout, or a full queue: `adaptive_core.shedding`) is the server shedding load on purpose;
retrying either would only add load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from adaptive_core import names
from adaptive_core.config import latency_class as lookup_class
from adaptive_core.shedding import shed_reason


class AdaptiveClientError(RuntimeError):
    """Base class of the client's errors."""


class InvalidInputError(AdaptiveClientError):
    """The server refused the input (INVALID_ARG); the message says what is wrong. Never retried."""


class RejectedError(AdaptiveClientError):
    """The server shed the request (UNAVAILABLE: a queue timeout expired or a queue was full). Never retried."""


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
        complexity: the entry's complexity estimate, when the served model has a `complexity` output
            (read from the model metadata); None otherwise.
        label_name: the label's class name as the export named it, when the served model has a `label_name` output;
            None otherwise.
    """

    label: int
    confidence: float
    exit_stage: int
    exit_layer: int
    model_size: str
    deadline_cut: bool
    latency_ms: float
    complexity: float | None = None
    label_name: str | None = None


# Outputs every entry model answers; `complexity` and `label_name` are read on top where the metadata lists them.
RESULT_OUTPUTS = (
    names.LABEL,
    names.CONFIDENCE,
    names.EXIT_STAGE,
    names.EXIT_LAYER,
    names.MODEL_SIZE,
    names.DEADLINE_CUT,
)
COMPLEXITY = names.COMPLEXITY
OPTIONAL_OUTPUTS = (names.COMPLEXITY, names.LABEL_NAME)


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
    status_fn = getattr(e, "status", None)
    status = str((status_fn() if callable(status_fn) else status_fn) or "")
    message = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
    text = f"{status} {message}".lower()
    # A restarting server listens before its models are loaded (HTTP answers that with a 400): not admitted. A stopping
    # server fails the BLS calls of requests still in flight with "Server not ready": never answered, safe to resend.
    if "has no available versions" in text or "is not ready" in text or "server not ready" in text:
        return ServerUnavailableError(message)
    if "invalid_arg" in text or "400" in status:
        return InvalidInputError(message)
    if shed_reason(text) is not None:
        return RejectedError(message)
    if any(
        k in text
        for k in ("unavailable", "connection refused", "failed to connect", "cannot connect", "connect call failed")
    ):
        return ServerUnavailableError(message)
    # HTTP clients raise plain socket errors when nobody listens; a timeout may come after admission: not retried.
    if isinstance(e, OSError) and not isinstance(e, TimeoutError):
        return ServerUnavailableError(message)
    return AdaptiveClientError(message)


T = TypeVar("T")


def _check_retry_args(max_retries: int, backoff_s: float) -> None:
    if max_retries < 0 or backoff_s < 0:
        raise ValueError(f"max_retries and backoff_s must be >= 0, got {max_retries}, {backoff_s}")


def retry_sync(call: Callable[[], T], *, max_retries: int, backoff_s: float) -> T:
    """Run `call`, retrying only on ServerUnavailableError, sleeping `backoff_s * 2**attempt` between tries.

    Raises:
        ServerUnavailableError: still unreachable after `max_retries` retries.
        AdaptiveClientError: any other client error, at once.
    """
    for attempt in range(max_retries + 1):
        try:
            return call()
        except ServerUnavailableError:
            if attempt == max_retries:
                raise
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


async def retry_async(call: Callable[[], Awaitable[T]], *, max_retries: int, backoff_s: float) -> T:
    """The asyncio twin of `retry_sync`.

    Raises:
        ServerUnavailableError: still unreachable after `max_retries` retries.
        AdaptiveClientError: any other client error, at once.
    """
    for attempt in range(max_retries + 1):
        try:
            return await call()
        except ServerUnavailableError:
            if attempt == max_retries:
                raise
            await asyncio.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def _text_array(texts: Sequence[str | bytes]) -> np.ndarray:
    if not texts:
        raise ValueError("classify needs at least one text")
    return np.array([[t.encode("utf-8") if isinstance(t, str) else t] for t in texts], dtype=np.object_)  # (B, 1)


def _request_kwargs(latency_class: str, protocol: str, network_timeout_s: float) -> dict[str, object]:
    cls = lookup_class(latency_class)
    kwargs: dict[str, object] = {"priority": cls.priority}
    if cls.queue_timeout_us:
        kwargs["timeout"] = cls.queue_timeout_us
    if protocol == "grpc":
        kwargs["client_timeout"] = network_timeout_s
    return kwargs


def _output_names(metadata: object) -> set[str]:
    """Output names from model metadata (gRPC JSON dict or HTTP dict)."""
    return {o["name"] for o in metadata.get("outputs", [])}  # type: ignore[attr-defined]


def _results(out: dict[str, np.ndarray], count: int, latency_ms: float) -> list[CascadeResult]:
    complexity, label_name = out.get(COMPLEXITY), out.get(names.LABEL_NAME)
    return [
        CascadeResult(
            label=int(out[names.LABEL][i, 0]),
            confidence=float(out[names.CONFIDENCE][i, 0]),
            exit_stage=int(out[names.EXIT_STAGE][i, 0]),
            exit_layer=int(out[names.EXIT_LAYER][i, 0]),
            model_size=out[names.MODEL_SIZE][i, 0].decode(),
            deadline_cut=bool(out[names.DEADLINE_CUT][i, 0]),
            latency_ms=latency_ms,
            complexity=None if complexity is None else float(complexity.reshape(count, -1)[i, 0]),
            label_name=None if label_name is None else label_name.reshape(count, -1)[i, 0].decode("utf-8"),
        )
        for i in range(count)
    ]


class _Settings:
    """What the sync and async clients share: the parsed URL, the model, the timeout and the retry rule."""

    def __init__(self, url: str, model_name: str, network_timeout_s: float, max_retries: int, backoff_s: float) -> None:
        _check_retry_args(max_retries, backoff_s)
        self.protocol, self.address = split_url(url)
        self.model_name = model_name
        self.network_timeout_s = network_timeout_s
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self._outputs: set[str] | None = None


class AdaptiveClient(_Settings):
    """Client of one model (default `adaptive`) on one server.

    Args:
        url: `grpc://host:port`, `http://host:port` or `host:port` (gRPC).
        model_name: entry model to call.
        network_timeout_s: client-side network timeout per request.
        max_retries: retries of a request that failed with ServerUnavailableError (never admitted).
        backoff_s: first retry delay; doubles on each retry.

    Raises:
        ValueError: bad url scheme or negative retry settings.
    """

    def __init__(
        self,
        url: str,
        model_name: str = "adaptive",
        *,
        network_timeout_s: float = 60.0,
        max_retries: int = 0,
        backoff_s: float = 0.1,
    ) -> None:
        _Settings.__init__(self, url, model_name, network_timeout_s, max_retries, backoff_s)
        if self.protocol == "grpc":
            import tritonclient.grpc as module

            self._client = module.InferenceServerClient(self.address)
        else:
            import tritonclient.http as module

            self._client = module.InferenceServerClient(self.address, network_timeout=network_timeout_s)
        self._module = module

    def _call(self, fn: Callable[[], T]) -> T:
        def once() -> T:
            try:
                return fn()
            except Exception as e:  # tritonclient raises InferenceServerException, gRPC/HTTP errors below it
                raise _translate(e) from e

        return retry_sync(once, max_retries=self.max_retries, backoff_s=self.backoff_s)

    def output_names(self) -> set[str]:
        """Outputs of the model, from its metadata (fetched once).

        Raises:
            ServerUnavailableError, AdaptiveClientError: see the classes.
        """
        if self._outputs is None:
            kwargs = {"as_json": True} if self.protocol == "grpc" else {}
            self._outputs = _output_names(
                self._call(lambda: self._client.get_model_metadata(self.model_name, **kwargs))
            )
        return self._outputs

    def infer_raw(
        self, texts: Sequence[str], outputs: Sequence[str], *, latency_class: str = "batch"
    ) -> dict[str, np.ndarray]:
        """Send texts as one request; returns the named outputs as arrays.

        Raises:
            ValueError: unknown latency class, or no texts.
            InvalidInputError, RejectedError, ServerUnavailableError, AdaptiveClientError: see the classes.
        """
        kwargs = _request_kwargs(latency_class, self.protocol, self.network_timeout_s)
        data = _text_array(texts)
        inp = self._module.InferInput(names.TEXT, list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        result = self._call(lambda: self._client.infer(self.model_name, [inp], **kwargs))
        return {name: result.as_numpy(name) for name in outputs}

    def classify(self, texts: Sequence[str], *, latency_class: str = "batch") -> list[CascadeResult]:
        """Classify texts through the cascade, one request.

        Raises:
            ValueError: unknown latency class, or no texts.
            InvalidInputError, RejectedError, ServerUnavailableError, AdaptiveClientError: see the classes.
        """
        served = self.output_names()
        wanted = list(RESULT_OUTPUTS) + [n for n in OPTIONAL_OUTPUTS if n in served]
        start = time.perf_counter()
        out = self.infer_raw(texts, wanted, latency_class=latency_class)
        return _results(out, len(texts), (time.perf_counter() - start) * 1e3)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AdaptiveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAdaptiveClient(_Settings):
    """The asyncio twin of `AdaptiveClient` (tritonclient.grpc.aio / tritonclient.http.aio); create it inside a
    running event loop and use `async with`.

    Args:
        url: `grpc://host:port`, `http://host:port` or `host:port` (gRPC).
        model_name: entry model to call.
        network_timeout_s: client-side network timeout per request.
        max_retries: retries of a request that failed with ServerUnavailableError (never admitted).
        backoff_s: first retry delay; doubles on each retry.

    Raises:
        ValueError: bad url scheme or negative retry settings.
    """

    def __init__(
        self,
        url: str,
        model_name: str = "adaptive",
        *,
        network_timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.1,
    ) -> None:
        _Settings.__init__(self, url, model_name, network_timeout_s, max_retries, backoff_s)
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as module

            self._client = module.InferenceServerClient(self.address)
        else:
            import tritonclient.http.aio as module

            self._client = module.InferenceServerClient(self.address, conn_timeout=network_timeout_s)
        self._module = module

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        async def once() -> T:
            try:
                return await fn()
            except Exception as e:  # tritonclient raises InferenceServerException, gRPC/aiohttp errors below it
                raise _translate(e) from e

        return await retry_async(once, max_retries=self.max_retries, backoff_s=self.backoff_s)

    async def output_names(self) -> set[str]:
        """Outputs of the model, from its metadata (fetched once).

        Raises:
            ServerUnavailableError, AdaptiveClientError: see the classes.
        """
        if self._outputs is None:
            kwargs = {"as_json": True} if self.protocol == "grpc" else {}
            self._outputs = _output_names(
                await self._call(lambda: self._client.get_model_metadata(self.model_name, **kwargs))
            )
        return self._outputs

    async def infer_raw(
        self, texts: Sequence[str], outputs: Sequence[str], *, latency_class: str = "batch"
    ) -> dict[str, np.ndarray]:
        """Send texts as one request; returns the named outputs as arrays.

        Raises:
            ValueError: unknown latency class, or no texts.
            InvalidInputError, RejectedError, ServerUnavailableError, AdaptiveClientError: see the classes.
        """
        kwargs = _request_kwargs(latency_class, self.protocol, self.network_timeout_s)
        data = _text_array(texts)
        inp = self._module.InferInput(names.TEXT, list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        result = await self._call(lambda: self._client.infer(self.model_name, [inp], **kwargs))
        return {name: result.as_numpy(name) for name in outputs}

    async def classify(self, texts: Sequence[str], *, latency_class: str = "batch") -> list[CascadeResult]:
        """Classify texts through the cascade, one request.

        Raises:
            ValueError: unknown latency class, or no texts.
            InvalidInputError, RejectedError, ServerUnavailableError, AdaptiveClientError: see the classes.
        """
        served = await self.output_names()
        wanted = list(RESULT_OUTPUTS) + [n for n in OPTIONAL_OUTPUTS if n in served]
        start = time.perf_counter()
        out = await self.infer_raw(texts, wanted, latency_class=latency_class)
        return _results(out, len(texts), (time.perf_counter() - start) * 1e3)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncAdaptiveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
