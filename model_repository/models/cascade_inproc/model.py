"""In-process cascade: every exit stage of one size in this process, in torch (`adaptive_serving.inproc`).

Sits behind Triton's dynamic batcher with priority levels (the batcher orders the latency classes; there is no gate),
on the instance's GPU (KIND_GPU) or the CPU, and answers the BLS cascade's outputs (`names.CASCADE_OUTPUTS`).
"""

import time

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from adaptive_core import names
from adaptive_core.cascade import CascadePlan, label_name_tensor
from adaptive_serving.inproc import InprocCascade
from adaptive_serving.metrics import ModelMetrics
from adaptive_serving.model_args import model_params


class TritonPythonModel:
    def initialize(self, args):
        params, version_dir = model_params(args, ("plan_file", "weights_file", "sep_id", "dtype"))
        threads = int(params.get("intra_op_threads", "0"))
        if threads:
            torch.set_num_threads(threads)
        gpu = args["model_instance_kind"] == "GPU"
        self.model_name = args["model_name"]
        self.plan = CascadePlan.from_file(version_dir / params["plan_file"])
        self.cascade = InprocCascade(
            version_dir / params["weights_file"],
            self.plan,
            sep_id=int(params["sep_id"]),
            device=f"cuda:{args['model_instance_device_id']}" if gpu else "cpu",
            dtype=params["dtype"],
            fused_attention=params.get("fused_attention", "yes") == "yes",
        )
        self.metrics = ModelMetrics(self.model_name, {self.plan.size: len(self.plan.stage_models)})
        self.exit_layers = np.array(self.plan.exit_layers, dtype=np.int32)
        self.size = self.plan.size.encode()

    def execute(self, requests):
        arrived = time.monotonic()
        try:
            inputs = [
                (
                    pb_utils.get_input_tensor_by_name(r, names.INPUT_IDS).as_numpy(),
                    pb_utils.get_input_tensor_by_name(r, names.ATTENTION_MASK).as_numpy(),
                )
                for r in requests
            ]
            states = self.cascade.run_batched(inputs)
        except Exception as e:  # a failing call fails only the requests of this call, with the reason
            error = pb_utils.TritonError(f"{self.model_name}: {type(e).__name__}: {e}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for request, state in zip(requests, states):
            self.metrics.answered(request.timeout(), self.plan.size, state.exit_stage, state.deadline_cut, arrived)
            n = state.label.shape[0]
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(names.LABEL, state.label.reshape(n, 1)),
                        pb_utils.Tensor(names.CONFIDENCE, state.score.reshape(n, 1)),
                        pb_utils.Tensor(names.EXIT_STAGE, state.exit_stage.reshape(n, 1)),
                        pb_utils.Tensor(names.EXIT_LAYER, self.exit_layers[state.exit_stage - 1].reshape(n, 1)),
                        pb_utils.Tensor(names.MODEL_SIZE, np.array([[self.size]] * n, dtype=np.object_)),
                        pb_utils.Tensor(names.DEADLINE_CUT, state.deadline_cut.reshape(n, 1)),
                        pb_utils.Tensor(names.LABEL_NAME, label_name_tensor(state.label, self.plan.label_names)),
                    ]
                )
            )
        return responses
