"""The all-in-one profile: per-stage latency, memory and throughput against batch size, roofline, torch.profiler
operators, NVML, and per-hop server time, written to one folder as JSON, PNGs and a markdown report."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from adaptive_core.config import PATHS

from . import plots
from .nvml import NvmlSampler
from .peaks import DevicePeaks, measure_peaks, table_peaks
from .report import markdown
from .roofline import DTYPE_BYTES, roofline_point
from .stages import load_stages, module_bytes, peak_memory, read_manifest, size_configs, stage_inputs, time_call

JSON_NAME, REPORT_NAME = "profile.json", "report.md"


@dataclass(frozen=True)
class ProfileConfig:
    """What one profile run measures and where it writes.

    Args:
        export_dir: export build with `manifest.json` and `<size>/weights.safetensors`.
        out: output folder.
        sizes: sizes to profile; empty = every size in the manifest.
        models: server entry models to drive; empty = `<size>_exit` for each profiled size.
        device: torch device; empty = "cuda" when available, else "cpu".
        dtype: stage dtype ("float32", "bfloat16", "float16"); the roofline uses the peak of this dtype.
        batch_sizes: batch sizes of the offline sweep.
        seq_len: tokens per sequence; None = each size's `max_seq_len` (the longest padded batch it serves).
        profile_batch: batch size of the torch.profiler runs and of the per-stage latency plot.
        min_time_s: each timing runs at least this long (and at least 2 calls)...
        max_iters: ...and at most this many calls.
        peak_matmul_n: side of the peak-measurement matmul (None = device default).
        peak_copy_mib: size of the peak-measurement copy (None = device default).
        server: run the server-side part.
        repo: model repository to serve when `url` is None.
        url: gRPC URL of a running server (then `repo` is not served).
        metrics_url: its metrics endpoint; None = derived (same host, port 8002) when `url` is given.
        requests: requests sent to each entry model.
        concurrency: requests in flight during the server load.
        nvml_interval_s: seconds between NVML samples.
        seed: input and text sampling seed.
    """

    export_dir: Path = PATHS.export_dir
    out: Path = PATHS.results / "profile" / "cpu"
    sizes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    device: str = ""
    dtype: str = "float32"
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64)
    seq_len: int | None = None
    profile_batch: int = 8
    min_time_s: float = 0.3
    max_iters: int = 20
    peak_matmul_n: int | None = None
    peak_copy_mib: int | None = None
    server: bool = True
    repo: Path | None = PATHS.repository
    url: str | None = None
    metrics_url: str | None = None
    requests: int = 150
    concurrency: int = 4
    nvml_interval_s: float = 0.1
    seed: int = 0
    argv: tuple[str, ...] = field(default=(), compare=False)


# A seconds-long run for tests and smoke checks: same code paths, small sweeps.
QUICK = ProfileConfig(
    batch_sizes=(1, 4),
    profile_batch=4,
    min_time_s=0.0,
    max_iters=3,
    peak_matmul_n=512,
    peak_copy_mib=32,
    requests=24,
    concurrency=2,
)


def resolve_device(device: str) -> str:
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here")
    return device


def _measure(device: str, cfg: ProfileConfig) -> DevicePeaks:
    return measure_peaks(device, cfg.dtype, matmul_n=cfg.peak_matmul_n, copy_mib=cfg.peak_copy_mib)


def _best(a: DevicePeaks, b: DevicePeaks) -> DevicePeaks:
    """The higher compute and the higher bandwidth of two measurements (on a shared host, one may be disturbed)."""
    flops = {k: max(a.flops_per_s[k], b.flops_per_s[k]) for k in a.flops_per_s}
    return DevicePeaks(a.name, flops, max(a.bytes_per_s, b.bytes_per_s), a.source + "; best of start and end of run")


# Devices whose ridge points the report also applies to the measured stages (analytic intensities only).
PROJECTION_DEVICES = ("NVIDIA H100 80GB HBM3", "NVIDIA H200")
PROJECTION_DTYPES = ("float32", "bfloat16")


def _projections(sizes: dict, points: list[dict]) -> list[dict]:
    """Memory- or compute-bound verdicts of every profiled (size, stage, batch) against the table devices' ridges,
    with bytes counted at each dtype's element size."""
    from .roofline import stage_cost

    rows = []
    for reported in PROJECTION_DEVICES:
        table = table_peaks(reported)
        assert table is not None
        for dtype in PROJECTION_DTYPES:
            for p in points:
                flops, by_kind = stage_cost(sizes[p["size"]], p["stage"], p["batch"], p["tokens"], dtype)
                intensity = flops / by_kind["total"]
                rows.append(
                    {
                        "device": table.name,
                        "dtype": dtype,
                        "size": p["size"],
                        "stage": p["stage"],
                        "batch": p["batch"],
                        "intensity": intensity,
                        "ridge": table.ridge(dtype),
                        "bound": "memory" if intensity < table.ridge(dtype) else "compute",
                    }
                )
    return rows


def _offline(cfg: ProfileConfig, device: str, sizes: dict, out: Path) -> dict[str, list]:
    """Latency and memory per (size, stage, batch); torch.profiler per (size, stage)."""
    import torch
    from tqdm import tqdm

    from .torch_ops import profile_ops, write_ops_csv

    timings, ops = [], []
    total = sum(c.num_stages * (len(cfg.batch_sizes) + 1) for c in sizes.values())
    bar = tqdm(total=total, desc="stages", unit="run", file=sys.stderr)
    # Half precision: weights are converted, and autocast keeps the float32 attention mask and softmax from
    # mixing dtypes in the matmuls (the model code is written for float32).
    half = cfg.dtype != "float32"
    autocast = torch.autocast(device.split(":")[0], dtype=getattr(torch, cfg.dtype), enabled=half)
    for name, config in sizes.items():
        tokens = min(cfg.seq_len or config.max_seq_len, config.max_seq_len)
        stages = load_stages(cfg.export_dir, name, device, cfg.dtype)
        for s, module in enumerate(stages, start=1):
            weights = module_bytes(module)
            for batch in sorted(set(cfg.batch_sizes) | {cfg.profile_batch}):
                bar.set_postfix_str(f"{name} stage {s} batch {batch}")
                x, mask = stage_inputs(config, s, batch, tokens, device, cfg.dtype, cfg.seed)
                with torch.inference_mode(), autocast:

                    def call(module=module, x=x, mask=mask) -> object:
                        return module(x, mask)

                    if batch == cfg.profile_batch:
                        rows = profile_ops(call, device, out / "traces" / f"{name}_stage{s}.json")
                        csv = write_ops_csv(rows, out / "ops" / f"{name}_stage{s}.csv")
                        ops.append(
                            {
                                "size": name,
                                "stage": s,
                                "batch": batch,
                                "tokens": tokens,
                                "rows": rows,
                                "csv": csv.relative_to(out).as_posix(),
                                "trace": f"traces/{name}_stage{s}.json",
                            }
                        )
                        bar.update()
                    if batch not in cfg.batch_sizes:
                        continue
                    call()  # warm-up
                    mem_bytes, mem_method = peak_memory(call, device)
                    t = time_call(
                        call, device, warmup=0, min_iters=2, max_iters=cfg.max_iters, min_time_s=cfg.min_time_s
                    )
                timings.append(
                    {
                        "size": name,
                        "stage": s,
                        "batch": batch,
                        "tokens": tokens,
                        **asdict(t),
                        "samples_per_s": batch / (t.median_ms / 1e3),
                        "weights_bytes": weights,
                        "peak_activation_bytes": mem_bytes,
                        "memory_method": mem_method,
                    }
                )
                bar.update()
        del stages
    bar.close()
    return {"timings": timings, "ops": ops}


def _roofline(timings: list[dict], sizes: dict, roof: DevicePeaks, dtype: str) -> list[dict]:
    """Each timed (size, stage, batch) placed on the roof, at its median time."""
    return [
        roofline_point(
            sizes[t["size"]],
            t["stage"],
            t["batch"],
            t["tokens"],
            t["median_ms"] / 1e3,
            roof.flops(dtype),
            roof.bytes_per_s,
            dtype,
        ).as_dict()
        for t in timings
    ]


def _server(cfg: ProfileConfig, sizes: dict, out: Path) -> dict[str, object]:
    """Per-hop server time for each entry model, on `cfg.url` or on a server of `cfg.repo` started here."""
    from adaptive_bench.data import load_eval_samples
    from adaptive_ops.server import ServerError, TritonServer

    from .server_side import profile_entry

    models = list(cfg.models) or [f"{s}_exit" for s in sizes]
    samples = load_eval_samples(cfg.export_dir, limit=cfg.requests, seed=cfg.seed)
    texts = list(samples.texts)

    def run(url: str, metrics_url: str | None) -> list[dict]:
        entries = []
        for model in models:
            print(
                f"server: {cfg.requests} requests to {model} (concurrency {cfg.concurrency})",
                file=sys.stderr,
                flush=True,
            )
            entries.append(profile_entry(url, metrics_url, model, texts, concurrency=cfg.concurrency))
        return entries

    if cfg.url:
        host = cfg.url.removeprefix("grpc://").rsplit(":", 1)[0]
        metrics = cfg.metrics_url or f"http://{host}:8002/metrics"
        return {"url": cfg.url, "metrics_url": metrics, "started_here": False, "entries": run(cfg.url, metrics)}
    if cfg.repo is None or not Path(cfg.repo).is_dir():
        raise FileNotFoundError(f"model repository {cfg.repo} not found; build it (make repository) or pass --url")
    for attempt in (1, 2):
        try:
            server = TritonServer.on_free_ports(Path(cfg.repo), log_path=out / "tritonserver.log").start()
            break
        except ServerError as e:
            # tritonserver 2.51 can die with SIGSEGV while loading the full repository's models in parallel, and
            # the next start is fine (docs/lab-notes/2026-12-07-numbers-from-code.md). One retry; a second failure
            # is reported.
            if attempt == 2:
                raise RuntimeError(f"tritonserver on {cfg.repo} failed twice: {e}") from e
            print(f"server: start failed ({str(e).splitlines()[0]}); retrying once", file=sys.stderr, flush=True)
    with server:
        return {
            "url": server.grpc_url,
            "metrics_url": server.metrics_url,
            "started_here": True,
            "start_attempts": attempt,
            "repository": str(Path(cfg.repo).resolve()),
            "entries": run(server.grpc_url, server.metrics_url),
        }


def _plots(result: dict, out: Path) -> list[Path]:
    dev = result["device"]
    roof = result["peaks"]["roof"]
    dtype = result["config"]["dtype"]
    written = []
    off = result["offline"]
    if off["roofline"]:
        measured = result["peaks"]["measured"]
        other = (
            None if roof["source"].startswith("measured") else (measured["flops_per_s"][dtype], measured["bytes_per_s"])
        )
        written.append(
            plots.plot_roofline(
                off["roofline"],
                roof["flops_per_s"][dtype],
                roof["bytes_per_s"],
                out / "roofline.png",
                title=f"Roofline: {dev['name']} ({dtype})",
                measured=other,
            )
        )
        written.append(
            plots.plot_vs_batch(
                off["timings"],
                "samples_per_s",
                "sequences / s",
                out / "throughput_vs_batch.png",
                log_y=True,
                title=f"Throughput per stage against batch size ({dev['name']})",
            )
        )
        written.append(
            plots.plot_vs_batch(
                off["timings"],
                "peak_activation_bytes",
                "MiB above weights",
                out / "memory_vs_batch.png",
                scale=1 / 2**20,
                title=f"Peak activation memory ({off['timings'][0]['memory_method']})",
            )
        )
        batch = result["config"]["profile_batch"]
        if batch not in result["config"]["batch_sizes"]:
            batch = max(result["config"]["batch_sizes"])
        written.append(
            plots.plot_stage_latency(
                off["timings"],
                batch,
                out / "latency_per_stage.png",
                title=f"Latency per stage, batch {batch} ({dev['name']})",
            )
        )
    srv = result.get("server") or {}
    if srv.get("entries"):
        written.append(
            plots.plot_hops(
                srv["entries"], out / "latency_per_hop.png", title="Where time goes per hop (Triton statistics API)"
            )
        )
    if result["nvml"].get("samples"):
        written.append(
            plots.plot_nvml(
                result["nvml"]["samples"], out / "nvml_timeline.png", title=f"NVML: {result['nvml'].get('device', '')}"
            )
        )
    return written


def run_profile(cfg: ProfileConfig) -> dict[str, object]:
    """Run every part and write `<out>/profile.json`, the PNGs and `<out>/report.md`.

    The server part's failure is recorded (and makes `result["ok"]` False) without losing the offline parts.

    Raises:
        FileNotFoundError: no manifest, or a size without weights.
        ValueError: an unknown size or dtype, or CUDA asked for where there is none.
    """
    import torch

    from adaptive_bench.provenance import provenance

    origin = provenance("python -m adaptive_profiling", cfg.argv)  # before the run writes anything
    if cfg.dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {cfg.dtype!r}")
    manifest = read_manifest(cfg.export_dir)
    family = size_configs(manifest)
    unknown = [s for s in cfg.sizes if s not in family]
    if unknown:
        raise ValueError(f"unknown size(s) {unknown}; the export has {sorted(family)}")
    sizes = {s: family[s] for s in (cfg.sizes or family)}
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_start = os.getloadavg()
    with NvmlSampler(
        torch.cuda.current_device() if device.startswith("cuda") else 0, interval_s=cfg.nvml_interval_s
    ) as sampler:
        first = _measure(device, cfg)
        table = table_peaks(torch.cuda.get_device_name(device)) if device.startswith("cuda") else None
        offline = _offline(cfg, device, sizes, out)
        # Measured once before and once after the sweep; without a table entry the better of the two is the roof.
        measured = _best(first, _measure(device, cfg))
        roof = table or measured
        offline["roofline"] = _roofline(offline["timings"], sizes, roof, cfg.dtype)
        load_offline = os.getloadavg()  # before the server part, which loads the cores itself
        server, server_error = None, None
        if cfg.server:
            try:
                server = _server(cfg, sizes, out)
            except (RuntimeError, FileNotFoundError, ValueError, OSError) as e:
                server_error = str(e)
                print(f"server part failed: {e}", file=sys.stderr)
    result: dict[str, object] = {
        "ok": server_error is None,
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}, "sizes": list(sizes)},
        "device": {
            "torch_device": device,
            "name": torch.cuda.get_device_name(device) if device.startswith("cuda") else measured.name,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "host": platform.node(),
        },
        "peaks": {"roof": roof.as_dict(), "measured": measured.as_dict(), "ridge": roof.ridge(cfg.dtype)},
        "export": {"dir": str(Path(cfg.export_dir).resolve()), "dataset_hash": manifest.get("dataset_hash")},
        "offline": offline,
        "server": server,
        "server_error": server_error,
        "nvml": sampler.summary(),
        "projections": _projections(sizes, offline["roofline"]),
        "load_average": {"start": list(load_start), "end": list(load_offline), "cpus": os.cpu_count()},
        "seconds": time.time() - started,
        "started_unix": started,
    }
    written = _plots(result, out)
    # Only what this run wrote (the folder may hold older runs' files).
    files = {p.relative_to(out).as_posix() for p in written} | {JSON_NAME, REPORT_NAME}
    files |= {o[k] for o in offline["ops"] for k in ("csv", "trace")}
    if server and server.get("started_here"):
        files.add("tritonserver.log")
    files = sorted(files)
    result["files"] = files
    result["provenance"] = origin
    (out / JSON_NAME).write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / REPORT_NAME).write_text(markdown(result))
    return result
