"""bench-route: what routing buys, on the evaluation mix.

Two views, both written by one run:
  * FLOPs-weighted cost and accuracy of every policy (always-small/medium/large, random routing at the router's
    size shares, the router with and without early exit), from the export's routing calibration on the test
    split (`complexity/router.json`, simulated on the real exit logits), plus the RouteLLM gap numbers;
  * measured on one server in the same run: samples/s and accuracy of `adaptive` (router + early exit),
    `<largest>_exit` (early exit alone) and every `<size>_full`, at one concurrency; server time per sample is the
    inverse of throughput on a saturated server, so the cost ratio is the throughput ratio.
Router overhead: the router's own decision (features + estimator) timed per single text on the mix.

The reference is `large_full` for the project's family, else the largest `<size>_full` served (`--quick` on the
tiny family: one size, so no estimator, and the routing rows are all that size).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from adaptive_bench.data import EvalSamples
from adaptive_bench.exit_bench import ExitBenchConfig, run_exit_bench
from adaptive_bench.load import percentiles_ms

ENTRY = "adaptive"
CONCURRENCY = 4
TARGET_COST_FACTOR = 3.0  # router + early exit must cost >= 3x less than always-large at full depth
TARGET_ACCURACY_KEPT = 0.99
TARGET_OVERHEAD_P99_MS = 2.0


def offline_policies(export_dir: Path) -> dict[str, object]:
    """The routing calibration's test report (FLOPs relative to always-large at full depth)."""
    return json.loads((Path(export_dir) / "complexity" / "router.json").read_text())["test"]


def router_overhead(export_dir: Path, texts: tuple[str, ...], repeats: int = 1) -> dict[str, float | None]:
    """Per-text time of the router's decision: feature extraction + the ONNX estimator, one text per call (None
    percentiles when the export has no estimator: a family of one size is not routed)."""
    import onnxruntime as ort

    from adaptive_core.complexity_features import extract_features

    if not (Path(export_dir) / "complexity" / "estimator.onnx").exists():
        return percentiles_ms([])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(Path(export_dir) / "complexity" / "estimator.onnx"), options, providers=["CPUExecutionProvider"]
    )
    session.run(None, {"features": extract_features(texts[:1])})  # warm up
    times = []
    for _ in range(repeats):
        for text in texts:
            t0 = time.perf_counter()
            session.run(None, {"features": extract_features([text])})
            times.append((time.perf_counter() - t0) * 1e3)
    return percentiles_ms(times)


def run_route_bench(
    url: str, samples: EvalSamples, export_dir: Path, concurrency: int = CONCURRENCY
) -> dict[str, object]:
    """Offline policy table, measured throughput/accuracy on the server at `url`, and router overhead."""
    from adaptive_ops.repository import exported_sizes

    largest = max(exported_sizes(Path(export_dir)).values(), key=lambda c: (c.num_layers, c.max_seq_len)).name
    measured = run_exit_bench(
        url, samples, ExitBenchConfig(concurrency=(concurrency,), entry=ENTRY, extra_entries=(f"{largest}_exit",))
    )
    runs = {m: r[str(concurrency)] for m, r in measured["runs"].items()}
    reference = measured["reference"]
    offline = offline_policies(export_dir)
    policies = offline["policies"]
    router = policies["router + early exit"]
    large = policies[offline["reference"]]  # always the largest size, full depth
    overhead = router_overhead(export_dir, samples.texts)
    measured_ratio = (
        runs[ENTRY]["throughput_sps"] / runs[reference]["throughput_sps"]
        if reference in runs and runs[reference]["throughput_sps"]
        else None
    )
    accuracy_kept = (
        runs[ENTRY]["accuracy"] / runs[reference]["accuracy"]
        if reference in runs and runs[reference]["accuracy"]
        else None
    )
    verdicts = {
        "flops_cost_3x_less": 1.0 / router["relative_cost"] >= TARGET_COST_FACTOR,
        "measured_cost_3x_less": measured_ratio is not None and measured_ratio >= TARGET_COST_FACTOR,
        "accuracy_kept_99pct": accuracy_kept is not None and accuracy_kept >= TARGET_ACCURACY_KEPT,
        "router_overhead_p99_le_2ms": overhead["p99_ms"] is not None and overhead["p99_ms"] <= TARGET_OVERHEAD_P99_MS,
    }
    return {
        "benchmark": "route",
        "reference": reference,
        "concurrency": concurrency,
        "offline": offline,
        "measured": runs,
        "measured_cost_ratio": measured_ratio,
        "accuracy_kept": accuracy_kept,
        "flops_cost_ratio": 1.0 / router["relative_cost"],
        "large_full_accuracy_offline": large["accuracy"],
        "router_overhead": overhead,
        "verdicts": verdicts,
    }


def markdown(results: dict[str, object]) -> str:
    off = results["offline"]
    lines = [
        "# bench-route",
        "",
        f"Test evaluation mix ({off['n']} texts). FLOPs relative to `{off['reference']}`; simulated on the exit "
        "logits with the calibrated thresholds.",
        "",
        "| policy | accuracy | relative FLOPs | answered by (share) |",
        "|---|---|---|---|",
    ]
    for name, p in off["policies"].items():
        shares = ", ".join(f"{k} {v:.0%}" for k, v in p.get("answer_share", {}).items())
        lines.append(f"| {name} | {p['accuracy']:.4f} | {p['relative_cost']:.3f} | {shares} |")
    gap = off["gap_recovery"]
    lines += [
        "",
        f"RouteLLM-style (no escalation, q swept): small-to-large gap {_num(gap['gap'], 4)}; large share for 50% "
        f"of the gap {_num(gap['large_share_for_50pct'])}, for 80% {_num(gap['large_share_for_80pct'])}; "
        f"APGR {_num(gap['apgr'])}.",
        "",
        f"## Measured on the server (gRPC closed loop, concurrency {results['concurrency']}, same run)",
        "",
        "| model | samples/s | server ms/sample | p50 ms | p99 ms | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for model, r in results["measured"].items():
        tput = r["throughput_sps"]
        lines.append(
            f"| {model} | {tput:.1f} | {1e3 / tput if tput else float('nan'):.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['accuracy']:.4f} |"
        )
    o = results["router_overhead"]
    reference = results.get("reference", "large_full")  # runs before it was recorded measured large_full
    kept = None if results["accuracy_kept"] is None else 100 * results["accuracy_kept"]
    lines += [
        "",
        f"`adaptive` costs {_num(results['measured_cost_ratio'], 2)}x less server time per sample than "
        f"`{reference}` (measured) and {_num(results['flops_cost_ratio'], 2)}x less FLOPs (simulated); it keeps "
        f"{_num(kept, 1)}% of `{reference}`'s accuracy.",
        "",
        f"Router overhead (features + estimator, one text per call): p50 {_num(o['p50_ms'])} ms, "
        f"p99 {_num(o['p99_ms'])} ms.",
        "",
        "| verdict | pass |",
        "|---|---|",
    ]
    lines += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in results["verdicts"].items()]
    return "\n".join(lines) + "\n"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def plot(results: dict[str, object], path: Path) -> Path:
    """Accuracy against relative FLOPs, one point per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, p in results["offline"]["policies"].items():
        ax.scatter(p["relative_cost"], p["accuracy"])
        ax.annotate(name, (p["relative_cost"], p["accuracy"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("FLOPs per text, relative to always-large (full depth)")
    ax.set_ylabel("accuracy (test evaluation mix)")
    ax.set_title("Routing policies: cost against accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
