"""Roofline math: analytic FLOPs and bytes per stage call, achieved FLOP/s, and the bound verdict.

FLOPs and bytes come from the export's one cost model (`adaptive_export.manifest.stage_flops`, `stage_bytes`);
this module only combines them with a measured time and the device peaks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from adaptive_core.config import EarlyExitConfig
from adaptive_export.manifest import stage_bytes, stage_flops

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Below this fraction of the attainable roof, a call is called overhead-bound in the report's explanation.
OVERHEAD_FRACTION = 0.1


@dataclass(frozen=True)
class RooflinePoint:
    """One stage at one batch size on the roofline.

    Args:
        size: size name.
        stage: 1-based stage index.
        batch: sequences per call.
        tokens: tokens per sequence.
        flops: analytic FLOPs of the call.
        bytes: analytic bytes moved by the call (`stage_bytes` total).
        bytes_by_kind: the parts of `bytes` (weights, activations, attention_scores, interface).
        time_s: measured time of one call.
        intensity: arithmetic intensity, FLOPs per byte.
        achieved_flops_per_s: flops / time_s.
        roof_flops_per_s: attainable peak at this intensity, min(peak FLOP/s, intensity * peak bytes/s).
        fraction_of_roof: achieved / roof.
        bound: "memory" when intensity < ridge, else "compute".
        ridge: the device's ridge point (FLOPs per byte).
    """

    size: str
    stage: int
    batch: int
    tokens: int
    flops: float
    bytes: float
    bytes_by_kind: dict[str, float]
    time_s: float
    intensity: float
    achieved_flops_per_s: float
    roof_flops_per_s: float
    fraction_of_roof: float
    bound: str
    ridge: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def stage_cost(
    config: EarlyExitConfig, stage: int, batch: int, tokens: int, dtype: str = "float32"
) -> tuple[float, dict[str, float]]:
    """(FLOPs, bytes by kind incl. "total") of one call of `stage` on `batch` sequences of `tokens` tokens."""
    flops = float(batch * stage_flops(config, stage, tokens))
    by_kind = {k: float(v) for k, v in stage_bytes(config, stage, batch, tokens, DTYPE_BYTES[dtype]).items()}
    return flops, by_kind


def roofline_point(
    config: EarlyExitConfig,
    stage: int,
    batch: int,
    tokens: int,
    time_s: float,
    peak_flops_per_s: float,
    peak_bytes_per_s: float,
    dtype: str = "float32",
) -> RooflinePoint:
    """Place one measured stage call on the roofline of a device with the given peaks.

    Raises:
        ValueError: a non-positive time or peak.
    """
    if time_s <= 0 or peak_flops_per_s <= 0 or peak_bytes_per_s <= 0:
        raise ValueError(
            f"time and peaks must be > 0, got time_s={time_s}, peaks {peak_flops_per_s}, {peak_bytes_per_s}"
        )
    flops, by_kind = stage_cost(config, stage, batch, tokens, dtype)
    total = by_kind.pop("total")
    intensity = flops / total
    ridge = peak_flops_per_s / peak_bytes_per_s
    roof = min(peak_flops_per_s, intensity * peak_bytes_per_s)
    achieved = flops / time_s
    return RooflinePoint(
        config.name,
        stage,
        batch,
        tokens,
        flops,
        total,
        by_kind,
        time_s,
        intensity,
        achieved,
        roof,
        achieved / roof,
        "memory" if intensity < ridge else "compute",
        ridge,
    )


def why(point: RooflinePoint) -> str:
    """One sentence on why the point is on its side of the ridge, from its largest byte term."""
    share = {k: v / point.bytes for k, v in point.bytes_by_kind.items()}
    top = max(share, key=share.get)
    cause = {
        "weights": "re-reading the weights dominates the traffic (few tokens per call to reuse each weight)",
        "activations": "the unfused activations (Q/K/V, feed-forward, LayerNorm passes) dominate the traffic",
        "attention_scores": "the T x T attention scores dominate the traffic (they grow with T^2 per head)",
        "interface": "the stage's input and output tensors dominate the traffic",
    }[top]
    side = "below" if point.bound == "memory" else "above"
    text = (
        f"intensity {point.intensity:.1f} FLOP/B is {side} the ridge {point.ridge:.1f} FLOP/B; "
        f"{cause} ({share[top]:.0%} of {point.bytes / 1e6:.1f} MB)"
    )
    if point.fraction_of_roof < OVERHEAD_FRACTION:
        # Far under both roofs: neither bandwidth nor compute limits the call, fixed costs do.
        text += (
            f"; at {point.fraction_of_roof:.0%} of its roof the call is limited by fixed costs (kernel "
            "launches, Python, small kernels), not by this roof"
        )
    return text
