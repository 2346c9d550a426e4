"""The markdown report of a profile result (`runner.run_profile`), every number taken from the result dict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .roofline import RooflinePoint, why

FILE_NOTES = {
    "profile.json": "every number of this run (config, peaks, timings, roofline points, operators, server, NVML)",
    "report.md": "this report",
    "roofline.png": "roofline: each stage and batch size as a point",
    "throughput_vs_batch.png": "sequences/s per stage against batch size",
    "memory_vs_batch.png": "peak activation memory per stage against batch size",
    "latency_per_stage.png": "time per stage at the profiler's batch size",
    "latency_per_hop.png": "server-side queue and compute time per hop",
    "nvml_timeline.png": "GPU utilization, power, temperature, memory over the run",
    "tritonserver.log": "log of the server started for the server-side part",
}


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _short(name: str, width: int = 70) -> str:
    """An operator or CUDA kernel name cut to `width` characters (templated kernel names run to hundreds)."""
    name = name.replace("|", "/")
    return name if len(name) <= width else name[: width - 3] + "..."


def _note(name: str) -> str:
    if name.startswith("ops/"):
        return "top operators by self time (torch.profiler), CSV"
    if name.startswith("traces/"):
        return "Chrome trace (chrome://tracing or ui.perfetto.dev)"
    return FILE_NOTES.get(name, "")


def _bound_summary(points: Sequence[Mapping]) -> list[str]:
    """Per (size, stage): which batch sizes are memory- and which compute-bound."""
    lines = []
    keys = list(dict.fromkeys((p["size"], p["stage"]) for p in points))
    for size, stage in keys:
        rows = sorted((p for p in points if (p["size"], p["stage"]) == (size, stage)), key=lambda p: p["batch"])
        mem = [str(p["batch"]) for p in rows if p["bound"] == "memory"]
        comp = [str(p["batch"]) for p in rows if p["bound"] == "compute"]
        parts = []
        if mem:
            parts.append(f"memory-bound at batch {', '.join(mem)}")
        if comp:
            parts.append(f"compute-bound at batch {', '.join(comp)}")
        lines.append(f"- **{size} stage {stage}** (T={rows[0]['tokens']}): {'; '.join(parts)}.")
    return lines


def markdown(result: Mapping) -> str:
    """The report: run facts, files, latency/throughput/memory, roofline verdicts, operators, server hops, NVML."""
    cfg, dev, peaks = result["config"], result["device"], result["peaks"]
    dtype = cfg["dtype"]
    roof, measured = peaks["roof"], peaks["measured"]
    lines = [f"# Profile: {', '.join(cfg['sizes'])} on {dev['name']} ({dev['torch_device']}, {dtype})", ""]
    lines += [
        f"torch {dev['torch']}, {dev['threads']} threads, Python {dev['python']}; "
        f"export `{result['export']['dir']}`; {result['seconds']:.0f} s.",
        "",
    ]
    la = result.get("load_average")
    if la:
        busy = max(la["start"][0], la["end"][0]) > la["cpus"]
        lines += [
            f"Load average (1 min) {la['start'][0]:.1f} at the start and {la['end'][0]:.1f} after the offline "
            f"sweep on {la['cpus']} CPUs"
            + (
                f": above the CPU count (this run's torch threads add "
                f"{dev['threads']}), so other work shared the cores and CPU "
                "times are inflated."
                if busy
                else "."
            ),
            "",
        ]
    if cfg.get("argv"):
        lines += [f"Command: `python -m adaptive_profiling {' '.join(cfg['argv'])}`", ""]

    lines += ["## Peaks and ridge point", ""]
    lines += _table(
        ("", "FLOP/s", "bytes/s", "ridge FLOP/B", "source"),
        [
            (
                "roof",
                f"{roof['flops_per_s'][dtype] / 1e9:,.1f} G",
                f"{roof['bytes_per_s'] / 1e9:,.1f} G",
                f"{peaks['ridge']:.2f}",
                roof["source"],
            ),
            *(
                [
                    (
                        "measured",
                        f"{measured['flops_per_s'][dtype] / 1e9:,.1f} G",
                        f"{measured['bytes_per_s'] / 1e9:,.1f} G",
                        f"{measured['flops_per_s'][dtype] / measured['bytes_per_s']:.2f}",
                        measured["source"],
                    )
                ]
                if measured != roof
                else []
            ),
        ],
    )
    lines += [
        "",
        "The ridge point is peak FLOP/s / peak bytes/s. A stage call whose arithmetic intensity (analytic "
        "FLOPs / analytic bytes moved, from the export's cost model) is below it cannot use the compute peak "
        "however well it is implemented: it is **memory-bound**. Above it, it is **compute-bound**.",
        "",
    ]

    lines += ["## Files", ""]
    lines += [f"- `{name}`" + (f": {_note(name)}" if _note(name) else "") for name in result["files"]]
    lines.append("")

    off = result["offline"]
    lines += [
        "## Latency, throughput and memory per stage (torch, in process)",
        "",
        "Inputs are full batches of T tokens (every position a real token). Time: median of the timed calls. "
        f"Memory: peak above the start, `{off['timings'][0]['memory_method'] if off['timings'] else ''}`.",
        "",
    ]
    lines += _table(
        ("size", "stage", "batch", "T", "median ms", "p90 ms", "seq/s", "weights MiB", "peak activations MiB"),
        [
            (
                t["size"],
                t["stage"],
                t["batch"],
                t["tokens"],
                f"{t['median_ms']:.2f}",
                f"{t['p90_ms']:.2f}",
                f"{t['samples_per_s']:.1f}",
                f"{t['weights_bytes'] / 2**20:.1f}",
                f"{t['peak_activation_bytes'] / 2**20:.1f}",
            )
            for t in off["timings"]
        ],
    )
    lines += [
        "",
        "![throughput](throughput_vs_batch.png) ![latency per stage](latency_per_stage.png) "
        "![memory](memory_vs_batch.png)",
        "",
    ]

    lines += ["## Roofline: memory-bound or compute-bound", ""]
    lines += _bound_summary(off["roofline"])
    lines += ["", "![roofline](roofline.png)", ""]
    lines += _table(
        ("size", "stage", "batch", "GFLOP", "MB moved", "FLOP/B", "achieved GFLOP/s", "% of roof", "bound", "why"),
        [
            (
                p["size"],
                p["stage"],
                p["batch"],
                f"{p['flops'] / 1e9:.3f}",
                f"{p['bytes'] / 1e6:.1f}",
                f"{p['intensity']:.1f}",
                f"{p['achieved_flops_per_s'] / 1e9:.1f}",
                f"{100 * p['fraction_of_roof']:.0f}%",
                p["bound"],
                why(RooflinePoint(**p)),
            )
            for p in off["roofline"]
        ],
    )
    lines += [
        "",
        "Bytes moved count the stage's weights once per call, every unfused activation read and write, "
        "the T x T attention scores, and the stage's input and output tensors (see "
        "`adaptive_export.manifest.stage_bytes`). Larger batches reuse each weight for more tokens, so "
        "intensity rises with batch size until activations dominate; then it depends on T and the widths "
        "only. '% of roof' is achieved FLOP/s over the attainable roof at that intensity.",
        "",
    ]

    proj = result.get("projections") or []
    if proj:
        devices = list(dict.fromkeys((r["device"], r["dtype"]) for r in proj))
        keys = list(dict.fromkeys((r["size"], r["stage"]) for r in proj))

        def cell(dev: tuple[str, str], key: tuple[str, int]) -> str:
            rows = [r for r in proj if (r["device"], r["dtype"]) == dev and (r["size"], r["stage"]) == key]
            mem = [str(r["batch"]) for r in rows if r["bound"] == "memory"]
            comp = [str(r["batch"]) for r in rows if r["bound"] == "compute"]
            return " / ".join(
                x for x in (f"memory {','.join(mem)}" if mem else "", f"compute {','.join(comp)}" if comp else "") if x
            )

        lines += [
            "### The same stages against datasheet ridge points",
            "",
            "Analytic intensities only (bytes at each dtype's element size), against the table's ridges: "
            + ", ".join(
                f"{d} {t}: {next(r['ridge'] for r in proj if (r['device'], r['dtype']) == (d, t)):.0f} FLOP/B"
                for d, t in devices
            )
            + ". Cells list batch sizes.",
            "",
        ]
        lines += _table(
            ("stage", *(f"{d} {t}" for d, t in devices)),
            [(f"{k[0]} stage {k[1]}", *(cell(d, k) for d in devices)) for k in keys],
        )
        lines += [
            "",
            "Half-precision tensor cores raise the compute peak about 15x over FP32 while the bandwidth "
            "stays: "
            "the ridge moves right and stages that are compute-bound in FP32 become memory-bound; fusing "
            "attention and the feed-forward (fewer activation round trips) is then what raises intensity.",
            "",
        ]

    lines += [f"## Top operators (torch.profiler, batch {cfg['profile_batch']})", ""]
    for o in off["ops"]:
        lines += [f"**{o['size']} stage {o['stage']}** (T={o['tokens']}; `{o['csv']}`, trace `{o['trace']}`)", ""]
        lines += _table(
            ("operator", "calls", "self CPU ms", "self device ms"),
            [
                (_short(r["name"]), r["calls"], f"{r['self_cpu_ms']:.3f}", f"{r['self_device_ms']:.3f}")
                for r in o["rows"][:5]
            ],
        )
        lines.append("")

    lines += ["## Server side: where time goes per hop", ""]
    srv = result.get("server")
    if result.get("server_error"):
        lines += [f"**Failed:** {result['server_error']}", ""]
    elif not srv:
        lines += ["Not run (`--no-server`).", ""]
    else:
        lines += [
            f"Server {srv['url']} ({'started for this run' if srv['started_here'] else 'already running'}), "
            f"metrics {srv['metrics_url']}. Each entry model gets its own window: statistics API and metrics "
            "snapshots before and after a closed-loop load; ms are per request of that model (Triton counts "
            "a batch's time for each request in it).",
            "",
            "![hops](latency_per_hop.png)",
            "",
        ]
        for e in srv["entries"]:
            c = e["client"]
            lines += [
                f"### {e['model']}",
                "",
                f"Client: {c['answered']}/{c['requests']} answered ({c['errors']} errors), batch "
                f"{c['batch_size']}, concurrency {c['concurrency']}: {c['requests_per_s']:.1f} req/s, "
                f"p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms.",
                "",
            ]
            if c.get("first_error"):
                lines += [f"First error: `{c['first_error']}`", ""]
            lines += _table(
                (
                    "hop",
                    "requests",
                    "executions",
                    "req/exec",
                    "queue ms",
                    "compute ms",
                    "metrics requests",
                    "metrics queue ms",
                    "metrics compute ms",
                ),
                [
                    (
                        h["model"] + (" (ensemble: all its steps)" if h.get("kind") == "ensemble" else ""),
                        h["requests"],
                        h["executions"],
                        f"{h['requests_per_execution']:.2f}",
                        f"{h['queue_ms']:.3f}",
                        f"{h['compute_ms']:.3f}",
                        *(
                            (
                                f"{h['metrics']['requests']:.0f}",
                                f"{h['metrics']['queue_ms']:.3f}",
                                f"{h['metrics']['compute_ms']:.3f}",
                            )
                            if "metrics" in h
                            else ("-", "-", "-")
                        ),
                    )
                    for h in e["hops"]
                ],
            )
            hc = e.get("hop_cost")
            if hc and hc.get("overhead_ms_per_request") is not None:
                per_hop = hc["overhead_ms_per_hop"]
                lines += [
                    "",
                    f"BLS orchestration in `{hc['cascade']}`: {hc['hops_per_request']:.2f} stage calls "
                    f"per request; its compute {hc['cascade_compute_ms_per_request']:.3f} ms minus its stages' "
                    f"{hc['stages_ms_per_request']:.3f} ms = {hc['overhead_ms_per_request']:.3f} ms per request"
                    + (f", {per_hop:.3f} ms per hop." if per_hop is not None else "."),
                ]
            if not e["metrics_available"]:
                lines += ["", f"Metrics side skipped: {e.get('metrics_error')}"]
            lines.append("")

    lines += ["## NVML", ""]
    nv = result["nvml"]
    if nv.get("samples"):
        lines += [
            f"{nv['count']} samples of {nv['device']} every {nv['interval_s']} s over the offline and server parts.",
            "",
        ]
        lines += _table(
            ("field", "mean", "max"), [(k, f"{v['mean']:.1f}", f"{v['max']:.1f}") for k, v in nv["stats"].items()]
        )
        lines += ["", "![nvml](nvml_timeline.png)", ""]
    else:
        lines += [f"No GPU sampling: {nv.get('reason')}.", ""]
    return "\n".join(lines) + "\n"
