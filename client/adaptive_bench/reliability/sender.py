"""Send a bad-input case to the server (tritonclient gRPC/HTTP, raw HTTP, or the typed client), classify what
came back, and judge it against the case's expectation."""

from __future__ import annotations

import json

import numpy as np

from adaptive_bench.reliability.cases import CASE_TIMEOUT_S, GOOD_TEXT, Case
from adaptive_core import names
from adaptive_core.shedding import shed_reason
from adaptive_ops.repository import CASCADE_OUTPUTS
from adaptive_ops.server import TritonServer


def _classify_error(status: str, message: str) -> str:
    text = f"{status} {message}".lower()
    if "unknown model" in text or status == "404":
        return "not_found"
    if shed_reason(text) is not None:
        return "rejected"
    if "deadline_exceeded" in text or "deadline exceeded" in text or "timed out" in text:
        return "lost"
    if "invalid_argument" in text or status == "400":
        return "invalid"
    if any(
        k in text
        for k in (
            "failed to connect",
            "connection refused",
            "connection reset",
            "socket closed",
            "broken pipe",
            "remote end closed",
        )
    ):
        return "lost"
    if any(k in text for k in ("unavailable", "403", "404", "501", "503", "not_found", "permission")):
        return "refused"
    return "error"


def check_answer(outputs: dict[str, np.ndarray | None], count: int) -> str:
    """'' when the outputs look like `count` valid answers, else what is wrong."""
    label = outputs.get(names.LABEL)
    if label is not None and (label.reshape(-1).shape[0] != count or (label < 0).any()):
        return f"label {label.reshape(-1)[:4]} for {count} texts"
    conf = outputs.get(names.CONFIDENCE)
    if conf is not None and not (np.isfinite(conf).all() and (conf >= 0).all() and (conf <= 1 + 1e-6).all()):
        return f"confidence out of [0, 1]: {conf.reshape(-1)[:4]}"
    stage = outputs.get(names.EXIT_STAGE)
    if stage is not None and (stage < 1).any():
        return f"exit_stage below 1: {stage.reshape(-1)[:4]}"
    if all(v is None for v in outputs.values()):
        return "no outputs"
    return ""


class Sender:
    """tritonclient connections for the cases (one gRPC, one HTTP), plus raw HTTP."""

    def __init__(self, server: TritonServer) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.server = server
        self.modules = {"grpc": grpcclient, "http": httpclient}
        self.clients = {
            "grpc": grpcclient.InferenceServerClient(server.grpc_url),
            "http": httpclient.InferenceServerClient(
                server.http_url, network_timeout=CASE_TIMEOUT_S, connection_timeout=CASE_TIMEOUT_S
            ),
        }

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def send(self, case: Case) -> tuple[str, str, str, dict[str, np.ndarray | None], int]:
        """(got, status, message, outputs, texts in the request)."""
        if case.protocol == "raw_http":
            return self._raw(case)
        if case.protocol == "client":
            return self._typed_client(case)
        from tritonclient.utils import InferenceServerException

        module, client = self.modules[case.protocol], self.clients[case.protocol]
        inputs = []
        for t in case.inputs:
            inp = module.InferInput(t.name, list(t.data.shape), t.datatype)
            inp.set_data_from_numpy(t.data)
            inputs.append(inp)
        wanted = list(case.outputs) if case.outputs is not None else list(CASCADE_OUTPUTS)
        kwargs: dict[str, object] = {
            "model_version": case.version,
            "priority": case.priority,
            "outputs": [module.InferRequestedOutput(o) for o in wanted],
        }
        if case.timeout_us:
            kwargs["timeout"] = case.timeout_us
        if case.parameters:
            kwargs["parameters"] = case.parameters
        if case.protocol == "grpc":
            kwargs["client_timeout"] = CASE_TIMEOUT_S
        count = int(case.inputs[0].data.shape[0]) if case.inputs and case.inputs[0].data.ndim else 0
        try:
            result = client.infer(case.model, inputs, **kwargs)
        except InferenceServerException as e:
            status = str(e.status() or "")
            message = e.message() or str(e)
            return _classify_error(status, message), status, message, {}, count
        except (OSError, TimeoutError) as e:  # the HTTP client raises socket errors as they are
            return "lost", type(e).__name__, str(e), {}, count
        return "answer", "OK", "", {o: result.as_numpy(o) for o in wanted}, count

    def _typed_client(self, case: Case) -> tuple[str, str, str, dict[str, np.ndarray | None], int]:
        from adaptive_client.client import AdaptiveClient

        with AdaptiveClient(f"grpc://{self.server.grpc_url}") as client:
            try:
                client.classify([GOOD_TEXT.decode()], latency_class=case.latency_class)
            except ValueError as e:  # refused before sending: the class table does not have it
                return "invalid", "ValueError", str(e), {}, 1
        return "answer", "OK", "", {}, 1

    def _raw(self, case: Case) -> tuple[str, str, str, dict[str, np.ndarray | None], int]:
        import http.client

        conn = http.client.HTTPConnection(self.server.host, self.server.http_port, timeout=CASE_TIMEOUT_S)
        try:
            conn.request("POST", case.path, body=case.body, headers=dict(case.headers))
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as e:
            return "lost", type(e).__name__, str(e), {}, 0
        finally:
            conn.close()
        status = str(response.status)
        header_length = response.getheader("Inference-Header-Content-Length")  # binary outputs follow the JSON
        try:
            doc = json.loads(raw[: int(header_length)] if header_length else raw) if raw else {}
        except ValueError:
            doc = {}
        if response.status == 200:
            outputs = {
                o.get("name"): np.asarray(o.get("data", [])) for o in doc.get("outputs", []) if isinstance(o, dict)
            }
            return "answer", status, "", outputs, case.count
        message = doc.get("error", "") if isinstance(doc, dict) else ""
        got = "error" if not message else _classify_error(status, message)
        return got, status, message or raw[:200].decode(errors="replace"), {}, case.count


def judge(
    case: Case, got: str, message: str, outputs: dict[str, np.ndarray | None], count: int, status: str = ""
) -> str:
    """'' when the outcome is what `case` expects (its exact `status` too, when pinned), else why not."""
    if got in ("lost", "crash"):
        return f"{got}: {message[:200]}"
    # A short queue timeout may expire before the tokenizer looks at the texts: a typed rejection is then right.
    if got == "rejected" and case.timeout_us and (case.expect == "answer" or case.message.startswith("element")):
        return ""
    if case.status and status != case.status:
        return f"expected status {case.status}, got {status} ({got}): {message[:200]}"
    if case.expect == "answer":
        if got != "answer":
            return f"expected an answer, got {got}: {message[:200]}"
        return check_answer(outputs, count) if case.protocol in ("grpc", "http") or case.count else ""
    if case.expect == "typed":
        if got == "answer":
            return "expected an error, got an answer"
        if not message:
            return f"error without a message (status {got})"
        if case.message and case.message.lower() not in message.lower():
            return f"message does not say {case.message!r}: {message[:200]}"
        return ""
    if got == "answer":
        return f"expected {case.expect}, got an answer"
    if case.expect == "invalid" and got != "invalid":
        return f"expected INVALID_ARG, got {got}: {message[:200]}"
    if case.expect == "not_found" and got != "not_found":
        return f"expected an unknown-model error, got {got}: {message[:200]}"
    if case.message and case.message.lower() not in message.lower():
        return f"message does not say {case.message!r}: {message[:200]}"
    return ""
