"""Benchmark inputs: the evaluation mix of the test split of the export's workload (Rotten Tomatoes by default: each
test snippet once; BBC News: each test article once per view)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class EvalSamples:
    """Texts with gold labels, in the model's label order.

    Args:
        texts: one text per sample.
        labels: gold class index per sample (int64, shape (N,)).
        views: words per view (-1 = the whole text), per sample.
        label_names: class names the labels index into.
        dataset_hash: hash of the corpus and split config (from `adaptive_export.data.dataset_hash`).
        mix_size: samples in the whole mix before any subsampling.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    views: np.ndarray
    label_names: tuple[str, ...]
    dataset_hash: str
    mix_size: int

    def __len__(self) -> int:
        return len(self.texts)


def load_eval_samples(export_dir: Path | None, *, limit: int | None = None, seed: int = 0) -> EvalSamples:
    """The evaluation mix of the test split, optionally a seeded random subset of `limit` samples.

    The workload and split are the export's (`manifest.json`'s `data`), else the default (`DATA`). When `export_dir`
    holds a `manifest.json`, its label names must match the corpus's (the served model predicts indices into them).

    Raises:
        ValueError: the export's label names differ from the corpus's, or `limit` < 1.
    """
    from adaptive_core.config import DATA, DataConfig
    from adaptive_export.data import dataset_hash, eval_mix, load_corpus  # lazy: keeps --help fast

    manifest = Path(export_dir) / "manifest.json" if export_dir else None
    raw = json.loads(manifest.read_text()) if manifest is not None and manifest.is_file() else {}
    config = DataConfig(**raw["data"]) if "data" in raw else DATA
    corpus = load_corpus(config)
    exported = tuple(raw.get("label_names", corpus.label_names))
    if exported != corpus.label_names:
        raise ValueError(f"{manifest}: label_names {exported} differ from the corpus's {corpus.label_names}")
    mix = eval_mix(corpus, "test", config)
    idx = np.arange(len(mix))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if limit < len(mix):
            idx = np.sort(np.random.default_rng(seed).choice(len(mix), size=limit, replace=False))
    return EvalSamples(
        tuple(mix.texts[i] for i in idx),
        mix.labels[idx],
        mix.view[idx],
        corpus.label_names,
        dataset_hash(corpus, config),
        len(mix),
    )
