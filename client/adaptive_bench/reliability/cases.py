"""Bad-input cases: what a case is, the oracle that says what it must get, and the hand-picked list.

Every case is one request whose right outcome is known before it is sent (`expect`): a valid answer, a typed
error (INVALID_ARG naming the problem, NOT_FOUND for a model that does not exist, a refusal for an API that is
off), or another error Triton types itself (a raw HTTP body it cannot parse: 500). Where the protocol has one, the
exact status is pinned too (`status`: the HTTP code, or the gRPC status), and every raw HTTP case pins both its
status and its message. `sender.py` sends and judges them, `suite.py` runs them (with hypothesis's cases from
`strategies.py`) beside good traffic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adaptive_core import names
from adaptive_core.config import MAX_BATCH_SIZE, MAX_TEXT_BYTES
from adaptive_ops.repository import ENTRY_MODEL

# Per-request client timeout: a case with no outcome by then is counted lost.
CASE_TIMEOUT_S = 30.0
GOOD_TEXT = b"Shares in the bank fell after profits missed forecasts"
EXPECTATIONS = ("answer", "invalid", "not_found", "refused", "typed")


@dataclass(frozen=True)
class Tensor:
    """One input tensor as sent (data already in the shape and dtype the request declares)."""

    name: str
    datatype: str
    data: np.ndarray


@dataclass(frozen=True)
class Case:
    """One request and the outcome it must get.

    Args:
        name: what the case is.
        protocol: "grpc", "http" (tritonclient), "raw_http" (bytes to an HTTP path) or "client" (the typed client).
        expect: "answer" (valid outputs; a queue-timeout rejection also passes when `timeout_us` is set), "invalid"
            (INVALID_ARG), "not_found" (unknown model), "refused" (an API that is off or restricted), "typed" (an
            error of another kind, e.g. a raw HTTP body Triton cannot parse; pin `status` and `message`).
        message: text the error message must contain (case-insensitive; "" = any).
        status: the exact status it must get: HTTP code ("400", "500", ...) for http and raw_http, gRPC status
            ("StatusCode.INVALID_ARGUMENT", ...) for grpc; "" = not pinned.
        count: texts in a raw_http body that must be answered (their outputs are checked).
        model: model name in the request.
        inputs: input tensors (grpc/http).
        outputs: requested outputs (None = all).
        priority: request priority.
        timeout_us: request queue timeout (0 = none).
        version: model version string ("" = latest).
        parameters: request parameters.
        path: raw_http path; body and headers are sent as they are.
        body: raw_http body.
        headers: raw_http headers.
        latency_class: "client" protocol: the class name passed to the typed client.
    """

    name: str
    protocol: str
    expect: str
    message: str = ""
    model: str = ENTRY_MODEL
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[str, ...] | None = None
    priority: int = 0
    timeout_us: int = 0
    version: str = ""
    parameters: dict[str, object] | None = None
    path: str = ""
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    latency_class: str = ""
    status: str = ""
    count: int = 0

    def __post_init__(self) -> None:
        if self.expect not in EXPECTATIONS:
            raise ValueError(f"case {self.name!r}: expect must be one of {EXPECTATIONS}, got {self.expect!r}")


@dataclass(frozen=True)
class CaseResult:
    """What one case got.

    Args:
        name: the case's name.
        protocol: its protocol.
        expect: what it had to get.
        got: "answer", "invalid", "not_found", "rejected", "refused", "error" (a typed error of another kind),
            "lost" (no outcome within CASE_TIMEOUT_S, or the connection broke) or "crash".
        status: gRPC status, HTTP code or exception type.
        message: the error message (trimmed).
        passed: the outcome is the expected one.
        why: why it failed ("" when passed).
        latency_ms: send to outcome.
    """

    name: str
    protocol: str
    expect: str
    got: str
    status: str
    message: str
    passed: bool
    why: str
    latency_ms: float


def texts_tensor(items: Sequence[bytes]) -> Tensor:
    """The entry's `text` input, shape (B, 1) BYTES."""
    data = np.empty((len(items), 1), dtype=np.object_)
    for i, item in enumerate(items):
        data[i, 0] = item
    return Tensor(names.TEXT, "BYTES", data)


def element_problem(item: bytes, index: int) -> str | None:
    """The tokenizer's verdict on one text element, as a message fragment it must contain (None = fine)."""
    if len(item) > MAX_TEXT_BYTES:
        return f"element {index} is {len(item)} bytes"
    try:
        text = item.decode("utf-8")
    except UnicodeDecodeError:
        return f"element {index} is not valid UTF-8"
    if not text.strip():
        return f"element {index} is empty"
    if "\x00" in text:
        return f"element {index} contains a NUL"
    return None


def expect_for_texts(items: Sequence[bytes], outputs: Sequence[str] | None) -> tuple[str, str]:
    """(expect, message) for a well-formed `text` request: Triton checks batch size and outputs first, then the
    tokenizer names the first bad element."""
    request_level = []
    if not items:
        request_level.append("expected 1 string elements")
    if len(items) > MAX_BATCH_SIZE:
        request_level.append(f"batch-size must be <= {MAX_BATCH_SIZE}")
    unknown = [o for o in outputs or () if o not in names.ROUTER_OUTPUTS]
    if unknown:
        request_level.append("unexpected inference output")
    if request_level:
        return "invalid", request_level[0] if len(request_level) == 1 else ""
    for i, item in enumerate(items):
        problem = element_problem(item, i)
        if problem:
            return "invalid", problem
    return "answer", ""


def text_case(
    name: str,
    items: Sequence[bytes],
    *,
    protocol: str = "grpc",
    outputs: Sequence[str] | None = None,
    priority: int = 0,
    timeout_us: int = 0,
    parameters: dict[str, object] | None = None,
) -> Case:
    """A well-formed request of these texts, with its expected outcome."""
    expect, message = expect_for_texts(items, outputs)
    return Case(
        name,
        protocol,
        expect,
        message,
        inputs=(texts_tensor(items),),
        outputs=tuple(outputs) if outputs is not None else None,
        priority=priority,
        timeout_us=timeout_us,
        parameters=parameters,
    )


def numeric_tensor(datatype: str, shape: tuple[int, ...]) -> Tensor:
    dtype = {
        "INT32": np.int32,
        "INT64": np.int64,
        "FP32": np.float32,
        "FP16": np.float16,
        "BOOL": np.bool_,
        "UINT8": np.uint8,
    }[datatype]
    return Tensor(names.TEXT, datatype, np.zeros(shape, dtype=dtype))


# Raw HTTP outcomes of Triton 2.51, by what is wrong with the body: (expect, HTTP status, message fragment).
# A body Triton's HTTP frontend cannot read as an inference request is a 500 with its parser's reason; one it reads
# but the request is wrong for the model is a 400 (INVALID_ARG), as over tritonclient.
NOT_JSON = ("typed", "500", "failed to parse the request JSON buffer")
NO_INPUTS = ("typed", "500", "Unable to parse 'inputs'")
DATA_NOT_ARRAY = ("typed", "500", "Unable to parse 'data'")
BAD_SHAPE_DIM = ("typed", "500", "Unable to parse 'shape'")
BAD_PRIORITY = ("typed", "500", "Unable to parse 'priority'")
HEADER_TOO_LONG = ("invalid", "400", "inference header size should be in range")
MODEL_CONTROL_OFF = "explicit model load / unload is not allowed"


def raw_infer_case(
    body: dict[str, object] | bytes,
    name: str,
    expect: str = "typed",
    message: str = "",
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),),
    path: str = f"/v2/models/{ENTRY_MODEL}/infer",
    *,
    status: str = "",
    count: int = 0,
) -> Case:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(name, "raw_http", expect, message, path=path, body=data, headers=headers, status=status, count=count)


def raw_outcome(outcome: tuple[str, str, str], body: dict[str, object] | bytes, name: str, **kwargs: object) -> Case:
    """A raw HTTP case with its (expect, status, message) outcome pinned."""
    expect, status, message = outcome
    return raw_infer_case(body, name, expect, message, status=status, **kwargs)


def raw_texts_outcome(items: Sequence[str]) -> tuple[str, str, str]:
    """The outcome of a well-formed JSON body carrying `items` as its `text` tensor [B, 1]."""
    expect, message = expect_for_texts([t.encode("utf-8") for t in items], None)
    return expect, "200" if expect == "answer" else "400", message


def hand_picked_cases() -> list[Case]:
    """The issue's list, each on gRPC and HTTP where the protocol matters."""
    mb = 1024 * 1024
    cases: list[Case] = []
    texts = {
        "empty text": [b""],
        "whitespace text": [b" \t\r\n "],
        "unicode whitespace only": ["\u3000\u2003\u00a0".encode()],
        "1 MB text": [b"word " * (mb // 5)],
        "text at the byte cap": [b"a" * MAX_TEXT_BYTES],
        "text one byte over the cap": [b"a" * (MAX_TEXT_BYTES + 1)],
        "invalid UTF-8 (latin-1 byte)": [b"caf\xe9 au lait"],
        "invalid UTF-8 (encoded surrogate)": [b"\xed\xa0\x80 text"],
        "invalid UTF-8 (overlong slash)": [b"\xc0\xaf"],
        "invalid UTF-8 (truncated sequence)": ["résumé".encode()[:2]],
        "NUL byte inside": [b"shares\x00fell"],
        "NUL byte only": [b"\x00"],
        "emoji": ["📈 Shares 🚀 rallied 💹 on Monday".encode()],
        "emoji only (ZWJ family)": ["👩‍👩‍👧‍👦🏳️‍🌈".encode()],
        "mixed scripts": ["Die Börse стала 株式市場 سوق الأسهم שוק ההון शेयर बाज़ार".encode()],
        "combining marks": ["Z\u0351\u0360a\u0362l\u0352g\u0355o text".encode()],
        "zero-width space only": ["\u200b".encode()],
        "byte-order mark": ["\ufeffBank shares fell".encode()],
        "control characters": [b"\x01\x02\x1b[31m red \x7f"],
        "one 60 KB word": [b"x" * 60_000],
        f"batch of {MAX_BATCH_SIZE} (the maximum)": [GOOD_TEXT] * MAX_BATCH_SIZE,
        f"batch of {MAX_BATCH_SIZE + 1} (over the maximum)": [GOOD_TEXT] * (MAX_BATCH_SIZE + 1),
        "empty batch": [],
        "bad element second in a batch": [GOOD_TEXT, b"\xff\xfe"],
        "bad element last of a full batch": [GOOD_TEXT] * (MAX_BATCH_SIZE - 1) + [b""],
    }
    for protocol in ("grpc", "http"):
        for name, items in texts.items():
            cases.append(text_case(f"{name} [{protocol}]", items, protocol=protocol))
        good = texts_tensor([GOOD_TEXT])
        wrong = [
            ("wrong dtype INT32", (numeric_tensor("INT32", (1, 1)),), "data-type"),
            ("wrong dtype FP32", (numeric_tensor("FP32", (1, 1)),), "data-type"),
            ("wrong dtype BOOL", (numeric_tensor("BOOL", (1, 1)),), "data-type"),
            (
                "wrong shape [1, 2]",
                (Tensor(names.TEXT, "BYTES", np.array([[GOOD_TEXT, GOOD_TEXT]], np.object_)),),
                "shape",
            ),
            ("wrong shape [1, 1, 1]", (Tensor(names.TEXT, "BYTES", np.array([[[GOOD_TEXT]]], np.object_)),), "shape"),
            ("missing batch dimension [1]", (Tensor(names.TEXT, "BYTES", np.array([GOOD_TEXT], np.object_)),), "shape"),
            ("missing inputs", (), "expected 1 inputs"),
            ("wrong input name", (Tensor("txt", "BYTES", good.data),), "unexpected inference input"),
            ("extra input", (good, Tensor(names.INPUT_IDS, "INT64", np.zeros((1, 4), np.int64))), "expected 1 inputs"),
        ]
        for name, inputs, message in wrong:
            cases.append(Case(f"{name} [{protocol}]", protocol, "invalid", message, inputs=inputs))
        cases += [
            Case(
                f"wrong output name [{protocol}]",
                protocol,
                "invalid",
                "unexpected inference output",
                inputs=(good,),
                outputs=("no_such_output",),
            ),
            Case(f"one output of the entry [{protocol}]", protocol, "answer", inputs=(good,), outputs=(names.LABEL,)),
            Case(
                f"unknown model [{protocol}]",
                protocol,
                "not_found",
                "unknown model",
                model="no_such_model",
                inputs=(good,),
            ),
            # Over HTTP the name is part of the URL path, which the router does not match (404 Not Found).
            Case(
                f"model path '../{ENTRY_MODEL}' [{protocol}]",
                protocol,
                "not_found",
                "unknown model" if protocol == "grpc" else "",
                model=f"../{ENTRY_MODEL}",
                inputs=(good,),
            ),
            Case(
                f"model path '/etc/passwd' [{protocol}]",
                protocol,
                "not_found",
                "unknown model" if protocol == "grpc" else "",
                model="/etc/passwd",
                inputs=(good,),
            ),
            # gRPC reads the version string as a number first; over HTTP it is part of the URL path, unmatched.
            Case(
                f"version '../../1' [{protocol}]",
                protocol,
                "invalid" if protocol == "grpc" else "not_found",
                "failed to get model version" if protocol == "grpc" else "",
                version="../../1",
                inputs=(good,),
                status="StatusCode.INVALID_ARGUMENT" if protocol == "grpc" else "404",
            ),
            Case(
                f"version 99 [{protocol}]",
                protocol,
                "not_found",
                "version 99 is not found",
                version="99",
                inputs=(good,),
                status="StatusCode.NOT_FOUND" if protocol == "grpc" else "404",
            ),
            Case(f"priority 99 (no such level: default) [{protocol}]", protocol, "answer", inputs=(good,), priority=99),
            Case(f"priority 2**63 [{protocol}]", protocol, "answer", inputs=(good,), priority=2**63),
            Case(f"queue timeout 1 us [{protocol}]", protocol, "answer", inputs=(good,), timeout_us=1),
            # Request parameters naming files or models: no model reads them, so the answer is an ordinary one.
            Case(
                f"parameters naming files and models [{protocol}]",
                protocol,
                "answer",
                inputs=(good,),
                parameters={
                    "plan_file": "/etc/passwd",
                    "tokenizer_file": "../../../etc/shadow",
                    "audit_model": "../tokenizer",
                    "outcomes_file": "/tmp/adaptive-reliability-planted",
                },
            ),
        ]
    cases += [
        Case(
            "unknown latency class (typed client)", "client", "invalid", "unknown latency class", latency_class="urgent"
        ),
        raw_outcome(NOT_JSON, b"{not json", "malformed JSON"),
        # Triton 2.51 reads an empty JSON body as a request whose one BYTES input is empty: the tokenizer says so.
        raw_infer_case(b"", "empty body", "invalid", "element 0 is empty", status="400"),
        raw_infer_case(
            {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["one"]}]},
            "shape says 2, data has 1",
            "invalid",
            "expected 2 string elements",
            status="400",
        ),
        raw_infer_case(
            {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [5]}]},
            "number where a string belongs",
            message="Unable to parse JSON bytes array",
            status="500",
        ),
        raw_infer_case(
            {
                "inputs": [
                    {"name": "text", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 100}}
                ]
            },
            "binary size beyond the body",
            "invalid",
            "expecting 100 additional bytes",
            status="400",
        ),
        raw_infer_case(
            {
                "inputs": [
                    {
                        "name": "text",
                        "shape": [1, 1],
                        "datatype": "BYTES",
                        "data": ["x"],
                        "parameters": {"shared_memory_region": "/etc/passwd", "shared_memory_byte_size": 100},
                    }
                ]
            },
            "shared-memory region named like a file",
            "invalid",
            "Input must set only one of the following fields",
            status="400",
        ),
        raw_outcome(
            HEADER_TOO_LONG,
            {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}}]},
            "binary header length far too large",
            headers=(("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(10**12))),
        ),
        Case(
            "load a model (model control off)",
            "raw_http",
            "refused",
            MODEL_CONTROL_OFF,
            path=f"/v2/repository/models/{ENTRY_MODEL}/load",
            body=b"{}",
            status="503",
        ),
        Case(
            "load a model with a planted model.py",
            "raw_http",
            "refused",
            MODEL_CONTROL_OFF,
            path="/v2/repository/models/planted/load",
            body=json.dumps({"parameters": {"config": "{}", "file:1/model.py": "aW1wb3J0IG9z"}}).encode(),
            status="503",
        ),
        Case(
            "unload the entry",
            "raw_http",
            "refused",
            MODEL_CONTROL_OFF,
            path=f"/v2/repository/models/{ENTRY_MODEL}/unload",
            body=b"{}",
            status="503",
        ),
        Case(
            "register /etc/passwd as shared memory",
            "raw_http",
            "refused",
            "This API is restricted",
            path="/v2/systemsharedmemory/region/planted/register",
            body=json.dumps({"key": "/etc/passwd", "offset": 0, "byte_size": 64}).encode(),
            status="403",
        ),
        Case(
            "move the server log",
            "raw_http",
            "refused",
            "can not be updated through network protocol",
            path="/v2/logging",
            body=json.dumps({"log_file": "/tmp/adaptive-reliability-planted.log"}).encode(),
            status="501",
        ),
        Case(
            "move the trace file",
            "raw_http",
            "refused",
            "can not be updated through network protocol",
            path="/v2/trace/setting",
            body=json.dumps({"trace_file": "/tmp/adaptive-reliability-planted.trace"}).encode(),
            status="501",
        ),
    ]
    return cases


def known_triton_crashers() -> list[Case]:
    """Requests that abort tritonserver 2.51 (not sent by the suite; `run_known_crashers` checks they still do).

    Triton 2.51's HTTP frontend allocates a JSON input of a fixed-size datatype from its declared shape before
    checking it against the model, so one request declaring a multi-terabyte INT32 tensor ends in std::bad_alloc
    and abort() (found by this suite; fixed upstream in triton-inference-server/server #8174 and #8432, 2025).
    gRPC checks the datatype first and is not affected.
    """
    return [
        raw_infer_case(
            {"inputs": [{"name": names.TEXT, "shape": [2**40, 1], "datatype": "INT32", "data": [1]}]},
            "HTTP JSON INT32 tensor declared 4 TB (Triton 2.51 aborts)",
        )
    ]
