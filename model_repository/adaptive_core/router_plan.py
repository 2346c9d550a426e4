"""What the router serves: routing targets, the calibrated routing knob, escalation thresholds.

Scorer and decision are split (RouteLLM style): the complexity estimator scores each text with a probability
per target ("the smallest target that gets this right"); `start_targets` decides. A target is either one of our
early-exit cascades (`kind: cascade`) or any Triton model that takes `text` and returns `logits`
(`kind: logits_model`, e.g. `large_full`, or an LLM classifier in the production container).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adaptive_core.cascade import CascadePlan

TARGET_KINDS = ("cascade", "logits_model")


@dataclass(frozen=True)
class RouteTarget:
    """One place a request can be routed to.

    Args:
        name: target name (reported as `model_size`).
        kind: "cascade" (our stages, early exit) or "logits_model" (a Triton model: text -> logits).
        relative_cost: cost per call relative to the largest target (reports, random-at-equal-cost baselines).
        cascade: the cascade plan, for kind "cascade".
        model_name: the Triton model, for kind "logits_model".
    """

    name: str
    kind: str
    relative_cost: float
    cascade: CascadePlan | None = None
    model_name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"target {self.name}: kind must be one of {TARGET_KINDS}, got {self.kind!r}")
        if (self.kind == "cascade") != (self.cascade is not None) or (self.kind == "logits_model") != bool(
            self.model_name
        ):
            needs = "a cascade plan" if self.kind == "cascade" else "model_name"
            raise ValueError(f"target {self.name}: kind {self.kind!r} needs {needs}")


@dataclass(frozen=True)
class RouterPlan:
    """Targets in increasing cost, and the calibrated knobs.

    Args:
        targets: routing targets, cheapest first.
        route_threshold: start at the cheapest target t with P(needed <= t) >= this (higher = more expensive).
        escalate_thresholds: per target, the confidence its answer needs; below it the text goes on to the next
            target (the last target always answers).
        estimator_file: ONNX complexity estimator (features -> one logit per target), beside the plan.
        audit_rate: share of requests also sent to the last target, to label outcomes for recalibration.
        knob: the calibration target (e.g. max accuracy loss against the last target), kept for the record.
    """

    targets: tuple[RouteTarget, ...]
    route_threshold: float
    escalate_thresholds: tuple[float, ...]
    estimator_file: str = "estimator.onnx"
    audit_rate: float = 0.0
    knob: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("a router plan needs at least one target")
        if len(self.escalate_thresholds) != len(self.targets):
            raise ValueError(
                f"{len(self.targets)} targets need {len(self.targets)} escalate thresholds, "
                f"got {len(self.escalate_thresholds)}"
            )
        for name, value in [
            ("route_threshold", self.route_threshold),
            ("audit_rate", self.audit_rate),
            *[("escalate threshold", t) for t in self.escalate_thresholds],
        ]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value} outside the allowed range [0, 1]")

    def start_targets(self, probs: np.ndarray) -> np.ndarray:
        """(N, T) probabilities of the needed target -> (N,) index of the first target to try."""
        cumulative = np.cumsum(probs, axis=1)
        start = (cumulative >= self.route_threshold).argmax(axis=1)
        return np.minimum(start, len(self.targets) - 1)

    @staticmethod
    def complexity(probs: np.ndarray) -> np.ndarray:
        """Expected needed target, scaled to [0, 1] (0: the cheapest suffices for sure)."""
        t = probs.shape[1]
        return (probs @ np.arange(t, dtype=np.float64) / max(t - 1, 1)).astype(np.float32)

    def to_dict(self) -> dict:
        def target(t: RouteTarget) -> dict:
            d = {"name": t.name, "kind": t.kind, "relative_cost": t.relative_cost}
            if t.cascade is not None:
                d["cascade"] = json.loads(t.cascade.to_json())
            if t.model_name:
                d["model_name"] = t.model_name
            return d

        return {
            "targets": [target(t) for t in self.targets],
            "route_threshold": self.route_threshold,
            "escalate_thresholds": list(self.escalate_thresholds),
            "estimator_file": self.estimator_file,
            "audit_rate": self.audit_rate,
            "knob": self.knob,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> RouterPlan:
        targets = tuple(
            RouteTarget(
                name=t["name"],
                kind=t["kind"],
                relative_cost=float(t["relative_cost"]),
                cascade=CascadePlan.from_dict(t["cascade"]) if "cascade" in t else None,
                model_name=t.get("model_name", ""),
            )
            for t in raw["targets"]
        )
        return cls(
            targets=targets,
            route_threshold=float(raw["route_threshold"]),
            escalate_thresholds=tuple(float(x) for x in raw["escalate_thresholds"]),
            estimator_file=raw.get("estimator_file", "estimator.onnx"),
            audit_rate=float(raw.get("audit_rate", 0.0)),
            knob=raw.get("knob", {}),
        )

    def write(self, path: Path) -> None:
        """Write atomically (the serving router re-reads the file when it changes)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> RouterPlan:
        return cls.from_dict(json.loads(Path(path).read_text()))
