"""Optional TensorRT engines from the exported ONNX stages.

TensorRT cannot be installed on the CPU build machines (its libs wheel comes from an unreachable host) and the GPU
host runs stages in torch, so this step is best-effort: when `import tensorrt` fails it prints why it skipped and
returns, never raising.
"""

from __future__ import annotations

from pathlib import Path

from adaptive_core.config import EarlyExitConfig
from adaptive_core.names import INPUT_IDS

# Optimization profile of the dynamic axes: (min, opt, max) batch; sequence goes 1 .. max_seq_len.
BATCH_PROFILE = (1, 8, 64)


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a broken install failing to load its libs
        return False
    return True


def build_engines(
    config: EarlyExitConfig, onnx_paths: list[Path], out_dir: Path, *, fp16: bool = True, log=print
) -> list[Path]:
    """Build one `.plan` per ONNX file next to it, or skip with a message when TensorRT is absent.

    Args:
        config: the size (its `max_seq_len` bounds the sequence axis).
        onnx_paths: stage/full ONNX files.
        out_dir: where `.plan` files go.
        fp16: allow fp16 kernels.
        log: where the skip/progress message goes.

    Returns:
        engine paths written (empty when skipped or when a build failed; failures are logged, not raised).
    """
    if not tensorrt_available():
        log(
            f"tensorrt: not importable here, skipping engines for {config.name} "
            "(stages run from ONNX or torch weights instead)"
        )
        return []
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    written = []
    for onnx_path in onnx_paths:
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            log(f"tensorrt: cannot parse {onnx_path.name}: {errors}")
            continue
        bc = builder.create_builder_config()
        if fp16:
            bc.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        lo, opt, hi = BATCH_PROFILE
        s_opt = min(128, config.max_seq_len)
        for i in range(network.num_inputs):
            t = network.get_input(i)
            tail = () if t.name in (INPUT_IDS,) or len(t.shape) == 2 else (config.hidden_size,)
            profile.set_shape(t.name, (lo, 1, *tail), (opt, s_opt, *tail), (hi, config.max_seq_len, *tail))
        bc.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, bc)
        if engine is None:
            log(f"tensorrt: engine build failed for {onnx_path.name}")
            continue
        plan = out_dir / onnx_path.with_suffix(".plan").name
        plan.write_bytes(bytes(engine))
        written.append(plan)
    return written
