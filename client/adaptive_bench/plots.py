"""PNG plots from perf_analyzer CSVs and an `adaptive` run over the evaluation mix.

    python -m adaptive_bench.plots --perf-dir results/perf --out results/plots \
        [--url 127.0.0.1:8001 --export build/export]

- `class_latency.png`: p50/p90/p99 per latency class against offered load (the `class_<name>.csv` files of
  `python -m adaptive_bench.perf classes`).
- `throughput.png`: inferences/s against concurrency per model (the `<model>_concurrency.csv` files of `sweep`).
- `exit_stages.png`: exit-stage histogram per view length, from classifying the evaluation mix (needs --url).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

PERCENTILES = ("p50 latency", "p90 latency", "p99 latency")  # perf_analyzer CSV columns, microseconds


def _pyplot() -> object:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_class_latency(csv_by_class: Mapping[str, Path], out_png: Path) -> Path:
    """Latency percentiles per class against its load: the offered request rate of an open-loop run, or the
    throughput each concurrency level reached in a closed-loop run."""
    from adaptive_bench.perf_analyzer import read_csv

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(PERCENTILES), figsize=(4 * len(PERCENTILES), 3.5), sharey=True)
    for name, path in csv_by_class.items():
        rows = read_csv(Path(path))
        open_loop = "Request Rate" in rows[0]
        load = [r["Request Rate"] if open_loop else r["Inferences/Second"] for r in rows]
        for ax, col in zip(axes, PERCENTILES):
            ax.plot(load, [r[col] / 1e3 for r in rows], marker="o", label=name)
            ax.set_title(col.split()[0])
            ax.set_xlabel(f"{'offered' if open_loop else 'achieved (closed loop)'} load per class (req/s)")
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_throughput(csvs: Sequence[Path], out_png: Path) -> Path:
    """Inferences/s against concurrency, one line per model (`<model>_concurrency.csv`)."""
    from adaptive_bench.perf_analyzer import read_csv

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for path in sorted(csvs):
        rows = read_csv(path)
        ax.plot(
            [r["Concurrency"] for r in rows],
            [r["Inferences/Second"] for r in rows],
            marker="o",
            label=path.name.removesuffix("_concurrency.csv"),
        )
    ax.set_xlabel("concurrency")
    ax.set_ylabel("inferences / s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def exit_stages_by_view(
    url: str, texts: Sequence[str], views: np.ndarray, *, batch_size: int = 16
) -> dict[int, np.ndarray]:
    """Classify the texts with `adaptive`; returns view words (-1 = full) -> exit stage per text.

    Raises:
        AdaptiveClientError: a request failed.
    """
    from adaptive_client.client import AdaptiveClient

    stages = []
    with AdaptiveClient(url, max_retries=3) as client:
        for i in range(0, len(texts), batch_size):
            stages += [r.exit_stage for r in client.classify(list(texts[i : i + batch_size]))]
    arr = np.array(stages)
    return {int(v): arr[views == v] for v in np.unique(views)}


def plot_exit_histogram(stages_by_view: Mapping[int, np.ndarray], out_png: Path) -> Path:
    """Share of texts per exit stage, one bar group per view length."""
    plt = _pyplot()
    views = sorted(stages_by_view, key=lambda v: (v < 0, v))  # full article (-1) last
    max_stage = max(int(s.max()) for s in stages_by_view.values())
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max_stage
    for k in range(1, max_stage + 1):
        shares = [float((stages_by_view[v] == k).mean()) for v in views]
        ax.bar(np.arange(len(views)) + (k - 1) * width, shares, width, label=f"stage {k}")
    ax.set_xticks(np.arange(len(views)) + 0.4 - width / 2, [("full" if v < 0 else f"{v} words") for v in views])
    ax.set_ylabel("share of texts")
    ax.set_title("exit stage per view length")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_bench.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--perf-dir", type=Path, default=Path("results/perf"), help="perf CSVs (sweep, classes)")
    parser.add_argument("--out", type=Path, default=Path("results/plots"))
    parser.add_argument("--url", default=None, help="server for the exit-stage histogram (gRPC host:port)")
    parser.add_argument("--export", type=Path, default=None, help="export build (evaluation mix label check)")
    parser.add_argument("--samples", type=int, default=None, help="evaluation-mix samples (default all)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    classes = {p.stem.removeprefix("class_"): p for p in sorted(args.perf_dir.glob("class_*.csv"))}
    if classes:
        written.append(plot_class_latency(classes, args.out / "class_latency.png"))
    sweeps = sorted(args.perf_dir.glob("*_concurrency.csv"))
    if sweeps:
        written.append(plot_throughput(sweeps, args.out / "throughput.png"))
    if args.url:
        from adaptive_bench.data import load_eval_samples

        samples = load_eval_samples(args.export, limit=args.samples)
        stages = exit_stages_by_view(args.url, samples.texts, samples.views)
        written.append(plot_exit_histogram(stages, args.out / "exit_stages.png"))
    if not written:
        print(f"error: nothing to plot (no CSVs in {args.perf_dir}, no --url)", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
