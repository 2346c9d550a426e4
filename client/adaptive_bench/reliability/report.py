"""The reliability table (cases tried, crashes, lost requests, recovery times) and the soak table, as text and
markdown; results as JSON."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = ("check", "tried", "crashes", "lost", "failed", "recovery s (server / clients)", "pass")


def _fmt(x: object, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _recovery(run: dict[str, object]) -> str:
    return f"{_fmt(run.get('server_recovery_s'))} / {_fmt(run['recovery_s'])}"


def _passed(verdicts: dict[str, bool]) -> str:
    bad = [k for k, v in verdicts.items() if not v]
    return "yes" if not bad else "NO: " + ", ".join(bad)


def rows(results: dict[str, dict[str, object]]) -> list[tuple[str, ...]]:
    """One row per check that ran. `failed`: cases with the wrong outcome, or requests with an error that was not
    a typed rejection where none was allowed (for a fault: in the streams it was not meant to touch). Recovery:
    from the fault (or the reload/stop) until the server serves again / until the load's clients got an answer
    (their retry and reconnect backoff included)."""
    out = []
    if "cases" in results:
        c = results["cases"]
        out.append(
            (
                "bad inputs (hand-picked + hypothesis)",
                _fmt(c["cases"]),
                _fmt(c["crashes"]),
                _fmt(c["lost"]),
                _fmt(c["failed"]),
                "-",
                "yes" if not c["failed"] and not c["crashes"] and not c["falsified"] else "NO",
            )
        )
        out.append(
            (
                "  good requests beside them",
                _fmt(c["good_sent"]),
                "-",
                _fmt(c["good_sent"] - c["good_answered"] - c["good_failed"]),
                _fmt(c["good_failed"]),
                "-",
                "yes" if not c["good_failed"] else "NO",
            )
        )
    if "overload" in results:
        o = results["overload"]
        out.append(
            (
                f"overload {o['config']['load_factor']:g}x capacity, {o['config']['duration_s']:g} s",
                _fmt(o["sent"]),
                "0" if o["server_running"] else "1",
                _fmt(o["lost"]),
                _fmt(o["errors"] + o["late"]),
                "-",
                _passed(o["verdicts"]),
            )
        )
    if "unload_reload" in results:
        u = results["unload_reload"]
        streams = u["streams"].values()
        out.append(
            (
                f"stage {u['stage']} unloaded + reloaded",
                _fmt(sum(s["sent"] for s in streams)),
                "0",
                _fmt(sum(s["lost"] for s in streams)),
                _fmt(sum(s["failed"] for s in streams if not s["affected"])),
                _recovery(u),
                _passed(u["verdicts"]),
            )
        )
    if "kill_stub" in results:
        k = results["kill_stub"]
        streams = k["streams"].values()
        out.append(
            (
                f"stub of {k['model']} killed ({k['action']})",
                _fmt(sum(s["sent"] for s in streams)),
                "0",
                _fmt(sum(s["lost"] for s in streams)),
                "0" if k["verdicts"]["requests_failed_typed"] else "?",
                _recovery(k),
                _passed(k["verdicts"]),
            )
        )
    # Runs of typed clients with retries across the server going away (`faults._typed_load_across`).
    typed_runs = {
        "crash_SIGSEGV": "tritonserver SIGSEGV, supervisor restart (client retries)",
        "crash_SIGABRT": "tritonserver SIGABRT, supervisor restart (client retries)",
        "restart": "server restarted (client retries)",
    }
    for key, label in typed_runs.items():
        if key in results:
            r = results[key]
            out.append(
                (
                    label,
                    _fmt(r["sent"]),
                    "0",
                    _fmt(r["sent"] - r["answered"] - r["failed"]),
                    _fmt(r["failed"]),
                    _recovery(r),
                    _passed(r["verdicts"]),
                )
            )
    if "known_crashers" in results:
        kc = results["known_crashers"]
        out.append(
            (
                "known Triton 2.51 crash (not in the suite)",
                _fmt(kc["tried"]),
                _fmt(kc["crashes"]),
                "-",
                "-",
                "-",
                "still crashes (upstream bug)" if kc["crashes"] else "fixed?",
            )
        )
    return out


def text_table(table: list[tuple[str, ...]], columns: tuple[str, ...] = COLUMNS) -> str:
    """Aligned plain-text table."""
    widths = [max(len(str(r[i])) for r in [columns, *table]) for i in range(len(columns))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(tuple("-" * w for w in widths)), *map(line, table)])


def markdown_table(table: list[tuple[str, ...]], columns: tuple[str, ...] = COLUMNS) -> str:
    return "\n".join(
        ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *("| " + " | ".join(r) + " |" for r in table)]
    )


def notes(results: dict[str, dict[str, object]]) -> list[str]:
    """Numbers behind the table that a reader will ask for."""
    out = []
    if "cases" in results:
        c = results["cases"]
        out.append(f"bad inputs: outcomes {c['outcomes']}; protocols {c['by_protocol']}; {c['wall_s']:.1f} s")
    if "overload" in results:
        o = results["overload"]
        out.append(
            f"overload: capacity {o['capacity_rps']:.1f} req/s ({o['config']['texts_per_request']} text(s) per "
            f"request), offered {o['rate_per_s']:.1f}/s, sent {o['achieved_rate_per_s']:.1f}/s (send lag p99 "
            f"{_fmt(o['send_lag_p99_ms'])} ms); answered {o['answered']}, rejected {o['rejected']} (typed, "
            f"queue timeout), late {o['late']}; server memory {o['rss_before_mb']:.0f} -> "
            f"{o['rss_after_mb']:.0f} MB ({o['rss_growth']:+.1%})"
        )
    if "unload_reload" in results:
        u = results["unload_reload"]
        out.append(
            f"unload/reload: reload took {u['reload_took_s']:.2f} s; "
            + "; ".join(f"{n}: {s['answered']}/{s['sent']} answered" for n, s in u["streams"].items())
        )
    if "kill_stub" in results:
        k = results["kill_stub"]
        w = k["watchdog"][0] if k["watchdog"] else None
        out.append(
            f"stub kill: watchdog {k['action']} took {_fmt(w['took_s'] if w else None, 2)} s; clients saw the "
            f"first answer {_fmt(k['recovery_s'], 2)} s after the kill"
        )
    if "restart" in results:
        r = results["restart"]
        out.append(
            f"restart: stop {r['stop_took_s']:.1f} s, start {r['start_took_s']:.1f} s, "
            f"{r['requests_across_the_restart']} requests in flight across it, "
            f"longest {r['max_latency_s']:.1f} s; "
            "the typed client's retry backoff doubles without a cap, so clients resume up to one backoff after "
            "the server is ready"
        )
    for key in ("crash_SIGSEGV", "crash_SIGABRT"):
        if key in results:
            r = results[key]
            out.append(
                f"{key.removeprefix('crash_')}: tritonserver died {r['stop_took_s']:.2f} s after the signal, served "
                f"again {r['server_recovery_s']:.1f} s after it (supervisor restart); clients' first answer after "
                f"{_fmt(r['recovery_s'], 1)} s; {r['answered']} of {r['sent']} requests answered"
            )
    return out


def soak_table(result: dict[str, object]) -> tuple[str, str]:
    """Per-window rows and the verdict lines of a soak: (text, markdown)."""
    columns = ("window", "t s", "sent", "answered", "rejected", "errors", "lost", "p50 ms", "p99 ms", "RSS MB")
    table = [
        (
            str(w["window"]),
            f"{w['t_s']:.0f}",
            str(w["sent"]),
            str(w["answered"]),
            str(w["rejected"]),
            str(w["errors"]),
            str(w["lost"]),
            _fmt(w["p50_ms"]),
            _fmt(w["p99_ms"]),
            f"{w['rss_mb']:.0f}",
        )
        for w in result["windows"]
    ]
    cfg = result["config"]
    summary = [
        f"capacity {result['capacity_rps']:.1f} req/s; load {cfg['load_factor']:.0%} = {result['rate_per_s']:.1f} "
        f"req/s for {cfg['duration_s']:.0f} s after {cfg['warmup_s']:.0f} s of warm-up",
        f"server RSS {result['rss_baseline_mb']:.0f} -> {result['rss_end_mb']:.0f} MB ({result['rss_growth']:+.2%}, "
        f"bound {cfg['max_rss_growth']:.0%}); p50 drift {_fmt(result['p50_drift'], 3)}x (bound "
        f"{cfg['max_p50_drift']}x), p99 drift {_fmt(result['p99_drift'], 3)}x (bound {cfg['max_p99_drift']}x)",
        "verdicts: " + _passed(result["verdicts"]),
    ]
    return text_table(table, columns) + "\n\n" + "\n".join(summary), markdown_table(
        table, columns
    ) + "\n\n" + "\n".join(f"- {s}" for s in summary)


def plot_faults(results: dict[str, dict[str, object]], path: Path) -> Path | None:
    """Answered and failed requests per half second in each fault run, with the fault's events marked."""
    keys = ("unload_reload", "kill_stub", "restart", "crash_SIGSEGV", "crash_SIGABRT")
    runs = [results[k] for k in keys if k in results]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 2.4 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        for name, timeline in run["timelines"].items():
            t = [row[0] for row in timeline]
            ax.plot(t, [row[1] for row in timeline], label=f"{name}: answered")
            ax.plot(t, [row[2] for row in timeline], linestyle="--", label=f"{name}: failed")
        for event, at in run["events_s"].items():
            ax.axvline(at, color="gray", linestyle=":")
            ax.text(at, ax.get_ylim()[1] * 0.9, event, fontsize=7, rotation=90, va="top")
        ax.set_title(f"{run['fault']}: recovery {_fmt(run['recovery_s'], 2)} s", fontsize=9)
        ax.set_ylabel("requests / 0.5 s")
        ax.legend(fontsize=6, loc="upper right")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(out: Path, name: str, results: dict[str, object], markdown: str) -> tuple[Path, Path]:
    """`<name>.json` and `<name>.md` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md_path.write_text(markdown + "\n")
    return json_path, md_path
