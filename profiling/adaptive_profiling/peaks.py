"""Roofline peaks: a small table of NVIDIA datasheet numbers, or a measurement on this host.

The ridge point of a roofline is peak FLOP/s / peak bytes/s: a kernel whose arithmetic intensity (FLOPs per byte
moved) is below it cannot reach the compute peak, whatever the implementation, and is memory-bound.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

# Dense (no 2:4 sparsity) peaks. Sources: NVIDIA H100 Tensor Core GPU datasheet (H100 SXM: FP32 67 TFLOPS,
# BF16/FP16 Tensor Core 1,979 TFLOPS *with sparsity* = 989.5 dense, 3.35 TB/s HBM3; H100 PCIe: FP32 51, BF16/FP16
# 1,513 sparse = 756.5 dense, 2.0 TB/s; H100 NVL: FP32 60, BF16/FP16 1,671 sparse = 835.5 dense, 3.9 TB/s) and
# NVIDIA H200 Tensor Core GPU datasheet (H200 SXM: same compute as H100 SXM, 4.8 TB/s HBM3e; H200 NVL: FP32 60,
# BF16/FP16 1,671 sparse = 835.5 dense, 4.8 TB/s). FP32 is the non-tensor-core rate: PyTorch does not use TF32
# for float32 matmuls unless `torch.backends.cuda.matmul.allow_tf32` is set.
TFLOP = 1e12
TB = 1e12


@dataclass(frozen=True)
class DevicePeaks:
    """Peak compute and memory bandwidth of one device.

    Args:
        name: device name (table key, or what the host reported when measured).
        flops_per_s: peak FLOP/s per dtype name ("float32", "bfloat16", "float16").
        bytes_per_s: peak memory bandwidth (bytes/s).
        source: "table: <datasheet>" or "measured: <how>".
    """

    name: str
    flops_per_s: dict[str, float]
    bytes_per_s: float
    source: str

    def flops(self, dtype: str) -> float:
        """Peak FLOP/s for `dtype`.

        Raises:
            KeyError: no peak is known for that dtype (names the ones that are).
        """
        try:
            return self.flops_per_s[dtype]
        except KeyError:
            raise KeyError(f"{self.name}: no {dtype} peak; known: {sorted(self.flops_per_s)}") from None

    def ridge(self, dtype: str) -> float:
        """Ridge point in FLOPs per byte: below it a kernel is memory-bound."""
        return self.flops(dtype) / self.bytes_per_s

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _table_entry(name: str, fp32_tflops: float, half_dense_tflops: float, tb_per_s: float, sheet: str) -> DevicePeaks:
    return DevicePeaks(
        name,
        {"float32": fp32_tflops * TFLOP, "bfloat16": half_dense_tflops * TFLOP, "float16": half_dense_tflops * TFLOP},
        tb_per_s * TB,
        f"table: {sheet}",
    )


H100_SHEET = "NVIDIA H100 Tensor Core GPU datasheet (dense = sparse / 2)"
H200_SHEET = "NVIDIA H200 Tensor Core GPU datasheet (dense = sparse / 2)"
# Most specific first: lookup takes the first pattern found in the device name. CUDA reports the SXM parts as
# "NVIDIA H100 80GB HBM3" and "NVIDIA H200", so the bare names map to SXM.
PEAK_TABLE: tuple[tuple[str, DevicePeaks], ...] = (
    ("H200 NVL", _table_entry("H200 NVL", 60.0, 835.5, 4.8, H200_SHEET)),
    ("H200", _table_entry("H200 SXM", 67.0, 989.5, 4.8, H200_SHEET)),
    ("H100 NVL", _table_entry("H100 NVL", 60.0, 835.5, 3.9, H100_SHEET)),
    ("H100 PCIe", _table_entry("H100 PCIe", 51.0, 756.5, 2.0, H100_SHEET)),
    ("H100", _table_entry("H100 SXM", 67.0, 989.5, 3.35, H100_SHEET)),
)


def table_peaks(device_name: str) -> DevicePeaks | None:
    """The table entry whose pattern occurs in `device_name` (case-insensitive), or None for an unknown device."""
    low = device_name.lower()
    for pattern, peaks in PEAK_TABLE:
        if pattern.lower() in low:
            return peaks
    return None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_seconds(fn, device: str, repeats: int) -> float:
    """Fastest of `repeats` timed calls after one warm-up (the peak, not the typical time)."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peaks(
    device: str, dtype: str = "float32", *, matmul_n: int | None = None, copy_mib: int | None = None, repeats: int = 3
) -> DevicePeaks:
    """Measure achievable peaks on this host: a large square matmul and a large tensor copy.

    Args:
        device: torch device ("cpu", "cuda", "cuda:1").
        dtype: matmul dtype (the one the stages run in).
        matmul_n: matrix side (default 2048 on CPU, 8192 on CUDA); FLOPs = 2 * n^3.
        copy_mib: tensor size copied (default 256 MiB on CPU, 2048 on CUDA); bytes moved = 2 x size (read + write).
        repeats: timed repetitions; the fastest counts.

    Returns:
        peaks for `dtype` only, with `source` saying how they were measured.
    """
    import torch

    gpu = device.startswith("cuda")
    n = matmul_n or (8192 if gpu else 2048)
    mib = copy_mib or (2048 if gpu else 256)
    tdtype = getattr(torch, dtype)
    a = torch.randn(n, n, device=device).to(tdtype)
    b = torch.randn(n, n, device=device).to(tdtype)
    with torch.inference_mode():
        t_mm = _best_seconds(lambda: a @ b, device, repeats)
    src = torch.empty(mib * 2**20 // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    t_copy = _best_seconds(lambda: dst.copy_(src), device, repeats)
    name = torch.cuda.get_device_name(device) if gpu else _cpu_name()
    threads = "" if gpu else f", {torch.get_num_threads()} CPU threads"
    return DevicePeaks(
        name,
        {dtype: 2 * n**3 / t_mm},
        2 * src.numel() * 4 / t_copy,
        f"measured: {dtype} matmul {n}x{n}, copy of {mib} MiB (best of {repeats}{threads})",
    )


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
