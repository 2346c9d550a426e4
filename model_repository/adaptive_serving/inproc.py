"""The in-process cascade: every exit stage of one size in one process, with no BLS hop per exit.

The BLS cascade (`adaptive_serving.bls`) calls one Triton model per stage; on a GPU each hop costs more IPC and
scheduling than the stage's compute (issue 31). Here the size's encoder is rebuilt from its safetensors (the module
the stages were exported from) and run stage by stage on one device: after each exit head the confident samples
leave (`CascadeState.observe`, which decides with `adaptive_core.confidence.should_exit`), and only the survivors'
rows, cut to the survivors' widest text, go on to the next stage. Requests are joined and split back as PyTriton's
@batch does; the dynamic batcher in front of the model orders the latency classes (its priority levels).

Not here: deadline cuts (a request's time budget bounds its queue wait, not the stages that follow), so every
answer's `deadline_cut` is False.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from adaptive_core.cascade import CascadePlan, CascadeState
from adaptive_core.confidence import get_policy
from adaptive_core.config import TORCH_DTYPES
from adaptive_core.text import truncate

DTYPES = {name: getattr(torch, name) for name in TORCH_DTYPES}


class InprocCascade:
    """One size's exit stages in torch on `device`, with per-sample exits and survivors compacted between stages.

    Args:
        weights: the size's `weights.safetensors` (its config is in the metadata).
        plan: the size's calibrated cascade plan (thresholds, confidence policy, token budget).
        sep_id: [SEP] token id (truncation to the plan's token budget keeps it last).
        device: "cpu", "cuda" or "cuda:N".
        dtype: compute precision ("float32", "bfloat16", "float16"); reduced precision runs under autocast, so
            LayerNorm and softmax stay in float32, and confidences are computed from float32 logits.
        fused_attention: attention through `F.scaled_dot_product_attention`.

    Raises:
        ValueError: unknown dtype, or a plan whose stage count is not the weights' exit count.
    """

    def __init__(
        self,
        weights: Path,
        plan: CascadePlan,
        *,
        sep_id: int,
        device: str = "cpu",
        dtype: str = "float32",
        fused_attention: bool = True,
    ) -> None:
        from adaptive_serving.encoder import Stage, load_weights, use_fused_attention

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        model = load_weights(weights)
        if model.config.num_stages != len(plan.stage_models):
            raise ValueError(
                f"{plan.size}: the weights have {model.config.num_stages} exits, the plan {len(plan.stage_models)}"
            )
        self.plan = plan
        self.sep_id = sep_id
        self.confidence = get_policy(plan.confidence)
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        use_fused_attention(model, fused_attention)
        model = model.to(self.device, self.dtype).eval()
        self.stages = [Stage(model, s) for s in range(1, model.config.num_stages + 1)]

    @torch.inference_mode()
    def run(self, ids: np.ndarray, mask: np.ndarray) -> CascadeState:
        """Cascade (B, T) token ids and mask; every sample answers at its first confident exit (the last always)."""
        ids, mask = truncate(ids, mask, self.plan.max_seq_len, self.sep_id)
        state = CascadeState(ids.shape[0], self.confidence)
        x = torch.from_numpy(np.ascontiguousarray(ids)).to(self.device, non_blocking=True)  # (B, T)
        m = torch.from_numpy(np.ascontiguousarray(mask)).to(self.device, non_blocking=True)  # (B, T)
        last = len(self.stages)
        for number, stage in enumerate(self.stages, start=1):
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                out = stage(x, m)
            logits = out if stage.last else out[1]  # (n, C)
            threshold = None if number == last else self.plan.thresholds[number - 1]
            stay = state.observe(number, logits.float().cpu().numpy(), threshold)  # waits for the stage
            if state.done:
                break
            # Survivors only: their rows, and the token columns up to the longest survivor's last token.
            rows = torch.from_numpy(np.flatnonzero(stay)).to(self.device)
            width = int(np.flatnonzero(mask[state.alive].any(axis=0)).max(initial=0)) + 1
            x = out[0].index_select(0, rows)[:, :width]  # (n', T', H)
            m = m.index_select(0, rows)[:, :width]  # (n', T')
        return state

    def run_batched(self, requests: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[CascadeState]:
        """Join the requests' (ids, mask) (padding to the widest), cascade once, split every answer back."""
        sizes = [ids.shape[0] for ids, _ in requests]
        width = max(ids.shape[1] for ids, _ in requests)
        ids = np.concatenate([_pad(i, width) for i, _ in requests])
        mask = np.concatenate([_pad(m, width) for _, m in requests])
        joined = self.run(ids, mask)
        assert joined.label.shape[0] == sum(sizes), f"{joined.label.shape[0]} answers for {sum(sizes)} samples"
        return _split(joined, sizes)


def _pad(x: np.ndarray, width: int) -> np.ndarray:
    return x if x.shape[1] == width else np.pad(x, ((0, 0), (0, width - x.shape[1])))


def _split(state: CascadeState, sizes: Sequence[int]) -> list[CascadeState]:
    """Per-request views of a joined request's answers."""
    parts, start = [], 0
    for n in sizes:
        part = CascadeState(n, state.confidence)
        part.alive = part.alive[:0]
        for name in ("label", "score", "exit_stage", "deadline_cut"):
            setattr(part, name, getattr(state, name)[start : start + n])
        parts.append(part)
        start += n
    return parts
