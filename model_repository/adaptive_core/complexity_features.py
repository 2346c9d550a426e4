"""Text complexity features of the size router: a few hand-made surface features plus a hashed bag of words.

numpy + stdlib only: the Triton router model imports this at serving time, and the export package uses the same
function to train the estimator, so training and serving see identical features.

Layout of one row (float32, `NUM_FEATURES` columns):

    [0:8)    HANDCRAFTED_NAMES, in order:
             log_words       log(1 + whitespace-separated words)
             log_chars       log(1 + characters)
             type_token      distinct lowercased words / words (vocabulary diversity; 0 for an empty text)
             has_code        1 if CODE_RE matches (braces, semicolons, `def `, `=`, backticks)
             has_math        1 if MATH_RE matches (digit-operator-digit, or a Unicode math symbol)
             question_words  number of QUESTION_WORDS among the words
             digit_ratio     ASCII digits / characters
             upper_ratio     ASCII uppercase letters / characters
    [8:8+HASH_BUCKETS)  signed hashed bag of words of the first HASH_MAX_WORDS lowercased word tokens:
             bucket = crc32(token) % HASH_BUCKETS, sign = +1/-1 from bit SIGN_BIT of the same crc32,
             the vector l2-normalized (all zeros for a text without word tokens).

crc32 (zlib) is stable across processes and Python versions, unlike the salted built-in `hash`.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence

import numpy as np

HANDCRAFTED_NAMES: tuple[str, ...] = (
    "log_words",
    "log_chars",
    "type_token",
    "has_code",
    "has_math",
    "question_words",
    "digit_ratio",
    "upper_ratio",
)
NUM_HANDCRAFTED = len(HANDCRAFTED_NAMES)
HASH_BUCKETS = 512
# The large size reads at most 256 tokens; hashing further words costs time and adds nothing it could use.
HASH_MAX_WORDS = 256
SIGN_BIT = 31
FEATURE_NAMES: tuple[str, ...] = HANDCRAFTED_NAMES + tuple(f"hash_{i}" for i in range(HASH_BUCKETS))
NUM_FEATURES = len(FEATURE_NAMES)
# Bumped whenever the layout or a definition above changes; router.json records it.
FEATURES_VERSION = 1

CODE_RE = re.compile(r"[{};`=]|\bdef ")
MATH_RE = re.compile(r"\d\s*[-+*/=^%]\s*\d|[\u00b1\u00d7\u00f7\u2200-\u22ff\u2a00-\u2aff]")
WORD_RE = re.compile(r"\w+")
QUESTION_WORDS = frozenset(("what", "why", "how", "when", "where", "who", "whom", "whose", "which"))

QUESTION_RE = re.compile(r"\b(?:" + "|".join(sorted(QUESTION_WORDS)) + r")\b")

# token -> signed bucket code (bucket + 1, negated for sign -1); bounded so a stream of unique tokens cannot grow the
# serving process without limit. One dict lookup per token keeps a full article well under 0.2 ms.
_HASH_CACHE: dict[str, int] = {}
_HASH_CACHE_MAX = 200_000


def _code(token: str) -> int:
    h = zlib.crc32(token.encode("utf-8"))
    code = h % HASH_BUCKETS + 1
    code = code if (h >> SIGN_BIT) & 1 else -code
    if len(_HASH_CACHE) < _HASH_CACHE_MAX:
        _HASH_CACHE[token] = code
    return code


def _handcrafted(text: str, lower: str, out: np.ndarray) -> None:
    """Fill the NUM_HANDCRAFTED surface features of one text into `out`."""
    n_words, n_chars = len(text.split()), len(text)
    out[0] = math.log1p(n_words)
    out[1] = math.log1p(n_chars)
    out[2] = len(set(lower.split())) / n_words if n_words else 0.0
    out[3] = 1.0 if CODE_RE.search(text) else 0.0
    out[4] = 1.0 if MATH_RE.search(text) else 0.0
    out[5] = len(QUESTION_RE.findall(lower))
    if n_chars:
        # Code points as uint32 (one C-level encode): counting in numpy, not a Python loop over characters.
        cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        out[6] = np.count_nonzero((cp >= 48) & (cp <= 57)) / n_chars  # ASCII 0-9
        out[7] = np.count_nonzero((cp >= 65) & (cp <= 90)) / n_chars  # ASCII A-Z


def extract_features(texts: Sequence[str]) -> np.ndarray:
    """Complexity features of each text (layout in the module docstring).

    Args:
        texts: N strings (bytes are decoded as UTF-8 with replacement, as the serving models receive them).

    Returns:
        float32 (N, NUM_FEATURES).
    """
    n = len(texts)
    out = np.zeros((n, NUM_FEATURES), dtype=np.float64)
    rows: list[int] = []
    codes: list[int] = []
    get = _HASH_CACHE.get
    for i, t in enumerate(texts):
        if isinstance(t, bytes):
            t = t.decode("utf-8", errors="replace")
        lower = t.lower()
        _handcrafted(t, lower, out[i])
        c = [get(w) or _code(w) for w in WORD_RE.findall(lower)[:HASH_MAX_WORDS]]
        codes += c
        rows += [i] * len(c)
    if codes:
        code = np.asarray(codes, dtype=np.int64)
        flat = np.asarray(rows, dtype=np.int64) * HASH_BUCKETS + np.abs(code) - 1
        h = np.bincount(flat, weights=np.sign(code).astype(np.float64), minlength=n * HASH_BUCKETS)
        h = h.reshape(n, HASH_BUCKETS)  # (N, HASH_BUCKETS)
        norm = np.linalg.norm(h, axis=1, keepdims=True)
        out[:, NUM_HANDCRAFTED:] = h / np.where(norm > 0, norm, 1.0)
    return out.astype(np.float32)
