"""Background NVML sampler: SM and memory utilization, power, temperature and memory used during a run.

`pynvml` (PyPI `nvidia-ml-py`) is imported lazily: on a host without it, or without an NVIDIA driver, the sampler
says so once and records nothing, so the rest of a report still runs.

    with NvmlSampler(interval_s=0.1) as sampler:
        ...  # the work to watch
    sampler.summary()  # {"available": False, "reason": "..."} on a CPU-only host
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import TextIO


@dataclass(frozen=True)
class NvmlSample:
    """One reading of one GPU.

    Args:
        t_s: seconds since the sampler started.
        sm_util_pct: percent of the last sample period in which a kernel ran (NVML "gpu" utilization).
        mem_util_pct: percent of the period in which device memory was read or written.
        power_w: board power draw.
        temperature_c: GPU core temperature.
        memory_used_mib: device memory in use (all processes).
    """

    t_s: float
    sm_util_pct: float
    mem_util_pct: float
    power_w: float
    temperature_c: float
    memory_used_mib: float


def load_nvml() -> tuple[ModuleType | None, str]:
    """Import `pynvml` and initialize it: (module, "") or (None, why not)."""
    try:
        import pynvml
    except ImportError as e:
        return None, f"pynvml is not installed ({e}); pip install nvidia-ml-py"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded on hosts without a GPU driver
        return None, f"NVML could not start: {e}"
    return pynvml, ""


class NvmlSampler:
    """Samples one GPU in a daemon thread between `start()` and `stop()` (or as a context manager).

    Args:
        device_index: NVML index of the GPU.
        interval_s: seconds between samples.
        nvml: an initialized NVML module to use instead of importing `pynvml` (another binding, or a stand-in
            in tests); None imports and initializes `pynvml`.
        log: where the one "not available" line goes.
    """

    def __init__(
        self,
        device_index: int = 0,
        *,
        interval_s: float = 0.1,
        nvml: ModuleType | None = None,
        log: TextIO | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.device_index, self.interval_s = device_index, interval_s
        self.samples: list[NvmlSample] = []
        self.device_name = ""
        self._log = log if log is not None else sys.stderr
        self._nvml, self.reason = (nvml, "") if nvml is not None else load_nvml()
        self._handle = None
        if self._nvml is not None:
            try:
                self._handle = self._nvml.nvmlDeviceGetHandleByIndex(device_index)
                name = self._nvml.nvmlDeviceGetName(self._handle)
                self.device_name = name.decode() if isinstance(name, bytes) else str(name)
            except Exception as e:  # no such index, or NVML lost the device
                self._nvml, self.reason = None, f"NVML has no GPU {device_index}: {e}"
        if self._nvml is None:
            print(
                f"nvml: no GPU sampling on this host ({self.reason}); the report continues without it",
                file=self._log,
                flush=True,
            )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def read(self) -> NvmlSample:
        """One sample now (requires `available`)."""
        nv, h = self._nvml, self._handle
        util = nv.nvmlDeviceGetUtilizationRates(h)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        return NvmlSample(
            t_s=time.perf_counter() - self._t0,
            sm_util_pct=float(util.gpu),
            mem_util_pct=float(util.memory),
            power_w=nv.nvmlDeviceGetPowerUsage(h) / 1000.0,  # milliwatts
            temperature_c=float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            memory_used_mib=mem.used / 2**20,
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.read())
            except Exception as e:  # a transient NVML error ends sampling, never the run
                self.reason = f"sampling stopped: {e}"
                return
            self._stop.wait(self.interval_s)

    def start(self) -> NvmlSampler:
        self._t0 = time.perf_counter()
        if self.available and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5 * self.interval_s + 1.0)
            self._thread = None

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def summary(self) -> dict[str, object]:
        """JSON-ready: availability (with the reason when absent), mean and max of each field, all samples."""
        if not self.samples:
            return {
                "available": self.available,
                "reason": self.reason or "no samples taken",
                "device": self.device_name,
                "samples": [],
            }
        fields = [f for f in asdict(self.samples[0]) if f != "t_s"]
        stats = {
            f: {
                "mean": sum(getattr(s, f) for s in self.samples) / len(self.samples),
                "max": max(getattr(s, f) for s in self.samples),
            }
            for f in fields
        }
        return {
            "available": True,
            "device": self.device_name,
            "interval_s": self.interval_s,
            "count": len(self.samples),
            "stats": stats,
            "samples": [asdict(s) for s in self.samples],
        }
