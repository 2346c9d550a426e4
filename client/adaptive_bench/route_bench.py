"""bench-route: what routing buys, on the evaluation mix.

Two views, both written by one run:
  * FLOPs-weighted cost and accuracy of every policy (always-small/medium/large, random routing at the router's
    size shares, the router with and without early exit, escalation only), from the export's routing calibration on
    the test split (`complexity/router.json`, simulated on the real exit logits), plus RouteLLM's metrics on the
    small/large pair (`routing.pair_report`): PGR at the router's operating point, APGR, CPT(50%), CPT(80%), beside
    random routing at equal cost, the naive "least confident small answers to large" rule and an oracle;
  * measured on one server in the same run: samples/s and accuracy of `adaptive` (router + early exit),
    `large_exit` (early exit alone) and every `<size>_full`, at one concurrency; server time per sample is the
    inverse of throughput on a saturated server, so the cost ratio is the throughput ratio.
Router overhead: the router's own decision (features + estimator) timed per single text on the mix, and the
in-process tokenization it adds for a size with its own vocabulary (the large size's MPNet tokenizer).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from adaptive_bench.data import EvalSamples
from adaptive_bench.exit_bench import ExitBenchConfig, run_exit_bench
from adaptive_bench.load import percentiles_ms

ENTRY = "adaptive"
REFERENCE = "large_full"
CONCURRENCY = 4
# Targets of issue 30 (router + early exit against large_full on the test split).
TARGET_COST_FACTOR = 4.0  # >= 4x lower measured server time per text
TARGET_ACCURACY_KEPT = 0.99
TARGET_APGR = 0.8  # RouteLLM's best published APGR
TARGET_OVER_RANDOM = 0.02  # accuracy points over random routing at equal cost
TARGET_AUC = 0.75  # the estimator's AUC for "the small size is not enough"
TARGET_OVERHEAD_P99_MS = 2.0


def offline_policies(export_dir: Path) -> dict[str, object]:
    """The routing calibration's test report (FLOPs relative to always-large at full depth)."""
    return json.loads((Path(export_dir) / "complexity" / "router.json").read_text())["test"]


def router_overhead(export_dir: Path, texts: tuple[str, ...], repeats: int = 1) -> dict[str, float | None]:
    """Per-text time of the router's decision: feature extraction + the ONNX estimator, one text per call."""
    import onnxruntime as ort

    from adaptive_core.complexity_features import extract_features

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


def own_vocabulary_tokenization(export_dir: Path, texts: tuple[str, ...]) -> dict[str, object]:
    """Per-text time of the router's in-process tokenization for the routed sizes with their own vocabulary (the
    plan's `tokenizer` files, as the repository builder picks them); empty when every size reads the entry's."""
    from adaptive_core.router_plan import RouterPlan
    from adaptive_ops.repository import RepositoryOptions, load_router_plan, size_tokenizer
    from adaptive_ops.repository import exported_sizes as sizes_of
    from adaptive_serving.tokenizer import TextTokenizer

    plan = load_router_plan(Path(export_dir), sizes_of(Path(export_dir)), RepositoryOptions())
    out: dict[str, object] = {}
    for target in plan.targets if isinstance(plan, RouterPlan) else ():
        if not target.cascade.tokenizer:
            continue
        tok = TextTokenizer(size_tokenizer(Path(export_dir), target.name), target.cascade.max_seq_len)
        tok(texts[:1])
        times = []
        for text in texts:
            t0 = time.perf_counter()
            tok([text])
            times.append((time.perf_counter() - t0) * 1e3)
        out[target.name] = percentiles_ms(times)
    return out


def run_route_bench(
    url: str, samples: EvalSamples, export_dir: Path, concurrency: int = CONCURRENCY
) -> dict[str, object]:
    """Offline policy table, measured throughput/accuracy on the server at `url`, and router overhead."""
    measured = run_exit_bench(
        url, samples, ExitBenchConfig(concurrency=(concurrency,), entry=ENTRY, extra_entries=("large_exit",))
    )
    runs = {m: r[str(concurrency)] for m, r in measured["runs"].items()}
    offline = offline_policies(export_dir)
    policies = offline["policies"]
    router = policies["router + early exit"]
    large = policies["always large (full depth)"]
    overhead = router_overhead(export_dir, samples.texts)
    tokenization = own_vocabulary_tokenization(export_dir, samples.texts)
    pair = offline.get("routellm_pair", {})
    metrics_path = Path(export_dir) / "complexity" / "metrics.json"  # absent for a one-size family
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    auc = metrics.get("test", {}).get("auc_smallest_not_enough")
    measured_ratio = (
        runs[ENTRY]["throughput_sps"] / runs[REFERENCE]["throughput_sps"]
        if REFERENCE in runs and runs[REFERENCE]["throughput_sps"]
        else None
    )
    accuracy_kept = (runs[ENTRY]["accuracy"] / runs[REFERENCE]["accuracy"]) if REFERENCE in runs else None
    op = pair.get("operating_point", {})
    apgr = pair.get("curves", {}).get("router score (pure routing)", {}).get("apgr")
    verdicts = {
        "flops_cost_4x_less": 1.0 / router["relative_cost"] >= TARGET_COST_FACTOR,
        "measured_cost_4x_less": measured_ratio is not None and measured_ratio >= TARGET_COST_FACTOR,
        "accuracy_kept_99pct": accuracy_kept is not None and accuracy_kept >= TARGET_ACCURACY_KEPT,
        "apgr_ge_0.8": apgr is not None and apgr >= TARGET_APGR,
        "2_points_over_random_at_equal_cost": op.get("accuracy_over_random_at_equal_cost", -1) >= TARGET_OVER_RANDOM,
        "above_naive_rule_at_equal_cost": op.get("accuracy_over_naive_at_equal_cost", -1) > 0,
        "estimator_auc_small_not_enough_ge_0.75": auc is not None and auc >= TARGET_AUC,
        "router_overhead_p99_le_2ms": overhead["p99_ms"] is not None and overhead["p99_ms"] <= TARGET_OVERHEAD_P99_MS,
    }
    return {
        "benchmark": "route",
        "concurrency": concurrency,
        "offline": offline,
        "measured": runs,
        "measured_cost_ratio": measured_ratio,
        "accuracy_kept": accuracy_kept,
        "flops_cost_ratio": 1.0 / router["relative_cost"],
        "large_full_accuracy_offline": large["accuracy"],
        "router_overhead": overhead,
        "own_vocabulary_tokenization": tokenization,
        "estimator_auc_smallest_not_enough": auc,
        "routellm_pair": pair,
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
    if gap["apgr"] is not None:
        lines += [
            "",
            f"Whole family, no escalation, q swept: small-to-large gap {gap['gap']:.4f}; large share for 50% "
            f"of the gap {gap['large_share_for_50pct']:.3f}, for 80% {gap['large_share_for_80pct']:.3f}; "
            f"APGR {gap['apgr']:.3f}.",
        ]
    lines += _pair_markdown(results.get("routellm_pair") or {}, results.get("estimator_auc_smallest_not_enough"))
    lines += [
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
    lines += [
        "",
        f"`adaptive` costs {results['measured_cost_ratio']:.2f}x less server time per sample than "
        f"`{REFERENCE}` (measured) and {results['flops_cost_ratio']:.2f}x less FLOPs (simulated); it keeps "
        f"{100 * results['accuracy_kept']:.1f}% of `{REFERENCE}`'s accuracy.",
        "",
        f"Router overhead (features + estimator, one text per call): p50 {o['p50_ms']:.3f} ms, "
        f"p99 {o['p99_ms']:.3f} ms."
        + "".join(
            f" In-process tokenization for `{size}` (own vocabulary), one text per call: p50 {t['p50_ms']:.3f} ms, "
            f"p99 {t['p99_ms']:.3f} ms."
            for size, t in (results.get("own_vocabulary_tokenization") or {}).items()
        ),
        "",
        "| verdict | pass |",
        "|---|---|",
    ]
    lines += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in results["verdicts"].items()]
    return "\n".join(lines) + "\n"


def _pair_markdown(pair: dict, auc: float | None) -> list[str]:
    """RouteLLM's metrics on the small/large pair, as markdown lines."""
    if not pair:
        return []

    def num(v: float | None, fmt: str = ".3f") -> str:
        return "n/a" if v is None else format(v, fmt)

    op = pair["operating_point"]
    lines = [
        "",
        f"## RouteLLM metrics on the {pair['weak']}/{pair['strong']} pair (test, {pair['n']} texts, both as their "
        "calibrated early-exit cascades)",
        "",
        f"{pair['weak']} {pair['accuracy_weak']:.4f}, {pair['strong']} {pair['accuracy_strong']:.4f}: gap "
        f'{100 * pair["gap"]:.2f} points. Estimator AUC for "{pair["weak"]} is not enough": {num(auc)}.',
        "",
        "| routing score | APGR | CPT(50%) | CPT(80%) |"
        + "".join(f" PGR at {s} |" for s in ("10%", "20%", "30%", "50%")),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in pair["curves"].items():
        by = c.get("by_share", {})
        lines.append(
            f"| {name} | {num(c['apgr'])} | {num(c['cpt50'])} | {num(c['cpt80'])} |"
            + "".join(f" {num(by[s]['pgr']) if s in by else '-'} |" for s in ("10%", "20%", "30%", "50%"))
        )
    lines += [
        "",
        f"Operating point (the calibrated router: every size, early exit, escalation): accuracy {op['accuracy']:.4f} "
        f"at {op['relative_cost']:.3f} of always-{pair['strong']} FLOPs; PGR {num(op['pgr'])}.",
        "",
        "| at the operating point's FLOPs | accuracy | share to the strong size | PGR |",
        "|---|---|---|---|",
        f"| the router (operating point) | {op['accuracy']:.4f} | - | {num(op['pgr'])} |",
    ]
    for name, p in pair["at_operating_cost"].items():
        lines.append(f"| {name} | {p['accuracy']:.4f} | {p['strong_share']:.3f} | {num(p['pgr'])} |")
    o = pair["oracle"]
    lines.append(
        f"| oracle (small when right, else large; its own cost {o['relative_cost']:.3f}) | {o['accuracy']:.4f} | "
        f"{o['strong_share']:.3f} | {num(o['pgr'])} |"
    )
    lines += [
        "",
        f"Router minus random at equal cost: {100 * op['accuracy_over_random_at_equal_cost']:+.2f} points; minus the "
        f"naive rule at equal cost: {100 * op['accuracy_over_naive_at_equal_cost']:+.2f} points.",
    ]
    return lines


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
