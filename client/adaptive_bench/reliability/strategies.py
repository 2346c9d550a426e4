"""Hypothesis strategies that draw bad (and good) requests, each with the outcome it must get (a `Case`).

Five families, drawn evenly:
  texts     well-formed `text` requests over gRPC or HTTP: arbitrary Unicode (emoji, mixed scripts, NUL,
            whitespace), arbitrary bytes (mostly invalid UTF-8), the byte cap's edge, batch sizes around the
            maximum, odd priorities and timeouts, requested outputs with unknown names;
  unicode   texts that are all valid, in any script: each must be answered;
  tensors   the `text` input with another dtype, shape or name;
  inputs    missing, extra and renamed inputs;
  raw HTTP  bytes that are not JSON, JSON that is not a request, valid requests with one defect each (a bad
            text, a wrong datatype or name, data that is not an array, a count or batch size off, no shape, a
            negative dim, a bad priority, an unknown output) and binary-extension bodies whose sizes lie: one thing
            wrong per body, so each has an exact status and message.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import strategies as st

from adaptive_bench.reliability.cases import (
    BAD_PRIORITY,
    BAD_SHAPE_DIM,
    DATA_NOT_ARRAY,
    GOOD_TEXT,
    HEADER_TOO_LONG,
    NO_INPUTS,
    NOT_JSON,
    Case,
    Tensor,
    numeric_tensor,
    raw_infer_case,
    raw_outcome,
    raw_texts_outcome,
    text_case,
    texts_tensor,
)
from adaptive_core import names
from adaptive_core.config import MAX_BATCH_SIZE, MAX_TEXT_BYTES
from adaptive_ops.repository import CASCADE_OUTPUTS

DTYPES = ("BYTES", "INT32", "INT64", "FP32", "FP16", "BOOL", "UINT8")
PRIORITIES = (0, 1, 2, 3, 4, 255, 2**32, 2**63)
TIMEOUTS_US = (0, 0, 1, 50_000, 200_000, 10_000_000)
TRICKY = (
    b"",
    b" ",
    b"\t\n",
    "\u3000".encode(),
    "\u200b".encode(),
    "\ufeff".encode(),
    b"\x00",
    b"a\x00",
    "📈🚀".encode(),
    "株式 مؤشر индекс".encode(),
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x1b[2J",
    "e\u0301".encode(),
    "\U0010ffff".encode(),
)


def _elements() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.text(max_size=40).map(lambda s: s.encode("utf-8")),  # any code point but surrogates, NUL included
        st.binary(max_size=40),
        st.sampled_from(TRICKY),
        st.text(alphabet=st.characters(categories=("Zs", "Cc")), min_size=1, max_size=8).map(str.encode),
    )


def _batches() -> st.SearchStrategy[list[bytes]]:
    big = st.integers(MAX_TEXT_BYTES - 2, MAX_TEXT_BYTES + 2).map(lambda n: [b"x" * n])
    around_max = st.integers(MAX_BATCH_SIZE - 2, MAX_BATCH_SIZE + 3).map(lambda n: [GOOD_TEXT] * n)
    return st.one_of(
        st.lists(_elements(), min_size=1, max_size=6), st.lists(_elements(), min_size=1, max_size=6), big, around_max
    )


def _outputs() -> st.SearchStrategy[tuple[str, ...] | None]:
    names_ = st.sampled_from((*CASCADE_OUTPUTS, "no_such_output", "LABEL", ""))
    return st.one_of(st.none(), st.lists(names_, min_size=1, max_size=3, unique=True).map(tuple))


@st.composite
def text_cases(draw: st.DrawFn) -> Case:
    items = draw(_batches())
    outputs = draw(_outputs())
    if outputs is not None and "" in outputs:
        outputs = tuple(o for o in outputs if o) or None  # an empty output name cannot be sent
    protocol = draw(st.sampled_from(("grpc", "http")))
    return text_case(
        f"texts x{len(items)} [{protocol}]",
        items,
        protocol=protocol,
        outputs=outputs,
        priority=draw(st.sampled_from(PRIORITIES)),
        timeout_us=draw(st.sampled_from(TIMEOUTS_US)),
    )


@st.composite
def unicode_cases(draw: st.DrawFn) -> Case:
    """Texts that are all valid (any script, emoji, symbols, controls; not blank, no NUL): each must be answered."""
    valid = st.text(min_size=1, max_size=80).filter(lambda s: bool(s.strip()) and "\x00" not in s)
    items = [t.encode("utf-8") for t in draw(st.lists(valid, min_size=1, max_size=4))]
    protocol = draw(st.sampled_from(("grpc", "http")))
    return text_case(f"valid unicode x{len(items)} [{protocol}]", items, protocol=protocol)


@st.composite
def tensor_cases(draw: st.DrawFn) -> Case:
    datatype = draw(st.sampled_from(DTYPES))
    batch = draw(st.integers(0, MAX_BATCH_SIZE + 2))
    shape = draw(st.sampled_from(((batch, 1), (batch,), (batch, 2), (1, batch, 1), (batch, 1, 1))))
    name = draw(st.sampled_from((names.TEXT, names.TEXT, "TEXT", "txt", names.INPUT_IDS)))
    protocol = draw(st.sampled_from(("grpc", "http")))
    if datatype == "BYTES":
        data = np.full(shape, GOOD_TEXT, dtype=np.object_)
        tensor = Tensor(name, datatype, data)
    else:
        tensor = Tensor(name, datatype, numeric_tensor(datatype, shape).data)
    label = f"{name} {datatype} {list(shape)} [{protocol}]"
    if name == names.TEXT and datatype == "BYTES" and shape == (batch, 1):
        return text_case(label, [GOOD_TEXT] * batch, protocol=protocol)
    return Case(label, protocol, "invalid", inputs=(tensor,))


@st.composite
def input_cases(draw: st.DrawFn) -> Case:
    protocol = draw(st.sampled_from(("grpc", "http")))
    extra_names = st.sampled_from((names.INPUT_IDS, names.ATTENTION_MASK, "txt", "text2", names.LABEL))
    extras = draw(st.lists(extra_names, max_size=2, unique=True))
    keep_text = draw(st.booleans())
    inputs = ([texts_tensor([GOOD_TEXT])] if keep_text else []) + [
        Tensor(n, "INT64", np.zeros((1, 4), np.int64)) for n in extras
    ]
    label = f"inputs {[t.name for t in inputs]} [{protocol}]"
    if keep_text and not extras:
        return text_case(label, [GOOD_TEXT], protocol=protocol)
    return Case(label, protocol, "invalid", inputs=tuple(inputs))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
# Request members Triton reads besides "inputs": an arbitrary JSON object holding none of them lacks "inputs" first.
_REQUEST_KEYS = ("id", "inputs", "outputs", "parameters")
# Bytes no JSON parser accepts as the start of a value (JSON starts with one of `{["-0123456789tfn` after space).
_NOT_JSON_START = bytes(sorted(set(range(33, 256)) - set(b'{["-0123456789tfn')))


def _valid_texts() -> st.SearchStrategy[list[str]]:
    """1 to 4 texts the entry answers (any script; not blank, no NUL)."""
    text = st.text(min_size=1, max_size=40).filter(lambda t: bool(t.strip()) and "\x00" not in t)
    return st.lists(text, min_size=1, max_size=4)


def _text_tensor(texts: list[str]) -> dict[str, object]:
    return {"name": names.TEXT, "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}


@st.composite
def raw_http_cases(draw: st.DrawFn) -> Case:
    """Raw HTTP bodies, each with one known thing wrong (or nothing), so its exact status and message are known:
    bytes that are not JSON, JSON that is not a request, a valid request with one defect, a binary-extension body
    whose sizes lie. Huge shape dims are never declared for a fixed-size datatype (`cases.known_triton_crashers`)."""
    kind = draw(st.sampled_from(("bytes", "json", "near_valid", "near_valid", "near_valid", "binary")))
    if kind == "bytes":
        head = draw(st.sampled_from(_NOT_JSON_START))
        return raw_outcome(NOT_JSON, bytes([head]) + draw(st.binary(max_size=200)), "raw bytes body")
    if kind == "json":
        value = draw(_json.filter(lambda v: not (isinstance(v, dict) and set(v) & set(_REQUEST_KEYS))))
        return raw_outcome(NO_INPUTS, json.dumps(value).encode(), "JSON body that is not a request")
    texts = draw(_valid_texts())
    if kind == "binary":
        return _binary_case(draw, texts)
    tensor = _text_tensor(texts)
    body: dict[str, object] = {"inputs": [tensor]}
    defect = draw(
        st.sampled_from(
            (
                "none",
                "bad_text",
                "datatype",
                "name",
                "data_not_array",
                "count",
                "too_many",
                "no_shape",
                "negative_dim",
                "priority",
                "output",
            )
        )
    )
    name = f"JSON request, {defect}"
    if defect == "none":
        return raw_outcome(raw_texts_outcome(texts), body, name, count=len(texts))
    if defect == "bad_text":
        texts[draw(st.integers(0, len(texts) - 1))] = draw(st.sampled_from(("", " \t", "a\x00b", "\u3000")))
        return raw_outcome(raw_texts_outcome(texts), {"inputs": [_text_tensor(texts)]}, name)
    if defect == "datatype":
        tensor["datatype"] = draw(st.sampled_from(("", "STRING", "TEXT")))
        return raw_infer_case(body, name, "invalid", "invalid datatype for input text", status="400")
    if defect == "name":
        tensor["name"] = draw(st.sampled_from(("x", "TEXT", "txt")))
        return raw_infer_case(body, name, "invalid", f"unexpected inference input '{tensor['name']}'", status="400")
    if defect == "data_not_array":
        tensor["data"] = draw(
            st.one_of(st.text(max_size=20), st.integers(), st.dictionaries(st.text(max_size=4), _json))
        )
        return raw_outcome(DATA_NOT_ARRAY, body, name)
    if defect == "count":
        declared = len(texts) + draw(st.integers(1, 8))
        tensor["shape"] = [declared, 1]
        return raw_infer_case(body, name, "invalid", f"expected {declared} string elements", status="400")
    if defect == "too_many":
        many = [GOOD_TEXT.decode()] * draw(st.integers(MAX_BATCH_SIZE + 1, MAX_BATCH_SIZE + 6))
        body = {"inputs": [_text_tensor(many)]}
        return raw_infer_case(body, name, "invalid", f"batch-size must be <= {MAX_BATCH_SIZE}", status="400")
    if defect == "no_shape":
        tensor["shape"] = []
        return raw_infer_case(body, name, "invalid", "has no shape but model requires batch dimension", status="400")
    if defect == "negative_dim":
        tensor["shape"] = [len(texts), draw(st.integers(-(2**31), -1))]
        return raw_outcome(BAD_SHAPE_DIM, body, name)
    if defect == "priority":
        body["parameters"] = {"priority": draw(st.one_of(st.integers(-(2**31), -1), st.text(max_size=6), st.floats()))}
        return raw_outcome(BAD_PRIORITY, body, name)
    body["outputs"] = [{"name": "nope"}]
    return raw_infer_case(body, name, "invalid", "unexpected inference output 'nope'", status="400")


def _binary_case(draw: st.DrawFn, texts: list[str]) -> Case:
    """The binary tensor extension: a JSON header, then the `text` tensor as length-prefixed strings."""
    blob = b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in texts)
    defect = draw(st.sampled_from(("none", "header_length", "data_size")))
    size = len(blob) + (draw(st.integers(1, 2**20)) if defect == "data_size" else 0)
    tensor = {
        "name": names.TEXT,
        "shape": [len(texts), 1],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": size},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    claimed = len(header) + len(blob) + draw(st.integers(1, 2**40)) if defect == "header_length" else len(header)
    headers = (("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(claimed)))
    name = f"binary-extension body, {defect}"
    if defect == "none":
        return raw_outcome(raw_texts_outcome(texts), header + blob, name, headers=headers, count=len(texts))
    if defect == "header_length":
        return raw_outcome(HEADER_TOO_LONG, header + blob, name, headers=headers)
    # (the count of bytes Triton says it expects is not the declared size minus the blob's; only the words are pinned)
    message = "unexpected size for input 'text', expecting"
    return raw_infer_case(header + blob, name, "invalid", message, headers=headers, status="400")


def cases() -> st.SearchStrategy[Case]:
    """Every family, drawn evenly (texts twice: it is where the model's own checks are)."""
    return st.one_of(text_cases(), text_cases(), unicode_cases(), tensor_cases(), input_cases(), raw_http_cases())
