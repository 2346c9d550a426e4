"""The in-process cascade on the GPU: `adaptive` (-> cascade_large_inproc) against `large_full`, one server, one run.

    python3 scripts/gpu_inproc.py --repo .gpu/repo-inproc --export .gpu/export --out .gpu/results/inproc \
        --commit <sha> [--samples 800] [--batch-sizes 1 8] [--concurrency 1 16]

Runs `adaptive_bench.exit_bench` once per batch size on the same server (the other `<size>_full` baselines come
along, as bench-exit measures every one). Each `results-b<N>.json` carries the card, driver, torch version and the
commit (the device host has no git checkout: the caller passes it), beside bench-exit's own provenance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path


def gpu_info() -> dict[str, object]:
    """Card, memory, driver (nvidia-smi) and the torch/CUDA versions the stages ran with."""
    import torch

    query = "--query-gpu=name,memory.total,driver_version"
    try:
        out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True).stdout
    except OSError:  # no nvidia-smi: a CPU host (the script's smoke run)
        out = ""
    first = out.splitlines()[0] if out.strip() else ""
    name, memory, driver = [*(s.strip() for s in first.split(",")), "", "", ""][:3]
    return {
        "card": name,
        "memory": memory,
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--commit", required=True, help="the commit the working tree was copied from")
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repository-flags", default="", help="how --repo was built (recorded)")
    args = parser.parse_args(argv)

    from adaptive_bench import exit_bench
    from adaptive_bench.data import load_eval_samples
    from adaptive_bench.provenance import provenance
    from adaptive_ops.server import TritonServer

    args.out.mkdir(parents=True, exist_ok=True)
    origin = provenance("python3 scripts/gpu_inproc.py", argv)
    gpu = {**gpu_info(), "commit": args.commit, "repository_flags": args.repository_flags}
    samples = load_eval_samples(args.export, limit=args.samples, seed=0)
    with TritonServer.on_free_ports(args.repo, log_path=args.out / "tritonserver.log") as server:
        for b in args.batch_sizes:
            config = dataclasses.replace(
                exit_bench.ExitBenchConfig(), batch_size=b, samples=args.samples, concurrency=tuple(args.concurrency)
            )
            started = time.time()
            results = exit_bench.run_exit_bench(server.grpc_url, samples, config, metrics_url=server.metrics_url)
            results["dataset"] = {
                "split": "test",
                "samples": len(samples),
                "mix_size": samples.mix_size,
                "dataset_hash": samples.dataset_hash,
                "label_names": list(samples.label_names),
            }
            results["run"] = {"started_unix": started, "seconds": time.time() - started}
            results["gpu_run"] = gpu
            results["provenance"] = origin
            text = json.dumps(results, indent=1, default=lambda x: x.item() if hasattr(x, "item") else x.tolist())
            (args.out / f"results-b{b}.json").write_text(text)
            (args.out / f"results-b{b}.md").write_text(exit_bench.markdown(results))
            print(exit_bench.markdown(results), flush=True)
    print(json.dumps(gpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
