"""Thin CLI: `python -m adaptive_bench.reliability <run|soak> [--repo DIR] [--export DIR] [--out DIR] ...`.

run   bad inputs, overload, the three faults (and the known Triton crash, on a throwaway server); prints one
      table and writes results/reliability/reliability.{json,md} and faults.png
soak  windows at a share of capacity for --time; prints the window table and writes soak.{json,md,png}
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from adaptive_core.config import PATHS

DEFAULT_OUT = PATHS.results / "reliability"


def parse_duration(text: str) -> float:
    """'600', '90s', '10m', '1h' -> seconds.

    Raises:
        argparse.ArgumentTypeError: not a duration.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 600, 90s, 10m or 1h, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adaptive_bench.reliability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("run", "soak"))
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--repo", type=Path, default=PATHS.repository, help="model repository to serve")
    io.add_argument(
        "--export",
        type=Path,
        default=PATHS.export_dir,
        help="export build: its evaluation mix is the ordinary traffic (built-in sentences without one)",
    )
    io.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    run = parser.add_argument_group("run")
    run.add_argument("--cases", type=int, default=500, help="hypothesis cases on top of the hand-picked ones")
    run.add_argument("--overload-s", type=float, default=60.0, help="seconds of overload")
    run.add_argument("--load-factor", type=float, default=None, help="overload: 3 (x capacity); soak: 0.7")
    run.add_argument("--texts-per-request", type=int, default=1, help="overload requests' batch")
    run.add_argument("--skip-faults", action="store_true", help="only bad inputs and overload")
    run.add_argument("--no-known-crashers", action="store_true", help="skip the known Triton 2.51 crash check")
    soak = parser.add_argument_group("soak")
    soak.add_argument("--time", type=parse_duration, default=600.0, help="measured soak time (600, 90s, 10m)")
    soak.add_argument(
        "--window", type=parse_duration, default=None, help="window length (default time / 10, at most 60 s)"
    )
    return parser


def _print_progress(row: dict[str, object]) -> None:
    p50 = row["p50_ms"]
    print(
        f"  window {row['window']}: {row['sent']} sent, {row['answered']} answered, p50 "
        f"{'-' if p50 is None else f'{p50:.1f}'} ms, RSS {row['rss_mb']:.0f} MB",
        flush=True,
    )


def _run(args: argparse.Namespace) -> int:
    from adaptive_bench.reliability import faults, overload, report, suite
    from adaptive_bench.reliability.target import fault_targets, load_texts
    from adaptive_ops.server import TritonServer

    texts = load_texts(args.export)
    targets = fault_targets(args.repo)
    results: dict[str, dict[str, object]] = {}
    logs = args.out / "logs"
    started = time.time()
    with TritonServer.on_free_ports(args.repo, log_path=logs / "tritonserver.log") as server:
        print(f"bad inputs: hand-picked + {args.cases} hypothesis cases ...", flush=True)
        results["cases"] = suite.run_cases(server, generated=args.cases).summary()
        print(f"overload: {args.load_factor or 3:g}x capacity for {args.overload_s:g} s ...", flush=True)
        config = overload.OverloadConfig(
            duration_s=args.overload_s, load_factor=args.load_factor or 3.0, texts_per_request=args.texts_per_request
        )
        results["overload"] = overload.run_overload(server, texts, config)
        if not args.skip_faults:
            print(f"fault: stub of {targets.tokenizer} killed under load ...", flush=True)
            results["kill_stub"] = faults.kill_stub(server, targets.tokenizer)
            print("fault: server restarted under load ...", flush=True)
            results["restart"] = faults.restart(server)
            for sig in (signal.SIGSEGV, signal.SIGABRT):
                print(
                    f"fault: tritonserver killed by {sig.name} under load; the supervisor restarts it ...", flush=True
                )
                results[f"crash_{sig.name}"] = faults.crash(server, sig)
    if not args.skip_faults:
        print(f"fault: {targets.stage} unloaded and reloaded under load (explicit model control) ...", flush=True)
        with TritonServer.on_free_ports(
            args.repo, log_path=logs / "tritonserver-explicit.log", model_control="explicit", load_models=["*"]
        ) as server:
            results["unload_reload"] = faults.unload_reload(server, targets)
    if not args.no_known_crashers:
        print("known Triton 2.51 crash, on a throwaway server ...", flush=True)
        with TritonServer.on_free_ports(args.repo, log_path=logs / "tritonserver-crash.log") as server:
            results["known_crashers"] = suite.run_known_crashers(server)
    table = report.rows(results)
    notes = report.notes(results)
    print("\n" + report.text_table(table) + "\n\n" + "\n".join(notes))
    markdown = "\n".join(
        [
            "# make reliability",
            "",
            f"Repository `{args.repo}`, {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} "
            f"UTC, {time.time() - started:.0f} s.",
            "",
            report.markdown_table(table),
            "",
            *(f"- {n}" for n in notes),
        ]
    )
    json_path, md_path = report.write(
        args.out, "reliability", {"repo": str(args.repo), **results, "provenance": args.provenance}, markdown
    )
    plot = report.plot_faults(results, args.out / "faults.png")
    print(f"\nwrote {json_path}, {md_path}" + (f", {plot}" if plot else ""))
    failed = [r[0] for r in table if not (r[-1].startswith("yes") or r[-1].startswith("still crashes"))]
    return 1 if failed else 0


def _soak(args: argparse.Namespace) -> int:
    from adaptive_bench.reliability import report, soak
    from adaptive_bench.reliability.target import load_texts
    from adaptive_ops.server import TritonServer

    window = args.window or min(60.0, max(args.time / 10, 5.0))
    config = dataclasses.replace(
        soak.SoakConfig(), duration_s=args.time, window_s=window, load_factor=args.load_factor or 0.7
    )
    texts = load_texts(args.export)
    print(
        f"soak: {config.load_factor:.0%} of capacity for {config.duration_s:.0f} s in {window:.0f} s windows "
        f"(+{config.warmup_s:.0f} s warm-up) on {args.repo} ...",
        flush=True,
    )
    with TritonServer.on_free_ports(args.repo, log_path=args.out / "logs" / "tritonserver-soak.log") as server:
        result = soak.run_soak(server, texts, config, progress=_print_progress)
    text, markdown = report.soak_table(result)
    print("\n" + text)
    label = "" if config.duration_s >= 600 else f" (short run: {config.duration_s:.0f} s, not the full 10 minutes)"
    json_path, md_path = report.write(
        args.out,
        "soak",
        {"repo": str(args.repo), **result, "provenance": args.provenance},
        f"# make soak{label}\n\nRepository `{args.repo}`.\n\n{markdown}",
    )
    plot = soak.plot(result, args.out / "soak.png")
    print(f"\nwrote {json_path}, {md_path}, {plot}")
    return 0 if all(result["verdicts"].values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from adaptive_bench.provenance import provenance
    from adaptive_ops.server import ServerError  # after parsing: --help stays instant

    args.provenance = provenance("python -m adaptive_bench.reliability", argv)

    if not (args.repo / "adaptive" / "config.pbtxt").is_file():
        print(
            f"error: {args.repo} is not a generated repository (no adaptive/config.pbtxt); run `make repository`",
            file=sys.stderr,
        )
        return 1
    try:
        return _run(args) if args.command == "run" else _soak(args)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
