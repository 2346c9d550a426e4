"""Tokenizer model: BYTES text -> input_ids, attention_mask (HF tokenizers, bucket-padded), and the time the
request entered (`entered_ns`, monotonic clock), from which the gate models count its deadline.

Bad text (empty, too long, invalid UTF-8, NUL) fails only its own request with INVALID_ARG.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

from adaptive_core import names
from adaptive_core.text import InputError, decode_texts
from adaptive_serving.model_args import model_params
from adaptive_serving.tokenizer import TextTokenizer


class TritonPythonModel:
    def initialize(self, args):
        params, version_dir = model_params(args, ("tokenizer_file", "max_seq_len", "max_text_bytes"))
        self.tokenize = TextTokenizer(version_dir / params["tokenizer_file"], int(params["max_seq_len"]))
        self.tokenize.warm()  # before the model reports ready
        self.max_text_bytes = int(params["max_text_bytes"])
        self.model_name = args["model_name"]

    def execute(self, requests):
        entered = time.monotonic_ns()
        responses = []
        for request in requests:
            try:
                raw = pb_utils.get_input_tensor_by_name(request, names.TEXT).as_numpy()
                texts = decode_texts(raw, max_bytes=self.max_text_bytes, tensor=names.TEXT)
            except InputError as e:
                error = pb_utils.TritonError(f"{self.model_name}: {e}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            ids, mask = self.tokenize(texts)
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(names.INPUT_IDS, ids),
                        pb_utils.Tensor(names.ATTENTION_MASK, mask),
                        pb_utils.Tensor(names.ENTERED_NS, np.full((len(texts), 1), entered, np.int64)),
                    ]
                )
            )
        return responses
