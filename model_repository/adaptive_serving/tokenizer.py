"""The entry tokenizer: HF `tokenizers` WordPiece with truncation and bucket padding (runs in the tokenizer stub)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_core.text import bucket_length

# Special tokens by vocabulary: BERT WordPiece ([SEP], [PAD]) and MPNet/RoBERTa style (</s>, <pad>).
SEP_TOKENS = ("[SEP]", "</s>")
PAD_TOKENS = ("[PAD]", "<pad>")


def special_ids(tokenizer: object) -> tuple[int, int]:
    """(sep_id, pad_id) of a `tokenizers.Tokenizer`: the first of SEP_TOKENS / PAD_TOKENS in its vocabulary.

    Raises:
        ValueError: the vocabulary has none of SEP_TOKENS.
    """
    sep = next((i for t in SEP_TOKENS if (i := tokenizer.token_to_id(t)) is not None), None)
    if sep is None:
        raise ValueError(f"the tokenizer has none of the separator tokens {SEP_TOKENS}")
    pad = next((i for t in PAD_TOKENS if (i := tokenizer.token_to_id(t)) is not None), 0)
    return sep, pad


# Characters per kept token in the first prefix tokenized (`TextTokenizer._encode`). The evaluation texts needed at
# most 1,417 characters for 254 word pieces (5.6 per piece), so 6 fills the prefix at the first try for all of them.
PREFIX_CHARS_PER_TOKEN = 6


class TextTokenizer:
    """HF `tokenizers` WordPiece tokenizer (MiniLM's or MPNet's) with truncation to `max_len` and bucket padding.

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
        self.sep_id, self.pad_id = special_ids(self.tokenizer)

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
