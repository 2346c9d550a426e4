"""Exit confidence policies: logits -> a score in [0, 1]; shared code decides `score >= threshold`.

Score and decision are split (RouteLLM `Router` style): a policy only scores, `should_exit` decides. numpy only, so
the Triton Python cascade model can import this module without torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax of (B, C) logits, in float64 so confidences near 1 do not round to exactly 1."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def max_prob(logits: np.ndarray) -> np.ndarray:
    """Top-class probability; in [1/C, 1]."""
    return softmax(logits).max(axis=-1)


def margin(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability; in [0, 1]."""
    p = np.sort(softmax(logits), axis=-1)
    return p[..., -1] - p[..., -2]


def entropy(logits: np.ndarray) -> np.ndarray:
    """1 - normalized entropy (H / log C); 1 = one-hot, 0 = uniform."""
    p = softmax(logits)
    h = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=-1)
    return np.clip(1.0 - h / np.log(p.shape[-1]), 0.0, 1.0)


# Registry used by calibration, the CLI's `choices=` and the serving cascade.
CONFIDENCE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "max_prob": max_prob,
    "margin": margin,
    "entropy": entropy,
}


def get_policy(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Look up a confidence policy.

    Raises:
        ValueError: unknown policy name (lists the known ones).
    """
    try:
        return CONFIDENCE[name]
    except KeyError:
        raise ValueError(f"unknown confidence policy {name!r}; expected one of {sorted(CONFIDENCE)}") from None


def check_threshold(value: float, what: str = "threshold") -> float:
    """Validate one exit threshold.

    Raises:
        ValueError: not a number in [0.0, 1.0] (the message gives the allowed range).
    """
    v = float(value)
    if not 0.0 <= v <= 1.0 or np.isnan(v):
        raise ValueError(f"{what} must be a float between 0.0 and 1.0, got {value!r}")
    return v


def should_exit(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """The one exit decision: exit where `confidence >= threshold`."""
    return np.asarray(confidence) >= check_threshold(threshold)
