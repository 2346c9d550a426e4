"""Foundation sample: upper-cases UTF-8 text and counts its bytes, one response per request."""

import numpy as np
import triton_python_backend_utils as pb_utils


def _invalid(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            if any(len(t) == 0 for t in texts):
                responses.append(_invalid("sample_text: input 'text' has an empty element"))
                continue
            try:
                upper = [t.decode("utf-8").upper().encode("utf-8") for t in texts]
            except UnicodeDecodeError as e:
                responses.append(_invalid(f"sample_text: input 'text' is not valid UTF-8 ({e.reason})"))
                continue
            sizes = np.array([len(t) for t in texts], dtype=np.int64).reshape(-1, 1)
            out = np.array(upper, dtype=np.object_).reshape(-1, 1)
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("text_out", out), pb_utils.Tensor("num_bytes", sizes)])
            )
        return responses
