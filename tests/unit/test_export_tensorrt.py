"""TensorRT is optional: without it the engine step prints why and returns nothing."""

from __future__ import annotations

import sys
from pathlib import Path

from adaptive_core.config import TINY
from adaptive_export import tensorrt as trt_step


def test_skip_when_tensorrt_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    assert not trt_step.tensorrt_available()
    assert trt_step.build_engines(TINY, [Path(tmp_path / "stage1.onnx")], tmp_path) == []
    assert "tensorrt: not importable here, skipping engines for tiny" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.plan"))
