"""PNG plots of a profile: roofline, throughput and memory against batch size, latency per stage and per hop, NVML."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

MARKERS = "os^Dvp*hX"


def _pyplot() -> object:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_roofline(
    points: Sequence[Mapping],
    peak_flops: float,
    peak_bytes: float,
    out: Path,
    *,
    title: str,
    measured: tuple[float, float] | None = None,
) -> Path:
    """Log-log roofline: the roof min(peak, I * bandwidth), each (size, stage) a marker, batch sizes labelled.

    Args:
        points: `RooflinePoint.as_dict()` rows.
        peak_flops: peak FLOP/s of the roof.
        peak_bytes: peak bytes/s of the roof.
        out: PNG path.
        title: figure title (device and dtype).
        measured: (FLOP/s, bytes/s) measured on the host, drawn dashed when the roof comes from a table.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = np.array([p["intensity"] for p in points] or [1.0])
    lo, hi = min(xs.min(), peak_flops / peak_bytes) / 4, max(xs.max(), peak_flops / peak_bytes) * 4
    grid = np.logspace(np.log10(lo), np.log10(hi), 200)
    ax.plot(
        grid,
        np.minimum(peak_flops, grid * peak_bytes),
        "k-",
        lw=2,
        label=f"roof: {peak_flops / 1e9:,.0f} GFLOP/s, {peak_bytes / 1e9:,.0f} GB/s",
    )
    ax.axvline(peak_flops / peak_bytes, color="k", ls=":", lw=1)
    if measured:
        ax.plot(grid, np.minimum(measured[0], grid * measured[1]), "k--", lw=1, label="measured on this host")
    sizes = sorted({p["size"] for p in points}, key=[p["size"] for p in points].index)
    colors = {s: f"C{i}" for i, s in enumerate(sizes)}
    for key in sorted({(p["size"], p["stage"]) for p in points}, key=lambda k: (sizes.index(k[0]), k[1])):
        rows = sorted((p for p in points if (p["size"], p["stage"]) == key), key=lambda p: p["batch"])
        x = [p["intensity"] for p in rows]
        y = [p["achieved_flops_per_s"] for p in rows]
        ax.plot(
            x,
            y,
            color=colors[key[0]],
            marker=MARKERS[(key[1] - 1) % len(MARKERS)],
            ls="-",
            lw=0.8,
            label=f"{key[0]} stage {key[1]}",
        )
        for p in rows:
            ax.annotate(
                f"b{p['batch']}",
                (p["intensity"], p["achieved_flops_per_s"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs / byte moved)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, out)


def plot_vs_batch(
    rows: Sequence[Mapping], key: str, ylabel: str, out: Path, *, title: str, scale: float = 1.0, log_y: bool = False
) -> Path:
    """One line per (size, stage) of `row[key] * scale` against batch size (log-x)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    for i, size in enumerate(sizes):
        for stage in sorted({r["stage"] for r in rows if r["size"] == size}):
            sel = sorted((r for r in rows if r["size"] == size and r["stage"] == stage), key=lambda r: r["batch"])
            ax.plot(
                [r["batch"] for r in sel],
                [r[key] * scale for r in sel],
                color=f"C{i}",
                marker=MARKERS[(stage - 1) % len(MARKERS)],
                label=f"{size} stage {stage}",
            )
    ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("batch size (sequences per call)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    return _save(fig, out)


def plot_stage_latency(rows: Sequence[Mapping], batch: int, out: Path, *, title: str) -> Path:
    """Stacked bar per size: each stage's median time at `batch` (the cost of running to the last exit)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    widest = max(sum(r["median_ms"] for r in rows if r["size"] == s and r["batch"] == batch) for s in sizes)
    for i, size in enumerate(sizes):
        bottom = 0.0
        for r in sorted((r for r in rows if r["size"] == size and r["batch"] == batch), key=lambda r: r["stage"]):
            ax.barh(
                i,
                r["median_ms"],
                left=bottom,
                color=f"C{r['stage'] - 1}",
                label=f"stage {r['stage']}" if i == 0 or r["stage"] > 2 else None,
            )
            if r["median_ms"] > 0.06 * widest:  # no label on a bar too narrow to hold it
                ax.text(bottom + r["median_ms"] / 2, i, f"{r['median_ms']:.1f}", ha="center", va="center", fontsize=7)
            bottom += r["median_ms"]
    ax.set_yticks(range(len(sizes)), sizes)
    ax.set_xlabel(f"ms per call at batch {batch}")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    return _save(fig, out)


def plot_hops(entries: Sequence[Mapping], out: Path, *, title: str) -> Path:
    """Per entry model, one bar per hop: queue and compute ms per request (statistics API)."""
    plt = _pyplot()
    n = max(len(entries), 1)
    fig, axes = plt.subplots(
        1, n, figsize=(5.5 * n, 0.45 * max((len(e["hops"]) for e in entries), default=1) + 2), squeeze=False
    )
    for ax, entry in zip(axes[0], entries):
        hops = entry["hops"][::-1]  # first hop on top
        y = np.arange(len(hops))
        q = [h["queue_ms"] for h in hops]
        c = [h["compute_ms"] for h in hops]
        ax.barh(y, q, color="C1", label="queue")
        ax.barh(y, c, left=q, color="C0", label="compute")
        ax.set_yticks(y, [f"{h['model']} ({h['requests']})" for h in hops], fontsize=7)
        ax.set_xlabel("ms per request (requests in window)")
        ax.set_title(f"{entry['model']}: client p50 {entry['client']['p50_ms']:.1f} ms", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def plot_nvml(samples: Sequence[Mapping], out: Path, *, title: str) -> Path:
    """NVML timeline: utilization, power, temperature and memory used against time."""
    plt = _pyplot()
    t = [s["t_s"] for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(t, [s["sm_util_pct"] for s in samples], label="SM")
    axes[0].plot(t, [s["mem_util_pct"] for s in samples], label="memory")
    axes[0].set_ylabel("util %")
    axes[0].legend(fontsize=7)
    axes[1].plot(t, [s["power_w"] for s in samples], color="C2")
    axes[1].set_ylabel("power W")
    axes[2].plot(t, [s["temperature_c"] for s in samples], color="C3")
    axes[2].set_ylabel("temp C")
    axes[3].plot(t, [s["memory_used_mib"] for s in samples], color="C4")
    axes[3].set_ylabel("used MiB")
    axes[3].set_xlabel("seconds")
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)
