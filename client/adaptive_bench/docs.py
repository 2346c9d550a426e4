"""Number blocks of the README and docs/, written from results/ (`make docs`), and the check that they are current.

A page holds generated blocks between marker comments:

    <!-- generated:bench-exit -->
    ... written by this module, never by hand ...
    <!-- /generated:bench-exit -->

`python -m adaptive_bench.docs` rewrites every block from the JSON (and CSV) under results/; `--check` rewrites
nothing and exits 1 when a block differs from what the results give, when a block name is unknown, or when a page is
over its size limit (README 12 KB, docs pages 20 KB; lab notes under docs/lab-notes/ are history: never
regenerated, no limit). tests/unit/test_docs.py calls `check()`.

Each block ends with where its numbers came from: the file, the commit, the date and the machine from the JSON's
`provenance` (`adaptive_bench.provenance`). A JSON written before provenance existed gets the commit and date that
last changed it in git, and "machine: not recorded": nothing is invented.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from adaptive_bench.provenance import machine_text
from adaptive_core.config import PROJECT_ROOT

README = "README.md"
DOCS_DIR = "docs"
LAB_NOTES = "docs/lab-notes"
README_MAX_BYTES = 12 * 1024
DOCS_PAGE_MAX_BYTES = 20 * 1024
MARKER = re.compile(r"<!-- generated:(?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)<!-- /generated:(?P=name) -->", re.S)
ANY_MARKER = re.compile(r"<!-- /?generated:([^ ]*) -->")


@dataclass(frozen=True)
class Source:
    """One results file and where it came from.

    Args:
        path: path relative to the repository root.
        data: parsed JSON (None for a CSV or a missing file).
        commit: short commit of the run (or of the git commit that last changed a file without provenance).
        date: ISO date.
        machine: one line, "not recorded" when the file has no provenance.
        recorded: True when the file carries its own provenance.
    """

    path: str
    data: object
    commit: str
    date: str
    machine: str
    recorded: bool

    def line(self) -> str:
        how = "" if self.recorded else " (no provenance in the file: the commit that last changed it)"
        return f"`{self.path}`: commit {self.commit}{how}, {self.date}, machine: {self.machine}."


def _git_last_change(root: Path, rel: str) -> tuple[str, str] | None:
    """(short commit, commit date) of the commit that last changed `rel`; None outside git or for an untracked file.

    The hash is asked for at 7 characters: git's automatic length grows with the object count of a clone, and the
    docs must read the same in every clone.
    """
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--abbrev=7", "--format=%h %cs", "--", rel],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    return (parts[0], parts[1]) if out.returncode == 0 and len(parts) == 2 else None


class Results:
    """Reads results/ once per run; every block asks it for its sources."""

    def __init__(self, root: Path = PROJECT_ROOT) -> None:
        self.root = root

    @functools.cache  # noqa: B019 - one Results per generation run; the cache dies with it
    def source(self, rel: str, provenance_from: str | None = None) -> Source | None:
        """`rel` parsed (JSON) or located (other files); None when it does not exist.

        Args:
            rel: the results file.
            provenance_from: another JSON whose `provenance` covers `rel` (perf_analyzer CSVs have none of their
                own; the run's `classes.json`/`sweep.json` does), used when it exists.
        """
        path = self.root / rel
        if not path.is_file():
            return None
        data = json.loads(path.read_text()) if path.suffix == ".json" else None
        origin = data.get("provenance") if isinstance(data, dict) else None
        if origin is None and provenance_from:
            other = self.source(provenance_from)
            if other is not None and other.recorded:
                return Source(rel, data, other.commit, other.date, other.machine, True)
        if origin is not None:
            return Source(
                rel,
                data,
                origin.get("commit") or "not recorded",
                (origin.get("date") or "not recorded")[:10],
                machine_text(origin.get("machine")),
                True,
            )
        last = _git_last_change(self.root, rel)
        commit, date = last if last else ("not recorded", "not recorded")
        return Source(rel, data, commit, date, "not recorded", False)

    def csv_rows(self, rel: str) -> list[dict[str, str]]:
        with (self.root / rel).open() as f:
            return list(csv.DictReader(f))


def _missing(rel: str, make: str) -> str:
    return f"No run recorded: `{rel}` does not exist (`{make}` writes it)."


def _demote(markdown: str, levels: int = 1) -> str:
    """Drop the results page's own `# title` and push its other headings `levels` deeper (under the page's)."""
    lines = markdown.strip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
        while lines and not lines[0].strip():
            lines = lines[1:]
    return "\n".join(("#" * levels + line) if line.startswith("#") else line for line in lines)


def _with_source(body: str, *sources: Source) -> str:
    """`body` and one "Source:" line per provenance (files that share one are named together)."""
    groups: dict[tuple[str, str, str, bool], list[str]] = {}
    for s in sources:
        groups.setdefault((s.commit, s.date, s.machine, s.recorded), []).append(s.path)
    lines = []
    for (commit, date, machine, recorded), paths in groups.items():
        first = Source(paths[0], None, commit, date, machine, recorded).line()
        names = ", ".join(f"`{p}`" for p in paths)
        lines.append("Source: " + names + first[len(f"`{paths[0]}`") :])
    return body.rstrip("\n") + "\n\n" + "\n".join(lines)


# --- blocks ------------------------------------------------------------------------------------------------------


def _module_block(results: Results, rel: str, make: str, render: Callable[[dict], str]) -> str:
    src = results.source(rel)
    if src is None:
        return _missing(rel, make)
    return _with_source(_demote(render(src.data)), src)  # type: ignore[arg-type]


def block_bench_exit(results: Results) -> str:
    from adaptive_bench import exit_bench

    return _module_block(results, "results/bench-exit/results.json", "make bench-exit", exit_bench.markdown)


def block_bench_route(results: Results) -> str:
    from adaptive_bench import route_bench

    return _module_block(results, "results/bench-route/results.json", "make bench-route", route_bench.markdown)


def block_bench_classes(results: Results) -> str:
    from adaptive_bench import classes_bench

    return _module_block(results, "results/bench-classes/results.json", "make bench-classes", classes_bench.markdown)


def block_batching(results: Results) -> str:
    from adaptive_bench import batching

    return _module_block(
        results, "results/batching/batching.json", "python -m adaptive_bench.batching", batching.markdown
    )


def block_coldstart(results: Results) -> str:
    from adaptive_bench import coldstart

    return _module_block(results, "results/coldstart/results.json", "make bench-coldstart", coldstart.markdown)


def _classes_headline(d: dict) -> dict[str, float]:
    crit, unloaded = d["classes"]["critical"], d["unloaded"]["critical"]
    return {
        "load_factor": d["config"]["load_factor"],
        "rate": d["open_loop"]["rate_per_s"],
        "capacity": d["capacity_sps"],
        "p99": crit["p99_ms"],
        "unloaded_p99": unloaded["p99_ms"],
        "ratio": crit["p99_ms"] / unloaded["p99_ms"],
        "rejected": crit["rejected"],
        "sent": crit["sent"],
    }


GPU_HOST_RUNS = "results/gpu/h200-2026-11-28/cpu2-current"


def block_bench_classes_gpu_host(results: Results) -> str:
    """Every bench-classes run kept from the 2-core server on the GPU host, one row each."""
    folder = results.root / GPU_HOST_RUNS
    runs = sorted(p.parent.name for p in folder.glob("*/results.json")) if folder.is_dir() else []
    if not runs:
        return _missing(f"{GPU_HOST_RUNS}/*/results.json", "scripts/gpu_run.sh classes-cpu")
    lines = [
        "| run | capacity samples/s | rate req/s | critical rejected | critical p99 / unloaded p99 ms | ratio | "
        "sensitive rejected | send lag p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sources = []
    for run in runs:
        src = results.source(f"{GPU_HOST_RUNS}/{run}/results.json")
        d = src.data  # type: ignore[union-attr]
        h = _classes_headline(d)
        lines.append(
            f"| {run} | {h['capacity']:.1f} | {h['rate']:.0f} | {h['rejected']} of {h['sent']} | "
            f"{h['p99']:.1f} / {h['unloaded_p99']:.1f} | {h['ratio']:.2f}x | "
            f"{d['classes']['sensitive']['rejected']} | {d['open_loop']['send_lag_p99_ms']:.1f} |"
        )
        sources.append(src)
    return _with_source("\n".join(lines), *sources)


def block_capacity_plan(results: Results) -> str:
    """The sizing example of operations.md, from the latest bench-classes run."""
    src = results.source("results/bench-classes/results.json")
    if src is None:
        return _missing("results/bench-classes/results.json", "make bench-classes")
    d = src.data
    h = _classes_headline(d)  # type: ignore[arg-type]
    rho, peak = 0.7, 500
    per_replica = rho * h["capacity"]
    replicas = -(-peak // per_replica)
    sensitive = d["classes"]["sensitive"]  # type: ignore[index]
    batch = d["classes"]["batch"]  # type: ignore[index]
    body = "\n".join(
        [
            "| quantity | value |",
            "|---|---|",
            f"| capacity C of one replica (closed loop, batch class) | {h['capacity']:.1f} samples/s |",
            f"| critical p99, unloaded | {h['unloaded_p99']:.1f} ms |",
            f"| offered in the overload run | {h['rate']:.0f} req/s ({h['load_factor']:g}x C) |",
            f"| critical p99 there | {h['p99']:.1f} ms ({h['ratio']:.2f}x unloaded), {h['rejected']} rejected |",
            f"| sensitive shed there | {sensitive['rejected'] / sensitive['sent']:.1%} |",
            f"| batch p50 there | {batch['p50_ms'] / 1e3:.1f} s (the backlog grows without bound past C) |",
            f"| example: R = {peak} req/s at rho = {rho:g} | ceil({peak} / {per_replica:.1f}) = {replicas:.0f} "
            "replicas |",
        ]
    )
    return _with_source(body, src)


def _perf_table(results: Results, files: Sequence[tuple[str, str]], key: str, provenance_from: str) -> str:
    lines = [f"| model or class | {key.lower()} | infer/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    sources = []
    for label, rel in files:
        src = results.source(rel, provenance_from)
        if src is None:
            continue
        sources.append(src)
        for row in sorted(results.csv_rows(rel), key=lambda r: float(r[key])):
            lines.append(
                f"| {label} | {float(row[key]):g} | {float(row['Inferences/Second']):.1f} | "
                f"{float(row['p50 latency']) / 1e3:.1f} | {float(row['p99 latency']) / 1e3:.1f} |"
            )
    if not sources:
        return _missing(files[0][1], "make perf-sweep / make perf-classes")
    return _with_source("\n".join(lines), *sources)


def block_perf_classes(results: Results) -> str:
    files = [(c, f"results/perf/class_{c}.csv") for c in ("critical", "sensitive", "batch")]
    return _perf_table(results, files, "Concurrency", "results/perf/classes.json")


def block_perf_sweep(results: Results) -> str:
    folder = results.root / "results" / "perf"
    files = [
        (p.name.removesuffix("_concurrency.csv"), f"results/perf/{p.name}")
        for p in sorted(folder.glob("*_concurrency.csv"))
    ]
    if not files:
        return _missing("results/perf/<model>_concurrency.csv", "make perf-sweep")
    return _perf_table(results, files, "Concurrency", "results/perf/sweep.json")


def block_priority_check(results: Results) -> str:
    src = results.source("results/perf/priority_check.json")
    if src is None:
        return _missing("results/perf/priority_check.json", "make perf-classes")
    d = src.data
    lines = ["| priority and queue timeout seen in the server log | requests |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in d["counts"].items()]  # type: ignore[index]
    return _with_source("\n".join(lines), src)


def block_load(results: Results) -> str:
    src = results.source("results/load/verdicts.json")
    if src is None:
        return _missing("results/load/verdicts.json", "make load")
    lines = ["| class | requests | failures | p50 ms | p99 ms | SLA p99 ms | pass |", "|---|---|---|---|---|---|---|"]
    for name, v in src.data.items():  # type: ignore[union-attr]
        if name == "provenance":
            continue
        lines.append(
            f"| {name} | {v['requests']} | {v['failures']} | {v['p50_ms']:.0f} | {v['p99_ms']:.0f} | "
            f"{v['sla_p99_ms']:.0f} | {'yes' if v['pass'] else 'no'} |"
        )
    return _with_source("\n".join(lines), src)


def block_profile(results: Results) -> str:
    src = results.source("results/profile/cpu/profile.json")
    if src is None:
        return _missing("results/profile/cpu/profile.json", "make profile")
    d: dict = src.data  # type: ignore[assignment]
    peaks = d["peaks"]["roof"]
    dtype = d["config"]["dtype"]
    lines = [
        f"Device: {d['device']['name']} ({d['device']['threads']} threads), {dtype}; roof "
        f"{peaks['flops_per_s'][dtype] / 1e9:.0f} GFLOP/s and {peaks['bytes_per_s'] / 1e9:.0f} GB/s "
        f"({peaks['source'].split(':')[0]}), ridge {d['peaks']['ridge']:.1f} FLOP/B; load average at start "
        f"{d['load_average']['start'][0]:.1f} on {d['load_average']['cpus']} CPUs.",
        "",
        "| size | stage | batch | GFLOP | MB moved | FLOP/B | achieved GFLOP/s | % of roof | bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in d["offline"]["roofline"]:
        if p["stage"] != 1:
            continue
        lines.append(
            f"| {p['size']} | {p['stage']} | {p['batch']} | {p['flops'] / 1e9:.3f} | {p['bytes'] / 1e6:.1f} | "
            f"{p['intensity']:.1f} | {p['achieved_flops_per_s'] / 1e9:.1f} | {p['fraction_of_roof']:.0%} | "
            f"{p['bound']} |"
        )
    for entry in (d.get("server") or {}).get("entries", []):
        c = entry["client"]
        lines += [
            "",
            f"`{entry['model']}` per hop ({c['requests']} requests, concurrency {c['concurrency']}):",
            "",
            "| model | requests | queue ms | compute ms |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {h['model']} | {h['requests']} | {h['queue_ms']:.2f} | {h['compute_ms']:.2f} |"
            for h in entry["hops"]
            if h["kind"] != "ensemble"
        ]
    return _with_source("\n".join(lines), src)


def block_reliability(results: Results) -> str:
    from adaptive_bench.reliability import report

    src = results.source("results/reliability/reliability.json")
    if src is None:
        return _missing("results/reliability/reliability.json", "make reliability")
    d: dict = src.data  # type: ignore[assignment]
    body = "\n".join([report.markdown_table(report.rows(d)), "", *(f"- {n}" for n in report.notes(d))])
    return _with_source(body, src)


def block_soak(results: Results) -> str:
    from adaptive_bench.reliability import report

    src = results.source("results/reliability/soak.json")
    if src is None:
        return _missing("results/reliability/soak.json", "make soak")
    _, markdown = report.soak_table(src.data)  # type: ignore[arg-type]
    return _with_source(_demote(markdown), src)


def block_demo(results: Results) -> str:
    src = results.source("results/demo/demo.json")
    if src is None:
        return _missing("results/demo/demo.json", "make demo")
    return _with_source("```\n" + src.data["report"].rstrip("\n") + "\n```", src)  # type: ignore[index]


def block_latency_classes(results: Results) -> str:
    """The class table of architecture.md, from the one config (not a measurement: it cannot drift from the code)."""
    from adaptive_core.config import LATENCY_CLASSES

    lines = ["| class | priority | queue timeout | p99 budget of the load-test verdicts |", "|---|---|---|---|"]
    for c in LATENCY_CLASSES.values():
        timeout = "none (waits)" if c.queue_timeout_us == 0 else f"{c.queue_timeout_us / 1e3:g} ms"
        lines.append(f"| `{c.name}` | {c.priority} | {timeout} | {c.sla_p99_ms:g} ms |")
    return "\n".join([*lines, "", "Source: `adaptive_core/config.py` (`LATENCY_CLASSES`)."])


def _summary_rows(results: Results) -> list[tuple[str, str, Source | None]]:
    rows: list[tuple[str, str, Source | None]] = []

    def add(what: str, rel: str, headline: Callable[[dict], str]) -> None:
        src = results.source(rel)
        rows.append((what, headline(src.data) if src else "not run yet", src))  # type: ignore[arg-type]

    def demo(d: dict) -> str:
        load = d.get("load_average")
        busy = f"; host load average {load['start']:.1f} on {load['cpus']} CPUs" if load else ""
        return (
            f"`adaptive` {d['throughput_ratio']:.2f}x the throughput of `{d['baseline']}`, accuracy "
            f"{d['accuracy_diff_points']:+.2f} points ({d['texts']} texts, three classes at once{busy})"
        )

    def bench_exit(d: dict) -> str:
        comp = d["comparison"]
        ratios = [v["throughput_ratio"] for v in comp.values()]
        diff = {round(100 * v["accuracy_diff"], 2) for v in comp.values()}
        acc = f"{diff.pop():+.2f} points" if len(diff) == 1 else "accuracy varies"
        return (
            f"`{d['entry']}` / `{d['reference']}` throughput {min(ratios):.2f}-{max(ratios):.2f}x at concurrency "
            f"{', '.join(comp)}; accuracy {acc}"
        )

    def bench_classes(d: dict) -> str:
        h = _classes_headline(d)
        met = "met" if all(d["verdicts"].values()) else "missed"
        return (
            f"at {h['load_factor']:g}x capacity: critical p99 / unloaded p99 {h['p99']:.1f} / "
            f"{h['unloaded_p99']:.1f} ms = {h['ratio']:.2f}x (target <= {d['critical_p99_factor']:g}x), "
            f"{h['rejected']} of {h['sent']} critical rejected: {met}"
        )

    def bench_route(d: dict) -> str:
        return (
            f"router + early exit: {d['measured_cost_ratio']:.2f}x less server time per text than `large_full` "
            f"({d['flops_cost_ratio']:.2f}x fewer FLOPs), {d['accuracy_kept']:.1%} of its accuracy; router "
            f"overhead p99 {d['router_overhead']['p99_ms']:.2f} ms"
        )

    def batching(d: dict) -> str:
        c, lat = d["complexity"], d["latency"]["per_class"]
        return (
            f"complexity-aware {c['helper']['texts_per_s'] / c['naive']['texts_per_s']:.2f}x naive throughput; "
            f"latency-aware critical p99 {lat['helper']['critical']['p99_done_ms']:.0f} ms against "
            f"{lat['naive']['critical']['p99_done_ms']:.0f} ms naive"
        )

    def coldstart(d: dict) -> str:
        warm = d["variants"]["warm"]["classes"]
        worst = max(max(r["p50_ratio"], r["p99_ratio"]) for r in warm.values())
        cuts = sum(r["first_cuts"] for r in warm.values())
        return (
            f"first {d['first']} requests per class after a fresh start within {worst:.2f}x of the next "
            f"{d['requests']} (target <= {d['ratio_target']:g}x), {cuts} cut short; warm-up adds "
            f"{d['added_startup_s']:.1f} s to the time to ready"
        )

    def reliability(d: dict) -> str:
        from adaptive_bench.reliability import report

        rows = report.rows(d)
        known = [r for r in rows if r[-1].startswith("still crashes")]  # the upstream crash, kept to see it fixed
        drills = [r for r in rows if r not in known]
        passed = sum(r[-1].startswith("yes") for r in drills)
        o = d["overload"]
        return (
            f"{passed} of {len(drills)} drills pass"
            + (f" ({len(known)} known Triton 2.51 crash still crashes)" if known else "")
            + f"; 3x-capacity overload: {o['sent']} sent, {o['lost']} lost, {o['errors']} untyped errors"
        )

    def soak(d: dict) -> str:
        return (
            f"{d['config']['duration_s']:.0f} s at {d['config']['load_factor']:.0%} of capacity: RSS "
            f"{d['rss_growth']:+.2%}, p99 drift {d['p99_drift']:.2f}x (bound {d['config']['max_p99_drift']:g}x)"
        )

    def load(d: dict) -> str:
        classes = {k: v for k, v in d.items() if k != "provenance"}
        ok = sum(v["pass"] for v in classes.values())
        return f"locust, {ok} of {len(classes)} classes within their p99 SLA"

    add("[demo](#what-make-demo-prints)", "results/demo/demo.json", demo)
    add("[bench-exit](docs/benchmarks.md#make-bench-exit)", "results/bench-exit/results.json", bench_exit)
    add("[bench-classes](docs/benchmarks.md#make-bench-classes)", "results/bench-classes/results.json", bench_classes)
    add("[bench-route](docs/benchmarks.md#make-bench-route)", "results/bench-route/results.json", bench_route)
    add("[batching](docs/benchmarks.md#batching-helpers)", "results/batching/batching.json", batching)
    add("[coldstart](docs/operations.md#make-bench-coldstart)", "results/coldstart/results.json", coldstart)
    add("[reliability](docs/reliability.md#make-reliability)", "results/reliability/reliability.json", reliability)
    add("[soak](docs/reliability.md#make-soak)", "results/reliability/soak.json", soak)
    add("[load](docs/perf-tools.md#make-load)", "results/load/verdicts.json", load)
    return rows


def block_summary(results: Results) -> str:
    lines = ["| benchmark | headline | date | machine | commit |", "|---|---|---|---|---|"]
    for what, headline, src in _summary_rows(results):
        if src is None:
            lines.append(f"| {what} | {headline} | - | - | - |")
        else:
            commit = src.commit if src.recorded else f"{src.commit}*"
            lines.append(f"| {what} | {headline} | {src.date} | {src.machine} | {commit} |")
    lines += [
        "",
        "\\* no provenance in the file (written before runs recorded it): the commit that last changed it in git.",
    ]
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[Results], str]] = {
    "summary": block_summary,
    "demo": block_demo,
    "latency-classes": block_latency_classes,
    "bench-exit": block_bench_exit,
    "bench-route": block_bench_route,
    "bench-classes": block_bench_classes,
    "bench-classes-gpu-host": block_bench_classes_gpu_host,
    "capacity-plan": block_capacity_plan,
    "batching": block_batching,
    "perf-classes": block_perf_classes,
    "perf-sweep": block_perf_sweep,
    "priority-check": block_priority_check,
    "load": block_load,
    "profile": block_profile,
    "reliability": block_reliability,
    "coldstart": block_coldstart,
    "soak": block_soak,
}


# --- pages -------------------------------------------------------------------------------------------------------


def pages(root: Path = PROJECT_ROOT) -> list[Path]:
    """README.md and docs/*.md (lab notes are history, not pages)."""
    return [root / README, *sorted((root / DOCS_DIR).glob("*.md"))]


def size_limit(page: Path, root: Path = PROJECT_ROOT) -> int:
    return README_MAX_BYTES if page == root / README else DOCS_PAGE_MAX_BYTES


def render(text: str, results: Results) -> tuple[str, list[str]]:
    """`text` with every generated block rewritten; also the problems found (unknown or unclosed markers)."""
    problems = []
    names = ANY_MARKER.findall(text)
    closed = {m.group("name") for m in MARKER.finditer(text)}
    for name in names:
        if name not in closed:
            problems.append(f"marker generated:{name} has no matching open/close pair")
        elif name not in BLOCKS:
            problems.append(f"unknown generated block {name!r} (known: {', '.join(BLOCKS)})")

    def repl(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            return m.group(0)
        return f"<!-- generated:{name} -->\n{BLOCKS[name](results).rstrip()}\n<!-- /generated:{name} -->"

    return MARKER.sub(repl, text), sorted(set(problems))


def check(root: Path = PROJECT_ROOT) -> list[str]:
    """Everything that is out of date or out of bounds, one line each (empty: all current). Writes nothing."""
    results = Results(root)
    problems = []
    for page in pages(root):
        rel = page.relative_to(root).as_posix()
        text = page.read_text()
        new, found = render(text, results)
        problems += [f"{rel}: {p}" for p in found]
        old_blocks = {m.group("name"): m.group(0) for m in MARKER.finditer(text)}
        new_blocks = {m.group("name"): m.group(0) for m in MARKER.finditer(new)}
        problems += [
            f"{rel}: block {name!r} is out of date with results/ (run `make docs`)"
            for name in old_blocks
            if old_blocks[name] != new_blocks.get(name)
        ]
        size, limit = len(text.encode()), size_limit(page, root)
        if size > limit:
            problems.append(f"{rel}: {size} bytes, over its limit of {limit}")
    return problems


def write(root: Path = PROJECT_ROOT) -> list[Path]:
    """Rewrite every page's generated blocks; returns the pages that changed.

    Raises:
        ValueError: a page has an unknown or unclosed marker.
    """
    results = Results(root)
    changed = []
    for page in pages(root):
        text = page.read_text()
        new, problems = render(text, results)
        if problems:
            raise ValueError(f"{page.relative_to(root)}: {'; '.join(problems)}")
        if new != text:
            page.write_text(new)
            changed.append(page)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_bench.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a block or a size is off")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="repository root")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.root)
        for p in problems:
            print(p, file=sys.stderr)
        print(f"docs: {'up to date' if not problems else f'{len(problems)} problem(s)'}", file=sys.stderr)
        return 1 if problems else 0
    try:
        changed = write(args.root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for page in changed:
        print(f"rewrote {page.relative_to(args.root)}", file=sys.stderr)
    problems = [p for p in check(args.root) if "over its limit" in p]
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
