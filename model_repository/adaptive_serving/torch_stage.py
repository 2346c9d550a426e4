"""Run one exit stage (or a full-depth encoder) in torch, on the GPU or the CPU: the `torch` runtime.

The stage is rebuilt from the size's safetensors (`adaptive_serving.encoder.load_weights`), so it is the same
module the ONNX files were exported from. It takes and returns torch tensors on any device (the runner model moves
them in and out of Triton). Requests are joined, run once and split back (PyTriton's @batch).
The tensor contract does not change with precision: hidden states travel as float32, logits leave as float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from adaptive_core import names
from adaptive_core.config import TORCH_DTYPES

# Inputs whose second axis is the sequence, with their padding value when requests of different widths are joined.
_SEQUENCE_INPUTS = {names.INPUT_IDS: 0, names.ATTENTION_MASK: 0, names.HIDDEN_IN: 0.0}
DTYPES = {name: getattr(torch, name) for name in TORCH_DTYPES}


class TorchStage:
    """One stage of a size (or its full depth) as a torch module on `device`.

    Args:
        weights: the size's `weights.safetensors` (its config is in the metadata).
        stage: 1-based stage index; None = full depth, last exit only (the `<size>_full` baseline).
        device: "cpu", "cuda" or "cuda:N".
        dtype: compute precision ("float32", "bfloat16", "float16"); reduced precision runs under autocast, so
            LayerNorm and softmax stay in float32.

    Raises:
        ValueError: unknown dtype, or a stage index the size does not have.
    """

    def __init__(self, weights: Path, stage: int | None, *, device: str = "cpu", dtype: str = "float32") -> None:
        from adaptive_serving.encoder import Full, Stage, load_weights

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        model = load_weights(weights)
        self.config = model.config
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        module = Full(model) if stage is None else Stage(model, stage)
        self.module = module.to(self.device, self.dtype).eval()
        last = stage is None or stage == model.config.num_stages
        self.input_names = [names.INPUT_IDS if stage in (None, 1) else names.HIDDEN_IN, names.ATTENTION_MASK]
        self.output_names = [names.LOGITS] if last else [names.HIDDEN, names.LOGITS]

    @torch.inference_mode()
    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One call on already-joined inputs (any device; moved to the stage's)."""
        x, mask = (inputs[n].to(self.device, non_blocking=True) for n in self.input_names)
        if x.is_floating_point():
            x = x.to(self.dtype)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.module(x, mask)
        values = (out,) if len(self.output_names) == 1 else out
        return {n: v.float().contiguous() for n, v in zip(self.output_names, values)}

    def run_batched(self, requests: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Join the requests' inputs (padding to the widest), run once, split every output back per request."""
        sizes = [r[names.ATTENTION_MASK].shape[0] for r in requests]
        widths = [r[names.ATTENTION_MASK].shape[1] for r in requests]
        width = max(widths)
        joined = {
            n: torch.cat([_pad_seq(r[n].to(self.device), width, _SEQUENCE_INPUTS[n]) for r in requests])
            for n in self.input_names
        }
        result = self.run(joined)
        total = sum(sizes)
        for n, v in result.items():
            assert v.shape[0] == total, f"output {n!r} has {v.shape[0]} rows, expected {total}"
        split, start = [], 0
        for n, w in zip(sizes, widths):
            # Hidden states go back at the request's own width (its mask still has that width).
            split.append(
                {
                    k: (v[start : start + n, :w] if k == names.HIDDEN else v[start : start + n]).contiguous()
                    for k, v in result.items()
                }
            )
            start += n
        return split


def _pad_seq(x: torch.Tensor, width: int, fill: float) -> torch.Tensor:
    if x.shape[1] == width:
        return x
    pad = [0, 0] * (x.dim() - 2) + [0, width - x.shape[1]]  # F.pad lists the last axis first
    return torch.nn.functional.pad(x, pad, value=fill)
