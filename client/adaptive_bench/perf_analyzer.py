"""Run perf_analyzer (from `tritonclient[all]==2.51.0`, wrapped by `make setup`) and parse its CSV."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing or failed; the message carries its output."""


def perf_analyzer_binary() -> str:
    """The venv's perf_analyzer wrapper (sets the CUDA runtime library path), else one on PATH.

    Raises:
        PerfAnalyzerError: none found.
    """
    venv_wrapper = Path(sys.prefix) / "bin" / "perf_analyzer"
    found = str(venv_wrapper) if venv_wrapper.exists() else shutil.which("perf_analyzer")
    if not found:
        raise PerfAnalyzerError("perf_analyzer not found; run `make setup`")
    return found


def write_input_data(path: Path, rows: Sequence[Mapping[str, Sequence[str]]]) -> Path:
    """Write perf_analyzer `--input-data` JSON for BYTES inputs: one entry per row, each input a list of strings."""
    data = [{name: {"content": list(values), "shape": [len(values)]} for name, values in row.items()} for row in rows]
    path.write_text(json.dumps({"data": data}))
    return path


def run_perf_analyzer(
    model: str,
    url: str,
    *,
    csv_path: Path,
    protocol: str = "grpc",
    input_data: Path | None = None,
    concurrency: Sequence[int] = (1,),
    request_rate: Sequence[float] = (),
    poisson: bool = False,
    batch_size: int = 1,
    measurement_interval_ms: int = 2000,
    stability_percentage: float = 10.0,
    max_trials: int = 10,
    priority: int | None = None,
    timeout_us: int | None = None,
    extra_args: Sequence[str] = (),
    timeout_s: float = 600.0,
) -> list[dict[str, float]]:
    """Measure `model` and return perf_analyzer's CSV rows as floats.

    Priority and timeout travel as request parameters, which only the gRPC protocol sends.

    Raises:
        PerfAnalyzerError: perf_analyzer failed or wrote no rows; the message carries its output.
        ValueError: priority or timeout asked for over HTTP.
    """
    if (priority is not None or timeout_us is not None) and protocol != "grpc":
        raise ValueError("perf_analyzer sends priority/timeout as request parameters only with protocol='grpc'")
    cmd = [
        perf_analyzer_binary(),
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "-b",
        str(batch_size),
        "-f",
        str(csv_path),
        "--measurement-interval",
        str(measurement_interval_ms),
        "--stability-percentage",
        str(stability_percentage),
        "--max-trials",
        str(max_trials),
    ]
    if request_rate:
        cmd += ["--request-rate-range", ":".join(str(r) for r in _range_args(request_rate))]
        if poisson:
            cmd += ["--request-distribution", "poisson"]
    else:
        cmd += ["--concurrency-range", ":".join(str(c) for c in _range_args(concurrency))]
    if input_data is not None:
        cmd += ["--input-data", str(input_data)]
    if priority is not None:
        cmd += ["--request-parameter", f"priority:{priority}:int"]
    if timeout_us is not None:
        cmd += ["--request-parameter", f"timeout:{timeout_us}:int"]
    cmd += list(extra_args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not csv_path.exists():
        raise PerfAnalyzerError(
            f"perf_analyzer exited {proc.returncode}: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return read_csv(csv_path)


def _range_args(values: Sequence[float]) -> tuple[float, ...]:
    """perf_analyzer ranges are start:end:step; a list of evenly spaced values maps onto one."""
    vals = list(values)
    if len(vals) == 1:
        return (vals[0],)
    step = vals[1] - vals[0]
    if any(b - a != step for a, b in zip(vals, vals[1:])):
        raise ValueError(f"values must be evenly spaced for one perf_analyzer range, got {vals}")
    return (vals[0], vals[-1], step)


def read_csv(path: Path) -> list[dict[str, float]]:
    """Parse perf_analyzer's `-f` CSV (one row per concurrency or rate), sorted by that load level.

    Raises:
        PerfAnalyzerError: the file has no data rows.
    """
    with path.open() as f:
        rows = [{k.strip(): float(v) for k, v in row.items() if k and v not in (None, "")} for row in csv.DictReader(f)]
    if not rows:
        raise PerfAnalyzerError(f"{path} has no data rows")
    load_key = "Concurrency" if "Concurrency" in rows[0] else "Request Rate"
    return sorted(rows, key=lambda row: row.get(load_key, 0.0))  # perf_analyzer orders rows by throughput
