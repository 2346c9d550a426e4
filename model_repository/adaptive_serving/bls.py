"""Run one size's exit stages over BLS: the loop shared by the cascade and router models.

Imports `triton_python_backend_utils` lazily, so it only works inside a Python-backend stub.
"""

from __future__ import annotations

import time

import numpy as np

from adaptive_core import names
from adaptive_core.cascade import CascadePlan, CascadeState, StageLatency, deadline_start
from adaptive_core.text import truncate


class StageError(Exception):
    """A stage call failed; the message names the stage and carries the server's message."""


async def call_stage(
    model: str, inputs: dict[str, object], wanted: list[str], remaining_s: float, *, gpu_outputs: bool = False
) -> dict[str, object]:
    """One BLS call; `remaining_s` > 0 becomes the child request's queue timeout.

    Inputs and outputs are numpy arrays when in CPU memory and torch tensors (through DLPack) when on a GPU;
    `gpu_outputs` asks Triton to leave the outputs in GPU memory (torch stages on a GPU).

    Raises:
        StageError: the stage answered with an error.
    """
    import triton_python_backend_utils as pb_utils

    tensors = [_to_triton(pb_utils, k, v) for k, v in inputs.items()]
    timeout_us = max(int(remaining_s * 1e6), 1) if remaining_s > 0 else 0
    extra = {"preferred_memory": pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_GPU, 0)} if gpu_outputs else {}
    request = pb_utils.InferenceRequest(
        model_name=model, inputs=tensors, requested_output_names=wanted, timeout=timeout_us, **extra
    )
    response = await request.async_exec()
    if response.has_error():
        raise StageError(f"stage {model} failed: {response.error().message()}")
    return {name: _from_triton(pb_utils.get_output_tensor_by_name(response, name)) for name in wanted}


def started_at(request: object, arrived: float) -> float:
    """`deadline_start` of a gate model's request: from its optional `entered_ns` input, else `arrived`."""
    import triton_python_backend_utils as pb_utils

    entered = pb_utils.get_input_tensor_by_name(request, names.ENTERED_NS)
    return deadline_start(arrived, None if entered is None else entered.as_numpy())


def _to_triton(pb_utils: object, name: str, value: object) -> object:
    if isinstance(value, np.ndarray):
        return pb_utils.Tensor(name, np.ascontiguousarray(value))
    from torch.utils import dlpack

    return pb_utils.Tensor.from_dlpack(name, dlpack.to_dlpack(value.contiguous()))


def _from_triton(tensor: object) -> object:
    if tensor.is_cpu():
        return tensor.as_numpy()
    from torch.utils import dlpack

    return dlpack.from_dlpack(tensor.to_dlpack())


def as_numpy(x: object) -> np.ndarray:
    """A stage output on the CPU as numpy (GPU tensors are copied back)."""
    return x if isinstance(x, np.ndarray) else x.cpu().numpy()


def take_rows(x: object, keep: np.ndarray) -> object:
    """Rows of `x` (numpy, or a torch tensor on any device) where the boolean `keep` is set."""
    if isinstance(x, np.ndarray):
        return x[keep]
    import torch

    return x[torch.from_numpy(keep).to(x.device)]


async def run_cascade(
    plan: CascadePlan,
    state: CascadeState,
    ids: np.ndarray,
    mask: np.ndarray,
    *,
    sep_id: int,
    timeout_us: int,
    started: float,
    latency: StageLatency,
    express: bool = False,
) -> CascadeState:
    """Run `plan`'s stages for `ids`/`mask` (all rows of `state` alive); every sample leaves at its first
    confident exit. When the next stage would likely overrun the deadline (`timeout_us` after `started`,
    a `time.monotonic()` value), the samples still running answer with their latest exit, flagged.
    `express`: the stage calls go to the express lane's models (`CascadePlan.lane`; the gate picked it).

    Raises:
        StageError: a stage failed (other than a late stage expiring in its queue, which cuts short).
    """
    ids, mask = truncate(ids, mask, plan.max_seq_len, sep_id)
    budget_s = timeout_us / 1e6  # 0: no deadline
    last = len(plan.stage_models)
    hidden = None
    models = plan.lane(express)
    for stage in range(1, last + 1):
        model = models[stage - 1]
        elapsed = time.monotonic() - started
        if stage > 1 and not latency.fits(model, ids.shape[1], elapsed, budget_s):
            state.cut_short()
            break
        if stage == 1:
            inputs = {names.INPUT_IDS: ids, names.ATTENTION_MASK: mask}
        else:
            inputs = {names.HIDDEN_IN: hidden, names.ATTENTION_MASK: mask[state.alive]}
        wanted = [names.LOGITS] if stage == last else [names.HIDDEN, names.LOGITS]
        # Stage 1 runs without a deadline (an admitted request needs at least one exit); later stages carry
        # the remaining budget, so a stage queue that holds them too long expires the call.
        remaining_s = budget_s - elapsed if budget_s > 0 and stage > 1 else 0.0
        t0 = time.monotonic()
        try:
            out = await call_stage(model, inputs, wanted, remaining_s, gpu_outputs=plan.device == "gpu")
        except StageError as e:
            if stage > 1 and budget_s > 0 and "timeout" in str(e).lower():
                state.cut_short()  # expired in the stage queue: answer with what we have
                break
            raise
        latency.update(model, ids.shape[1], time.monotonic() - t0)
        threshold = None if stage == last else plan.thresholds[stage - 1]
        stay = state.observe(stage, as_numpy(out[names.LOGITS]), threshold)
        if state.done:
            break
        hidden = take_rows(out[names.HIDDEN], stay)
    return state
