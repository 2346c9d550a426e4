"""Cascade (BLS): chain one size's exit stages; each sample leaves at its first confident exit.

Requests in one execute call run concurrently (asyncio), so the survivors of concurrent requests meet in
the next stage's dynamic batcher. Deadline-aware: when the next stage would likely overrun the request's
timeout, the samples still running answer with their latest exit and the deadline flag.
"""

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from adaptive_export.confidence import get_policy
from adaptive_serving import names
from adaptive_serving.cascade import CascadePlan, CascadeState, StageLatency
from adaptive_serving.text_input import truncate


class StageError(Exception):
    """A stage call failed; carries the stage name and the server's message."""


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        for key in ("plan_file", "sep_id"):
            if key not in params:
                raise pb_utils.TritonModelException(f"{args['model_name']}: config parameter '{key}' is missing")
        self.plan = CascadePlan.from_file(Path(args["model_repository"]) / args["model_version"] / params["plan_file"])
        self.confidence = get_policy(self.plan.confidence)
        self.sep_id = int(params["sep_id"])
        self.latency = StageLatency(len(self.plan.stage_models))
        self.model_name = args["model_name"]

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._run(r) for r in requests)))

    async def _run(self, request):
        start = time.monotonic()
        ids = pb_utils.get_input_tensor_by_name(request, names.INPUT_IDS).as_numpy()
        mask = pb_utils.get_input_tensor_by_name(request, names.ATTENTION_MASK).as_numpy()
        ids, mask = truncate(ids, mask, self.plan.max_seq_len, self.sep_id)
        timeout_us = request.timeout()
        budget_s = timeout_us / 1e6  # 0: no deadline
        lane = self.plan.lane(timeout_us)
        state = CascadeState(ids.shape[0], self.confidence)
        hidden = None
        last = len(self.plan.stage_models)
        for stage, model in enumerate(lane, start=1):
            elapsed = time.monotonic() - start
            if stage > 1 and not self.latency.fits(stage, elapsed, budget_s):
                state.cut_short()
                break
            rows = state.alive
            if stage == 1:
                inputs = {names.INPUT_IDS: ids, names.ATTENTION_MASK: mask}
            else:
                inputs = {names.HIDDEN_IN: hidden, names.ATTENTION_MASK: mask[rows]}
            wanted = [names.LOGITS] if stage == last else [names.HIDDEN, names.LOGITS]
            t0 = time.monotonic()
            try:
                # Stage 1 runs without a deadline (an admitted request needs at least one exit); later stages
                # carry the remaining budget, so a stage queue that holds them too long expires the call.
                remaining_s = budget_s - elapsed if budget_s > 0 and stage > 1 else 0.0
                out = await self._call(model, inputs, wanted, remaining_s)
            except StageError as e:
                if stage > 1 and budget_s > 0 and "timeout" in str(e).lower():
                    state.cut_short()  # the stage queue expired the call: answer with what we have
                    break
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.model_name}: {e}"))
            self.latency.update(stage, time.monotonic() - t0)
            threshold = None if stage == last else self.plan.thresholds[stage - 1]
            stay = state.observe(stage, out[names.LOGITS], threshold)
            if state.done:
                break
            hidden = out[names.HIDDEN][stay]
        return self._response(state)

    async def _call(self, model, inputs, wanted, remaining_s):
        tensors = [pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in inputs.items()]
        timeout_us = max(int(remaining_s * 1e6), 1) if remaining_s > 0 else 0
        request = pb_utils.InferenceRequest(model_name=model, inputs=tensors, requested_output_names=wanted,
                                            timeout=timeout_us)
        response = await request.async_exec()
        if response.has_error():
            raise StageError(f"stage {model} failed: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in wanted}

    def _response(self, state):
        n = state.label.shape[0]
        layers = np.array(self.plan.exit_layers, dtype=np.int32)[state.exit_stage - 1]
        return pb_utils.InferenceResponse([
            pb_utils.Tensor(names.LABEL, state.label.reshape(n, 1)),
            pb_utils.Tensor(names.CONFIDENCE, state.score.reshape(n, 1)),
            pb_utils.Tensor(names.EXIT_STAGE, state.exit_stage.reshape(n, 1)),
            pb_utils.Tensor(names.EXIT_LAYER, layers.reshape(n, 1)),
            pb_utils.Tensor(names.MODEL_SIZE, np.array([[self.plan.size.encode()]] * n, dtype=np.object_)),
            pb_utils.Tensor(names.DEADLINE_CUT, state.deadline_cut.reshape(n, 1)),
        ])
