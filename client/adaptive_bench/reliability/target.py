"""The server under test: texts to send, the memory of its process tree, and which models the faults hit."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from adaptive_ops.repository import ENTRY_MODEL

# Ordinary traffic (news-like sentences in the task's five topics), used when no export is given.
SAMPLE_TEXTS = (
    "Shares in the bank fell after profits missed forecasts",
    "The striker scored twice as the champions won the cup final",
    "Ministers defended the budget in a heated Commons debate",
    "The new smartphone has a faster chip and a better camera",
    "The film won three awards at the festival on Sunday night",
    "Oil prices rose as markets reacted to the output cut",
    "Rain stopped play on the second day of the test match",
    "Voters head to the polls as the election campaign ends",
    "A software flaw left millions of computers open to attack",
    "The band announced a world tour and a new album",
    "Interest rates were left unchanged by the central bank",
    "The coach was sacked after a run of seven defeats",
)


def load_texts(export_dir: Path | None, limit: int = 2000) -> tuple[str, ...]:
    """Texts of the evaluation mix when `export_dir` holds a full export (real traffic), else SAMPLE_TEXTS."""
    if export_dir is None or not (Path(export_dir) / "manifest.json").is_file():
        return SAMPLE_TEXTS
    from adaptive_bench.data import load_eval_samples

    return load_eval_samples(export_dir, limit=limit).texts


def tree_rss_bytes(server_pid: int | None) -> int:
    """Resident memory of the server and every process below it (the Python backend stubs); 0 when gone."""
    if server_pid is None:
        return 0
    try:
        root = psutil.Process(server_pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in family:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return total


def is_live(http_url: str, timeout_s: float = 2.0) -> bool:
    """True when the server's HTTP liveness endpoint answers 200."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/live", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass(frozen=True)
class FaultTargets:
    """Models a fault run aims at, read from a generated repository.

    Args:
        entry: the entry model clients call.
        tokenizer: the entry's first step; every entry request passes through it (its stub is the one killed).
        stage: the first standard-lane stage of the cheapest size (the one most traffic reaches; unloaded).
        express_stage: that stage's express-lane twin ("" without an express lane): critical traffic uses it.
        unaffected: a model that does not use `stage` (the same size's full-depth baseline).
    """

    entry: str
    tokenizer: str
    stage: str
    express_stage: str
    unaffected: str


def _first_stage(plan: object) -> str | None:
    """First `stage_models` entry anywhere in a cascade or router plan (router targets are cheapest first)."""
    if isinstance(plan, dict):
        if plan.get("stage_models"):
            return str(plan["stage_models"][0])
        values = list(plan.values())
    elif isinstance(plan, list):
        values = plan
    else:
        return None
    for value in values:
        found = _first_stage(value)
        if found:
            return found
    return None


def fault_targets(repo: Path) -> FaultTargets:
    """Read the entry's steps and the plan behind them from a repository made by `adaptive_ops.repository`.

    Raises:
        FileNotFoundError: the repository has no entry model or plan.
        ValueError: the entry is not tokenizer -> router/cascade, or the plan names no stage.
    """
    steps = re.findall(r'model_name:\s*"([^"]+)"', (repo / ENTRY_MODEL / "config.pbtxt").read_text())
    if len(steps) != 2:
        raise ValueError(f"{repo / ENTRY_MODEL}: expected two ensemble steps, found {steps}")
    tokenizer, orchestrator = steps
    stage = _first_stage(json.loads((repo / orchestrator / "1" / "plan.json").read_text()))
    if not stage:
        raise ValueError(f"{repo / orchestrator / '1' / 'plan.json'} names no stage models")
    size = stage.rsplit("_stage", 1)[0]
    express = f"{stage}_express" if (repo / f"{stage}_express").is_dir() else ""
    return FaultTargets(
        entry=ENTRY_MODEL, tokenizer=tokenizer, stage=stage, express_stage=express, unaffected=f"{size}_full"
    )
