"""Run one exported stage (or a full-depth encoder) with onnxruntime, batching requests like PyTriton's @batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_core import names

# Inputs whose second axis is the sequence: they are padded to a common length when requests are joined.
_SEQUENCE_INPUTS = {names.INPUT_IDS: 0, names.ATTENTION_MASK: 0, names.HIDDEN_IN: 0.0}


class OnnxStage:
    """An onnxruntime session over one stage file.

    Args:
        onnx_file: exported stage.
        threads: onnxruntime intra-op threads (each Triton instance is its own process); 0 = one per core.
    """

    def __init__(self, onnx_file: Path, *, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Several stage sessions share the cores: idle threads must sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One session call on already-joined inputs."""
        values = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, values))

    def run_batched(
        self, requests: Sequence[dict[str, np.ndarray]], outputs: Sequence[str]
    ) -> list[dict[str, np.ndarray]]:
        """Join the requests' inputs, run once, split the requested outputs back per request."""
        sizes = [len(next(iter(r.values()))) for r in requests]
        widths = [r[names.ATTENTION_MASK].shape[1] for r in requests]
        width = max(widths)
        joined = {
            name: np.concatenate([_pad_seq(r[name], width, _SEQUENCE_INPUTS.get(name)) for r in requests])
            for name in self.input_names
        }
        result = self.run(joined)
        total = sum(sizes)
        for name in outputs:
            assert result[name].shape[0] == total, f"output {name!r} has {result[name].shape[0]} rows, expected {total}"
        split, start = [], 0
        for n, w in zip(sizes, widths):
            # Hidden states go back at the request's own width (its mask still has that width).
            split.append({name: _cut_seq(result[name][start : start + n], name, w) for name in outputs})
            start += n
        return split


def _pad_seq(x: np.ndarray, width: int, fill: float | None) -> np.ndarray:
    if fill is None or x.shape[1] == width:
        return x
    pad = [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, pad, constant_values=fill)


def _cut_seq(x: np.ndarray, name: str, width: int) -> np.ndarray:
    return x[:, :width] if name == names.HIDDEN and x.shape[1] > width else x
