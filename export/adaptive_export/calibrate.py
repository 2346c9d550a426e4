"""Exit-threshold calibration with a finite-sample guarantee (Learn then Test, Angelopoulos et al. 2021).

Target: with probability >= 1 - delta over the validation draw,

    risk(t) = P(early exit is wrong AND full depth is right) <= max_accuracy_loss,

which bounds the accuracy lost against running every layer (acc_full - acc_early <= risk).

How:

* A fixed, data-independent family of threshold vectors: for each "path" (a multiplier per early exit), the
  thresholds are t_k(lam) = 1 - (1 - lam) * m_k, with lam scanned from 1 (conservative: exit only at certainty)
  down to 0 (aggressive), 1 - lam on a log grid. The family is chosen before looking at validation data, as
  LTT requires.
* Each candidate is a null hypothesis H0: risk(t) > alpha, tested with the exact binomial tail
  p = P(Bin(n, alpha) <= observed losses) (the Clopper-Pearson upper bound, stated as a p-value).
* Fixed-sequence testing along each path at level delta / P (Bonferroni over P paths): walk from conservative to
  aggressive, accept while p <= delta / P, stop at the first failure. Every accepted vector then has risk <= alpha,
  simultaneously, with probability >= 1 - delta, so picking the cheapest accepted one keeps the guarantee.

Assumption: the binomial test treats calibration samples as independent draws. The evaluation mix shows each
article at several views, so samples of one article are correlated and the effective sample size is smaller than
n; the guarantee is exact only for i.i.d. requests. (An article-level test, e.g. Hoeffding-Bentkus on per-article
mean loss, is valid under clustering but cannot certify 0.005 with ~335 validation articles at delta = 0.1.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binom

from adaptive_core.confidence import check_threshold, get_policy

# lam grid: 1 - lam log-spaced from GRID_MIN_GAP to 1 (plus lam = 1). Log spacing because trained heads are
# confident: with a linear 0.005 step, max_prob thresholds jump from 1.0 to 0.995 and skip every useful value.
GRID_POINTS = 200
GRID_MIN_GAP = 1e-5


@dataclass(frozen=True)
class Calibration:
    """Result of calibrating one size.

    Args:
        thresholds: one threshold per early exit (the last stage always answers).
        policy: confidence policy name.
        path: name of the path the chosen vector came from ("none" if nothing was accepted).
        lam: the path parameter of the chosen vector.
        n: calibration samples.
        losses: calibration samples with early wrong and full right at the chosen vector.
        p_value: binomial p-value of the chosen vector.
        max_accuracy_loss: alpha.
        delta: error level of the guarantee.
        accepted: number of accepted candidate vectors over all paths.
        guarantee_met: False if even the most conservative vectors failed (thresholds then are all 1.0).
        val: metrics of the chosen vector on the calibration set.
    """

    thresholds: tuple[float, ...]
    policy: str
    path: str
    lam: float
    n: int
    losses: int
    p_value: float
    max_accuracy_loss: float
    delta: float
    accepted: int
    guarantee_met: bool
    val: dict = field(default_factory=dict)


def confidences(logits: np.ndarray, policy: str) -> np.ndarray:
    """(K, N, C) logits -> (K, N) confidences in [0, 1] under `policy`."""
    fn = get_policy(policy)
    return np.stack([fn(lg) for lg in logits])


def exit_index(conf: np.ndarray, thresholds: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """0-based exit stage per sample: the first early exit whose confidence clears its threshold, else the last.

    Args:
        conf: (K, N) confidences (row K-1, the last stage, is ignored).
        thresholds: K-1 thresholds in [0, 1].

    Raises:
        ValueError: wrong number of thresholds, or one outside [0.0, 1.0] (names the exit and the range).
    """
    k = conf.shape[0]
    if len(thresholds) != k - 1:
        raise ValueError(f"expected {k - 1} thresholds (one per early exit), got {len(thresholds)}")
    t = np.asarray([check_threshold(v, f"threshold of exit {i + 1}") for i, v in enumerate(thresholds)])
    passed = np.concatenate([conf[:-1] >= t[:, None], np.ones((1, conf.shape[1]), bool)])  # (K, N)
    return passed.argmax(axis=0)  # first True


def evaluate(
    logits: np.ndarray, labels: np.ndarray, thresholds, policy: str, cost: np.ndarray, exit_layers: tuple[int, ...]
) -> dict:
    """Early-exit metrics of one threshold vector.

    Args:
        logits: (K, N, C) per-exit logits.
        labels: (N,) true classes.
        thresholds: K-1 thresholds.
        policy: confidence policy name.
        cost: (K, N) cumulative FLOPs of exiting at stage k.
        exit_layers: layer count at each exit (for "layers saved").
    """
    preds = logits.argmax(-1)  # (K, N)
    e = exit_index(confidences(logits, policy), thresholds)
    n = len(labels)
    early_pred = preds[e, np.arange(n)]
    full_ok = preds[-1] == labels
    early_ok = early_pred == labels
    layers = np.asarray(exit_layers)[e]
    flops = cost[e, np.arange(n)]
    return {
        "n": n,
        "accuracy_full": float(full_ok.mean()),
        "accuracy_early_exit": float(early_ok.mean()),
        "risk": float((~early_ok & full_ok).mean()),
        "exit_distribution": [float((e == k).mean()) for k in range(logits.shape[0])],
        "accuracy_per_exit": [float(v) for v in (preds == labels).mean(1)],
        "mean_layers": float(layers.mean()),
        "layers_saved_fraction": float(1 - layers.mean() / exit_layers[-1]),
        "mean_flops": float(flops.mean()),
        "mean_flops_full_depth": float(cost[-1].mean()),
        "expected_speedup": float(cost[-1].mean() / flops.mean()),
    }


def binomial_pvalue(losses: int, n: int, alpha: float) -> float:
    """p-value of H0: risk > alpha after `losses` of `n`: P(Bin(n, alpha) <= losses)."""
    return float(binom.cdf(losses, n, alpha))


def threshold_paths(num_early: int) -> dict[str, np.ndarray]:
    """Path multipliers m (one per early exit); t_k(lam) = 1 - (1 - lam) * m_k. Duplicates are dropped.

    "uniform" loosens every exit alike; "early_strict" loosens later exits first (their features are better);
    "late_strict" the reverse. With a single early exit all three coincide.
    """
    ramp = np.arange(1, num_early + 1, dtype=np.float64) / num_early
    cands = {"uniform": np.ones(num_early), "early_strict": ramp, "late_strict": ramp[::-1].copy()}
    out: dict[str, np.ndarray] = {}
    for name, m in cands.items():
        if not any(np.allclose(m, v) for v in out.values()):
            out[name] = m
    return out


def calibrate(
    logits: np.ndarray,
    labels: np.ndarray,
    cost: np.ndarray,
    exit_layers: tuple[int, ...],
    *,
    policy: str,
    max_accuracy_loss: float,
    delta: float,
    grid_points: int = GRID_POINTS,
) -> Calibration:
    """Choose per-exit thresholds by Learn-then-Test on a held-out calibration set.

    Args:
        logits: (K, N, C) per-exit logits on the calibration set (K >= 2).
        labels: (N,) true classes.
        cost: (K, N) cumulative FLOPs of exiting at each stage.
        exit_layers: layer count at each exit.
        policy: confidence policy name (see `confidence.CONFIDENCE`).
        max_accuracy_loss: alpha, the bound on P(early wrong and full right).
        delta: allowed probability that the bound fails.
        grid_points: candidates per path (besides lam = 1).

    Raises:
        ValueError: alpha or delta outside (0, 1), or fewer than two exits.
    """
    for name, v in (("max_accuracy_loss", max_accuracy_loss), ("delta", delta)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name} must be in (0.0, 1.0), got {v!r}")
    k, n = logits.shape[0], logits.shape[1]
    if k < 2:
        raise ValueError(f"calibration needs at least 2 exits, got {k}")
    conf = confidences(logits, policy)  # (K, N)
    preds = logits.argmax(-1)  # (K, N)
    full_ok = preds[-1] == labels
    paths = threshold_paths(k - 1)
    level = delta / len(paths)  # Bonferroni over paths
    lams = np.concatenate([[1.0], 1.0 - np.geomspace(GRID_MIN_GAP, 1.0, grid_points)])  # conservative first
    best = None  # (mean_flops, thresholds, path, lam, losses, p)
    accepted = 0
    for pname, mult in paths.items():
        for lam in lams:
            t = np.clip(1.0 - (1.0 - lam) * mult, 0.0, 1.0)
            e = exit_index(conf, t)
            losses = int(((preds[e, np.arange(n)] != labels) & full_ok).sum())
            p = binomial_pvalue(losses, n, max_accuracy_loss)
            if p > level:
                break  # fixed-sequence testing: the first failure ends the path
            accepted += 1
            flops = float(cost[e, np.arange(n)].mean())
            if best is None or flops < best[0]:
                best = (flops, tuple(float(x) for x in t), pname, float(lam), losses, p)
    if best is None:
        t = tuple(1.0 for _ in range(k - 1))
        e = exit_index(conf, t)
        losses = int(((preds[e, np.arange(n)] != labels) & full_ok).sum())
        best = (0.0, t, "none", 1.0, losses, binomial_pvalue(losses, n, max_accuracy_loss))
    _, t, pname, lam, losses, p = best
    return Calibration(
        thresholds=t,
        policy=policy,
        path=pname,
        lam=lam,
        n=n,
        losses=losses,
        p_value=p,
        max_accuracy_loss=max_accuracy_loss,
        delta=delta,
        accepted=accepted,
        guarantee_met=pname != "none",
        val=evaluate(logits, labels, t, policy, cost, exit_layers),
    )
