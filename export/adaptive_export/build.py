"""One export build: data -> frozen features -> exit heads -> calibrated thresholds -> ONNX + weights -> manifest.

Layout of a build directory:

    <out>/<size>/stage<i>.onnx, full.onnx, weights.safetensors, thresholds.json
    <out>/tokenizer/          tokenizer files (truncation/padding switched off; callers truncate per size)
    <out>/complexity/         size-router estimator and router.json (`complexity.build_router`)
    <out>/manifest.json
    <out>/.cache/             persisted backbone features (not hashed, safe to delete)
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
    FeatureCache,
    HeadTraining,
    backbone_fingerprint,
    exit_features,
    head_logits,
    train_heads,
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
# Fields a size may change relative to the backbone; anything else would invalidate the shared feature cache.
SIZE_FIELDS = ("name", "num_layers", "exit_every", "max_seq_len", "head_hidden")


@dataclass(frozen=True)
class SizeResult:
    """What one size's build produced (also the row of the CLI summary table)."""

    name: str
    config: EarlyExitConfig
    calibration: Calibration
    test: dict
    extra: dict


def copy_tokenizer(src: Path, dst: Path) -> Path:
    """Copy tokenizer files, turning off the truncation/padding baked into MiniLM's `tokenizer.json`.

    MiniLM's file truncates and pads to a fixed 128 tokens; each size truncates to its own `max_seq_len` instead,
    and batches pad to their longest row.
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


def _check_family(sizes: dict[str, EarlyExitConfig]) -> EarlyExitConfig:
    """The deepest size; every size must differ from it only in `SIZE_FIELDS` (they share one backbone pass)."""
    deepest = max(sizes.values(), key=lambda c: c.num_layers)
    for cfg in sizes.values():
        same = dataclasses.replace(cfg, **{f: getattr(deepest, f) for f in SIZE_FIELDS})
        if same != deepest:
            raise ValueError(
                f"size {cfg.name} differs from {deepest.name} beyond {SIZE_FIELDS}; sizes must share the backbone dims"
            )
    return deepest


def _size_model(cfg: EarlyExitConfig, backbone: EarlyExitEncoder) -> EarlyExitEncoder:
    """A size's encoder: the backbone's embeddings and first `cfg.num_layers` layers, fresh heads."""
    torch.manual_seed(0)
    model = EarlyExitEncoder(cfg)
    sd = {k: v for k, v in backbone.state_dict().items() if not k.startswith("heads.")}
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    for p in list(model.embeddings.parameters()) + list(model.encoder.parameters()):
        p.requires_grad_(False)  # frozen backbone: only heads train
    return model


def _by_view(ex: Examples, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Full-depth accuracy per view ("full" = the whole text)."""
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
    tokenizer_dir: Path,
    backbone_dir: Path | None,
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
        sizes: size name -> config; all share one backbone (only `SIZE_FIELDS` may differ).
        corpus: labeled texts; split by `data_config`.
        tokenizer_dir: directory with `tokenizer.json` (copied into `<out>/tokenizer`).
        backbone_dir: HF BERT-family checkpoint with the backbone weights, or None for random weights (tests).
        data_config: split, training views and evaluation mix.
        calibration: accuracy-loss target, delta and confidence policy.
        head_training: exit-head optimisation knobs.
        parity_shapes: (batch, sequence) shapes of the ONNX parity checks.
        tensorrt: try to build TensorRT engines (skipped with a message when not importable).
        command: the command line, recorded in the manifest.
        log: message sink.

    Returns:
        size name -> SizeResult.

    Raises:
        ValueError: sizes that cannot share a backbone.
    """
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    deepest = _check_family(sizes)
    dhash = dataset_hash(corpus, data_config)
    splits = split_indices(corpus, data_config)
    train = make_views(corpus.subset(splits["train"]), data_config.view_words)
    val = make_views(corpus.subset(splits["val"]), data_config.eval_views)
    test = make_views(corpus.subset(splits["test"]), data_config.eval_views)
    log(
        f"data: {len(corpus.texts)} texts, train/val/test {len(splits['train'])}/{len(splits['val'])}/"
        f"{len(splits['test'])} -> {len(train)}/{len(val)}/{len(test)} examples, hash {dhash[:12]}"
    )

    torch.manual_seed(0)
    backbone = EarlyExitEncoder(deepest)
    if backbone_dir is not None:
        load_backbone(backbone, backbone_dir)
    backbone.eval()
    tokenizer = Tokenizer(tokenizer_dir)
    cache = FeatureCache(backbone, tokenizer, out / ".cache" / f"features-{backbone_fingerprint(backbone)}.pkl")

    results: dict[str, SizeResult] = {}
    per_size: dict[str, dict] = {}
    teacher_train: np.ndarray | None = None
    # Deepest first: its features fill the cache for every shared short view, its final exit teaches the others.
    for cfg in sorted(sizes.values(), key=lambda c: -c.num_layers):
        ts = time.perf_counter()
        model = _size_model(cfg, backbone)
        feats = {}
        tokens = {}
        for split, ex in (("train", train), ("val", val), ("test", test)):
            f, tokens[split] = cache.features(ex.texts, cfg.max_seq_len, cfg.num_layers, desc=f"{cfg.name} {split}")
            feats[split] = exit_features(f, cfg.exit_layers)
        cache.save()
        teacher = None if cfg is deepest or cfg.num_layers == deepest.num_layers else teacher_train
        train_heads(model, feats["train"], train.labels, teacher, head_training, desc=f"{cfg.name} heads")
        logits = {s: head_logits(model, feats[s]) for s in feats}
        if cfg.num_layers == deepest.num_layers and teacher_train is None:
            teacher_train = logits["train"][-1]

        cost = {s: cumulative_stage_flops(cfg, tokens[s]) for s in ("val", "test")}
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

        onnx_info = export_size(model, size_dir, parity_shapes)
        save_weights(model, size_dir / "weights.safetensors", corpus.label_names)
        engines = (
            build_engines(cfg, [size_dir / f for f in onnx_info["files"].values()], size_dir, log=log)
            if tensorrt
            else []
        )
        extra = {
            "thresholds": list(cal.thresholds),
            "calibration": asdict(cal),
            "test": test_metrics,
            "accuracy_per_exit": {"val": cal.val["accuracy_per_exit"], "test": test_metrics["accuracy_per_exit"]},
            "test_accuracy_by_view_full_depth": _by_view(test, logits["test"], test.labels),
            "flops_per_sample_eval_mix_full_depth": float(full_flops(cfg, tokens["test"]).mean()),
            "mean_tokens_eval_mix": float(tokens["test"].mean()),
            "expected_speedup_test": test_metrics["expected_speedup"],
            "onnx": onnx_info,
            "tensorrt_engines": [p.name for p in engines],
            "build_seconds": time.perf_counter() - ts,
        }
        per_size[cfg.name] = extra
        results[cfg.name] = SizeResult(cfg.name, cfg, cal, test_metrics, extra)
        log(
            f"{cfg.name}: test acc full {test_metrics['accuracy_full']:.4f} "
            f"early {test_metrics['accuracy_early_exit']:.4f} "
            f"exits {[round(x, 3) for x in test_metrics['exit_distribution']]} thresholds "
            f"{[round(x, 3) for x in cal.thresholds]} ({extra['build_seconds']:.0f}s)"
        )

    copy_tokenizer(tokenizer_dir, out / "tokenizer")
    # Size router (estimator + calibrated routing) from the cached features: seconds. Before the manifest, so its
    # files are hashed too.
    from .complexity import build_router

    build_router(out, corpus, list(sizes), data_config=data_config, backbone=backbone, log=log)
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
            "backbone": str(backbone_dir) if backbone_dir else "random",
            "command": command,
            "build_seconds": time.perf_counter() - t0,
        },
    )
    return results
