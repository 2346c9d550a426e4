"""Cascade (BLS): chain one size's exit stages; each sample leaves at its first confident exit.

Requests run concurrently once the admission gate lets them in (`adaptive_serving.gate_model`), so the survivors of
concurrent requests meet in the next stage's dynamic batcher. Deadline-aware: when the next stage would likely
overrun the request's timeout, the samples still running answer with their latest exit and the deadline flag.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from adaptive_core import names
from adaptive_core.cascade import CascadePlan, CascadeState, StageLatency, label_name_tensor
from adaptive_core.confidence import get_policy
from adaptive_serving.bls import StageError, run_cascade, started_at
from adaptive_serving.gate import Gate
from adaptive_serving.gate_model import GateModel
from adaptive_serving.metrics import ModelMetrics


class TritonPythonModel(GateModel):
    def setup(self, params, version_dir):
        self.plan = CascadePlan.from_file(version_dir / params["plan_file"])
        self.confidence = get_policy(self.plan.confidence)
        self.sep_id = int(params["sep_id"])
        self.latency = StageLatency.from_params(params)
        self.metrics = ModelMetrics(self.model_name, {self.plan.size: len(self.plan.stage_models)})
        express_max = self.plan.express_max_timeout_us if self.plan.express_models else 0
        self.gate = Gate.from_params(self.model_name, params, self.metrics, express_max_timeout_us=express_max)

    async def run(self, request, admission, *, warmup=False):
        started = started_at(request, admission.arrived)  # the deadline counts from the entry, not from this gate
        ids = pb_utils.get_input_tensor_by_name(request, names.INPUT_IDS).as_numpy()
        mask = pb_utils.get_input_tensor_by_name(request, names.ATTENTION_MASK).as_numpy()
        state = CascadeState(ids.shape[0], self.confidence)
        try:
            await run_cascade(
                self.plan,
                state,
                ids,
                mask,
                sep_id=self.sep_id,
                timeout_us=request.timeout(),
                started=started,
                latency=self.latency,
                express=admission.express,
            )
        except StageError as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.model_name}: {e}"))
        if not warmup:
            self.metrics.answered(
                request.timeout(), self.plan.size, state.exit_stage, state.deadline_cut, admission.arrived
            )
        n = state.label.shape[0]
        layers = np.array(self.plan.exit_layers, dtype=np.int32)[state.exit_stage - 1]
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor(names.LABEL, state.label.reshape(n, 1)),
                pb_utils.Tensor(names.CONFIDENCE, state.score.reshape(n, 1)),
                pb_utils.Tensor(names.EXIT_STAGE, state.exit_stage.reshape(n, 1)),
                pb_utils.Tensor(names.EXIT_LAYER, layers.reshape(n, 1)),
                pb_utils.Tensor(names.MODEL_SIZE, np.array([[self.plan.size.encode()]] * n, dtype=np.object_)),
                pb_utils.Tensor(names.DEADLINE_CUT, state.deadline_cut.reshape(n, 1)),
                pb_utils.Tensor(names.LABEL_NAME, label_name_tensor(state.label, self.plan.label_names)),
            ]
        )

    async def warm_run(self, request, admission):
        return await self.run(request, admission, warmup=True)
