"""Text checks, token-width buckets and truncation: pure functions the entry models and the router share.

Sequences are padded to a bucket length so requests of similar length share a shape, and Triton's
dynamic batcher (which only batches equal shapes) can batch them.
"""

from __future__ import annotations

import numpy as np

from adaptive_core.config import MAX_TEXT_BYTES

SEQ_BUCKETS = (8, 16, 32, 64, 128, 256, 512)


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
            raise InputError(
                f"input '{tensor}' element {i} is not valid UTF-8 ({e.reason} at byte {e.start})"
            ) from None
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
