"""Stage modules from an export, synthetic inputs for them, and timing and memory of one call.

Stages are rebuilt from `<export>/<size>/weights.safetensors` with the export package's own loader and `Stage`
module, so what is profiled is the code the ONNX stages were traced from (and what the GPU host serves in torch).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adaptive_core.config import EarlyExitConfig


def read_manifest(export_dir: Path) -> dict:
    """`<export>/manifest.json` as a dict.

    Raises:
        FileNotFoundError: the export has no manifest (names the path and how to build one).
    """
    path = Path(export_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; build the export first (make export)")
    return json.loads(path.read_text())


def size_configs(manifest: dict) -> dict[str, EarlyExitConfig]:
    """Size name -> config, as the manifest recorded it (smallest first, as exported)."""
    return {name: EarlyExitConfig(**entry["config"]) for name, entry in manifest["sizes"].items()}


def load_stages(export_dir: Path, size: str, device: str, dtype: str) -> list[object]:
    """The size's stages as eval-mode torch modules on `device` in `dtype`, stage 1 first.

    Raises:
        FileNotFoundError: the size has no weights file in the export.
    """
    import torch

    from adaptive_serving.encoder import Stage, load_weights

    path = Path(export_dir) / size / "weights.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: size {size!r} has no weights in {export_dir}")
    model = load_weights(path).to(device=device, dtype=getattr(torch, dtype))
    return [Stage(model, s).eval() for s in range(1, model.config.num_stages + 1)]


def stage_inputs(
    config: EarlyExitConfig, stage: int, batch: int, tokens: int, device: str, dtype: str, seed: int = 0
) -> tuple[object, object]:
    """Inputs of one stage call: (input_ids (B, T) int64 | hidden (B, T, H), attention_mask (B, T) int64).

    Every position is a real token (mask all ones): the profiled cost is that of a full `tokens`-long batch.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, tokens, dtype=torch.int64)
    if stage == 1:
        x = torch.randint(0, config.vocab_size, (batch, tokens), generator=g)  # (B, T)
    else:
        x = torch.randn(batch, tokens, config.hidden_size, generator=g).to(getattr(torch, dtype))  # (B, T, H)
    return x.to(device), mask.to(device)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Timing:
    """Wall time of repeated calls (after warm-up).

    Args:
        iters: timed calls.
        median_ms: median call time.
        min_ms: fastest call.
        p90_ms: 90th percentile.
    """

    iters: int
    median_ms: float
    min_ms: float
    p90_ms: float


def time_call(
    fn: Callable[[], object],
    device: str,
    *,
    warmup: int = 1,
    min_iters: int = 3,
    max_iters: int = 50,
    min_time_s: float = 0.3,
) -> Timing:
    """Time `fn` until `min_iters` calls and `min_time_s` seconds have passed (at most `max_iters` calls)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < min_time_s):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return Timing(len(times), statistics.median(times), times[0], times[min(len(times) - 1, int(0.9 * len(times)))])


def peak_memory(fn: Callable[[], object], device: str) -> tuple[int, str]:
    """(peak bytes of tensors allocated during one call of `fn` above what was allocated before, method).

    CUDA: `torch.cuda.max_memory_allocated`. CPU: the allocation and free events torch.profiler records with
    `profile_memory=True`, summed in order (the process RSS is no use here: glibc keeps freed heap pages for
    reuse, so a call that fits in them shows no growth).
    """
    import json
    import tempfile

    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - base), "torch.cuda.max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory.json"
        prof.export_chrome_trace(str(path))
        events = [e["args"] for e in json.loads(path.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    current = peak = 0
    for e in events:
        if e.get("Device Type", 0) == 0:  # CPU
            current += int(e["Bytes"])
            peak = max(peak, current)
    return peak, "torch.profiler memory events (CPU tensors)"


def module_bytes(module: object) -> int:
    """Bytes of a module's parameters (shared modules counted once)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())  # type: ignore[attr-defined]
