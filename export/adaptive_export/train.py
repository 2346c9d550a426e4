"""Cheap training of the size family on CPU: frozen backbone features, then small exit heads.

Plan (2 CPU cores, minutes not hours):

1. Each size's pretrained backbone is frozen. It runs once, without grad, over every distinct token sequence (texts
   sorted by length and batched under a token budget to minimize padding); the masked-mean hidden after each layer
   is cached per token sequence, one cache per backbone (named by a fingerprint of its weights), persisted between
   builds.
2. Each exit head trains on its layer's cached pooled features: the most expensive size with cross-entropy on
   labels, the other sizes with cross-entropy plus distillation (KL) toward its final-exit logits.

Because stage k's exit head sees exactly `masked_mean(layer_k(...))`, the exported stages reproduce these logits.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from adaptive_serving.encoder import EarlyExitEncoder

from .data import Tokenizer, pad_batch


@dataclass(frozen=True)
class HeadTraining:
    """Exit-head optimisation knobs (heads only: the backbone stays frozen).

    Args:
        epochs: passes over the train features; fixed (no early stopping) so validation stays untouched for
            calibration. 10, not more: longer training barely moves accuracy but makes the heads overconfident,
            which leaves fewer confidence levels for calibration to separate.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: feature rows per step.
        distill_alpha: weight of the KL-to-teacher term for student sizes (1 - alpha goes to cross-entropy).
        distill_temperature: softmax temperature of distillation (Hinton et al. 2015); the KL is scaled by T^2.
        seed: torch seed for head init and shuffling.
    """

    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-2
    batch_size: int = 256
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    seed: int = 0


HEAD_TRAINING = HeadTraining()

# Tokens per forward batch (B * T): 8192 keeps a 2-core forward around a second and memory small.
TOKEN_BUDGET = 8192


def backbone_fingerprint(backbone: EarlyExitEncoder) -> str:
    """sha256 of the backbone weights (not the heads): names a persisted feature cache."""
    h = hashlib.sha256()
    for k, v in sorted(backbone.state_dict().items()):
        if not k.startswith("heads."):
            h.update(k.encode())
            h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureCache:
    """Pooled per-layer features of a frozen backbone, keyed by token sequence.

    Args:
        backbone: the deepest encoder; sizes keep its first layers, so one cache serves the whole family.
        tokenizer: tokenizes texts with each size's truncation.
        path: optional pickle file to load from / save to, so a rebuild skips the backbone pass.
    """

    def __init__(self, backbone: EarlyExitEncoder, tokenizer: Tokenizer, path: Path | None = None) -> None:
        self.backbone = backbone.eval()
        self.tokenizer = tokenizer
        self.path = path
        self.store: dict[tuple[int, ...], np.ndarray] = {}  # token ids -> (layers_computed, H) float32
        if path is not None and path.exists():
            with path.open("rb") as f:
                self.store = pickle.load(f)

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("wb") as f:
                pickle.dump(self.store, f, protocol=pickle.HIGHEST_PROTOCOL)

    def features(
        self, texts: tuple[str, ...], max_seq_len: int, num_layers: int, desc: str = "features"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features of `texts` after layers 1..num_layers at truncation `max_seq_len`.

        Returns:
            (features float32 (num_layers, N, H), token counts int64 (N,)).
        """
        seqs = [tuple(s) for s in self.tokenizer.encode(texts, max_seq_len)]
        todo = sorted({s for s in seqs if s not in self.store or len(self.store[s]) < num_layers}, key=len)
        # Greedy length-sorted batches under the token budget: little padding, and short views batch wide.
        batches, cur = [], []
        for s in todo:
            if cur and (len(cur) + 1) * len(s) > TOKEN_BUDGET:
                batches.append(cur)
                cur = []
            cur.append(s)
        if cur:
            batches.append(cur)
        with torch.inference_mode(), tqdm(total=len(todo), desc=desc, unit="seq", leave=False) as bar:
            for batch in batches:
                ids, mask = pad_batch([list(s) for s in batch])
                pooled = self.backbone.pooled_features(torch.from_numpy(ids), torch.from_numpy(mask), num_layers)
                pooled = pooled.numpy()  # (L, B, H)
                for j, s in enumerate(batch):
                    self.store[s] = pooled[:, j].copy()
                bar.update(len(batch))
        feats = np.stack([self.store[s][:num_layers] for s in seqs], axis=1)  # (L, N, H)
        return feats.astype(np.float32), np.asarray([len(s) for s in seqs], dtype=np.int64)


@dataclass(frozen=True)
class SizeLogits:
    """One size's exit logits and per-exit cost on each split (what the router's calibration simulates on).

    Args:
        logits: split -> (K, N, C) exit logits.
        cost: split -> (K, N) cumulative FLOPs of exiting at each stage.
    """

    logits: dict[str, np.ndarray]
    cost: dict[str, np.ndarray]


def feature_cache(out: Path, model: EarlyExitEncoder, tokenizer: Tokenizer) -> FeatureCache:
    """The persisted feature cache of one size's backbone (named by a fingerprint of its weights)."""
    return FeatureCache(model, tokenizer, out / ".cache" / f"features-{backbone_fingerprint(model)}.pkl")


def exit_features(feats: np.ndarray, exit_layers: tuple[int, ...]) -> np.ndarray:
    """Pick the exit layers (1-based) from per-layer features (L, N, H) -> (K, N, H)."""
    return feats[[layer - 1 for layer in exit_layers]]


def _distill_loss(
    logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None, cfg: HeadTraining
) -> torch.Tensor:
    ce = F.cross_entropy(logits, y)
    if teacher is None:
        return ce
    t = cfg.distill_temperature
    kl = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="batchmean")
    return (1 - cfg.distill_alpha) * ce + cfg.distill_alpha * (t * t) * kl


def train_heads(
    model: EarlyExitEncoder,
    feats: np.ndarray,
    labels: np.ndarray,
    teacher_logits: np.ndarray | None,
    cfg: HeadTraining = HEAD_TRAINING,
    desc: str = "heads",
) -> list[float]:
    """Train every exit head of `model` on its exit's cached features (in place).

    Args:
        model: the size whose `heads` are trained.
        feats: (K, N, H) pooled features per exit.
        labels: (N,) class indices.
        teacher_logits: (N, C) logits to distill toward, or None for plain cross-entropy.
        cfg: optimisation knobs.
        desc: progress-bar label.

    Returns:
        final-epoch mean training loss per head.
    """
    assert feats.shape[0] == len(model.heads), f"{len(model.heads)} heads but features for {feats.shape[0]} exits"
    # One thread: the steps are tiny (a 768 x 256 MLP on 256 rows), and on a busy 2-core machine two threads spent
    # most of each step waiting on each other (about a minute per head instead of seconds).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_heads(model, feats, labels, teacher_logits, cfg, desc)
    finally:
        torch.set_num_threads(threads)


def _train_heads(
    model: EarlyExitEncoder,
    feats: np.ndarray,
    labels: np.ndarray,
    teacher_logits: np.ndarray | None,
    cfg: HeadTraining,
    desc: str,
) -> list[float]:
    torch.manual_seed(cfg.seed)
    y = torch.from_numpy(labels)
    teacher = None if teacher_logits is None else torch.from_numpy(teacher_logits).float()
    losses = []
    for k, head in enumerate(tqdm(model.heads, desc=desc, leave=False)):
        x = torch.from_numpy(feats[k])
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
        head.train()
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(x))
            total = 0.0
            for i in range(0, len(x), cfg.batch_size):
                b = perm[i : i + cfg.batch_size]
                loss = _distill_loss(head.classify(x[b]), y[b], None if teacher is None else teacher[b], cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            sched.step()
        head.eval()
        losses.append(total / len(x))
    return losses


@torch.no_grad()
def head_logits(model: EarlyExitEncoder, feats: np.ndarray) -> np.ndarray:
    """Logits of every exit from cached exit features (K, N, H) -> (K, N, C), heads in eval mode."""
    model.eval()
    return np.stack([head.classify(torch.from_numpy(feats[k])).numpy() for k, head in enumerate(model.heads)])
