"""Analytic cost model and the build manifest.

FLOPs (a multiply-add counts 2) for one sequence of T tokens, hidden H, feed-forward I, head width h, C classes:

* one encoder layer: T * (8*H^2 + 4*H*I) + 4*T^2*H
  (Q, K, V and output projections 4 * 2*H^2 per token; the two feed-forward matmuls 2 * 2*H*I per token;
  attention scores Q K^T and the weighted sum of V, 2*T^2*H each). LayerNorm, GELU, softmax and bias adds are
  O(T*H) and left out: under 1% at these widths.
* embeddings: 0 (a gather and adds).
* an exit head: 2*H*h + 2*h*C per sequence (mean pooling's T*H adds are left out).

Per token the layer term is 8*H^2 + 4*H*I + 4*T*H, so "FLOPs per token" depends on T; the manifest gives the
T-free part, the per-token attention coefficient, and the value at the size's `max_seq_len`.

Bytes per token of a stage are its interface activations: stage 1 reads input_ids + attention_mask (2 x int64),
later stages read hidden (H x float32) + attention_mask (int64); every stage but the last writes hidden (H x float32).
This is what crosses Triton between stages (logits are per sequence, C x float32).

Bytes moved by a stage's compute (the roofline's denominator; `stage_bytes`), elements of `dtype_bytes` each, for
B sequences of T tokens, nh heads, assuming unfused kernels that read each operand and write each result once:

* weights, read once per call: one layer has 4*H^2 + 2*H*I + 9*H + I parameters (four H x H projections with
  bias, the two feed-forward matmuls with bias, two LayerNorms); an exit head H*h + h + h*C + C.
* activations of one layer: 20*B*T*H + 4*B*T*I + 4*B*nh*T^2 (Q, K, V projections read x three times and write
  three results; the score matmul reads Q and K; mask + softmax read and write the scores once; the weighted sum
  reads scores and V; the output projection, both residual + LayerNorm steps and the feed-forward each read
  inputs and write outputs; GELU reads and writes B*T*I).
* stage 1's embeddings: the B*T gathered word rows, T position rows, the sum and its LayerNorm: 4*B*T*H.
* the exit head's pooling reads B*T*H; the interface tensors (see above) are counted at their own widths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from adaptive_core.config import EarlyExitConfig

FLOAT32_BYTES = 4
INT64_BYTES = 8


def layer_flops(config: EarlyExitConfig, tokens: np.ndarray | int) -> np.ndarray:
    """FLOPs of one encoder layer over a sequence of `tokens` tokens (vectorized over sequences)."""
    t = np.asarray(tokens, dtype=np.float64)
    h, i = config.hidden_size, config.intermediate_size
    return t * (8 * h * h + 4 * h * i) + 4 * t * t * h


def head_flops(config: EarlyExitConfig) -> float:
    """FLOPs of one exit head per sequence."""
    return float(2 * config.hidden_size * config.head_hidden + 2 * config.head_hidden * config.num_labels)


def stage_flops(config: EarlyExitConfig, stage: int, tokens: np.ndarray | int) -> np.ndarray:
    """FLOPs of 1-based `stage` (its layers and its exit head) per sequence of `tokens` tokens."""
    start, end = config.stage_layers(stage)
    return (end - start) * layer_flops(config, tokens) + head_flops(config)


def cumulative_stage_flops(config: EarlyExitConfig, tokens: np.ndarray) -> np.ndarray:
    """(K, N): FLOPs to run stages 1..k for each sequence, i.e. the cost of exiting at stage k."""
    return np.cumsum(np.stack([stage_flops(config, s, tokens) for s in range(1, config.num_stages + 1)]), axis=0)


def full_flops(config: EarlyExitConfig, tokens: np.ndarray | int) -> np.ndarray:
    """FLOPs of the `<size>_full` model per sequence: every layer, one head."""
    return config.num_layers * layer_flops(config, tokens) + head_flops(config)


def stage_cost_table(config: EarlyExitConfig) -> list[dict]:
    """Per-stage analytic FLOPs and bytes per token (see module docstring for the formulas)."""
    h, i = config.hidden_size, config.intermediate_size
    rows = []
    for s in range(1, config.num_stages + 1):
        start, end = config.stage_layers(s)
        n = end - start
        bytes_in = (2 * INT64_BYTES) if s == 1 else (h * FLOAT32_BYTES + INT64_BYTES)
        bytes_out = 0 if s == config.num_stages else h * FLOAT32_BYTES
        rows.append(
            {
                "stage": s,
                "layers": [start + 1, end],
                "flops_per_token_linear": n * (8 * h * h + 4 * h * i),
                "flops_per_token_attention_per_context_token": n * 4 * h,
                "flops_per_token_at_max_seq_len": n * (8 * h * h + 4 * h * i + 4 * config.max_seq_len * h),
                "head_flops_per_sequence": head_flops(config),
                "activation_bytes_per_token_in": bytes_in,
                "activation_bytes_per_token_out": bytes_out,
            }
        )
    return rows


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: Path, exclude: tuple[str, ...] = ("manifest.json",)) -> dict[str, str]:
    """sha256 of every file under `root` (relative posix path -> hex), skipping `exclude` and hidden dirs."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in exclude and not any(part.startswith(".") for part in p.relative_to(root).parts):
            out[rel] = sha256_file(p)
    return out


def size_ratios(flops_per_sample: dict[str, float], min_ratio: float = 2.0) -> dict[str, dict]:
    """Ratio of mean FLOPs per sample between consecutive sizes (ordered by cost), with the >= `min_ratio` verdict."""
    order = sorted(flops_per_sample, key=flops_per_sample.get)
    out = {}
    for a, b in zip(order, order[1:]):
        r = flops_per_sample[b] / flops_per_sample[a]
        out[f"{b}/{a}"] = {"ratio": r, "min_ratio": min_ratio, "ok": bool(r >= min_ratio)}
    return out


def write_manifest(out: Path, sizes: dict[str, EarlyExitConfig], per_size: dict[str, dict], extra: dict) -> Path:
    """Write `<out>/manifest.json`: config, cost model, calibration and accuracy per size, plus file hashes.

    Args:
        out: build directory (hashes cover every file in it except the manifest).
        sizes: size name -> config.
        per_size: size name -> build results (accuracies, thresholds, flops per sample, speed-up, ...).
        extra: top-level fields (dataset hash, size ratios, commands, timings).
    """
    manifest = {
        "cost_model": __doc__.strip(),
        **extra,
        "sizes": {
            name: {
                "config": asdict(cfg),
                "exit_layers": list(cfg.exit_layers),
                "num_stages": cfg.num_stages,
                "stages": stage_cost_table(cfg),
                **per_size.get(name, {}),
            }
            for name, cfg in sizes.items()
        },
        "files": file_hashes(out),
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def layer_params(config: EarlyExitConfig) -> int:
    """Parameters of one encoder layer (projections, feed-forward, two LayerNorms, all with biases)."""
    h, i = config.hidden_size, config.intermediate_size
    return 4 * h * h + 2 * h * i + 9 * h + i


def head_params(config: EarlyExitConfig) -> int:
    """Parameters of one exit head."""
    return (
        config.hidden_size * config.head_hidden
        + config.head_hidden
        + config.head_hidden * config.num_labels
        + config.num_labels
    )


def layer_activation_elements(config: EarlyExitConfig, batch: int, tokens: int) -> dict[str, int]:
    """Activation elements one layer reads + writes for `batch` sequences of `tokens` (see the module docstring).

    Returns:
        {"hidden": 20*B*T*H, "feed_forward": 4*B*T*I, "attention_scores": 4*B*nh*T^2}.
    """
    b, t, h = batch, tokens, config.hidden_size
    return {
        "hidden": 20 * b * t * h,
        "feed_forward": 4 * b * t * config.intermediate_size,
        "attention_scores": 4 * b * config.num_heads * t * t,
    }


def stage_bytes(
    config: EarlyExitConfig, stage: int, batch: int, tokens: int, dtype_bytes: int = FLOAT32_BYTES
) -> dict[str, int]:
    """Bytes one call of 1-based `stage` moves for `batch` sequences of `tokens` tokens, by kind.

    Args:
        config: the size.
        stage: 1-based stage index.
        batch: sequences in the call.
        tokens: tokens per sequence (padded length).
        dtype_bytes: bytes per weight and activation element (4 for float32, 2 for bf16/fp16).

    Returns:
        {"weights", "activations", "attention_scores", "interface", "total"}: weights (the stage's layers and head,
        plus the gathered embedding rows for stage 1), layer activations other than the attention scores, the
        attention score traffic, the stage's input and output tensors (as they cross Triton), and their sum.
    """
    start, end = config.stage_layers(stage)
    n, b, t, h = end - start, batch, tokens, config.hidden_size
    act = layer_activation_elements(config, b, t)
    weights = n * layer_params(config) + head_params(config)
    hidden = n * (act["hidden"] + act["feed_forward"]) + b * t * h  # + the head's pooling read
    if stage == 1:
        weights += (b * t + t) * h  # gathered word and position rows: a lookup, not the whole table
        hidden += 4 * b * t * h
    cost = stage_cost_table(config)[stage - 1]
    interface = (
        b * t * (cost["activation_bytes_per_token_in"] + cost["activation_bytes_per_token_out"])
        + b * config.num_labels * FLOAT32_BYTES
    )
    out = {
        "weights": weights * dtype_bytes,
        "activations": hidden * dtype_bytes,
        "attention_scores": n * act["attention_scores"] * dtype_bytes,
        "interface": interface,
    }
    out["total"] = sum(out.values())
    return out
