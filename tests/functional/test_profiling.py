"""Profiling toolkit: roofline math by hand, peak table, NVML-absent path, and the whole report on the tiny export
against a real tiny server."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from adaptive_core.config import TINY, EarlyExitConfig
from adaptive_export.manifest import head_params, layer_params, stage_bytes, stage_flops
from adaptive_profiling.nvml import NvmlSampler
from adaptive_profiling.peaks import measure_peaks, table_peaks
from adaptive_profiling.roofline import roofline_point, why
from adaptive_profiling.server_side import hop_rank

# H=4, nh=2, I=8, head width h=2, C=2 classes, two one-layer stages: small enough to count by hand.
HAND = EarlyExitConfig(
    name="hand",
    num_layers=2,
    exit_every=1,
    max_seq_len=2,
    hidden_size=4,
    num_heads=2,
    intermediate_size=8,
    vocab_size=16,
    max_position=4,
    head_hidden=2,
    num_labels=2,
)


def test_hops_sort_along_a_requests_path() -> None:
    models = [
        "large_full_encoder",
        "small_stage2",
        "router_standard",
        "small_stage1_express",
        "cascade_small",
        "router",
        "tokenizer_large",
        "adaptive",
        "small_stage1",
    ]
    assert sorted(models, key=hop_rank) == [
        "adaptive",
        "tokenizer_large",
        "router",
        "router_standard",
        "cascade_small",
        "small_stage1",
        "small_stage1_express",
        "small_stage2",
        "large_full_encoder",
    ]


def test_roofline_matches_a_hand_computation() -> None:
    # Stage 2 (the last, one layer) on B=1 sequence of T=2 tokens.
    # FLOPs: layer T*(8H^2 + 4HI) + 4T^2H = 2*(128 + 128) + 4*4*4 = 576; head 2Hh + 2hC = 16 + 8 = 24 -> 600.
    assert float(stage_flops(HAND, 2, 2)) == 600.0
    # Bytes (float32): weights (4*16 + 2*32 + 9*4 + 8 = 172 layer + 8+2+4+2 = 16 head) * 4 = 752;
    # activations (20*1*2*4 + 4*1*2*8 = 224, + pooling 1*2*4 = 8) * 4 = 928; scores 4*1*2*2^2 * 4 = 128;
    # interface: in hidden_in (4*4) + mask (8) = 24 B/token * 2 tokens + logits 2*4 = 56. Total 1864.
    assert stage_bytes(HAND, 2, 1, 2) == {
        "weights": 752,
        "activations": 928,
        "attention_scores": 128,
        "interface": 56,
        "total": 1864,
    }
    # Peaks 1000 FLOP/s and 100 B/s: ridge 10 FLOP/B; intensity 600/1864 = 0.3219 < 10 -> memory-bound;
    # roof min(1000, 0.3219*100) = 32.19 FLOP/s; 60 s per call -> 10 FLOP/s achieved, 31.1% of the roof.
    p = roofline_point(HAND, 2, 1, 2, time_s=60.0, peak_flops_per_s=1000.0, peak_bytes_per_s=100.0)
    assert p.bound == "memory" and p.ridge == 10.0
    assert p.intensity == pytest.approx(600 / 1864)
    assert p.roof_flops_per_s == pytest.approx(600 / 1864 * 100)
    assert p.achieved_flops_per_s == pytest.approx(10.0)
    assert p.fraction_of_roof == pytest.approx(10.0 / (600 / 1864 * 100))
    # Largest byte term: activations (928 of 1864 B); 31% of the roof is not called overhead-bound.
    assert why(p).startswith("intensity 0.3 FLOP/B is below the ridge 10.0 FLOP/B; the unfused activations")
    assert "fixed costs" not in why(p)
    slow = roofline_point(HAND, 2, 1, 2, time_s=600.0, peak_flops_per_s=1000.0, peak_bytes_per_s=100.0)
    assert "at 3% of its roof the call is limited by fixed costs" in why(slow)
    # Same call on a device with ridge 0.1 FLOP/B is compute-bound, its roof the compute peak.
    q = roofline_point(HAND, 2, 1, 2, time_s=60.0, peak_flops_per_s=1000.0, peak_bytes_per_s=10_000.0)
    assert q.bound == "compute" and q.roof_flops_per_s == 1000.0
    with pytest.raises(ValueError, match="must be > 0"):
        roofline_point(HAND, 2, 1, 2, time_s=0.0, peak_flops_per_s=1.0, peak_bytes_per_s=1.0)


def test_weight_bytes_match_the_stage_modules() -> None:
    from adaptive_serving.encoder import EarlyExitEncoder, Stage

    model = EarlyExitEncoder(TINY)
    for s in range(1, TINY.num_stages + 1):
        start, end = TINY.stage_layers(s)
        params = sum(p.numel() for name, p in Stage(model, s).named_parameters() if not name.startswith("embeddings"))
        assert params == (end - start) * layer_params(TINY) + head_params(TINY), f"stage {s}"
    # Intensity grows with batch: the weights are read once per call whatever the batch.
    small, big = stage_bytes(TINY, 2, 1, 32), stage_bytes(TINY, 2, 64, 32)
    assert small["weights"] == big["weights"]
    for kind in ("activations", "attention_scores", "interface"):
        assert big[kind] == 64 * small[kind], kind


@pytest.mark.parametrize(
    ("reported", "entry"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("Tesla T4", None),
        ("AMD EPYC 7B13", None),
    ],
)
def test_peak_table_lookup_by_device_name(reported: str, entry: str | None) -> None:
    peaks = table_peaks(reported)
    assert (peaks.name if peaks else None) == entry


def test_peak_table_values_and_measurement() -> None:
    h100 = table_peaks("NVIDIA H100 80GB HBM3")
    assert h100.ridge("float32") == pytest.approx(67e12 / 3.35e12)  # datasheet FP32 / HBM3 bandwidth
    assert h100.flops("bfloat16") == pytest.approx(989.5e12)
    assert table_peaks("NVIDIA H200").bytes_per_s > h100.bytes_per_s  # same compute, faster HBM3e
    with pytest.raises(KeyError, match="no int8 peak"):
        h100.flops("int8")
    measured = measure_peaks("cpu", matmul_n=256, copy_mib=8, repeats=1)
    assert measured.source.startswith("measured:") and measured.flops("float32") > 0 and measured.bytes_per_s > 0


def test_nvml_absent_says_so_once_and_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError, as on the GPU host without it
    log = io.StringIO()
    with NvmlSampler(interval_s=0.01, log=log) as sampler:
        pass
    assert not sampler.available
    assert log.getvalue().count("\n") == 1 and "pynvml is not installed" in log.getvalue()
    summary = sampler.summary()
    assert summary["available"] is False and summary["samples"] == [] and "pynvml" in summary["reason"]


def test_nvml_sampler_reads_the_nvml_calls() -> None:
    # A stand-in NVML module (not Triton): checks units and the sampling thread without a GPU.
    nvml = SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=75, memory=40),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=3 * 2**30),
        nvmlDeviceGetPowerUsage=lambda h: 350_000,  # milliwatts
        nvmlDeviceGetTemperature=lambda h, sensor: 61,
    )
    import time

    with NvmlSampler(interval_s=0.01, nvml=nvml, log=io.StringIO()) as sampler:
        time.sleep(0.1)
    s = sampler.summary()
    assert s["available"] and s["device"] == "NVIDIA H100 80GB HBM3" and s["count"] >= 2
    assert s["stats"]["power_w"]["max"] == 350.0 and s["stats"]["memory_used_mib"]["mean"] == 3072.0
    assert s["stats"]["sm_util_pct"]["mean"] == 75.0 and s["stats"]["temperature_c"]["max"] == 61.0


def _listed_files(report: str) -> list[str]:
    section = report.split("## Files", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- `([^`]+)`", section, flags=re.M)


@pytest.mark.server
def test_whole_report_on_the_tiny_export(tiny_export: Path, tiny_server, tmp_path: Path) -> None:
    from matplotlib.image import imread

    from adaptive_profiling.cli import main

    out = tmp_path / "profile"
    argv = [
        "--export",
        str(tiny_export),
        "--out",
        str(out),
        "--quick",
        "--device",
        "cpu",
        "--url",
        tiny_server.grpc_url,
        "--metrics-url",
        tiny_server.metrics_url,
        "--requests",
        "16",
    ]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    result = json.loads((out / "profile.json").read_text())
    assert result["provenance"]["command"] == ["python", "-m", "adaptive_profiling", *argv]
    listed = _listed_files(report)
    assert sorted(listed) == result["files"]
    for name in listed:
        assert (out / name).is_file(), name
    pngs = [n for n in listed if n.endswith(".png")]
    assert {
        "roofline.png",
        "throughput_vs_batch.png",
        "latency_per_stage.png",
        "latency_per_hop.png",
        "memory_vs_batch.png",
    } <= set(pngs)
    for name in pngs:
        img = imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, name
    for stage in (1, 2):
        assert f"traces/tiny_stage{stage}.json" in listed and f"ops/tiny_stage{stage}.csv" in listed
        assert json.loads((out / f"traces/tiny_stage{stage}.json").read_text())["traceEvents"]

    # One roofline point and one timing per stage and batch size, each with its verdict in the report.
    points = result["offline"]["roofline"]
    assert {(p["stage"], p["batch"]) for p in points} == {(1, 1), (1, 4), (2, 1), (2, 4)}
    for p in points:
        assert p["bound"] == ("memory" if p["intensity"] < result["peaks"]["ridge"] else "compute")
        assert p["achieved_flops_per_s"] == pytest.approx(p["flops"] / p["time_s"])
    assert "**tiny stage 1** (T=32):" in report and "**tiny stage 2** (T=32):" in report
    peak = {(t["stage"], t["batch"]): t["peak_activation_bytes"] for t in result["offline"]["timings"]}
    assert all(peak[(s, 4)] > peak[(s, 1)] > 0 for s in (1, 2))  # activations grow with the batch
    assert {r["device"] for r in result["projections"]} == {"H100 SXM", "H200 SXM"}
    assert "No GPU sampling:" in report or result["nvml"]["available"]

    # Server side: the tiny_exit path in order, each hop counted by both the statistics API and the metrics.
    [entry] = result["server"]["entries"]
    assert entry["model"] == "tiny_exit" and entry["client"]["answered"] == 16 and entry["client"]["errors"] == 0
    hops = [h["model"] for h in entry["hops"]]
    assert hops[:3] == ["tiny_exit", "tokenizer_tiny", "cascade_tiny"]
    stage1 = [m for m in ("tiny_stage1", "tiny_stage1_express") if m in hops]  # a request alone takes the express lane
    assert stage1
    by_model = {h["model"]: h for h in entry["hops"]}
    assert by_model["tiny_exit"]["kind"] == "ensemble" and by_model["cascade_tiny"]["kind"] == "python"
    for h in entry["hops"]:
        assert h["queue_ms"] >= 0 and h["compute_ms"] > 0, h["model"]
        assert abs(h["metrics"]["requests"] - h["requests"]) <= 2, h["model"]  # read a moment apart
    assert sum(by_model[m]["requests"] for m in stage1) >= 16  # every text runs stage 1, in one lane or the other
    assert entry["hop_cost"]["cascade"] == "cascade_tiny" and entry["hop_cost"]["hops_per_request"] >= 1
    assert "### tiny_exit" in report and "BLS orchestration in `cascade_tiny`" in report


def test_cli_rejects_unknown_size_and_bad_numbers(
    tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from adaptive_profiling.cli import main

    assert main(["--export", str(tiny_export), "--out", str(tmp_path), "--size", "huge", "--no-server"]) == 1
    assert "unknown size(s) ['huge']" in capsys.readouterr().err
    assert main(["--export", str(tiny_export), "--out", str(tmp_path), "--batch-sizes", "0"]) == 2
    assert main(["--export", str(tmp_path / "missing"), "--out", str(tmp_path), "--no-server"]) == 1
    assert "make export" in capsys.readouterr().err
