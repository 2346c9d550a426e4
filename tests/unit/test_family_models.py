"""The family's encoders: the small model rebuilt in torch from its ONNX file (parity with the original graph), MPNet
(the large model's architecture) against transformers' MPNetModel, and MPNet stages exported per stage to ONNX."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaptive_core.config import SIZES, EarlyExitConfig
from adaptive_export.backbone import check_onnx_parity, minilm_l6_dir, onnx_state_dict, pretrained, resolve
from adaptive_export.data import Tokenizer, pad_batch
from adaptive_export.manifest import full_flops, size_ratios
from adaptive_export.onnx_export import export_size
from adaptive_serving.encoder import EarlyExitEncoder

SNIPPETS = [
    "A gripping, if uneven, thriller that never quite earns its ending.",
    "Dull.",
    "Not the disaster I feared, but hardly the triumph its makers seem to think it is -- a shrug of a sequel.",
]

TINY_MPNET = EarlyExitConfig(
    name="mp",
    num_layers=3,
    exit_at=(1, 3),
    max_seq_len=32,
    hidden_size=32,
    num_heads=4,
    intermediate_size=64,
    vocab_size=100,
    max_position=66,
    type_vocab_size=0,
    layer_norm_eps=1e-5,
    head_hidden=16,
    num_labels=2,
    arch="mpnet",
    pad_token_id=1,
)


def test_small_rebuilt_from_onnx_matches_the_onnx_graph():
    small = SIZES["small"]
    source = resolve(small.backbone)
    assert source.weights.suffix == ".onnx" and source.tokenizer_dir == minilm_l6_dir()
    sd = onnx_state_dict(source.weights)
    # Every weight the torch encoder needs is named, with torch's [out, in] layout.
    assert sd["encoder.layer.2.intermediate.dense.weight"].shape == (1536, 384)
    assert sd["encoder.layer.0.attention.self.query.weight"].shape == (384, 384)
    model = pretrained(small)  # raises on a missing or misshapen weight
    ids, mask = pad_batch(Tokenizer(source.tokenizer_dir).encode(SNIPPETS, small.max_seq_len))
    diffs = check_onnx_parity(model, source.weights, ids, mask)
    assert diffs["hidden_max_abs_diff"] < 1e-4 and diffs["pooled_max_abs_diff"] < 1e-4, diffs


def test_family_shapes_match_the_checkpoints():
    l6 = json.loads((minilm_l6_dir() / "config.json").read_text())
    medium = SIZES["medium"]
    assert (medium.num_layers, medium.hidden_size, medium.intermediate_size) == (
        l6["num_hidden_layers"],
        l6["hidden_size"],
        l6["intermediate_size"],
    )
    large = SIZES["large"]
    assert large.arch == "mpnet" and large.exit_layers == (3, 6, 9, 12)  # the seed's 12 x 768, an exit every 3
    assert (large.hidden_size, large.intermediate_size, large.vocab_size) == (768, 3072, 30527)
    # Each size costs about 2x (medium/small: 6 vs 3 layers of one width) or more the FLOPs of the next smaller one.
    flops = {n: float(full_flops(c, 26)) for n, c in SIZES.items()}
    assert all(v["ok"] for v in size_ratios(flops, min_ratio=1.99).values()), size_ratios(flops)


def _hf_mpnet(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.MPNetConfig(
        vocab_size=TINY_MPNET.vocab_size,
        hidden_size=TINY_MPNET.hidden_size,
        num_hidden_layers=TINY_MPNET.num_layers,
        num_attention_heads=TINY_MPNET.num_heads,
        intermediate_size=TINY_MPNET.intermediate_size,
        max_position_embeddings=TINY_MPNET.max_position,
        layer_norm_eps=TINY_MPNET.layer_norm_eps,
        relative_attention_num_buckets=TINY_MPNET.relative_attention_buckets,
        pad_token_id=TINY_MPNET.pad_token_id,
    )
    torch.manual_seed(0)
    hf = transformers.MPNetModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    return hf


def _tokens(batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 100 + seq)
    ids = torch.randint(3, TINY_MPNET.vocab_size, (batch, seq), generator=g)  # no real token is the padding id 1
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    return torch.where(mask.bool(), ids, torch.full_like(ids, TINY_MPNET.pad_token_id)), mask


@pytest.mark.parametrize(("batch", "seq"), [(1, 5), (3, 17), (2, 32)])
def test_mpnet_matches_transformers(tmp_path, batch, seq):
    from adaptive_export.backbone import load_backbone

    hf = _hf_mpnet(tmp_path)
    ours = load_backbone(EarlyExitEncoder(TINY_MPNET), tmp_path).eval()
    ids, mask = _tokens(batch, seq)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        x = ours.embeddings(ids)
        real = mask.bool()
        for layer in range(1, TINY_MPNET.num_layers + 1):
            got = ours.run_layers(x, mask, 0, layer)
            assert torch.allclose(got[real], ref[layer][real], atol=1e-5), f"layer {layer}"


def test_mpnet_stages_export_with_parity(tmp_path):
    torch.manual_seed(0)
    model = EarlyExitEncoder(TINY_MPNET).eval()
    with torch.no_grad():  # a non-trivial relative position bias, so the exported graph must carry it
        model.encoder.relative_attention_bias.weight.normal_(0, 1.0)
    info = export_size(model, tmp_path, shapes=((1, 5), (3, 17), (2, 32)))
    assert set(info["files"]) == {"mp_stage1", "mp_stage2", "mp_full"}
    assert max(info["max_abs_diff"].values()) <= 1e-4
    ids, mask = (t.numpy() for t in _tokens(2, 9))
    assert np.isfinite(ids).all() and mask.sum() > 0
