"""Router (BLS): estimate each text's complexity, start it on the cheapest target likely to get it right, and
escalate while the answer's confidence is below the calibrated threshold (`adaptive_serving.router`).

The repository builds two models from this file: `router` (the admission gate; it runs the express lane's requests
and hands the rest to `router_standard`, which runs them at the standard lane's CPU priority).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from adaptive_core import names
from adaptive_serving.bls import StageError, started_at
from adaptive_serving.gate_model import GateModel
from adaptive_serving.router import ForwardError, Job, Router


class TritonPythonModel(GateModel):
    def setup(self, params, version_dir):
        self.router = Router(self.model_name, params, version_dir, pb_utils.Logger)
        self.gate = self.router.gate

    async def run(self, request, admission, *, warmup=False):
        router = self.router
        router.maybe_reload()  # on the gate's loop, which reads the plan
        text, ids, mask = (
            pb_utils.get_input_tensor_by_name(request, n) for n in (names.TEXT, names.INPUT_IDS, names.ATTENTION_MASK)
        )
        started = started_at(request, admission.arrived)  # the deadline counts from the entry
        try:
            if not warmup and router.standard_router and not admission.express:
                outputs = await router.forward(text, ids, mask, request.timeout(), int(started * 1e9))
                router.metrics.latency(request.timeout(), admission.arrived)
            else:
                job = Job(text.as_numpy().reshape(-1), ids.as_numpy(), mask.as_numpy(), request.timeout(), started)
                outputs = await router.route(job, admission, counted=not warmup)
        except ForwardError as e:
            code = getattr(pb_utils.TritonError, e.code) if isinstance(e.code, str) else e.code
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.model_name}: {e}", code))
        except StageError as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.model_name}: {e}"))
        if isinstance(outputs, dict):
            outputs = [pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in outputs.items()]
        return pb_utils.InferenceResponse(outputs)

    async def warm_run(self, request, admission):
        # Both lanes of this router's own path, uncounted: router_standard warms itself, and a hand-over
        # while the server loads would only fall back to BLS, which 2.51 refuses until the server is ready.
        return await self.run(request, admission, warmup=True)

    def close(self):
        self.router.close()
