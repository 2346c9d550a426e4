"""A minimal BERT / MPNet encoder with exit heads, cut into Triton stages.

The encoder is written out (nanoGPT style) instead of wrapping `transformers.BertModel` / `MPNetModel` so that each
stage is a small, plain module the ONNX exporter traces without HF control flow, and so that the parameter names
match the HF/safetensors state dict one to one (`embeddings.*`, `encoder.layer.<i>.*`): pretrained MiniLM and MPNet
weights load with a plain `load_state_dict`.

MPNet (`config.arch == "mpnet"`, all-mpnet-base-v2) differs from BERT in three places:

* positions start at `pad_token_id + 1` (HF counts them from the padding id; with right padding that is
  `arange(T) + pad_token_id + 1` for every real token), and there are no token-type embeddings;
* every layer's attention scores get a relative position bias, one learned value per head and distance bucket
  (32 buckets, log-spaced past 8 tokens, up to 128), computed once from the sequence length and shared by the layers
  (`encoder.relative_attention_bias`);
* the attention block is named `attention.attn.{q,k,v,o}` + `attention.LayerNorm` (post-LN, as BERT).

Stage contract (tensor names from `adaptive_core.names`):

* stage 1: (input_ids int64 [B,T], attention_mask int64 [B,T]) -> (hidden float32 [B,T,H], logits [B,C])
* middle stages: (hidden_in, attention_mask) -> (hidden, logits)
* last stage: (hidden_in, attention_mask) -> logits

`hidden_in` of stage k+1 is `hidden` of stage k (ONNX needs distinct input and output names).
* full: (input_ids, attention_mask) -> logits, every layer, only the last exit head.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adaptive_core.config import EarlyExitConfig

# Added to attention scores of padded keys. Finite (not finfo.min) so a row whose keys are all padding gives a
# uniform softmax instead of NaN, and score + MASK_VALUE never overflows to -inf in float32.
MASK_VALUE = -1e9


class Embeddings(nn.Module):
    """Word + position (+ token-type, BERT) embeddings, then LayerNorm (token type is 0 for one-segment input)."""

    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position, config.hidden_size)
        if config.type_vocab_size:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # MPNet numbers real tokens from pad_token_id + 1 (HF `create_position_ids_from_input_ids`).
        self.position_offset = config.pad_token_id + 1 if config.arch == "mpnet" else 0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device) + self.position_offset  # (T,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)[None]  # (B, T, H)
        if hasattr(self, "token_type_embeddings"):
            x = x + self.token_type_embeddings.weight[0]  # token_type_ids == 0 everywhere
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.n_head = config.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        hs = h // self.n_head
        q = self.query(x).view(b, t, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(b, t, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(b, t, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
        att = F.softmax(att + additive_mask, dim=-1)  # mask (B, 1, 1, T) hides padded keys
        y = att @ v  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(b, t, h)  # (B, T, H)


class MPNetSelfAttention(nn.Module):
    """MPNet's attention core, named as HF (`q`, `k`, `v`, `o`); the bias carries the padding mask and the relative
    position bias."""

    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.n_head = config.num_heads
        self.q = nn.Linear(config.hidden_size, config.hidden_size)
        self.k = nn.Linear(config.hidden_size, config.hidden_size)
        self.v = nn.Linear(config.hidden_size, config.hidden_size)
        self.o = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        hs = h // self.n_head
        q = self.q(x).view(b, t, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k(x).view(b, t, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v(x).view(b, t, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
        att = F.softmax(att + bias, dim=-1)  # bias (B, nh, T, T): relative positions + padded keys
        y = att @ v  # (B, nh, T, hs)
        return self.o(y.transpose(1, 2).reshape(b, t, h))  # (B, T, H)


class MPNetAttention(nn.Module):
    """Post-LN attention block of MPNet (`attention.attn`, `attention.LayerNorm`)."""

    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.attn = MPNetSelfAttention(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(x + self.attn(x, bias))


class SelfOutput(nn.Module):
    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class Attention(nn.Module):
    """Post-LN attention block, named like HF (`attention.self`, `attention.output`)."""

    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.self = SelfAttention(config)
        self.output = SelfOutput(config)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        y = self.output.dense(self.self(x, additive_mask))
        return self.output.LayerNorm(x + y)


class Intermediate(nn.Module):
    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)


class Output(nn.Module):
    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class Layer(nn.Module):
    """One BERT (or MPNet) layer: attention, then the GELU feed-forward, each with residual + LayerNorm (post-LN)."""

    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.attention = MPNetAttention(config) if config.arch == "mpnet" else Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, additive_mask)
        y = self.output.dense(F.gelu(self.intermediate.dense(x)))  # exact (erf) GELU, as BERT
        return self.output.LayerNorm(x + y)


class Encoder(nn.Module):
    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_layers))
        if config.arch == "mpnet":
            self.relative_attention_bias = nn.Embedding(config.relative_attention_buckets, config.num_heads)


def additive_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) int 1/0 mask -> (B, 1, 1, T) float32 additive mask: 0 for tokens, MASK_VALUE for padding."""
    return (1.0 - attention_mask.to(torch.float32))[:, None, None, :] * MASK_VALUE


# MPNet's relative position buckets (HF `MPNetEncoder.relative_position_bucket`, T5's scheme): half the buckets per
# direction; distances below a quarter of them exact, the rest log-spaced up to MPNET_MAX_DISTANCE.
MPNET_MAX_DISTANCE = 128


def relative_position_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int = MPNET_MAX_DISTANCE):
    """(T, T) key position - query position -> (T, T) bucket index in [0, num_buckets)."""
    half = num_buckets // 2
    n = -relative
    ret = (n < 0).to(torch.long) * half
    n = torch.abs(n)
    max_exact = half // 2
    is_small = n < max_exact
    large = max_exact + (
        torch.log(n.float().clamp(min=1.0) / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).to(torch.long)
    large = torch.clamp(large, max=half - 1)
    return ret + torch.where(is_small, n, large)


def position_bias(table: nn.Embedding, t: int, device: torch.device) -> torch.Tensor:
    """MPNet's relative position bias for a sequence of `t` tokens: (1, nh, T, T)."""
    pos = torch.arange(t, device=device)
    bucket = relative_position_bucket(pos[None, :] - pos[:, None], table.num_embeddings)  # (T, T)
    return table(bucket).permute(2, 0, 1)[None]  # (1, nh, T, T)


def attention_bias(attention_mask: torch.Tensor, table: nn.Embedding | None) -> torch.Tensor:
    """What every layer adds to its attention scores: the padding mask (B, 1, 1, T), plus MPNet's relative position
    bias (then (B, nh, T, T)) when `table` is given."""
    am = additive_mask(attention_mask)
    if table is None:
        return am
    return am + position_bias(table, attention_mask.shape[1], attention_mask.device)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` (B, T, H) over non-padded positions -> (B, H)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class ExitHead(nn.Module):
    """Masked mean pooling -> Linear(H, head_hidden) -> GELU -> Linear(num_labels).

    Mean pooling (not [CLS]) because every backbone of the family (paraphrase-MiniLM-L3-v2, all-MiniLM-L6-v2,
    all-mpnet-base-v2) is a sentence-transformers model trained with mean pooling: its pooled features are already
    good task features without fine-tuning the encoder.
    """

    def __init__(self, config: EarlyExitConfig, dropout: float = 0.1) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.head_hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(config.head_hidden, config.num_labels)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, H) pooled features -> (B, C) logits; training on cached features calls this directly."""
        return self.out(self.dropout(F.gelu(self.dense(pooled))))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classify(masked_mean(hidden, attention_mask))


class EarlyExitEncoder(nn.Module):
    """Backbone (first `config.num_layers` layers) plus one exit head per `config.exit_layers` entry.

    Args:
        config: the size to build; `heads[k]` sits after layer `config.exit_layers[k]`.
    """

    def __init__(self, config: EarlyExitConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.heads = nn.ModuleList(ExitHead(config) for _ in config.exit_layers)

    @property
    def relative_bias(self) -> nn.Embedding | None:
        """MPNet's relative position bias table (None for BERT)."""
        return getattr(self.encoder, "relative_attention_bias", None)

    def run_layers(self, x: torch.Tensor, attention_mask: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Apply layers [start, end) (0-based) to hidden `x` (B, T, H)."""
        am = attention_bias(attention_mask, self.relative_bias)
        for layer in self.encoder.layer[start:end]:
            x = layer(x, am)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, shallow to deep: list of (B, C)."""
        x = self.embeddings(input_ids)
        logits = []
        for stage, head in enumerate(self.heads, start=1):
            start, end = self.config.stage_layers(stage)
            x = self.run_layers(x, attention_mask, start, end)
            logits.append(head(x, attention_mask))
        return logits

    @torch.no_grad()
    def pooled_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_layers: int) -> torch.Tensor:
        """Masked-mean hidden after each of the first `num_layers` layers: (L, B, H).

        Frozen-backbone training caches these, so every exit head trains on exactly what its stage computes.
        """
        am = attention_bias(attention_mask, self.relative_bias)
        x = self.embeddings(input_ids)
        out = []
        for layer in self.encoder.layer[:num_layers]:
            x = layer(x, am)
            out.append(masked_mean(x, attention_mask))
        return torch.stack(out)


class Stage(nn.Module):
    """One Triton stage: the layers between two exits plus the exit head (shares modules with the encoder).

    Args:
        model: the encoder the stage is cut from.
        stage: 1-based stage index.
    """

    def __init__(self, model: EarlyExitEncoder, stage: int) -> None:
        super().__init__()
        n = model.config.num_stages
        if not 1 <= stage <= n:
            raise ValueError(f"{model.config.name}: stage must be in [1, {n}], got {stage}")
        self.first, self.last = stage == 1, stage == n
        self.start, self.end = model.config.stage_layers(stage)
        self.embeddings = model.embeddings if self.first else None
        self.layers = nn.ModuleList(model.encoder.layer[self.start : self.end])
        self.relative_bias = model.relative_bias  # MPNet: every stage recomputes the shared position bias
        self.head = model.heads[stage - 1]

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor):
        # Stage 1 gets input_ids (B, T); later stages get the previous stage's hidden (B, T, H).
        if self.first:
            x = self.embeddings(x)
        am = attention_bias(attention_mask, self.relative_bias)
        for layer in self.layers:
            x = layer(x, am)
        logits = self.head(x, attention_mask)  # (B, C)
        return logits if self.last else (x, logits)


class Full(nn.Module):
    """`<size>_full` baseline: every layer, only the last exit head; (input_ids, attention_mask) -> logits."""

    def __init__(self, model: EarlyExitEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.model.embeddings(input_ids)
        x = self.model.run_layers(x, attention_mask, 0, self.model.config.num_layers)
        return self.model.heads[-1](x, attention_mask)


def save_weights(model: EarlyExitEncoder, path: Path, label_names: tuple[str, ...]) -> Path:
    """Save the size's weights (kept backbone layers + heads) as safetensors, with its config in the metadata."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(
        sd,
        str(path),
        metadata={"config": json.dumps(asdict(model.config)), "label_names": json.dumps(list(label_names))},
    )
    path.chmod(0o644)  # safetensors writes 0600; serving containers run as another user
    return path


def load_weights(path: Path) -> EarlyExitEncoder:
    """Rebuild an `EarlyExitEncoder` from `save_weights` output (the torch GPU runtime path)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        cfg = EarlyExitConfig(**json.loads(f.metadata()["config"]))
    model = EarlyExitEncoder(cfg)
    model.load_state_dict(load_file(str(path)))
    return model.eval()
