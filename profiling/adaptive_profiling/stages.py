"""Stage modules from an export, synthetic inputs for them, and timing and memory of one call.

Stages are rebuilt from `<export>/<size>/weights.safetensors` with the export package's own loader and `Stage`
module, so what is profiled is the code the ONNX stages were traced from (and what the GPU host serves in torch).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adaptive_serving.config import EarlyExitConfig


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
    from adaptive_export.model import Stage
    from adaptive_export.onnx_export import load_weights

    path = Path(export_dir) / size / "weights.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: size {size!r} has no weights in {export_dir}")
    model = load_weights(path).to(device=device, dtype=getattr(torch, dtype))
    return [Stage(model, s).eval() for s in range(1, model.config.num_stages + 1)]


def stage_inputs(config: EarlyExitConfig, stage: int, batch: int, tokens: int, device: str, dtype: str,
                 seed: int = 0) -> tuple[object, object]:
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


def time_call(fn: Callable[[], object], device: str, *, warmup: int = 1, min_iters: int = 3, max_iters: int = 50,
              min_time_s: float = 0.3) -> Timing:
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


class PeakMemory:
    """Peak memory of the work inside the `with` block, above what was in use when it started.

    CUDA: `torch.cuda.max_memory_allocated` (exact, this process's tensors). CPU: the process RSS sampled every
    millisecond in a thread (large tensors are mmap'ed and returned on free, so RSS tracks them; short peaks
    between samples can be missed, so it is a lower bound).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_bytes = 0
        self.method = "torch.cuda.max_memory_allocated" if device.startswith("cuda") else "rss_sampled_1ms"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            self._base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            proc = psutil.Process()
            self._base = proc.memory_info().rss
            self._max = self._base

            def watch() -> None:
                while not self._stop.is_set():
                    self._max = max(self._max, proc.memory_info().rss)
                    self._stop.wait(0.001)

            self._thread = threading.Thread(target=watch, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = max(0, torch.cuda.max_memory_allocated() - self._base)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.peak_bytes = max(0, self._max - self._base)


def module_bytes(module: object) -> int:
    """Bytes of a module's parameters (shared modules counted once)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())  # type: ignore[attr-defined]
