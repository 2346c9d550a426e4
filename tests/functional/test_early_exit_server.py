"""The tiny family on the shared test server exits early for real: it learned its toy task, the easy texts leave at
stage 1, and the calibration guarantee holds for the served answers on a fresh draw of the task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from scipy.stats import binom

from adaptive_core import names
from adaptive_core.config import MAX_BATCH_SIZE
from adaptive_export.toy import TOY_SEED, toy_samples
from adaptive_ops.server import TritonServer

pytestmark = pytest.mark.server

FRESH = toy_samples(40 * MAX_BATCH_SIZE, seed=TOY_SEED + 1)  # the task's population, not the build's texts


def _serve(url: str, model: str, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every FRESH text through `model`, in full requests (batch class: no deadline, nothing is cut short)."""
    client = grpcclient.InferenceServerClient(url)
    got: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
    for start in range(0, len(FRESH.texts), MAX_BATCH_SIZE):
        data = np.array([[t.encode()] for t in FRESH.texts[start : start + MAX_BATCH_SIZE]], dtype=np.object_)
        inp = grpcclient.InferInput(names.TEXT, list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        result = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
        for o in outputs:
            got[o].append(result.as_numpy(o))
    return {o: np.concatenate(v) for o, v in got.items()}


def test_served_early_exit_keeps_the_calibration_guarantee(tiny_server: TritonServer, tiny_export: Path) -> None:
    calibration = json.loads((tiny_export / "tiny" / "thresholds.json").read_text())
    assert calibration["calibration"]["guarantee_met"] and calibration["thresholds"][0] < 1.0, calibration
    alpha = calibration["calibration"]["max_accuracy_loss"]
    early = _serve(tiny_server.grpc_url, "adaptive", (names.LABEL, names.EXIT_STAGE, names.DEADLINE_CUT))
    full = _serve(tiny_server.grpc_url, "tiny_full", (names.LOGITS,))
    label, stage = early[names.LABEL].ravel(), early[names.EXIT_STAGE].ravel()
    full_label = full[names.LOGITS].argmax(-1)
    assert not early[names.DEADLINE_CUT].any()
    # The guarantee: P(early wrong and full right) <= alpha. Past the 0.999 quantile of Bin(n, alpha), it fails.
    losses = int(((label != FRESH.labels) & (full_label == FRESH.labels)).sum())
    assert losses <= binom.ppf(0.999, len(label), alpha), f"{losses} of {len(label)} answers lost to early exit"
    # It learned the task (chance is 1/5), and answers the easy texts at stage 1.
    easy = np.array(FRESH.kinds) == "easy"
    assert (full_label == FRESH.labels)[easy].mean() >= 0.95 and (full_label == FRESH.labels).mean() >= 0.8
    assert (stage[easy] == 1).mean() >= 0.95 and 0.5 <= (stage == 1).mean() < 1.0, np.bincount(stage)
    # Early exit changes answers only where the served cascade left early.
    assert ((label != full_label) <= (stage == 1)).all()
