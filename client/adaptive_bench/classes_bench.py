"""`classes`: latency classes under overload on the entry model.

1. capacity: closed loop, batch class, the best samples/s over a few concurrencies, each measured until stable
   (`capacity.py`);
2. unloaded p99 per class: one request at a time, over the same texts the open loop sends;
3. open-loop Poisson mix of classes at `load_factor` x capacity for a fixed time: who is answered, who is
   rejected (typed by status), nobody lost, and whether critical traffic kept its unloaded latency;
4. the critical class alone at its share of that rate: what its own concurrency costs, without the other classes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from adaptive_bench.capacity import CapacityConfig, measure_capacity
from adaptive_bench.cpu import cpu_delta, cpu_snapshot
from adaptive_bench.data import EvalSamples
from adaptive_bench.load import ClientPool, closed_loop, open_loop, open_loop_per_class, percentiles_ms
from adaptive_bench.requests import RequestKwargs
from adaptive_bench.stats import delta, gate_delta, gate_snapshot, snapshot
from adaptive_core.config import LATENCY_CLASSES

ENTRY = "adaptive"
# Share of each class in the mixed load: urgent traffic is the minority, bulk traffic the majority.
CLASS_MIX: dict[str, float] = {"critical": 0.2, "sensitive": 0.3, "batch": 0.5}
# Verdict: critical p99 under overload may grow to this multiple of its unloaded p99.
CRITICAL_P99_FACTOR = 1.5


@dataclass(frozen=True)
class ClassesBenchConfig:
    """Knobs of the classes benchmark.

    Args:
        capacity: how capacity is measured (closed-loop concurrencies, windows, stability rule).
        unloaded_requests: sequential requests per class for the unloaded p99; None = every text once (the open
            loop cycles through all of them, and p99 over a few hundred texts depended on which texts they were).
        load_factor: open-loop rate as a multiple of capacity.
        duration_s: seconds of open-loop arrivals.
        drain_timeout_s: final wait for answers after the last send; None = 2 x duration + 30 s (the batch backlog
            built at 2x capacity takes about one more duration to drain).
        seed: seeds arrivals and class draws.
        client_per_class: send each class from its own client process (as separate client populations would);
            False sends the whole mix from one event loop, where critical answers can wait behind batch callbacks.
        sweep_factors: more open-loop rates (x capacity), each for `sweep_duration_s`, for latency per class
            against offered load (`latency_vs_load.png`; the main run is the point at `load_factor`).
        sweep_duration_s: seconds of arrivals per sweep point.
    """

    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    unloaded_requests: int | None = None
    load_factor: float = 2.0
    duration_s: float = 30.0
    drain_timeout_s: float | None = None
    seed: int = 0
    client_per_class: bool = True
    sweep_factors: tuple[float, ...] = (0.5, 1.0, 1.5)
    sweep_duration_s: float = 10.0
    critical_alone: bool = True

    @property
    def drain_s(self) -> float:
        return self.drain_timeout_s if self.drain_timeout_s is not None else 2 * self.duration_s + 30.0


QUICK = ClassesBenchConfig(
    capacity=CapacityConfig(concurrency=(4, 16), window_s=0.5, stable_windows=2, max_windows=3),
    unloaded_requests=30,
    duration_s=5.0,
    sweep_factors=(0.5,),
    sweep_duration_s=2.0,
)


def class_picker(mix: dict[str, float] = CLASS_MIX):
    """A function drawing (class name, request kwargs) with the mix's probabilities."""
    if abs(sum(mix.values()) - 1.0) > 1e-9:
        raise ValueError(f"class mix fractions must sum to 1, got {mix}")
    unknown = set(mix) - set(LATENCY_CLASSES)
    if unknown:
        raise ValueError(f"unknown latency classes {sorted(unknown)}; expected some of {sorted(LATENCY_CLASSES)}")
    names = list(mix)
    probs = np.array([mix[n] for n in names])
    kwargs = {n: RequestKwargs.for_class(LATENCY_CLASSES[n]) for n in names}

    def pick(rng: np.random.Generator) -> tuple[str, RequestKwargs]:
        name = names[int(rng.choice(len(names), p=probs))]
        return name, kwargs[name]

    return pick


def per_class_summary(
    sent: list[str], outcomes: dict, lost: list[int], unloaded_p99: dict[str, float | None]
) -> dict[str, dict[str, object]]:
    """Per class: sent, answered, rejected (by status and reason), lost, latency of answered, degraded share.

    A request is degraded when rejected, lost, or answered later than CRITICAL_P99_FACTOR x its class's unloaded
    p99: the batch class should carry most of that.
    """
    out = {}
    for name in CLASS_MIX:
        idx = [i for i, c in enumerate(sent) if c == name]
        got = [outcomes[i] for i in idx if i in outcomes]
        ok = [o for o in got if o.ok]
        bad = [o for o in got if not o.ok]
        lat = [o.latency_ms for o in ok]
        limit = unloaded_p99.get(name)
        late = sum(1 for x in lat if limit is not None and x > CRITICAL_P99_FACTOR * limit)
        n_lost = sum(1 for i in idx if i not in outcomes)
        out[name] = {
            "sent": len(idx),
            "answered": len(ok),
            "rejected": len(bad),
            "lost": n_lost,
            "rejected_by_status": dict(Counter(o.error_status for o in bad)),
            "rejected_by_reason": dict(Counter(o.error_reason for o in bad)),
            "rejected_messages": sorted({o.error_message for o in bad})[:3],
            "deadline_cut": int(sum(int(o.deadline_cut.sum()) for o in ok if o.deadline_cut is not None)),
            "late": late,
            "degraded_fraction": (len(bad) + n_lost + late) / len(idx) if idx else 0.0,
            **percentiles_ms(lat),
        }
    return out


def verdicts(classes: dict[str, dict[str, object]], unloaded_p99: dict[str, float | None]) -> dict[str, bool]:
    """The pass/fail checks of the overload run."""
    crit = classes["critical"]
    base = unloaded_p99.get("critical")
    others = [classes[n]["degraded_fraction"] for n in classes if n != "batch"]
    return {
        "critical_p99_within_factor": (
            crit["p99_ms"] is not None and base is not None and crit["p99_ms"] <= CRITICAL_P99_FACTOR * base
        ),
        "no_critical_rejections": crit["rejected"] == 0,
        "batch_takes_shedding": classes["batch"]["degraded_fraction"] >= max(others, default=0.0),
        "sent_equals_answered_plus_rejected": all(c["sent"] == c["answered"] + c["rejected"] for c in classes.values()),
        "none_lost": all(c["lost"] == 0 for c in classes.values()),
    }


async def _run(
    url: str, samples: EvalSamples, config: ClassesBenchConfig, metrics_url: str | None, server_pid: int | None
) -> dict[str, object]:
    pool = ClientPool(url)
    texts = samples.texts
    requests = [[t] for t in texts]
    try:
        batch = RequestKwargs.for_class(LATENCY_CLASSES["batch"])
        capacity, capacity_points = await measure_capacity(pool, ENTRY, requests, kwargs=batch, config=config.capacity)
        unloaded = {}
        for name in CLASS_MIX:
            run = await closed_loop(
                pool,
                ENTRY,
                requests[: config.unloaded_requests],
                concurrency=1,
                kwargs=RequestKwargs.for_class(LATENCY_CLASSES[name]),
                desc=f"unloaded {name}",
            )
            ok = [o.latency_ms for o in run.outcomes if o.ok]
            unloaded[name] = {
                "requests": len(run.outcomes),
                "errors": len(run.outcomes) - len(ok),
                **percentiles_ms(ok),
            }
        unloaded_p99 = {n: u["p99_ms"] for n, u in unloaded.items()}
        rate = config.load_factor * capacity

        async def mixed_load(rate_per_s: float, duration_s: float, drain_s: float, mix: dict[str, float] = CLASS_MIX):
            if config.client_per_class:
                return await asyncio.to_thread(
                    open_loop_per_class,
                    url,
                    ENTRY,
                    texts,
                    rate_per_s=rate_per_s,
                    duration_s=duration_s,
                    mix=mix,
                    drain_timeout_s=drain_s,
                    seed=config.seed,
                )
            return await open_loop(
                pool,
                ENTRY,
                texts,
                rate_per_s=rate_per_s,
                duration_s=duration_s,
                pick_class=class_picker(mix),
                drain_timeout_s=drain_s,
                seed=config.seed,
            )

        sweep = []
        for factor in sorted(config.sweep_factors):
            # Each point drains fully before the next, so no point inherits the previous one's backlog.
            point = await mixed_load(factor * capacity, config.sweep_duration_s, 2 * config.sweep_duration_s + 30.0)
            sweep.append(
                {
                    "load_factor": factor,
                    "classes": per_class_summary(point.sent, point.outcomes, point.lost, unloaded_p99),
                }
            )
        before = await snapshot(pool.next())
        gate_before = await asyncio.to_thread(gate_snapshot, metrics_url) if metrics_url else None
        cpu_before = cpu_snapshot(server_pid)
        load = await mixed_load(rate, config.duration_s, config.drain_s)
        cpu = cpu_delta(cpu_before, cpu_snapshot(server_pid), len(load.sent))
        server_side = {
            name: {"requests": t.requests, "executions": t.executions, **t.per_request_ms()}
            for name, t in sorted(delta(before, await snapshot(pool.next())).items())
            if t.requests
        }
        gate = gate_delta(gate_before, await asyncio.to_thread(gate_snapshot, metrics_url)) if metrics_url else {}
        alone = None
        if config.critical_alone:
            share = CLASS_MIX["critical"]
            point = await mixed_load(share * rate, config.duration_s, config.drain_s, mix={"critical": 1.0})
            alone = {
                "rate_per_s": share * rate,
                **per_class_summary(point.sent, point.outcomes, point.lost, unloaded_p99)["critical"],
            }
    finally:
        await pool.close()
    classes = per_class_summary(load.sent, load.outcomes, load.lost, unloaded_p99)
    lag = percentiles_ms(load.send_lag_ms)
    return {
        "capacity_sps": capacity,
        "capacity_points": capacity_points,
        "unloaded": unloaded,
        "open_loop": {
            "rate_per_s": rate,
            "duration_s": config.duration_s,
            "send_s": load.send_s,
            "wall_s": load.wall_s,
            "sent": len(load.sent),
            "achieved_send_rate_per_s": len(load.sent) / load.send_s if load.send_s else 0.0,
            "send_lag_p99_ms": lag["p99_ms"],
            "drain_timeout_s": config.drain_s,
        },
        "classes": classes,
        "verdicts": verdicts(classes, unloaded_p99),
        "server_side": server_side,
        "gate": gate,
        "cpu": cpu,
        "critical_alone": alone,
        "load_sweep": sorted(
            sweep + [{"load_factor": config.load_factor, "classes": classes}], key=lambda p: p["load_factor"]
        ),
    }


def run_classes_bench(
    url: str,
    samples: EvalSamples,
    config: ClassesBenchConfig,
    *,
    metrics_url: str | None = None,
    server_pid: int | None = None,
) -> dict[str, object]:
    """Capacity, unloaded latency per class, then the mixed overload run, on the server at `url` (gRPC);
    with `metrics_url`, also the admission gate's waits and refusals per class over the overload run; with
    `server_pid` (a server on this machine), also the CPU of its processes beside the load generator's.

    Raises:
        RuntimeError: the entry answered nothing during the capacity measurement.
    """
    results = asyncio.run(_run(url, samples, config, metrics_url, server_pid))
    return {
        "benchmark": "classes",
        "config": asdict(config),
        "class_mix": CLASS_MIX,
        "critical_p99_factor": CRITICAL_P99_FACTOR,
        "latency_classes": {n: asdict(c) for n, c in LATENCY_CLASSES.items()},
        **results,
    }


def _f(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(results: dict[str, object]) -> str:
    """Tables of the classes benchmark."""
    ol = results["open_loop"]
    lines = [
        "# bench-classes",
        "",
        (
            f"Capacity of `{ENTRY}` (closed loop, batch class): {results['capacity_sps']:.1f} samples/s. "
            f"Open loop: Poisson at {ol['rate_per_s']:.1f} req/s ({results['config']['load_factor']}x capacity) "
            f"for {ol['duration_s']:.0f} s, mix {results['class_mix']}, "
            f"{'one client process per class' if results['config'].get('client_per_class') else 'one client'}; "
            "achieved send rate "
            f"{ol['achieved_send_rate_per_s']:.1f}/s, send lag p99 {_f(ol['send_lag_p99_ms'])} ms."
        ),
        "",
        (
            "| class | sent | answered | rejected | lost | rejected by status | p50 ms | p99 ms | unloaded p99 ms "
            "| deadline cuts | degraded |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in results["classes"].items():
        status = ", ".join(f"{k}: {v}" for k, v in c["rejected_by_status"].items()) or "-"
        lines.append(
            f"| {name} | {c['sent']} | {c['answered']} | {c['rejected']} | {c['lost']} | {status} "
            f"| {_f(c['p50_ms'])} | {_f(c['p99_ms'])} | {_f(results['unloaded'][name]['p99_ms'])} "
            f"| {c['deadline_cut']} | {c['degraded_fraction']:.1%} |"
        )
    lines += ["", "| verdict | pass |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in results["verdicts"].items()]
    lines += [
        "",
        (f"Degraded = rejected, lost, or answered later than {CRITICAL_P99_FACTOR}x the class's unloaded p99."),
        "",
    ]
    alone = results.get("critical_alone")
    if alone:
        lines += [
            (
                f"Critical alone at its share of the rate ({alone['rate_per_s']:.1f} req/s, no other class): "
                f"p50 {_f(alone['p50_ms'])} ms, p99 {_f(alone['p99_ms'])} ms, {alone['rejected']} rejected, "
                f"{alone['deadline_cut']} deadline cuts; what the critical class's own concurrency costs."
            ),
            "",
        ]
    cap = results["config"]["capacity"]
    lines += [
        "## Capacity (closed loop, batch class)",
        "",
        (
            f"Each concurrency runs without pause, counted in {cap['window_s']:g} s windows until the last "
            f"{cap['stable_windows']} agree within {cap['tolerance']:.0%} of their mean (at most "
            f"{cap['max_windows']} windows); the point is their mean, capacity the best point."
        ),
        "",
        "| concurrency | samples/s | stable | windows (samples/s) | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c} | {p['throughput_sps']:.1f} | {'yes' if p['stable'] else 'no'} | "
        f"{', '.join(f'{w:.0f}' for w in p['window_sps'])} | {_f(p['p50_ms'])} | {_f(p['p99_ms'])} |"
        for c, p in results["capacity_points"].items()
    ]
    lines.append("")
    if results.get("server_side"):
        lines += [
            "## Where the time went (overload run, Triton statistics per model)",
            "",
            (
                "Per request of each model, over the overload run and its drain; the express stages serve "
                "critical-deadline requests (and any request alone in the server; under overload there are "
                "none), the other models all classes."
            ),
            "",
            "| model | requests | executions | queue ms | compute ms |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {m['requests']} | {m['executions']} | {m['queue_ms']:.1f} | {m['compute_ms']:.1f} |"
            for name, m in results["server_side"].items()
        ]
        lines.append("")
    if results.get("cpu"):
        lines += [
            "## CPU (overload run and its drain)",
            "",
            (
                "CPU time per request sent, per process group (a model's stubs summed over its instances; "
                "tritonserver without its stubs). Idle = Linux `SCHED_IDLE`: only CPU that nothing at normal "
                "priority wants."
            ),
            "",
            "| process | CPU class | CPU ms per request | share |",
            "|---|---|---|---|",
        ]
        shown = {name: c for name, c in results["cpu"].items() if c["ms_per_request"] >= 0.01}
        lines += [
            f"| {name} | {c['cpu_class']} | {c['ms_per_request']:.2f} | {c['share']:.1%} |" for name, c in shown.items()
        ]
        normal = sum(c["ms_per_request"] for c in results["cpu"].values() if c["cpu_class"] == "normal")
        hidden = len(results["cpu"]) - len(shown)
        lines += [
            "",
            f"At normal priority: {normal:.2f} CPU ms per request sent"
            + (f"; {hidden} groups under 0.01 ms not shown." if hidden else "."),
            "",
        ]
    if results.get("gate"):
        lines += [
            "## Admission gate (overload run, custom metrics)",
            "",
            "| class | admitted | mean wait at the gate ms | refused at the gate |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {g['admitted']} | {g['wait_ms_mean']:.1f} | {g['rejected']} |"
            for name, g in results["gate"].items()
        ]
        lines.append("")
    if results.get("load_sweep"):
        lines += [
            "## Against offered load",
            "",
            "| load (x capacity) | class | sent | rejected | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        for point in results["load_sweep"]:
            for name, c in point["classes"].items():
                lines.append(
                    f"| {point['load_factor']:g} | {name} | {c['sent']} | {c['rejected']} | "
                    f"{_f(c['p50_ms'])} | {_f(c['p99_ms'])} |"
                )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, object], path: Path) -> Path:
    """Latency percentiles per class under load, with each class's unloaded p99 as a marker; with a load sweep,
    also `latency_vs_load.png` beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["classes"])
    keys = ("p50_ms", "p90_ms", "p99_ms")
    x = np.arange(len(names))
    width = 0.25
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, key in enumerate(keys):
        vals = [results["classes"][n][key] or 0.0 for n in names]
        ax.bar(x + (k - 1) * width, vals, width, label=f"{key.removesuffix('_ms')} under load")
    ax.scatter(
        x,
        [results["unloaded"][n]["p99_ms"] or 0.0 for n in names],
        color="black",
        marker="_",
        s=400,
        zorder=3,
        label="unloaded p99",
    )
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"bench-classes: {results['config']['load_factor']}x capacity, open loop")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    if results.get("load_sweep"):
        plot_latency_vs_load(results, path.parent / "latency_vs_load.png")
    return path


def plot_latency_vs_load(results: dict[str, object], path: Path) -> Path:
    """p50/p99 of answered requests and the rejected share, per class, against offered load (x capacity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = results["load_sweep"]
    x = [p["load_factor"] for p in points]
    fig, (lat_ax, rej_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name in CLASS_MIX:
        (line,) = lat_ax.plot(
            x, [p["classes"][name]["p99_ms"] or float("nan") for p in points], marker="o", label=f"{name} p99"
        )
        lat_ax.plot(
            x,
            [p["classes"][name]["p50_ms"] or float("nan") for p in points],
            marker=".",
            linestyle="--",
            color=line.get_color(),
            label=f"{name} p50",
        )
        rej_ax.plot(
            x,
            [100.0 * p["classes"][name]["rejected"] / max(p["classes"][name]["sent"], 1) for p in points],
            marker="o",
            color=line.get_color(),
            label=name,
        )
    lat_ax.set_yscale("log")
    lat_ax.set_xlabel("offered load (x capacity)")
    lat_ax.set_ylabel("latency of answered requests (ms)")
    lat_ax.legend(fontsize=7)
    rej_ax.set_xlabel("offered load (x capacity)")
    rej_ax.set_ylabel("rejected (%)")
    rej_ax.legend(fontsize=8)
    fig.suptitle(f"{ENTRY}: latency classes against offered load (capacity {results['capacity_sps']:.0f} samples/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
