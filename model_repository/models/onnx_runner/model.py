"""ONNX runner: one exit stage or a full-depth encoder, on onnxruntime (CPU) inside the Python backend.

Requests that the dynamic batcher groups are joined, run once, and split back (PyTriton's @batch).
`nice` and `sched_idle` lower the CPU priority of this instance (the standard lane yields the CPU to the express lane).
Fault injection for tests and drills (config parameters, off by default): `inject_delay_ms` sleeps before
each call, `inject_error` fails every call with that message.
"""

import json

import triton_python_backend_utils as pb_utils

from adaptive_serving.model_args import FaultInjection, lower_cpu_priority, model_params
from adaptive_serving.onnx_stage import OnnxStage


class TritonPythonModel:
    def initialize(self, args):
        params, version_dir = model_params(args, ("onnx_file",))
        lower_cpu_priority(params)
        self.stage = OnnxStage(version_dir / params["onnx_file"], threads=int(params.get("intra_op_threads", "0")))
        config = json.loads(args["model_config"])
        self.outputs = [o["name"] for o in config["output"]]
        self.faults = FaultInjection.from_params(params, config)
        self.model_name = args["model_name"]

    def execute(self, requests):
        try:
            self.faults.apply()
            per_request = [
                {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.stage.input_names}
                for r in requests
            ]
            results = self.stage.run_batched(per_request, self.outputs)
        except Exception as e:  # a failing stage fails only the requests of this call, with the reason
            error = pb_utils.TritonError(f"{self.model_name}: {type(e).__name__}: {e}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in out.items()]) for out in results]
