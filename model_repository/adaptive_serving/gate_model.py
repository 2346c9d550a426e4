"""The base of the gate models (cascade, router): `execute` hands each request to the admission gate and returns.

The gate runs an admitted request's handler (`run`) on its own event loop and answers through the request's response
sender (`adaptive_serving.gate`), so `execute` returns at once with no responses, as Triton 2.51 allows for a
non-decoupled model that sends exactly one final response per request.

Warm-up: Triton 2.51 allows BLS only inside `execute`, so a model cannot call its stages from `initialize`. The
repository gives each gate model a `model_warmup` sample instead, which Triton sends while the model loads (before the
server reports ready); it carries the `warmup` input, and `warm` runs it through both lanes. A stage that has not
loaded yet only skips its part: a warm-up never fails the load.
"""

from __future__ import annotations

import gc
from pathlib import Path

from adaptive_core import names
from adaptive_serving.gate import Admission, Gate
from adaptive_serving.model_args import lower_cpu_priority, model_params


class GateModel:
    """Subclass as `TritonPythonModel`; `setup` builds the model's state and sets `self.gate`, `run` answers one
    admitted request, `close` releases what `setup` took."""

    required_params: tuple[str, ...] = ("plan_file", "sep_id", "gate_caps")
    gate: Gate

    def initialize(self, args: dict) -> None:
        params, version_dir = model_params(args, self.required_params)
        lower_cpu_priority(params)  # before any thread starts, so all of them inherit it
        self.model_name = args["model_name"]
        self.setup(params, version_dir)
        # Startup objects (numpy, onnxruntime, the plan) never die: keep them out of the collector's full passes,
        # which otherwise scan them all and pause the gate's event loop, and every request on it.
        gc.freeze()

    def setup(self, params: dict[str, str], version_dir: Path) -> None:
        raise NotImplementedError

    def execute(self, requests: list) -> None:
        import triton_python_backend_utils as pb_utils

        for request in requests:
            if pb_utils.get_input_tensor_by_name(request, names.WARMUP) is None:
                self.gate.submit(request, self.run)
            else:  # not counted in the metrics
                self.gate.submit(request, self.warm, counted=False)

    async def warm(self, request: object, admission: Admission) -> object:
        """Answer a warm-up request: run it in the express and the standard lane; never an error response."""
        import triton_python_backend_utils as pb_utils

        for express in (True, False):
            try:
                response = await self.warm_run(request, Admission(admission.arrived, express))
                failed = response.error().message() if response.has_error() else ""
            except Exception as e:  # a failed warm-up request fails the load (2.51 may even crash): never let it
                failed = f"{type(e).__name__}: {e}"
            if failed:
                pb_utils.Logger.log_warn(f"{self.model_name}: warm-up skipped a part: {failed}")
        return pb_utils.InferenceResponse([])

    async def run(self, request: object, admission: Admission) -> object:
        """The response (`pb_utils.InferenceResponse`) to one admitted request."""
        raise NotImplementedError

    async def warm_run(self, request: object, admission: Admission) -> object:
        """What a warm-up runs in each lane (without counting it in the metrics)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what `setup` took (the gate closes after it)."""

    def finalize(self) -> None:
        self.close()
        self.gate.close()
