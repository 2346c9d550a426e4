"""Text checks and tokenization for the entry models: pure functions, importable without Triton.

Sequences are padded to a bucket length so requests of similar length share a shape, and Triton's
dynamic batcher (which only batches equal shapes) can batch them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_serving.config import MAX_TEXT_BYTES

SEQ_BUCKETS = (8, 16, 32, 64, 128, 256, 512)
# Characters per kept token in the first prefix tokenized (`TextTokenizer._encode`). The evaluation texts needed at
# most 1,417 characters for 254 word pieces (5.6 per piece), so 6 fills the prefix at the first try for all of them.
PREFIX_CHARS_PER_TOKEN = 6


class InputError(ValueError):
    """A request's input is unusable; the message names the element and the problem."""


def decode_texts(raw: np.ndarray, *, max_bytes: int = MAX_TEXT_BYTES, tensor: str = "text") -> list[str]:
    """Turn a BYTES tensor into checked strings.

    Raises:
        InputError: an element is not bytes, empty or whitespace, over `max_bytes`, or not valid UTF-8.
    """
    texts = []
    for i, item in enumerate(np.asarray(raw, dtype=np.object_).reshape(-1)):
        if isinstance(item, str):
            item = item.encode("utf-8")
        if not isinstance(item, bytes):
            raise InputError(f"input '{tensor}' element {i} must be bytes, got {type(item).__name__}")
        if len(item) > max_bytes:
            raise InputError(f"input '{tensor}' element {i} is {len(item)} bytes; the cap is {max_bytes} bytes")
        try:
            text = item.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"input '{tensor}' element {i} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
        if not text.strip():
            raise InputError(f"input '{tensor}' element {i} is empty or whitespace only")
        if "\x00" in text:
            raise InputError(f"input '{tensor}' element {i} contains a NUL character")
        texts.append(text)
    if not texts:
        raise InputError(f"input '{tensor}' has no elements")
    return texts


def bucket_length(length: int, max_len: int) -> int:
    """Smallest bucket >= `length`, capped at `max_len`."""
    for bucket in SEQ_BUCKETS:
        if bucket >= length:
            return min(bucket, max_len)
    return max_len


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

        The tokenizer reads the whole text before it truncates, at about 0.3 us per character here: a 5,000-character
        text cost 1.8 ms for the same 256 tokens a 1,200-character prefix gives. A prefix that ends at a space gives
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


def truncate(ids: np.ndarray, mask: np.ndarray, max_len: int, sep_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut (B, T) token batches to `max_len` exactly as the tokenizer would have: rows that lose tokens end
    with [SEP]. Lets one tokenizer at the largest length serve every size of the family."""
    if ids.shape[1] <= max_len:
        return ids, mask
    lengths = mask.sum(axis=1)
    ids, mask = ids[:, :max_len].copy(), mask[:, :max_len].copy()
    cut = lengths > max_len
    ids[cut, max_len - 1] = sep_id
    # Trim padding columns nobody uses, to the bucket of the longest remaining row.
    width = bucket_length(int(mask.sum(axis=1).max()), max_len)
    return ids[:, :width], mask[:, :width]
