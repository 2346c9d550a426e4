"""The new family's manifest, as committed from the last `make export` (results/family/manifest.json): every size
and exit reports accuracy at full depth and with early exit, FLOPs per sample and calibrated thresholds, on the data
the code loads today."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptive_core.config import DATA, SIZES, DataConfig, EarlyExitConfig
from adaptive_export.data import dataset_hash, load_corpus

MANIFEST = Path(__file__).resolve().parents[2] / "results" / "family" / "manifest.json"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def test_built_from_the_configured_family_and_data(manifest):
    assert DataConfig(**manifest["data"]) == DATA
    assert manifest["dataset_hash"] == dataset_hash(load_corpus(DATA), DATA)
    assert manifest["label_names"] == ["fresh", "rotten"]
    assert set(manifest["sizes"]) == set(SIZES)
    for name, s in manifest["sizes"].items():
        cfg = EarlyExitConfig(**s["config"])
        assert cfg.exit_layers == SIZES[name].exit_layers and cfg.backbone == SIZES[name].backbone, name
        assert s["backbone"] == SIZES[name].backbone


def test_every_size_and_exit_is_reported(manifest):
    for name, s in manifest["sizes"].items():
        k = len(s["exit_layers"])
        assert len(s["accuracy_per_exit"]["test"]) == k and len(s["accuracy_per_exit"]["val"]) == k, name
        assert 0.5 < s["accuracy_full_depth_test"] <= 1 and 0.5 < s["accuracy_early_exit_test"] <= 1, name
        flops = s["flops_per_sample_per_exit_test"]
        assert len(flops) == k and all(a < b for a, b in zip(flops, flops[1:])), name
        assert len(s["thresholds"]) == k - 1 and all(0 <= t <= 1 for t in s["thresholds"]), name
        assert s["test"]["exit_distribution"] and abs(sum(s["test"]["exit_distribution"]) - 1) < 1e-9, name
        assert max(s["onnx"]["max_abs_diff"].values()) <= 1e-4, name  # every stage passed its parity check


def test_the_family_has_a_quality_gradient(manifest):
    # issue 30's first target: large at full depth >= 5 points above small at full depth, on the test split.
    sizes = manifest["sizes"]
    assert sizes["large"]["accuracy_full_depth_test"] - sizes["small"]["accuracy_full_depth_test"] >= 0.05
    flops = manifest["flops_per_sample_eval_mix"]
    assert flops["small"] < flops["medium"] < flops["large"]
