"""One export build: data -> frozen features -> exit heads -> calibrated thresholds -> ONNX + weights -> manifest.

Every size has its own pretrained backbone and tokenizer (`SizeSource`): features are computed and cached per size,
the most expensive size trains first and its last exit teaches the others (distillation on the same texts).

Layout of a build directory:

    <out>/<size>/stage<i>.onnx, full.onnx, weights.safetensors, thresholds.json
    <out>/<size>/tokenizer/   the size's tokenizer files (truncation/padding switched off; callers truncate per size)
    <out>/tokenizer/          the cheapest size's tokenizer (the router's entry tokenizer)
    <out>/complexity/         size-router estimator and router.json (`complexity.build_router`)
    <out>/manifest.json
    <out>/.cache/             persisted backbone features per size (not hashed, safe to delete)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from adaptive_core.config import CALIBRATION, DATA, CalibrationConfig, DataConfig, EarlyExitConfig
from adaptive_serving.encoder import EarlyExitEncoder, save_weights

from .backbone import load_backbone
from .calibrate import Calibration, calibrate, evaluate
from .data import Corpus, Examples, Tokenizer, dataset_hash, make_views, split_indices
from .manifest import cumulative_stage_flops, full_flops, size_ratios, write_manifest
from .onnx_export import PARITY_SHAPES, export_size
from .tensorrt import build_engines
from .train import (
    HEAD_TRAINING,
    HeadTraining,
    SizeLogits,
    exit_features,
    feature_cache,
    head_logits,
    train_heads,
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
# Tokens of the text that orders the sizes by cost (about the median snippet).
COST_ORDER_TOKENS = 32


@dataclass(frozen=True)
class SizeSource:
    """Where one size's pretrained weights and tokenizer come from.

    Args:
        weights: HF checkpoint folder or sentence-transformers ONNX file; None = random weights (the tests' tiny size).
        tokenizer_dir: folder with the `tokenizer.json` the weights were trained with.
        name: the checkpoint's name, recorded in the manifest.
    """

    weights: Path | None
    tokenizer_dir: Path
    name: str = ""


@dataclass(frozen=True)
class SizeResult:
    """What one size's build produced (also the row of the CLI summary table)."""

    name: str
    config: EarlyExitConfig
    calibration: Calibration
    test: dict
    extra: dict


def copy_tokenizer(src: Path, dst: Path) -> Path:
    """Copy tokenizer files, turning off the truncation/padding baked into the checkpoints' `tokenizer.json`.

    MiniLM's and MPNet's files truncate and pad to a fixed 128 tokens; each size truncates to its own `max_seq_len`
    instead, and batches pad to their longest row.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    tj = dst / "tokenizer.json"
    if tj.exists():
        d = json.loads(tj.read_text())
        d["truncation"], d["padding"] = None, None
        tj.write_text(json.dumps(d, ensure_ascii=False))
    return dst


def cost_order(sizes: dict[str, EarlyExitConfig]) -> list[str]:
    """Size names, cheapest first (FLOPs at full depth on a COST_ORDER_TOKENS-token text)."""
    return sorted(sizes, key=lambda n: float(full_flops(sizes[n], COST_ORDER_TOKENS)))


def size_model(cfg: EarlyExitConfig, source: SizeSource) -> EarlyExitEncoder:
    """A size's encoder: its backbone's embeddings and layers (frozen), fresh heads (seed 0)."""
    torch.manual_seed(0)
    model = EarlyExitEncoder(cfg)
    if source.weights is not None:
        load_backbone(model, source.weights)
    for p in list(model.embeddings.parameters()) + list(model.encoder.parameters()):
        p.requires_grad_(False)  # frozen backbone: only heads train
    return model.eval()


def _by_view(ex: Examples, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Full-depth accuracy per view ("full" = whole article)."""
    pred = logits[-1].argmax(-1)
    return {
        ("full" if v == -1 else f"{v}w"): float((pred[ex.view == v] == labels[ex.view == v]).mean())
        for v in sorted(set(ex.view.tolist()), key=lambda v: (v == -1, v))
    }


def build(
    out: Path,
    sizes: dict[str, EarlyExitConfig],
    corpus: Corpus,
    *,
    sources: dict[str, SizeSource],
    data_config: DataConfig = DATA,
    calibration: CalibrationConfig = CALIBRATION,
    head_training: HeadTraining = HEAD_TRAINING,
    parity_shapes: tuple[tuple[int, int], ...] = PARITY_SHAPES,
    tensorrt: bool = True,
    command: str = "",
    log=print,
) -> dict[str, SizeResult]:
    """Build, calibrate and export a family of sizes into `out` (see module docstring for the layout).

    Args:
        out: build directory (created).
        sizes: size name -> config (`num_labels` is set from the corpus).
        corpus: labeled texts; split by `data_config`.
        sources: size name -> its pretrained weights and tokenizer.
        data_config: workload, split, training views and evaluation mix.
        calibration: accuracy-loss target, delta and confidence policy.
        head_training: exit-head optimisation knobs.
        parity_shapes: (batch, sequence) shapes of the ONNX parity checks.
        tensorrt: try to build TensorRT engines (skipped with a message when not importable).
        command: the command line, recorded in the manifest.
        log: message sink.

    Returns:
        size name -> SizeResult.

    Raises:
        ValueError: a size without a source.
    """
    t0 = time.perf_counter()
    missing = [n for n in sizes if n not in sources]
    if missing:
        raise ValueError(f"sizes {missing} have no source (weights and tokenizer)")
    sizes = {n: dataclasses.replace(c, num_labels=len(corpus.label_names)) for n, c in sizes.items()}
    out.mkdir(parents=True, exist_ok=True)
    dhash = dataset_hash(corpus, data_config)
    splits = split_indices(corpus, data_config)
    examples = {
        "train": make_views(corpus.subset(splits["train"]), data_config.view_words),
        "val": make_views(corpus.subset(splits["val"]), data_config.eval_views),
        "test": make_views(corpus.subset(splits["test"]), data_config.eval_views),
    }
    train, val, test = examples["train"], examples["val"], examples["test"]
    log(
        f"data: {data_config.workload}, {len(corpus.texts)} texts, train/val/test {len(splits['train'])}/"
        f"{len(splits['val'])}/{len(splits['test'])} -> {len(train)}/{len(val)}/{len(test)} examples"
        + (f" (train subsampled to {data_config.train_limit})" if data_config.train_limit else "")
        + f", hash {dhash[:12]}"
    )

    order = cost_order(sizes)
    results: dict[str, SizeResult] = {}
    per_size: dict[str, dict] = {}
    family: dict[str, SizeLogits] = {}
    teacher_train: np.ndarray | None = None
    # Most expensive first: its final exit teaches the others.
    for name in reversed(order):
        cfg, source = sizes[name], sources[name]
        ts = time.perf_counter()
        model = size_model(cfg, source)
        tokenizer = Tokenizer(source.tokenizer_dir)
        cache = feature_cache(out, model, tokenizer)
        feats, tokens = {}, {}
        for split, ex in examples.items():
            f, tokens[split] = cache.features(ex.texts, cfg.max_seq_len, cfg.num_layers, desc=f"{cfg.name} {split}")
            feats[split] = exit_features(f, cfg.exit_layers)
        cache.save()
        tf = time.perf_counter() - ts
        teacher = None if name == order[-1] else teacher_train
        train_heads(model, feats["train"], train.labels, teacher, head_training, desc=f"{cfg.name} heads")
        logits = {s: head_logits(model, feats[s]) for s in feats}
        if name == order[-1]:
            teacher_train = logits["train"][-1]
        cost = {s: cumulative_stage_flops(cfg, tokens[s]) for s in examples}
        family[name] = SizeLogits(logits, cost)

        cal = calibrate(
            logits["val"],
            val.labels,
            cost["val"],
            cfg.exit_layers,
            policy=calibration.confidence,
            max_accuracy_loss=calibration.max_accuracy_loss,
            delta=calibration.delta,
        )
        test_metrics = evaluate(logits["test"], test.labels, cal.thresholds, cal.policy, cost["test"], cfg.exit_layers)
        size_dir = out / cfg.name
        size_dir.mkdir(parents=True, exist_ok=True)
        copy_tokenizer(source.tokenizer_dir, size_dir / "tokenizer")
        thresholds = {
            "size": cfg.name,
            "policy": cal.policy,
            "thresholds": list(cal.thresholds),
            "exit_layers": list(cfg.exit_layers),
            "stage_models": [cfg.stage_model_name(s) for s in range(1, cfg.num_stages + 1)],
            "label_names": list(corpus.label_names),
            "dataset_hash": dhash,
            "config": asdict(cfg),
            "data": asdict(data_config),
            "calibration": {k: v for k, v in asdict(cal).items() if k != "val"},
            "guarantee": (
                f"P(early wrong and full right) <= {cal.max_accuracy_loss} with probability >= "
                f"{1 - cal.delta:.2f} (Learn-then-Test, fixed-sequence, binomial tail)"
                if cal.guarantee_met
                else "none: no threshold vector passed; thresholds are 1.0"
            ),
        }
        (size_dir / "thresholds.json").write_text(json.dumps(thresholds, indent=2) + "\n")

        te = time.perf_counter()
        onnx_info = export_size(model, size_dir, parity_shapes)
        save_weights(model, size_dir / "weights.safetensors", corpus.label_names)
        engines = (
            build_engines(cfg, [size_dir / f for f in onnx_info["files"].values()], size_dir, log=log)
            if tensorrt
            else []
        )
        extra = {
            "backbone": source.name or (str(source.weights) if source.weights else "random"),
            "thresholds": list(cal.thresholds),
            "calibration": asdict(cal),
            "test": test_metrics,
            "accuracy_full_depth_test": test_metrics["accuracy_full"],
            "accuracy_early_exit_test": test_metrics["accuracy_early_exit"],
            "accuracy_per_exit": {"val": cal.val["accuracy_per_exit"], "test": test_metrics["accuracy_per_exit"]},
            "flops_per_sample_per_exit_test": [float(c) for c in cost["test"].mean(1)],
            "test_accuracy_by_view_full_depth": _by_view(test, logits["test"], test.labels),
            "flops_per_sample_eval_mix_full_depth": float(full_flops(cfg, tokens["test"]).mean()),
            "mean_tokens_eval_mix": float(tokens["test"].mean()),
            "expected_speedup_test": test_metrics["expected_speedup"],
            "onnx": onnx_info,
            "tensorrt_engines": [p.name for p in engines],
            "seconds": {
                "features": tf,
                "heads_and_calibration": te - ts - tf,
                "export": time.perf_counter() - te,
            },
            "build_seconds": time.perf_counter() - ts,
        }
        per_size[cfg.name] = extra
        results[cfg.name] = SizeResult(cfg.name, cfg, cal, test_metrics, extra)
        log(
            f"{cfg.name}: test acc full {test_metrics['accuracy_full']:.4f} "
            f"early {test_metrics['accuracy_early_exit']:.4f} per exit "
            f"{[round(x, 4) for x in test_metrics['accuracy_per_exit']]} "
            f"exits {[round(x, 3) for x in test_metrics['exit_distribution']]} thresholds "
            f"{[round(x, 3) for x in cal.thresholds]} ({extra['build_seconds']:.0f}s: features {tf:.0f}s)"
        )

    copy_tokenizer(sources[order[0]].tokenizer_dir, out / "tokenizer")
    # Size router (estimator + calibrated routing) from the exit logits just computed: seconds. Before the manifest,
    # so its files are hashed too.
    from .complexity import build_router

    build_router(out, corpus, order, data_config=data_config, family=family, log=log)
    flops = {n: r["flops_per_sample_eval_mix_full_depth"] for n, r in per_size.items()}
    write_manifest(
        out,
        {n: sizes[n] for n in sizes},
        per_size,
        {
            "dataset_hash": dhash,
            "label_names": list(corpus.label_names),
            "data": asdict(data_config),
            "calibration_config": asdict(calibration),
            "head_training": asdict(head_training),
            "flops_per_sample_eval_mix": flops,
            "size_flops_ratios": size_ratios(flops),
            "backbones": {n: per_size[n]["backbone"] for n in per_size},
            "backbone": per_size[order[-1]]["backbone"],
            "command": command,
            "build_seconds": time.perf_counter() - t0,
        },
    )
    return results
