"""Torch runner: one exit stage or a full-depth encoder in torch, on the instance's GPU (KIND_GPU) or the CPU.

Inputs arrive through DLPack wherever they live. The hidden output leaves through DLPack in GPU memory when
`hidden_on_device` is "yes" (CUDA IPC to the cascade: measured slow on 2.51), else as a host copy (the default).
Logits leave on the CPU: they are a few numbers per sample and the cascade decides exits on the CPU (copying them
also waits for the stream, so the hidden output is complete when it is handed over).
`nice`, `sched_idle` and `inject_delay_ms` / `inject_error` work as in the ONNX runner.
"""

import json

import torch
import triton_python_backend_utils as pb_utils
from torch.utils import dlpack

from adaptive_core import names
from adaptive_serving.model_args import FaultInjection, lower_cpu_priority, model_params
from adaptive_serving.torch_stage import TorchStage


def _to_torch(tensor):
    return dlpack.from_dlpack(tensor.to_dlpack())


class TritonPythonModel:
    def initialize(self, args):
        params, version_dir = model_params(args, ("weights_file", "stage", "dtype"))
        lower_cpu_priority(params)
        threads = int(params.get("intra_op_threads", "0"))
        if threads:
            torch.set_num_threads(threads)
        gpu = args["model_instance_kind"] == "GPU"
        device = f"cuda:{args['model_instance_device_id']}" if gpu else "cpu"
        stage = None if params["stage"] == "full" else int(params["stage"])
        self.stage = TorchStage(version_dir / params["weights_file"], stage, device=device, dtype=params["dtype"])
        self.faults = FaultInjection.from_params(params, json.loads(args["model_config"]))
        self.model_name = args["model_name"]
        self.hidden_on_device = params.get("hidden_on_device", "yes") == "yes"

    def execute(self, requests):
        try:
            self.faults.apply()
            per_request = [
                {n: _to_torch(pb_utils.get_input_tensor_by_name(r, n)) for n in self.stage.input_names}
                for r in requests
            ]
            results = self.stage.run_batched(per_request)
            responses = []
            for out in results:
                tensors = [pb_utils.Tensor(names.LOGITS, out[names.LOGITS].cpu().numpy())]
                if names.HIDDEN in out and self.hidden_on_device:
                    tensors.append(pb_utils.Tensor.from_dlpack(names.HIDDEN, dlpack.to_dlpack(out[names.HIDDEN])))
                elif names.HIDDEN in out:
                    tensors.append(pb_utils.Tensor(names.HIDDEN, out[names.HIDDEN].cpu().numpy()))
                responses.append(pb_utils.InferenceResponse(tensors))
        except Exception as e:  # a failing stage fails only the requests of this call, with the reason
            error = pb_utils.TritonError(f"{self.model_name}: {type(e).__name__}: {e}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        return responses
