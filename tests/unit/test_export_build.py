"""Tiny end-to-end build through `main([...])`: layout, manifest, thresholds, ONNX names and parity."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from adaptive_core import names
from adaptive_core.config import TINY
from adaptive_export.cli import main
from adaptive_export.manifest import sha256_file
from adaptive_export.onnx_export import (
    AtolError,
    ShapeError,
    _compare,
    check_chain,
    check_parity,
    export_spec,
    full_spec,
    stage_spec,
)
from adaptive_serving.encoder import EarlyExitEncoder, load_weights


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert main(["build", "--tiny", "--out", str(out), "--no-tensorrt"]) == 0
    return out


def test_layout(build_dir):
    size = build_dir / TINY.name
    for s in range(1, TINY.num_stages + 1):
        assert (size / f"stage{s}.onnx").is_file()
    for f in ("full.onnx", "weights.safetensors", "thresholds.json"):
        assert (size / f).is_file(), f
    assert (build_dir / "tokenizer" / "tokenizer.json").is_file()
    assert json.loads((build_dir / "tokenizer" / "tokenizer.json").read_text())["truncation"] is None
    assert not list(size.glob("*.data"))  # no external data files


def test_manifest(build_dir):
    m = json.loads((build_dir / "manifest.json").read_text())
    for rel, digest in m["files"].items():
        assert sha256_file(build_dir / rel) == digest, rel
    assert "tiny/stage1.onnx" in m["files"] and "manifest.json" not in m["files"]
    s = m["sizes"]["tiny"]
    assert s["config"]["num_layers"] == TINY.num_layers and s["exit_layers"] == list(TINY.exit_layers)
    assert len(s["stages"]) == TINY.num_stages and s["stages"][0]["flops_per_token_linear"] > 0
    assert len(s["accuracy_per_exit"]["val"]) == TINY.num_stages
    assert s["flops_per_sample_eval_mix_full_depth"] > 0 and s["expected_speedup_test"] >= 1.0
    assert m["command"].startswith("python -m adaptive_export build --tiny")


def test_thresholds_file(build_dir):
    t = json.loads((build_dir / "tiny" / "thresholds.json").read_text())
    m = json.loads((build_dir / "manifest.json").read_text())
    assert t["dataset_hash"] == m["dataset_hash"] and t["config"]["name"] == "tiny"
    assert len(t["thresholds"]) == TINY.num_stages - 1 and all(0 <= x <= 1 for x in t["thresholds"])
    assert t["stage_models"] == [TINY.stage_model_name(s) for s in range(1, TINY.num_stages + 1)]


def test_onnx_names_match_names_module(build_dir):
    import onnx

    for spec in [stage_spec(TINY, s) for s in range(1, TINY.num_stages + 1)] + [full_spec(TINY)]:
        g = onnx.load(str(build_dir / "tiny" / spec.file_name)).graph
        assert tuple(i.name for i in g.input) == spec.inputs
        assert tuple(o.name for o in g.output) == spec.outputs
        assert set(spec.inputs + spec.outputs) <= {
            names.INPUT_IDS,
            names.ATTENTION_MASK,
            names.HIDDEN,
            names.HIDDEN_IN,
            names.LOGITS,
        }
        assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        assert g.input[0].type.tensor_type.shape.dim[1].dim_param == "sequence"


def test_onnx_parity_from_saved_weights(build_dir):
    model = load_weights(build_dir / "tiny" / "weights.safetensors")
    shapes = ((1, 1), (4, 9), (16, 32))
    for spec in [stage_spec(TINY, s) for s in range(1, TINY.num_stages + 1)] + [full_spec(TINY)]:
        assert check_parity(model, spec, build_dir / "tiny" / spec.file_name, shapes) <= 1e-4
    stages = [build_dir / "tiny" / f"stage{s}.onnx" for s in range(1, TINY.num_stages + 1)]
    assert check_chain(model, stages, shapes) <= 1e-4


def test_parity_failure_names_stage_and_output(build_dir):
    model = load_weights(build_dir / "tiny" / "weights.safetensors")
    with torch.no_grad():
        model.heads[0].out.bias += 1.0
    spec = stage_spec(TINY, 1)
    with pytest.raises(AtolError, match=r"tiny_stage1: output 'logits' differs"):
        check_parity(model, spec, build_dir / "tiny" / "stage1.onnx", ((2, 5),))
    with pytest.raises(ShapeError, match=r"tiny_stage1: output 'hidden' has shape"):
        _compare(spec, "hidden", np.zeros((2, 3)), np.zeros((2, 4)), 1e-4, "test")


def test_middle_stage_reads_hidden_in_writes_hidden(tmp_path):
    cfg = dataclasses.replace(TINY, num_layers=3, exit_every=1)  # 3 stages: stage 2 is a middle stage
    torch.manual_seed(0)
    model = EarlyExitEncoder(cfg).eval()
    spec = stage_spec(cfg, 2)
    assert spec.inputs == (names.HIDDEN_IN, names.ATTENTION_MASK) and spec.outputs == (names.HIDDEN, names.LOGITS)
    path = export_spec(model, spec, tmp_path / spec.file_name)
    assert check_parity(model, spec, path, ((1, 3), (5, 12))) <= 1e-4
