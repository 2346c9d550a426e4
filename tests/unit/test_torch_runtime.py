"""The torch stage runtime (the GPU serving path), checked on the CPU: the same stage module, the same runner model,
the same BLS tensor handling and the same generated configs a GPU host runs, with the device set to the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from adaptive_core import names
from adaptive_ops.repository import RepositoryOptions, build_repository
from adaptive_serving.bls import as_numpy, take_rows
from adaptive_serving.onnx_stage import OnnxStage
from adaptive_serving.tokenizer import TextTokenizer
from adaptive_serving.torch_stage import TorchStage

TEXTS = [
    "Shares in the bank fell after profits missed forecasts",
    "The striker scored twice",
    "Ministers defended the budget in a heated Commons debate",
    "A new phone",
    "Oil prices rose again",
    "The band announced a world tour and a new album after a long break from the stage",
]


@pytest.fixture(scope="module")
def tokens(tiny_export: Path) -> tuple[np.ndarray, np.ndarray]:
    return TextTokenizer(tiny_export / "tokenizer" / "tokenizer.json", max_len=32)(TEXTS)


def test_torch_stages_match_the_onnx_files(tiny_export: Path, tokens: tuple[np.ndarray, np.ndarray]) -> None:
    ids, mask = tokens
    weights = tiny_export / "tiny" / "weights.safetensors"
    onnx1 = OnnxStage(tiny_export / "tiny" / "stage1.onnx").run({names.INPUT_IDS: ids, names.ATTENTION_MASK: mask})
    t1 = TorchStage(weights, 1).run(
        {names.INPUT_IDS: torch.from_numpy(ids), names.ATTENTION_MASK: torch.from_numpy(mask)}
    )
    assert t1.keys() == {names.HIDDEN, names.LOGITS}
    np.testing.assert_allclose(t1[names.HIDDEN].numpy(), onnx1[names.HIDDEN], atol=1e-4)
    np.testing.assert_allclose(t1[names.LOGITS].numpy(), onnx1[names.LOGITS], atol=1e-4)
    onnx2 = OnnxStage(tiny_export / "tiny" / "stage2.onnx").run(
        {names.HIDDEN_IN: onnx1[names.HIDDEN], names.ATTENTION_MASK: mask}
    )
    t2 = TorchStage(weights, 2).run({names.HIDDEN_IN: t1[names.HIDDEN], names.ATTENTION_MASK: torch.from_numpy(mask)})
    assert list(t2) == [names.LOGITS]  # the last stage has no hidden output
    np.testing.assert_allclose(t2[names.LOGITS].numpy(), onnx2[names.LOGITS], atol=1e-4)
    full = TorchStage(weights, None).run(
        {names.INPUT_IDS: torch.from_numpy(ids), names.ATTENTION_MASK: torch.from_numpy(mask)}
    )
    onnx_full = OnnxStage(tiny_export / "tiny" / "full.onnx").run({names.INPUT_IDS: ids, names.ATTENTION_MASK: mask})
    np.testing.assert_allclose(full[names.LOGITS].numpy(), onnx_full[names.LOGITS], atol=1e-4)


# Largest error allowed, as a share of the logits' range (the logit scale): measured on the tiny family, bfloat16
# (8 bits of mantissa) was off by 0.54% of the range, float16 (11 bits) by 0.06%.
REDUCED_PRECISION_TOLERANCE = {"bfloat16": 0.02, "float16": 0.005}


@pytest.mark.parametrize("dtype", sorted(REDUCED_PRECISION_TOLERANCE))
def test_reduced_precision_keeps_the_float32_contract(
    tiny_export: Path, tokens: tuple[np.ndarray, np.ndarray], dtype: str
) -> None:
    ids, mask = tokens
    weights = tiny_export / "tiny" / "weights.safetensors"
    inputs = {names.INPUT_IDS: torch.from_numpy(ids), names.ATTENTION_MASK: torch.from_numpy(mask)}
    ref1 = TorchStage(weights, 1).run(inputs)
    low1 = TorchStage(weights, 1, dtype=dtype).run(inputs)
    # Stage 2 from each precision's own hidden states: the error a cascade in that precision accumulates.
    ref2 = TorchStage(weights, 2).run(
        {names.HIDDEN_IN: ref1[names.HIDDEN], names.ATTENTION_MASK: inputs[names.ATTENTION_MASK]}
    )
    low2 = TorchStage(weights, 2, dtype=dtype).run(
        {names.HIDDEN_IN: low1[names.HIDDEN], names.ATTENTION_MASK: inputs[names.ATTENTION_MASK]}
    )
    assert all(v.dtype == torch.float32 for v in (*low1.values(), *low2.values()))
    for stage, ref, low in ((1, ref1, low1), (2, ref2, low2)):
        ref_logits, low_logits = ref[names.LOGITS], low[names.LOGITS]
        scale = float(ref_logits.max() - ref_logits.min())
        assert scale > 1.0, f"stage {stage}: logits span {scale:.3f}: the tiny family learned nothing"
        error = float((low_logits - ref_logits).abs().max())
        assert 0.0 < error <= REDUCED_PRECISION_TOLERANCE[dtype] * scale, (stage, dtype, error, scale)
        assert low_logits.argmax(-1).tolist() == ref_logits.argmax(-1).tolist(), (stage, dtype)
    with pytest.raises(ValueError, match="dtype must be one of"):
        TorchStage(weights, 1, dtype="int8")


def test_joined_requests_split_back_at_their_own_width(
    tiny_export: Path, tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, mask = tokens
    stage = TorchStage(tiny_export / "tiny" / "weights.safetensors", 1)
    narrow = int(mask[:2].sum(1).max())  # the first two texts fit in fewer columns
    requests = [
        {
            names.INPUT_IDS: torch.from_numpy(ids[:2, :narrow]),
            names.ATTENTION_MASK: torch.from_numpy(mask[:2, :narrow]),
        },
        {names.INPUT_IDS: torch.from_numpy(ids[2:]), names.ATTENTION_MASK: torch.from_numpy(mask[2:])},
    ]
    first, second = stage.run_batched(requests)
    alone = stage.run(requests[0])
    assert first[names.HIDDEN].shape == (2, narrow, stage.config.hidden_size)
    assert second[names.HIDDEN].shape[:2] == (len(TEXTS) - 2, ids.shape[1])
    # Padding keys are masked out, so joining with a wider request changes nothing for the narrow one.
    np.testing.assert_allclose(first[names.LOGITS].numpy(), alone[names.LOGITS].numpy(), atol=1e-5)


def test_bls_helpers_take_rows_of_numpy_and_torch() -> None:
    keep = np.array([True, False, True])
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(take_rows(x, keep), x[[0, 2]])
    np.testing.assert_array_equal(as_numpy(take_rows(torch.from_numpy(x), keep)), x[[0, 2]])
    assert as_numpy(x) is x


def _parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("gpu_hidden", [False, True])
def test_gpu_repository_configs(tiny_export: Path, tmp_path: Path, gpu_hidden: bool) -> None:
    repo = tmp_path / "repo"
    build_repository(
        tiny_export,
        repo,
        RepositoryOptions(entry_size="tiny", runtime="torch", device="gpu", dtype="bfloat16", gpu_hidden=gpu_hidden),
    )
    for name in ("tiny_stage1", "tiny_stage2_express", "tiny_full_encoder"):
        config = _parse(repo / name / "config.pbtxt")
        assert config.backend == "python"
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert params["dtype"] == "bfloat16" and params["hidden_on_device"] == ("yes" if gpu_hidden else "no")
        # Inputs may arrive in GPU memory only when the hidden states stay there.
        assert params.get("FORCE_CPU_ONLY_INPUT_TENSORS") == ("no" if gpu_hidden else None)
        assert (repo / name / "1" / "weights.safetensors").exists() and not (repo / name / "1" / "model.onnx").exists()
    assert _parse(repo / "tiny_full_encoder" / "config.pbtxt").parameters["stage"].string_value == "full"
    plan = json.loads((repo / "cascade_tiny" / "1" / "plan.json").read_text())
    assert plan["device"] == ("gpu" if gpu_hidden else "cpu")  # the cascade asks BLS for GPU outputs only then
    # Tokenizer and cascade stay on the CPU.
    assert (
        _parse(repo / "cascade_tiny" / "config.pbtxt").instance_group[0].kind
        == model_config_pb2.ModelInstanceGroup.KIND_CPU
    )
    with pytest.raises(ValueError, match="needs the local target's torch runtime"):
        RepositoryOptions(device="gpu")
    with pytest.raises(ValueError, match="runtime must be one of"):
        RepositoryOptions(runtime="tensorflow")
    with pytest.raises(ValueError, match="dtype must be one of"):
        RepositoryOptions(runtime="torch", dtype="int8")
    from adaptive_ops.repository import main

    # The CLI reports a bad combination as an error line, not a traceback.
    assert (
        main(["--export", str(tiny_export), "--out", str(tmp_path / "cli"), "--entry-size", "tiny", "--device", "gpu"])
        == 1
    )
