"""The hand-written encoder matches HF `BertModel`, and the stages chain to the same logits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adaptive_core.config import TINY
from adaptive_export.backbone import load_backbone
from adaptive_serving.encoder import EarlyExitEncoder, Full, Stage


def _hf_tiny(num_layers: int):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=TINY.vocab_size,
        hidden_size=TINY.hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=TINY.num_heads,
        intermediate_size=TINY.intermediate_size,
        max_position_embeddings=TINY.max_position,
        type_vocab_size=TINY.type_vocab_size,
        layer_norm_eps=TINY.layer_norm_eps,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    return transformers.BertModel(cfg).eval()


def _inputs(batch: int = 3, seq: int = 11):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, TINY.vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 7:] = 0  # padded rows
    mask[2, 3:] = 0
    return ids * mask, mask


def test_encoder_matches_hf_bert():
    hf = _hf_tiny(TINY.num_layers)
    ours = EarlyExitEncoder(TINY).eval()
    result = ours.load_state_dict(hf.state_dict(), strict=False)
    assert all(k.startswith("heads.") for k in result.missing_keys), result.missing_keys
    ids, mask = _inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours.run_layers(ours.embeddings(ids), mask, 0, TINY.num_layers)
    assert (ref - got).abs().max().item() <= 1e-5


def test_load_backbone_keeps_first_layers(tmp_path):
    hf = _hf_tiny(TINY.num_layers + 2)  # checkpoint deeper than the size: extra layers are ignored
    hf.save_pretrained(tmp_path)
    ours = load_backbone(EarlyExitEncoder(TINY), tmp_path).eval()
    ids, mask = _inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[TINY.num_layers]
        got = ours.run_layers(ours.embeddings(ids), mask, 0, TINY.num_layers)
    assert (ref - got).abs().max().item() <= 1e-5


def test_load_backbone_names_missing_weights(tmp_path):
    hf = _hf_tiny(2)
    hf.save_pretrained(tmp_path)
    with pytest.raises(KeyError, match="lacks"):
        load_backbone(EarlyExitEncoder(TINY), tmp_path)  # TINY needs 4 layers


def test_stages_chain_to_encoder_exits():
    torch.manual_seed(0)
    model = EarlyExitEncoder(TINY).eval()
    ids, mask = _inputs()
    with torch.no_grad():
        ref = model(ids, mask)
        x, outs = ids, []
        for s in range(1, TINY.num_stages + 1):
            y = Stage(model, s)(x, mask)
            if s < TINY.num_stages:
                x, logits = y
                assert x.shape == (3, 11, TINY.hidden_size)
            else:
                logits = y
            outs.append(logits)
        full = Full(model)(ids, mask)
    for r, o in zip(ref, outs):
        torch.testing.assert_close(r, o)
    torch.testing.assert_close(full, ref[-1])


def test_stage_index_is_checked():
    model = EarlyExitEncoder(dataclasses.replace(TINY))
    with pytest.raises(ValueError, match=r"stage must be in \[1, 2\]"):
        Stage(model, 3)
