"""Hypothesis strategies that draw bad (and good) requests, each with the outcome it must get (a `Case`).

Five families, drawn evenly:
  texts     well-formed `text` requests over gRPC or HTTP: arbitrary Unicode (emoji, mixed scripts, NUL,
            whitespace), arbitrary bytes (mostly invalid UTF-8), the byte cap's edge, batch sizes around the
            maximum, odd priorities and timeouts, requested outputs with unknown names;
  unicode   texts that are all valid, in any script: each must be answered;
  tensors   the `text` input with another dtype, shape or name;
  inputs    missing, extra and renamed inputs;
  raw HTTP  arbitrary bytes, arbitrary JSON and near-valid inference bodies (huge and negative shape dims,
            wrong datatypes, binary-extension headers that lie about sizes), except the known Triton 2.51 crash
            (`cases.known_triton_crashers`).
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import strategies as st

from adaptive_bench.reliability.cases import (
    GOOD_TEXT,
    Case,
    Tensor,
    numeric_tensor,
    raw_infer_case,
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


@st.composite
def raw_http_cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(("bytes", "json", "near_valid", "near_valid", "binary")))
    if kind == "bytes":
        return raw_infer_case(draw(st.binary(max_size=300)), "raw bytes body")
    if kind == "json":
        return raw_infer_case(json.dumps(draw(_json)).encode(), "arbitrary JSON body")
    datatype = draw(st.sampled_from(("BYTES", "BYTES", "INT32", "FP32", "STRING", "")))
    # Huge dims only for BYTES: Triton 2.51 allocates a JSON tensor of any other datatype from its declared shape
    # before any check, and a huge one aborts the server (cases.known_triton_crashers; fixed upstream in 2025).
    dims = st.one_of(st.integers(-2, 70), st.integers(0, 2**64 + 1)) if datatype == "BYTES" else st.integers(-2, 70)
    tensor = {
        "name": draw(st.sampled_from((names.TEXT, names.TEXT, "x", ""))),
        "shape": draw(st.lists(dims, max_size=3)),
        "datatype": datatype,
    }
    if kind == "binary":
        size = draw(st.integers(0, 64))
        tensor["parameters"] = {"binary_data_size": draw(st.one_of(st.just(size), st.integers(-1, 2**40)))}
        header = json.dumps({"inputs": [tensor]}).encode()
        claimed = draw(st.one_of(st.just(len(header)), st.integers(-5, 2**40)))
        blob = draw(st.binary(min_size=size, max_size=size))
        return raw_infer_case(
            header + blob,
            "binary-extension body",
            headers=(("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(claimed))),
        )
    tensor["data"] = draw(st.one_of(_json, st.lists(st.text(max_size=20), max_size=4)))
    body: dict[str, object] = {"inputs": [tensor]}
    if draw(st.booleans()):
        body["parameters"] = draw(
            st.dictionaries(
                st.sampled_from(("priority", "timeout", "binary_data_output", "sequence_id", "plan_file")),
                _json,
                max_size=2,
            )
        )
    if draw(st.booleans()):
        body["outputs"] = [{"name": n} for n in draw(st.lists(st.sampled_from((names.LABEL, "nope")), max_size=2))]
    return raw_infer_case(body, "near-valid JSON body")


def cases() -> st.SearchStrategy[Case]:
    """Every family, drawn evenly (texts twice: it is where the model's own checks are)."""
    return st.one_of(text_cases(), text_cases(), unicode_cases(), tensor_cases(), input_cases(), raw_http_cases())
