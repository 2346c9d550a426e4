"""Per-stage ONNX export, declared as data and checked against eager torch (optimum style).

Each stage declares its input/output names (from `adaptive_core.names`) and dynamic axes; the dynamo exporter
writes one self-contained file per stage (`external_data=False`), then onnxruntime must match torch within `ATOL`
at several batch sizes and sequence lengths, stage by stage and chained (stage 1 -> ... -> last, as the cascade
runs them). A mismatch raises `ShapeError` or `AtolError` naming the stage and the output.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from adaptive_core.config import EarlyExitConfig
from adaptive_core.names import ATTENTION_MASK, HIDDEN, HIDDEN_IN, INPUT_IDS, LOGITS
from adaptive_serving.encoder import EarlyExitEncoder, Full, Stage

# ONNX opset of every exported graph (onnxruntime >= 1.14 and TensorRT 8.6+ support it).
OPSET = 18
# Max abs difference allowed between onnxruntime and eager torch (what the build saw is in docs/lab-notes/).
ATOL = 1e-4
# (batch, sequence) shapes each parity check runs; sequences longer than max_seq_len are clipped to it.
PARITY_SHAPES: tuple[tuple[int, int], ...] = ((1, 5), (3, 17), (8, 64), (2, 256))

BATCH_AXIS = "batch"
SEQUENCE_AXIS = "sequence"


class ShapeError(ValueError):
    """An ONNX output's shape differs from torch's."""


class AtolError(ValueError):
    """An ONNX output differs from torch's by more than the tolerance."""


@dataclass(frozen=True)
class StageSpec:
    """Declared export of one Triton model.

    Args:
        model_name: Triton model name (`<size>_stage<i>` or `<size>_full`), also the file stem's owner.
        file_name: ONNX file name inside the size directory.
        inputs: input tensor names, in call order.
        outputs: output tensor names, in return order.
        dynamic_axes: tensor name -> {axis index: axis name}.
    """

    model_name: str
    file_name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


def _axes(names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    # Every tensor has batch on axis 0; all but logits have sequence on axis 1.
    return {n: ({0: BATCH_AXIS} if n == LOGITS else {0: BATCH_AXIS, 1: SEQUENCE_AXIS}) for n in names}


def stage_spec(config: EarlyExitConfig, stage: int) -> StageSpec:
    """Declared inputs/outputs of 1-based `stage` of `config`."""
    inputs = (INPUT_IDS, ATTENTION_MASK) if stage == 1 else (HIDDEN_IN, ATTENTION_MASK)
    outputs = (LOGITS,) if stage == config.num_stages else (HIDDEN, LOGITS)
    return StageSpec(config.stage_model_name(stage), f"stage{stage}.onnx", inputs, outputs, _axes(inputs + outputs))


def full_spec(config: EarlyExitConfig) -> StageSpec:
    """Declared inputs/outputs of the full-depth baseline."""
    inputs, outputs = (INPUT_IDS, ATTENTION_MASK), (LOGITS,)
    return StageSpec(config.full_model_name, "full.onnx", inputs, outputs, _axes(inputs + outputs))


def example_inputs(
    config: EarlyExitConfig, spec: StageSpec, batch: int, seq: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs of the declared kind; the mask pads the tail of every row but the first."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # (B, T)
    if spec.inputs[0] == INPUT_IDS:
        first = torch.randint(0, config.vocab_size, (batch, seq), generator=g) * mask
    else:
        first = torch.randn(batch, seq, config.hidden_size, generator=g)
    return first, mask


def _module(model: EarlyExitEncoder, spec: StageSpec) -> torch.nn.Module:
    if spec.file_name == "full.onnx":
        return Full(model).eval()
    return Stage(model, int(spec.file_name.removeprefix("stage").removesuffix(".onnx"))).eval()


def export_spec(model: EarlyExitEncoder, spec: StageSpec, path: Path) -> Path:
    """Export one declared stage with the dynamo exporter into a single self-contained file."""
    import onnx

    cfg = model.config
    module = _module(model, spec)
    args = example_inputs(cfg, spec, batch=2, seq=min(7, cfg.max_seq_len))  # not 0/1, so axes stay symbolic
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=4096)
    seq = torch.export.Dim(SEQUENCE_AXIS, min=1, max=cfg.max_position)
    arg_names = ("x", "attention_mask")  # parameter names of Stage/Full.forward
    dyn = {a: {0: batch, 1: seq} for a in arg_names}
    if spec.file_name == "full.onnx":
        dyn = {"input_ids": dyn["x"], "attention_mask": dyn["attention_mask"]}
    # The exporter logs a warning per missing torchvision op and per renamed axis; none of them apply here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            external_data=False,
            opset_version=OPSET,
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_shapes=dyn,
            verbose=False,
        )
    # Name the symbolic axes as declared (the exporter calls them s0, s1, ...), and record the config.
    proto = onnx.load(str(path))
    for vi in list(proto.graph.input) + list(proto.graph.output):
        for axis, name in spec.dynamic_axes[vi.name].items():
            vi.type.tensor_type.shape.dim[axis].dim_param = name
    meta = {"model_name": spec.model_name, "config": json.dumps(asdict(cfg))}
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    return path


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # parity checks, not speed: leave the other core alone
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _compare(spec: StageSpec, name: str, ref: np.ndarray, got: np.ndarray, atol: float, where: str) -> float:
    if ref.shape != got.shape:
        raise ShapeError(
            f"{spec.model_name}: output {name!r} has shape {got.shape} in ONNX, torch gives {ref.shape} ({where})"
        )
    diff = float(np.abs(ref - got).max()) if ref.size else 0.0
    if not diff <= atol:
        raise AtolError(f"{spec.model_name}: output {name!r} differs from torch by {diff:.3g} > atol {atol} ({where})")
    return diff


def check_parity(
    model: EarlyExitEncoder,
    spec: StageSpec,
    path: Path,
    shapes: tuple[tuple[int, int], ...] = PARITY_SHAPES,
    atol: float = ATOL,
) -> float:
    """Run the ONNX file and eager torch on random inputs of every shape; return the largest abs difference.

    Raises:
        ShapeError: an output's shape differs (names stage, output and shape).
        AtolError: an output differs by more than `atol` (names stage, output and difference).
    """
    sess, module, cfg = _session(path), _module(model, spec), model.config
    worst = 0.0
    for b, t in shapes:
        t = min(t, cfg.max_seq_len)
        x, mask = example_inputs(cfg, spec, b, t, seed=b * 1000 + t)
        with torch.no_grad():
            ref = module(x, mask)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run(list(spec.outputs), {spec.inputs[0]: x.numpy(), spec.inputs[1]: mask.numpy()})
        for name, r, g in zip(spec.outputs, ref, got):
            worst = max(worst, _compare(spec, name, r.numpy(), g, atol, f"batch {b}, sequence {t}"))
    return worst


def check_chain(
    model: EarlyExitEncoder, paths: list[Path], shapes: tuple[tuple[int, int], ...] = PARITY_SHAPES, atol: float = ATOL
) -> float:
    """Chain the stage files as the cascade does and compare every exit's logits with the eager encoder.

    Raises:
        ShapeError, AtolError: as `check_parity`, naming the stage whose logits disagree.
    """
    cfg = model.config
    sessions = [_session(p) for p in paths]
    worst = 0.0
    for b, t in shapes:
        t = min(t, cfg.max_seq_len)
        ids, mask = example_inputs(cfg, stage_spec(cfg, 1), b, t, seed=7 + b + t)
        with torch.no_grad():
            ref = [x.numpy() for x in model.eval()(ids, mask)]
        x, m = ids.numpy(), mask.numpy()
        for s, sess in enumerate(sessions, start=1):
            spec = stage_spec(cfg, s)
            out = sess.run(list(spec.outputs), {spec.inputs[0]: x, spec.inputs[1]: m})
            logits = out[-1]
            worst = max(worst, _compare(spec, LOGITS, ref[s - 1], logits, atol, f"chained, batch {b}, sequence {t}"))
            if len(out) == 2:
                x = out[0]
    return worst


def export_size(
    model: EarlyExitEncoder, out_dir: Path, shapes: tuple[tuple[int, int], ...] = PARITY_SHAPES, atol: float = ATOL
) -> dict:
    """Export every stage and the full model of one size, check each, and check the chain.

    Returns:
        {"files": {model_name: file name}, "max_abs_diff": {model_name: diff, "chain": diff}, "opset": OPSET}
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    specs = [stage_spec(cfg, s) for s in range(1, cfg.num_stages + 1)] + [full_spec(cfg)]
    files, diffs = {}, {}
    for spec in specs:
        path = export_spec(model, spec, out_dir / spec.file_name)
        diffs[spec.model_name] = check_parity(model, spec, path, shapes, atol)
        files[spec.model_name] = spec.file_name
    diffs["chain"] = check_chain(model, [out_dir / s.file_name for s in specs[:-1]], shapes, atol)
    return {
        "files": files,
        "max_abs_diff": diffs,
        "opset": OPSET,
        "specs": {s.model_name: {"inputs": list(s.inputs), "outputs": list(s.outputs)} for s in specs},
    }
