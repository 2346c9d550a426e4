"""Where a result came from: commit, machine, date and command, stored in every JSON a benchmark writes.

Every writer under `results/` (bench exit/classes/route, demo, batching, perf, loadtest, reliability, profiling)
puts `provenance(...)` in its JSON, so a number in the docs can name the code and the hardware that produced it
(`python -m adaptive_bench.docs` prints them beside each table). A value that cannot be found is None, never a
guess: outside a git checkout the commit is None, without `nvidia-smi` the GPU list is empty.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from adaptive_core.config import PROJECT_ROOT

# Outputs, not inputs: a run that leaves uncommitted results behind does not make the next run's code "dirty".
_NOT_CODE = ":(exclude)results"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    if shutil.which("git") is None:
        return None
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """`git rev-parse --short HEAD`, with "-dirty" when tracked files outside results/ differ from it; None
    outside a git checkout."""
    head = _git(root, "rev-parse", "--short", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None
    diff = _git(root, "diff", "--quiet", "HEAD", "--", ".", _NOT_CODE)
    dirty = diff is not None and diff.returncode == 1
    return head.stdout.strip() + ("-dirty" if dirty else "")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gpus() -> list[str]:
    """GPU names from nvidia-smi (empty without it or without a GPU)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def machine() -> dict[str, object]:
    """The host: OS and architecture, CPU count and model, GPU names (empty list: none found)."""
    return {
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "gpus": _gpus(),
    }


def provenance(prog: str, argv: Sequence[str] | None = None, *, root: Path = PROJECT_ROOT) -> dict[str, object]:
    """The `provenance` object of a results JSON.

    Args:
        prog: how the command was started, e.g. "python -m adaptive_bench"; split on spaces.
        argv: its arguments (None: `sys.argv[1:]`, what a CLI's `main(argv=None)` parsed).
        root: the checkout whose commit is recorded.

    Returns:
        {"commit": short hash (+"-dirty") or None, "machine": `machine()`, "date": ISO 8601 UTC time of the call,
        "command": argv list}.
    """
    return {
        "commit": git_commit(root),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [*prog.split(), *(sys.argv[1:] if argv is None else argv)],
    }


def machine_text(m: dict[str, object] | None) -> str:
    """One line for the docs: "Linux x86_64, 2 CPUs (AMD EPYC), no GPU"; "not recorded" for None."""
    if not m:
        return "not recorded"
    cpu = f"{m.get('cpu_count') or '?'} CPUs" + (f" ({m['cpu']})" if m.get("cpu") else "")
    gpus = list(m.get("gpus") or [])  # type: ignore[call-overload]
    gpu = "no GPU" if not gpus else (f"{len(gpus)}x {gpus[0]}" if len(set(gpus)) == 1 else ", ".join(gpus))
    return f"{m.get('platform') or '?'}, {cpu}, {gpu}"
