"""Complexity estimator of the size router: labels from the size family itself, a small classifier, ONNX export.

Labels: for every text of train (all training views), val and test (evaluation mix), each size's calibrated
cascade is simulated on cached exit logits (backbone features from the build's cache + the exported heads);
label = index of the smallest size (in cost order) whose cascade answers correctly, the largest if none does.

Estimator: `adaptive_core.complexity_features` -> standardize (baked into the graph) -> MLP -> S logits, trained
with cross-entropy on train. Exported to ONNX (input "features" [N, F] float32, output "size_logits" [N, S], dynamic
batch) and checked against torch with onnxruntime.

`build_router` runs the whole step: estimator, routing calibration (`routing.py`), `<export>/complexity/`.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adaptive_core.complexity_features import FEATURES_VERSION, NUM_FEATURES, NUM_HANDCRAFTED, extract_features
from adaptive_core.config import DATA, DataConfig
from adaptive_serving.encoder import load_weights

from .data import Corpus, Examples, Tokenizer, dataset_hash, make_views, split_indices
from .manifest import _json_default, cumulative_stage_flops, file_hashes
from .onnx_export import OPSET, AtolError, ShapeError
from .routing import ROUTING, Outcome, RoutingConfig, calibrate_router, cascade_outcome, needed_size, policy_report
from .train import SizeLogits, exit_features, feature_cache, head_logits

FEATURES = "features"
SIZE_LOGITS = "size_logits"
# Max abs difference allowed between onnxruntime and torch on the estimator's logits (a tiny MLP: ~1e-7 observed).
ESTIMATOR_ATOL = 1e-5
PARITY_BATCHES = (1, 7, 64)


@dataclass(frozen=True)
class EstimatorTraining:
    """Estimator optimisation knobs.

    Args:
        hidden: MLP width; 0 gives a multinomial logistic regression.
        epochs: passes over the train features (fixed: validation is kept for routing calibration).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: rows per step.
        dropout: dropout on the hidden layer.
        seed: torch seed.
    """

    hidden: int = 64
    epochs: int = 20
    lr: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 256
    dropout: float = 0.1
    seed: int = 0


ESTIMATOR_TRAINING = EstimatorTraining()


class Estimator(torch.nn.Module):
    """(N, F) raw complexity features -> (N, S) size logits; the handcrafted columns are standardized in-graph."""

    def __init__(
        self,
        num_features: int,
        num_sizes: int,
        shift: np.ndarray,
        scale: np.ndarray,
        cfg: EstimatorTraining = ESTIMATOR_TRAINING,
    ) -> None:
        super().__init__()
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))  # (F,)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))  # (F,)
        if cfg.hidden:
            self.net = torch.nn.Sequential(
                torch.nn.Linear(num_features, cfg.hidden),
                torch.nn.GELU(),
                torch.nn.Dropout(cfg.dropout),
                torch.nn.Linear(cfg.hidden, num_sizes),
            )
        else:
            self.net = torch.nn.Linear(num_features, num_sizes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.shift) * self.scale)  # (N, S)


def train_estimator(
    x: np.ndarray, y: np.ndarray, num_sizes: int, cfg: EstimatorTraining = ESTIMATOR_TRAINING
) -> Estimator:
    """Fit the estimator on (N, F) features and (N,) needed-size labels."""
    shift, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    # Only the handcrafted columns: the hashed block is already l2-normalized, and scaling rare buckets to unit
    # variance would blow them up.
    shift[:NUM_HANDCRAFTED] = x[:, :NUM_HANDCRAFTED].mean(0)
    scale[:NUM_HANDCRAFTED] = 1.0 / np.maximum(x[:, :NUM_HANDCRAFTED].std(0), 1e-6)
    torch.manual_seed(cfg.seed)
    model = Estimator(x.shape[1], num_sizes, shift, scale, cfg)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), cfg.batch_size):
            b = perm[i : i + cfg.batch_size]
            loss = F.cross_entropy(model(xt[b]), yt[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: Estimator, x: np.ndarray) -> np.ndarray:
    """(N, F) -> (N, S) probabilities of the needed size."""
    return torch.softmax(model(torch.from_numpy(x.astype(np.float32))), -1).numpy()


def export_estimator(model: Estimator, path: Path, sample: np.ndarray, atol: float = ESTIMATOR_ATOL) -> float:
    """Export to ONNX ("features" [batch, F] -> "size_logits" [batch, S]) and check it against torch.

    Args:
        model: the trained estimator.
        path: ONNX file to write.
        sample: (M, F) real feature rows for the parity check (random normals over 520 columns give logits far
            larger than any text does, so their float rounding says nothing about served inputs).
        atol: allowed max abs difference on the logits.

    Returns:
        the largest abs difference over `PARITY_BATCHES`.

    Raises:
        ShapeError: onnxruntime's output shape differs from torch's.
        AtolError: onnxruntime differs from torch by more than `atol`.
    """
    import onnx
    import onnxruntime as ort

    path.parent.mkdir(parents=True, exist_ok=True)
    f = model.shift.shape[0]
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, f),),
            str(path),
            dynamo=True,
            external_data=False,
            opset_version=OPSET,
            input_names=[FEATURES],
            output_names=[SIZE_LOGITS],
            dynamic_shapes={"features": {0: torch.export.Dim("batch", min=1, max=4096)}},
            verbose=False,
        )
    proto = onnx.load(str(path))
    for vi in list(proto.graph.input) + list(proto.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.metadata_props.add(key="features_version", value=str(FEATURES_VERSION))
    onnx.save(proto, str(path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for b in PARITY_BATCHES:
        x = sample[rng.integers(0, len(sample), b)].astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run([SIZE_LOGITS], {FEATURES: x})[0]
        if got.shape != ref.shape:
            raise ShapeError(
                f"estimator: output {SIZE_LOGITS!r} has shape {got.shape} in ONNX, torch gives {ref.shape} (batch {b})"
            )
        diff = float(np.abs(ref - got).max())
        if not diff <= atol:
            raise AtolError(
                f"estimator: output {SIZE_LOGITS!r} differs from torch by {diff:.3g} > atol {atol} (batch {b})"
            )
        worst = max(worst, diff)
    return worst


def estimator_metrics(probs: np.ndarray, y: np.ndarray, sizes: list[str]) -> dict:
    """Accuracy, one-vs-rest AUC per size (None where a class is absent), confusion matrix (rows: true needed)."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    s_count = len(sizes)
    pred = probs.argmax(1)
    auc = {}
    for s, name in enumerate(sizes):
        pos = y == s
        auc[name] = float(roc_auc_score(pos, probs[:, s])) if 0 < pos.sum() < len(y) else None
    valid = [v for v in auc.values() if v is not None]
    # The ranking the router needs most: is the smallest size not enough? (score: 1 - P(needed = smallest))
    not_enough = y > 0
    auc_not_enough = (
        float(roc_auc_score(not_enough, 1.0 - probs[:, 0])) if 0 < not_enough.sum() < len(y) and s_count > 1 else None
    )
    return {
        "auc_smallest_not_enough": auc_not_enough,
        "n": len(y),
        "accuracy": float((pred == y).mean()),
        "majority_baseline_accuracy": float(np.bincount(y, minlength=s_count).max() / len(y)),
        "auc_ovr": auc,
        "auc_ovr_macro": float(np.mean(valid)) if valid else None,
        "confusion_matrix": confusion_matrix(y, pred, labels=list(range(s_count))).tolist(),
        "label_share": {n: float((y == s).mean()) for s, n in enumerate(sizes)},
    }


@dataclass(frozen=True)
class SizeFamily:
    """Per-size cascades simulated on every split.

    Args:
        sizes: size names in cost order (cheapest first).
        early: split -> per-size outcomes with the calibrated thresholds.
        full: split -> per-size outcomes at full depth.
        examples: split -> the texts.
    """

    sizes: list[str]
    early: dict[str, list[Outcome]]
    full: dict[str, list[Outcome]]
    examples: dict[str, Examples]


def family_logits(
    export_dir: Path, corpus: Corpus, sizes: list[str], *, data_config: DataConfig = DATA, log=print
) -> dict[str, SizeLogits]:
    """Every size's exit logits and costs on train/val/test, from its saved weights and its feature cache (texts
    missing from the cache run through the size's backbone)."""
    splits = split_indices(corpus, data_config)
    examples = {
        "train": make_views(corpus.subset(splits["train"]), data_config.view_words),
        "val": make_views(corpus.subset(splits["val"]), data_config.eval_views),
        "test": make_views(corpus.subset(splits["test"]), data_config.eval_views),
    }
    out = {}
    for n in sizes:
        model = load_weights(export_dir / n / "weights.safetensors")
        tok_dir = export_dir / n / "tokenizer"
        cache = feature_cache(export_dir, model, Tokenizer(tok_dir if tok_dir.is_dir() else export_dir / "tokenizer"))
        cfg = model.config
        logits, cost = {}, {}
        for split, ex in examples.items():
            f, tokens = cache.features(ex.texts, cfg.max_seq_len, cfg.num_layers, desc=f"{n} {split}")
            logits[split] = head_logits(model, exit_features(f, cfg.exit_layers))  # (K, N, C)
            cost[split] = cumulative_stage_flops(cfg, tokens)  # (K, N); tokens already truncated to max_seq_len
        cache.save()
        out[n] = SizeLogits(logits, cost)
    return out


def simulate_family(
    export_dir: Path,
    corpus: Corpus,
    sizes: list[str],
    *,
    data_config: DataConfig = DATA,
    family: dict[str, SizeLogits] | None = None,
    log=print,
) -> SizeFamily:
    """Simulate every size's calibrated cascade on train/val/test.

    Args:
        export_dir: a build directory (`<size>/weights.safetensors`, `<size>/thresholds.json`, `.cache/`).
        corpus: the corpus the build used (checked against thresholds.json's dataset hash).
        sizes: size names to use.
        data_config: views and split.
        family: the sizes' exit logits when the caller has them (the build); else `family_logits` computes them.
        log: message sink.

    Raises:
        ValueError: the corpus or data config is not the one the sizes were built on.
    """
    thr = {n: json.loads((export_dir / n / "thresholds.json").read_text()) for n in sizes}
    dhash = dataset_hash(corpus, data_config)
    for n, t in thr.items():
        if t["dataset_hash"] != dhash:
            raise ValueError(
                f"{export_dir / n / 'thresholds.json'}: dataset hash {t['dataset_hash'][:12]} != "
                f"{dhash[:12]} of the given corpus and data config"
            )
    family = family or family_logits(export_dir, corpus, sizes, data_config=data_config, log=log)
    splits = split_indices(corpus, data_config)
    examples = {
        "train": make_views(corpus.subset(splits["train"]), data_config.view_words),
        "val": make_views(corpus.subset(splits["val"]), data_config.eval_views),
        "test": make_views(corpus.subset(splits["test"]), data_config.eval_views),
    }
    early: dict[str, list] = {s: [] for s in examples}
    full: dict[str, list] = {s: [] for s in examples}
    costs = {}
    for n in sizes:
        for split, ex in examples.items():
            logits, cost = family[n].logits[split], family[n].cost[split]
            args = (logits, ex.labels, thr[n]["thresholds"], thr[n]["policy"], cost)
            early[split].append(cascade_outcome(*args))
            full[split].append(cascade_outcome(*args, early_exit=False))
            if split == "val":
                costs[n] = float(cost[-1].mean())
    order = sorted(range(len(sizes)), key=lambda i: costs[sizes[i]])
    log(f"route: sizes in cost order {[sizes[i] for i in order]}")
    return SizeFamily(
        [sizes[i] for i in order],
        {s: [v[i] for i in order] for s, v in early.items()},
        {s: [v[i] for i in order] for s, v in full.items()},
        examples,
    )


def build_router(
    export_dir: Path,
    corpus: Corpus,
    sizes: list[str],
    *,
    data_config: DataConfig = DATA,
    routing: RoutingConfig = ROUTING,
    training: EstimatorTraining = ESTIMATOR_TRAINING,
    family: dict[str, SizeLogits] | None = None,
    log=print,
) -> dict:
    """Train and export the estimator, calibrate the router on val, report on test; write `<export>/complexity/`.

    Writes `estimator.onnx` + `metrics.json` (two sizes or more), `router.json` and `route_report.json`.

    Returns:
        the router.json content.
    """
    t0 = time.perf_counter()
    out = export_dir / "complexity"
    out.mkdir(parents=True, exist_ok=True)
    fam = simulate_family(export_dir, corpus, sizes, data_config=data_config, family=family, log=log)
    names, s_count = fam.sizes, len(fam.sizes)
    labels = {s: needed_size(fam.early[s]) for s in fam.examples}
    full_acc_val = float(fam.full["val"][-1].ok.mean())
    router = {
        "format": "adaptive-router/1",
        "sizes": names,
        "num_sizes": s_count,
        "features_version": FEATURES_VERSION,
        "num_features": NUM_FEATURES,
        "estimator": None,
        "estimator_input": FEATURES,
        "estimator_output": SIZE_LOGITS,
        "q": 1.0,
        "escalate_thresholds": {},
        "confidence": json.loads((export_dir / names[-1] / "thresholds.json").read_text())["policy"],
        "max_accuracy_loss": routing.max_accuracy_loss,
        "dataset_hash": dataset_hash(corpus, data_config),
        "routing_config": asdict(routing),
        "estimator_training": asdict(training),
    }
    report: dict = {
        "label_share": {s: {n: float((y == i).mean()) for i, n in enumerate(names)} for s, y in labels.items()}
    }
    if s_count == 1:
        log(f"route: one size ({names[0]}): every text goes to it, no estimator")
        probs = {s: np.ones((len(ex), 1)) for s, ex in fam.examples.items()}
        cal = {"q": 1.0, "escalate": [], "feasible": True}
    else:
        x = {s: extract_features(ex.texts) for s, ex in fam.examples.items()}  # (N, F) per split
        model = train_estimator(x["train"], labels["train"], s_count, training)
        diff = export_estimator(model, out / "estimator.onnx", x["val"])
        probs = {s: predict_proba(model, x[s]) for s in x}
        metrics = {s: estimator_metrics(probs[s], labels[s], names) for s in ("train", "val", "test")}
        metrics.update(
            {
                "onnx_max_abs_diff": diff,
                "sizes": names,
                "confusion_matrix_rows": "true needed size",
                "confusion_matrix_cols": "argmax predicted size",
            }
        )
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        report["estimator"] = metrics
        router["estimator"] = "complexity/estimator.onnx"
        cal = calibrate_router(fam.early["val"], probs["val"], full_acc_val - routing.max_accuracy_loss, routing)
        log(
            f"route: estimator val acc {metrics['val']['accuracy']:.4f} test acc {metrics['test']['accuracy']:.4f}; "
            f"q {cal['q']} escalate {cal['escalate']} (feasible {cal['feasible']})"
        )
    router["q"] = cal["q"]
    router["escalate_thresholds"] = {n: float(t) for n, t in zip(names[:-1], cal["escalate"])}
    report["calibration"] = {
        **cal,
        "target_accuracy_val": full_acc_val - routing.max_accuracy_loss,
        "accuracy_always_largest_full_val": full_acc_val,
    }
    report["test"] = policy_report(
        {"early": fam.early["test"], "full": fam.full["test"]}, probs["test"], names, cal["q"], cal["escalate"], routing
    )
    report["seconds"] = time.perf_counter() - t0
    router["test"] = {k: v for k, v in report["test"].items() if k != "gap_recovery"}
    router["test"]["gap_recovery"] = {k: v for k, v in report["test"]["gap_recovery"].items() if k != "points"}
    (out / "router.json").write_text(json.dumps(router, indent=2, default=_json_default) + "\n")
    (out / "route_report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return router


def refresh_manifest_hashes(export_dir: Path) -> None:
    """Re-hash the build's files into `manifest.json` (the route step rewrites `complexity/` after a build)."""
    path = export_dir / "manifest.json"
    if path.exists():
        m = json.loads(path.read_text())
        m["files"] = file_hashes(export_dir)
        path.write_text(json.dumps(m, indent=2, default=_json_default) + "\n")
