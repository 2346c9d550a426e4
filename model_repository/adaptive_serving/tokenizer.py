"""The entry tokenizer: HF `tokenizers` WordPiece with truncation and bucket padding (runs in the tokenizer stub)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_core.text import SEQ_BUCKETS, bucket_length

# Characters per kept token in the first prefix tokenized (`TextTokenizer._encode`). The evaluation texts needed at
# most 1,417 characters for 254 word pieces (5.6 per piece), so 6 fills the prefix at the first try for all of them.
PREFIX_CHARS_PER_TOKEN = 6


class TextTokenizer:
    """HF `tokenizers` WordPiece tokenizer (the MiniLM one) with truncation to `max_len` and bucket padding.

    Args:
        tokenizer_json: path of `tokenizer.json`.
        max_len: tokens kept per text, [CLS] and [SEP] included.
    """

    def __init__(self, tokenizer_json: Path, max_len: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_len)
        self.max_len = max_len
        self.sep_id = self.tokenizer.token_to_id("[SEP]")
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    def _encode(self, text: str) -> object:
        """The truncated encoding of `text`, tokenizing only as much of it as the kept tokens need.

        The tokenizer reads the whole text before it truncates, so a long text costs time in proportion to its length
        for tokens that are thrown away (docs/lab-notes/2026-11-29-bench-classes.md, item 13). A prefix that ends at a
        space gives
        the same first tokens as the whole text (the normalizer works per character and the pre-tokenizer splits
        words at whitespace), so once a prefix fills `max_len` the rest cannot change the result. The prefix starts
        at PREFIX_CHARS_PER_TOKEN characters per kept token and doubles until it fills `max_len` or is the text.
        """
        chars = PREFIX_CHARS_PER_TOKEN * self.max_len
        while len(text) > chars:
            cut = text.rfind(" ", 0, chars)
            if cut > 0:
                encoding = self.tokenizer.encode(text[:cut])
                if len(encoding.ids) == self.max_len:  # filled: the whole text would be truncated to the same
                    return encoding
            chars *= 2
        return self.tokenizer.encode(text)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize; returns (input_ids, attention_mask), both int64 (B, T) with T a bucket length."""
        encodings = [self._encode(text) for text in texts]
        width = bucket_length(max(len(e.ids) for e in encodings), self.max_len)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return ids, mask

    def warm(self) -> None:
        """Tokenize a text that fills each bucket width once (at start-up, so no request pays the first calls)."""
        for width in SEQ_BUCKETS:
            if width > self.max_len:
                break
            self(["warm " * width, "a"])
