"""Both benchmarks end to end on the tiny repository, through `main([...])` with --quick (no performance targets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptive_bench import cpu
from adaptive_bench.cli import main
from adaptive_ops.repository import RepositoryOptions, build_repository

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_repo(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("bench") / "repository"
    build_repository(tiny_export, repo, RepositoryOptions(entry_size="tiny"))
    return repo


def test_bench_exit_quick(tiny_repo: Path, tiny_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench-exit"
    assert (
        main(
            [
                "exit",
                "--repo",
                str(tiny_repo),
                "--export",
                str(tiny_export),
                "--out",
                str(out),
                "--quick",
                "--samples",
                "24",
                "--concurrency",
                "1",
                "4",
            ]
        )
        == 0
    )
    r = json.loads((out / "results.json").read_text())
    assert r["models"] == ["adaptive", "tiny_full"] and r["reference"] == "tiny_full"
    assert r["provenance"]["command"][:4] == ["python", "-m", "adaptive_bench", "exit"]
    for model in r["models"]:
        for c in ("1", "4"):
            run = r["runs"][model][c]
            assert run["errors"] == 0 and run["samples_answered"] == 24
            assert run["throughput_sps"] > 0 and run["p50_ms"] <= run["p99_ms"]
            assert 0.0 <= run["accuracy"] <= 1.0
    assert sum(r["runs"]["adaptive"]["1"]["exit_stage_counts"].values()) == 24
    assert set(r["comparison"]["4"]) == {"throughput_ratio", "accuracy_diff"}
    hop = r["hop_costs"]["1"]["cascade_tiny"]
    assert hop["stages"] == ["tiny_stage1", "tiny_stage1_express", "tiny_stage2", "tiny_stage2_express"]
    # Triton counts a request in its statistics just after answering it, so a warm-up request can land in the
    # measured window: at most the 4 warm-up requests of --quick.
    assert 24 <= hop["cascade_requests"] <= 24 + 4
    # Each request makes 1 or 2 stage calls; a warm-up request's calls can land in the window too (one run: 49 calls
    # for 24 requests).
    assert 24 <= round(hop["hops_per_request"] * hop["cascade_requests"]) <= 2 * (24 + 4)
    assert hop["overhead_ms_per_request"] is not None
    # One request at a time: the time inside the cascade past its gate covers its stage calls (the gate models answer
    # through the response sender, so this comes from their metrics, not from Triton's compute time).
    assert hop["overhead_ms_per_request"] >= 0, hop
    assert r["dataset"]["samples"] == 24
    assert (out / "results.md").read_text().startswith("# bench-exit")
    assert (out / "throughput_vs_concurrency.png").stat().st_size > 0


def test_bench_classes_quick(tiny_repo: Path, tiny_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench-classes"
    assert (
        main(
            [
                "classes",
                "--repo",
                str(tiny_repo),
                "--export",
                str(tiny_export),
                "--out",
                str(out),
                "--quick",
                "--duration-s",
                "1.5",
            ]
        )
        == 0
    )
    r = json.loads((out / "results.json").read_text())
    assert r["capacity_sps"] > 0
    cap = r["config"]["capacity"]
    for point in r["capacity_points"].values():  # each point: the mean of its last windows, every window kept
        assert cap["stable_windows"] <= len(point["window_sps"]) <= cap["max_windows"]
        last = point["window_sps"][-cap["stable_windows"] :]
        assert point["throughput_sps"] == pytest.approx(sum(last) / len(last))
    assert r["capacity_sps"] == max(p["throughput_sps"] for p in r["capacity_points"].values())
    # CPU over the overload run: the server, the load generator, and stubs named by their models.
    assert {cpu.SERVER, cpu.GENERATOR} <= set(r["cpu"]) and len(r["cpu"]) > 2, r["cpu"]
    assert sum(c["share"] for c in r["cpu"].values()) == pytest.approx(1.0)
    assert all(c["ms_per_request"] > 0 and c["cpu_class"] in ("normal", "idle") for c in r["cpu"].values())
    assert "## CPU (overload run and its drain)" in (out / "results.md").read_text()
    assert set(r["unloaded"]) == set(r["classes"]) == {"critical", "sensitive", "batch"}
    assert r["open_loop"]["sent"] == sum(c["sent"] for c in r["classes"].values()) > 0
    for name, c in r["classes"].items():
        assert c["lost"] == 0, name
        assert c["sent"] == c["answered"] + c["rejected"], name
        assert sum(c["rejected_by_status"].values()) == c["rejected"], name
    assert r["verdicts"]["none_lost"] and r["verdicts"]["sent_equals_answered_plus_rejected"]
    assert set(r["verdicts"]) >= {"critical_p99_within_factor", "no_critical_rejections", "batch_takes_shedding"}
    # What a quick run can hold on a shared CPU (not the critical p99 factor): no critical request is shed, and the
    # batch class is degraded at least as much as the others.
    assert r["verdicts"]["batch_takes_shedding"] and r["verdicts"]["no_critical_rejections"], r["classes"]
    assert (out / "latency_per_class.png").stat().st_size > 0
    assert [p["load_factor"] for p in r["load_sweep"]] == [0.5, 2.0]  # the quick sweep point, then the main run
    assert r["load_sweep"][-1]["classes"] == r["classes"]
    assert r["server_side"]["adaptive"]["requests"] == sum(c["answered"] for c in r["classes"].values())
    # Every request of the overload run passed the admission gate once: admitted (and answered) or refused there.
    gate = r["gate"]
    assert set(gate) == set(r["classes"])
    for name, c in r["classes"].items():
        assert gate[name]["admitted"] == c["answered"] and gate[name]["rejected"] <= c["rejected"], (name, gate, c)
    assert (out / "latency_vs_load.png").stat().st_size > 0 and "Against offered load" in (
        out / "results.md"
    ).read_text()
    alone = r["critical_alone"]  # the critical class sent alone at its share of the main rate
    assert alone["sent"] > 0 and alone["lost"] == 0 and alone["sent"] == alone["answered"] + alone["rejected"]
    assert alone["rate_per_s"] == pytest.approx(r["class_mix"]["critical"] * r["open_loop"]["rate_per_s"])
    assert "Critical alone at its share" in (out / "results.md").read_text()


def test_bench_route_quick(tiny_repo: Path, tiny_export: Path, tmp_path: Path) -> None:
    """On the tiny family (one size: no estimator, nothing to route between) the route benchmark still runs end to
    end: the offline policy table, the measured entries against the largest size's full depth, the report."""
    out = tmp_path / "bench-route"
    args = ["route", "--repo", str(tiny_repo), "--export", str(tiny_export), "--out", str(out), "--quick"]
    assert main([*args, "--concurrency", "2"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["reference"] == "tiny_full" and set(r["measured"]) == {"adaptive", "tiny_exit", "tiny_full"}
    for model, run in r["measured"].items():
        assert run["errors"] == 0 and run["samples_answered"] == 64, model
    # Without a router, `adaptive` is the tiny cascade, as `tiny_exit` is: the same answers.
    assert r["measured"]["adaptive"]["accuracy"] == r["measured"]["tiny_exit"]["accuracy"]
    assert {"always tiny (full depth)", "router + early exit"} <= set(r["offline"]["policies"])
    assert r["router_overhead"]["p99_ms"] is None and not r["verdicts"]["router_overhead_p99_le_2ms"]
    assert r["flops_cost_ratio"] > 1.0  # early exit alone already saves FLOPs on the tiny family
    assert (out / "results.md").read_text().startswith("# bench-route")
    assert (out / "cost_vs_accuracy.png").stat().st_size > 0


def test_demo_quick(tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptive_bench import demo

    assert demo.main(["--quick", "--export", str(tiny_export), "--repo", str(tmp_path / "repo")]) == 0
    text = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()[1:]
        for line in text.splitlines()
        if line.split()[:1] in (["critical"], ["sensitive"], ["batch"])
    }
    assert set(rows) == {"critical", "sensitive", "batch"}
    assert sum(int(r[0]) for r in rows.values()) == demo.QUICK_SAMPLES  # every text sent once
    assert all(int(r[0]) == int(r[1]) + int(r[2]) for r in rows.values()), rows  # answered or rejected, none lost
    assert "answered by size: tiny 100%" in text and "exit shares (stage of the size that answered): stage 1" in text
    assert "speed-up of adaptive over tiny_full:" in text and (tmp_path / "demo-server.log").exists()
