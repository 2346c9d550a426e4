"""The entry tokenizer (`adaptive_core.text.TextTokenizer`): tokenizing a prefix of a long text must give
exactly what tokenizing the whole text and truncating gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from adaptive_export.data import load_bbc
from adaptive_serving.tokenizer import PREFIX_CHARS_PER_TOKEN, TextTokenizer

EDGE_CASES = [
    "word " * 2000,  # far more than enough, all short words
    "x" * 9000,  # no space at all: the whole text, one [UNK]
    ("y" * 150 + " ") * 12 + "a " * 3000,  # words of one [UNK] each first: the first prefix falls short, the next fills
    ("y" * 150 + " ") * 300,  # never fills: prefixes double up to the whole text
    "tab\tseparated\nlines\r\n" * 600,  # whitespace other than spaces
    "東京都の天気 " * 700,  # CJK characters, each its own word
    "café naïve " * 400 + "e\u0301 " * 600,  # accents and combining marks (stripped by the normalizer)
    "short text",
    "ends in spaces" + " " * 5000,
]


@pytest.fixture(scope="module")
def tokenizer_json(tiny_export: Path) -> Path:
    return tiny_export / "tokenizer" / "tokenizer.json"


def _whole_text(tokenizer_json: Path, max_len: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


@pytest.mark.parametrize("max_len", [32, 256, 512])
def test_prefix_tokenization_equals_whole_text_tokenization(tokenizer_json: Path, max_len: int) -> None:
    texts = list(load_bbc().texts) + EDGE_CASES
    whole = _whole_text(tokenizer_json, max_len)
    tokenize = TextTokenizer(tokenizer_json, max_len)
    cut_short = 0
    for text in texts:
        expected = whole.encode(text).ids
        ids, mask = tokenize([text])
        assert ids[0, : len(expected)].tolist() == expected, text[:80]
        assert mask[0].tolist() == [1] * len(expected) + [0] * (ids.shape[1] - len(expected))
        cut_short += len(text) > PREFIX_CHARS_PER_TOKEN * max_len
    assert cut_short > 100  # the prefix path really ran, for many texts


def test_batches_pad_to_the_longest_row(tokenizer_json: Path) -> None:
    ids, mask = TextTokenizer(tokenizer_json, 256)(["short text", EDGE_CASES[0]])
    assert ids.shape == mask.shape == (2, 256) and ids.dtype == mask.dtype == np.int64
    assert mask[0].sum() == 4 and mask[1].sum() == 256
