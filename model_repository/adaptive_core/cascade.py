"""Early-exit cascade logic, kept apart from Triton so it can be tested directly.

The cascade model (model_repository/models/cascade) calls stage models over BLS; this module decides who
exits where, keeps the per-sample results, and predicts whether the next stage fits the deadline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Mean deviations added to a stage call's mean time when judging whether it fits a deadline (`StageLatency`).
DEADLINE_MARGIN = 2.0


@dataclass(frozen=True)
class CascadePlan:
    """What the cascade of one size runs.

    Args:
        size: size name.
        stage_models: Triton model names of the stages, in order.
        exit_layers: encoder layer after each stage (for the exit_layer output).
        thresholds: confidence needed to leave at each stage but the last (the last always answers).
        confidence: name of the confidence policy the thresholds were calibrated for.
        max_seq_len: tokens the size reads.
        express_models: the same stages in the express lane (own instances, full CPU priority); empty = none.
        express_max_timeout_us: requests whose timeout is nonzero and at most this take the express lane
            (the gate's rule, `Gate.express`).
        device: "gpu" when the stages hand hidden states over in GPU memory (the cascade then asks BLS for GPU
            outputs and slices them with torch); "cpu" otherwise.
        sep_id: the size's separator token, written where truncation cuts a row (BERT [SEP] 102, MPNet </s> 2).
        tokenizer: for a router target, the tokenizer file (beside the router's plan) whose tokens this size reads,
            when they are not the entry's tokens; "" = the tokens the caller was given.
    """

    size: str
    stage_models: tuple[str, ...]
    exit_layers: tuple[int, ...]
    thresholds: tuple[float, ...]
    confidence: str
    max_seq_len: int
    express_models: tuple[str, ...] = ()
    express_max_timeout_us: int = 0
    device: str = "cpu"
    sep_id: int = 102
    tokenizer: str = ""

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.stage_models) - 1:
            raise ValueError(
                f"{self.size}: {len(self.stage_models)} stages need {len(self.stage_models) - 1} "
                f"thresholds, got {len(self.thresholds)}"
            )
        for t in self.thresholds:
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"{self.size}: threshold {t} outside the allowed range [0, 1]")
        if self.express_models and len(self.express_models) != len(self.stage_models):
            raise ValueError(
                f"{self.size}: {len(self.express_models)} express stages for {len(self.stage_models)} stages"
            )
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"{self.size}: device must be 'cpu' or 'gpu', got {self.device!r}")

    def lane(self, express: bool) -> tuple[str, ...]:
        """Stage models of a request in the express lane (when the plan has one) or the standard lane; the
        admission gate picks the lane (`adaptive_serving.gate.Gate.express`)."""
        return self.express_models if express and self.express_models else self.stage_models

    def to_json(self) -> str:
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}, indent=1)

    @classmethod
    def from_dict(cls, raw: dict) -> CascadePlan:
        return cls(
            size=raw["size"],
            stage_models=tuple(raw["stage_models"]),
            exit_layers=tuple(raw["exit_layers"]),
            thresholds=tuple(float(t) for t in raw["thresholds"]),
            confidence=raw["confidence"],
            max_seq_len=int(raw["max_seq_len"]),
            express_models=tuple(raw.get("express_models", ())),
            express_max_timeout_us=int(raw.get("express_max_timeout_us", 0)),
            device=raw.get("device", "cpu"),
            sep_id=int(raw.get("sep_id", 102)),
            tokenizer=raw.get("tokenizer", ""),
        )

    @classmethod
    def from_file(cls, path: Path) -> CascadePlan:
        return cls.from_dict(json.loads(Path(path).read_text()))


class CascadeState:
    """Per-request bookkeeping: which samples are still running and what each answered.

    Args:
        batch: samples in the request.
        confidence: policy mapping (n, C) logits to (n,) confidences in [0, 1].
    """

    def __init__(self, batch: int, confidence: Callable[[np.ndarray], np.ndarray]) -> None:
        self.confidence = confidence
        self.alive = np.arange(batch)  # request rows still in the cascade
        self.label = np.full(batch, -1, dtype=np.int64)
        self.score = np.zeros(batch, dtype=np.float32)
        self.exit_stage = np.zeros(batch, dtype=np.int32)
        self.deadline_cut = np.zeros(batch, dtype=bool)
        self._last_logits: np.ndarray | None = None  # logits of alive rows at their latest exit

    def observe(self, stage: int, logits: np.ndarray, threshold: float | None) -> np.ndarray:
        """Record stage `stage` (1-based) logits for the alive rows; returns the mask of rows that stay.

        `threshold` None means the last stage: every row answers.
        """
        assert logits.shape[0] == self.alive.size, f"logits for {logits.shape[0]} rows, {self.alive.size} alive"
        conf = self.confidence(logits)
        leave = np.ones(self.alive.size, dtype=bool) if threshold is None else conf >= threshold
        rows = self.alive[leave]
        self.label[rows] = logits[leave].argmax(axis=-1)
        self.score[rows] = conf[leave]
        self.exit_stage[rows] = stage
        stay = ~leave
        self.alive = self.alive[stay]
        self._last_logits = logits[stay]
        self._last_conf = conf[stay]
        self._last_stage = stage
        return stay

    def cut_short(self) -> None:
        """Deadline: every alive row answers with its latest exit, flagged."""
        if self.alive.size == 0 or self._last_logits is None:
            return
        rows = self.alive
        self.label[rows] = self._last_logits.argmax(axis=-1)
        self.score[rows] = self._last_conf
        self.exit_stage[rows] = self._last_stage
        self.deadline_cut[rows] = True
        self.alive = self.alive[:0]

    @property
    def done(self) -> bool:
        return self.alive.size == 0


class StageLatency:
    """Running estimate of each stage model's call time at each token width, with its spread (seconds).

    Keyed by stage model, so each lane has its own: an express stage answers in milliseconds while the same
    stage in the standard lane waits behind batch work, and one shared estimate made critical requests judge
    their next stage by the standard lane's queue. Keyed by width too (the bucket-padded token columns of the
    call): a stage's compute grows about 10x from 16 to 256 tokens, and one estimate per model judged a short
    text's next stage by the long texts' time.

    A call fits when its mean plus `margin` mean deviations fits (as TCP sizes its retransmit timer): the mean
    alone let the slower half of the calls overrun, and on a saturated CPU a call's time spreads to several
    times its mean, which put the escalated and cut-short critical requests in the class's latency tail. On
    a quiet server the spread is small and the decisions are the mean's.

    Args:
        alpha: weight of the newest observation in the mean.
        beta: weight of the newest observation in the mean deviation.
        margin: mean deviations added to the mean when judging a call (0: the mean alone).
    """

    def __init__(self, alpha: float = 0.2, beta: float = 0.25, margin: float = DEADLINE_MARGIN) -> None:
        self.alpha = alpha
        self.beta = beta
        self.margin = margin
        self.mean: dict[tuple[str, int], float] = {}
        self.deviation: dict[tuple[str, int], float] = {}

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> StageLatency:
        """The estimator a gate model's config asks for (`deadline_margin`, else `DEADLINE_MARGIN`)."""
        return cls(margin=float(params.get("deadline_margin", DEADLINE_MARGIN)))

    def update(self, model: str, width: int, seconds: float) -> None:
        """Record one call of `model` on `width` token columns that took `seconds`."""
        key = (model, width)
        old = self.mean.get(key)
        if old is None:
            self.mean[key], self.deviation[key] = seconds, 0.0
            return
        self.deviation[key] += self.beta * (abs(seconds - old) - self.deviation[key])
        self.mean[key] = (1 - self.alpha) * old + self.alpha * seconds

    def estimate(self, model: str, width: int) -> float:
        """The time a call of `model` on `width` token columns is judged by (0 for one not yet seen)."""
        key = (model, width)
        return self.mean.get(key, 0.0) + self.margin * self.deviation.get(key, 0.0)

    def fits(self, model: str, width: int, elapsed_s: float, budget_s: float) -> bool:
        """Whether calling `model` on `width` token columns next is likely to finish within `budget_s` (budget
        <= 0: no deadline; a model and width not yet seen is assumed to fit)."""
        return budget_s <= 0 or elapsed_s + self.estimate(model, width) <= budget_s


def deadline_start(arrived: float, entered_ns: np.ndarray | None) -> float:
    """When a request's deadline starts (`time.monotonic()` seconds): when it entered the server (`entered_ns`, the
    tokenizer's stamp), else when it reached the gate (`arrived`). Under load the time before the gate (gRPC, ensemble,
    tokenizer) reached 16-38 ms of a critical request's 50 ms at p99; counting from the gate budgeted it twice. A
    stamp later than `arrived` is ignored: a caller cannot extend its deadline."""
    if entered_ns is None or entered_ns.size == 0:
        return arrived
    return min(arrived, float(entered_ns.min()) / 1e9)
