"""Offline simulation and calibration of the size router on cached exit logits (no backbone, no server).

Policy (what the serving router implements, see `router.json`):

1. The estimator gives p (N, S): probability that size s is the smallest one whose calibrated cascade answers
   correctly (sizes in cost order). Start size = smallest s with P(needed <= s) = cumsum(p)[s] >= q.
2. Run that size's calibrated early-exit cascade (its own `thresholds.json`).
3. If the confidence of the exit the cascade answered at is < escalate_threshold[s] and s is not the largest size,
   discard the answer and run the next size's cascade from its first stage (costs add); repeat.

Scorer and decision are split as in RouteLLM: the estimator scores, `start_sizes` decides with one threshold q.
Calibration starts from a business target (`RoutingConfig.max_accuracy_loss`, accuracy lost against always-large at
full depth on validation): over a grid of q and a shared escalation threshold, the cheapest feasible pair wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibrate import confidences, exit_index


@dataclass(frozen=True)
class RoutingConfig:
    """Router calibration knobs.

    Args:
        max_accuracy_loss: allowed validation accuracy drop of the router (with early exit) against always-large at
            full depth (0.005 = 0.5 points); same default as the exit calibration's target.
        q_grid: candidate routing thresholds q (0 = always the smallest size, 1 = always the largest).
        escalate_grid: candidate shared escalation thresholds (0 = never escalate).
        seed: seed of the estimator's training.
    """

    max_accuracy_loss: float = 0.005
    q_grid: tuple[float, ...] = tuple(np.round(np.linspace(0, 1, 101), 4)) + (0.995, 0.999, 0.9999)
    escalate_grid: tuple[float, ...] = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
    seed: int = 0


ROUTING = RoutingConfig()


@dataclass(frozen=True)
class Outcome:
    """One size's cascade on N texts: what it answers and what that costs.

    Args:
        ok: (N,) the answer is correct.
        confidence: (N,) confidence of the exit that answered.
        cost: (N,) FLOPs of the stages run.
    """

    ok: np.ndarray
    confidence: np.ndarray
    cost: np.ndarray


def cascade_outcome(
    logits: np.ndarray, labels: np.ndarray, thresholds, policy: str, cost: np.ndarray, *, early_exit: bool = True
) -> Outcome:
    """Simulate one size's cascade.

    Args:
        logits: (K, N, C) per-exit logits.
        labels: (N,) true classes.
        thresholds: K-1 calibrated exit thresholds.
        policy: confidence policy name.
        cost: (K, N) cumulative FLOPs of exiting at stage k (`manifest.cumulative_stage_flops`).
        early_exit: False runs every stage (full depth).
    """
    conf = confidences(logits, policy)  # (K, N)
    k, n = conf.shape
    e = exit_index(conf, thresholds) if early_exit else np.full(n, k - 1)
    ar = np.arange(n)
    return Outcome(logits.argmax(-1)[e, ar] == labels, conf[e, ar], cost[e, ar])


def needed_size(outcomes: list[Outcome]) -> np.ndarray:
    """(N,) index of the smallest size whose cascade is right; the largest when none is."""
    ok = np.stack([o.ok for o in outcomes])  # (S, N)
    return np.where(ok.any(0), ok.argmax(0), len(outcomes) - 1)


def start_sizes(probs: np.ndarray, q: float) -> np.ndarray:
    """(N,) smallest s with P(needed <= s) >= q; the largest size always qualifies."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"routing threshold q must be a float between 0.0 and 1.0, got {q!r}")
    passed = np.cumsum(probs, axis=1) >= q - 1e-9  # (N, S); tolerance: cumsum of softmax may end at 0.9999999
    passed[:, -1] = True
    return passed.argmax(1)


def simulate(outcomes: list[Outcome], start: np.ndarray, escalate: tuple[float, ...] | list[float]) -> dict:
    """Run the router policy given start sizes and S-1 escalation thresholds.

    Returns:
        {"ok": (N,) bool, "cost": (N,) FLOPs, "final": (N,) size that answered, "ran": (S, N) sizes run}.
    """
    s_count, n = len(outcomes), len(start)
    if len(escalate) != s_count - 1:
        raise ValueError(
            f"expected {s_count - 1} escalation thresholds (one per size but the largest), got {len(escalate)}"
        )
    ok, cost = np.zeros(n, bool), np.zeros(n)
    final, ran = np.full(n, -1), np.zeros((s_count, n), bool)
    pending = np.zeros(n, bool)  # escalated into the current size
    for s, o in enumerate(outcomes):
        run = (start == s) | pending
        ran[s] = run
        cost[run] += o.cost[run]
        esc = run & (o.confidence < escalate[s]) if s < s_count - 1 else np.zeros(n, bool)
        ans = run & ~esc
        ok[ans], final[ans] = o.ok[ans], s
        pending = esc
    return {"ok": ok, "cost": cost, "final": final, "ran": ran}


def summarize(result: dict, ref_cost: float, sizes: list[str]) -> dict:
    """Accuracy, mean FLOPs, cost relative to `ref_cost`, and size shares of a `simulate` result."""
    s_count = result["ran"].shape[0]
    return {
        "accuracy": float(result["ok"].mean()),
        "mean_flops": float(result["cost"].mean()),
        "relative_cost": float(result["cost"].mean() / ref_cost),
        "answer_share": {sizes[s]: float((result["final"] == s).mean()) for s in range(s_count)},
        "run_share": {sizes[s]: float(result["ran"][s].mean()) for s in range(s_count)},
        "escalation_rate": float((result["ran"].sum(0) > 1).mean()),
    }


def calibrate_router(
    outcomes: list[Outcome], probs: np.ndarray, target_accuracy: float, config: RoutingConfig = ROUTING
) -> dict:
    """Cheapest (q, shared escalation threshold) whose accuracy is >= `target_accuracy` on this (validation) set.

    Returns:
        {"q", "escalate" (S-1 floats), "accuracy", "mean_flops", "feasible", "candidates"}; when no pair is
        feasible, the most accurate one is returned with `feasible` False.
    """
    best, most_accurate, n_ok = None, None, 0
    for q in config.q_grid:
        start = start_sizes(probs, float(q))
        for t in config.escalate_grid:
            esc = [float(t)] * (len(outcomes) - 1)
            r = simulate(outcomes, start, esc)
            acc, flops = float(r["ok"].mean()), float(r["cost"].mean())
            cand = (flops, -acc, float(q), esc)
            if most_accurate is None or (-acc, flops) < (most_accurate[1], most_accurate[0]):
                most_accurate = cand
            if acc >= target_accuracy - 1e-12:
                n_ok += 1
                if best is None or cand[:2] < best[:2]:
                    best = cand
    chosen = best or most_accurate
    return {
        "q": chosen[2],
        "escalate": chosen[3],
        "accuracy": -chosen[1],
        "mean_flops": chosen[0],
        "feasible": best is not None,
        "candidates": len(config.q_grid) * len(config.escalate_grid),
        "feasible_candidates": n_ok,
    }


def gap_recovery(outcomes: list[Outcome], probs: np.ndarray, q_grid: tuple[float, ...]) -> dict:
    """RouteLLM-style curve: sweep q with escalation off; x = share of texts run on the largest size,
    y = performance gap recovered (acc - acc_smallest) / (acc_largest - acc_smallest), both ends with early exit.

    Returns:
        {"gap", "points": [[large_share, pgr, q], ...], "large_share_for_50pct", "large_share_for_80pct", "apgr"};
        PGR numbers are None when the gap is not positive (the largest size is not more accurate).
    """
    s_count = len(outcomes)
    acc_small, acc_large = float(outcomes[0].ok.mean()), float(outcomes[-1].ok.mean())
    gap = acc_large - acc_small
    pts = []
    for q in q_grid:
        r = simulate(outcomes, start_sizes(probs, float(q)), [0.0] * (s_count - 1))
        pts.append((float(r["ran"][-1].mean()), float(r["ok"].mean()), float(q)))
    out = {
        "accuracy_smallest": acc_small,
        "accuracy_largest": acc_large,
        "gap": gap,
        "points": None,
        "large_share_for_50pct": None,
        "large_share_for_80pct": None,
        "apgr": None,
    }
    if gap <= 0:
        return out
    pts = sorted((share, (acc - acc_small) / gap, q) for share, acc, q in pts)
    # The curve's ends: no text on the largest size (PGR 0) and every text on it (PGR 1).
    curve = [(0.0, 0.0)] + [(s, p) for s, p, _ in pts] + [(1.0, 1.0)]
    xs, ys = np.asarray([c[0] for c in curve]), np.asarray([c[1] for c in curve])
    out["points"] = [[s, p, q] for s, p, q in pts]
    for frac, key in ((0.5, "large_share_for_50pct"), (0.8, "large_share_for_80pct")):
        hit = [s for s, p, _ in pts if p >= frac]
        out[key] = min(hit) if hit else 1.0
    out["apgr"] = float(np.trapezoid(ys, xs)) if hasattr(np, "trapezoid") else float(np.trapz(ys, xs))
    return out


def policy_report(
    outcomes: dict[str, list[Outcome]],
    probs: np.ndarray,
    sizes: list[str],
    q: float,
    escalate: list[float],
    config: RoutingConfig = ROUTING,
) -> dict:
    """Every policy on one (test) set; costs relative to always-largest at full depth.

    Args:
        outcomes: {"early": per-size cascades with early exit, "full": per-size full depth}.
        probs: (N, S) estimator probabilities.
        sizes: size names in cost order.
        q: calibrated routing threshold.
        escalate: calibrated escalation thresholds (S-1).
        config: q grid of the gap-recovery sweep.
    """
    early, full = outcomes["early"], outcomes["full"]
    s_count, n = len(sizes), len(early[0].ok)
    ref = float(full[-1].cost.mean())
    policies: dict[str, dict] = {}
    for s, name in enumerate(sizes):
        for mode, oc in (("full depth", full), ("early exit", early)):
            r = simulate(oc, np.full(n, s), [0.0] * (s_count - 1))
            policies[f"always {name} ({mode})"] = summarize(r, ref, sizes)
    start = start_sizes(probs, q)
    router = simulate(early, start, escalate)
    policies["router, no early exit"] = summarize(simulate(full, start, escalate), ref, sizes)
    policies["router + early exit"] = summarize(router, ref, sizes)
    # Ablation: the same escalation with every text starting at the smallest size (what the estimator adds).
    policies["escalation only (q = 0) + early exit"] = summarize(
        simulate(early, np.zeros(n, int), escalate), ref, sizes
    )
    # Random routing with the router's answer shares: expected accuracy and cost of a random start size drawn with
    # those shares (cascades with early exit, no escalation); exact expectation, no sampling noise.
    shares = np.asarray([(router["final"] == s).mean() for s in range(s_count)])
    acc = float(sum(shares[s] * early[s].ok.mean() for s in range(s_count)))
    flops = float(sum(shares[s] * early[s].cost.mean() for s in range(s_count)))
    policies["random routing, router's size shares (early exit)"] = {
        "accuracy": acc,
        "mean_flops": flops,
        "relative_cost": flops / ref,
        "answer_share": {sizes[s]: float(shares[s]) for s in range(s_count)},
    }
    pair = pair_report(
        early[0],
        early[-1],
        1.0 - probs[:, 0],
        policies["router + early exit"],
        ref,
        weak_name=sizes[0],
        strong_name=sizes[-1],
    )
    return {
        "n": n,
        "reference": f"always {sizes[-1]} (full depth)",
        "reference_mean_flops": ref,
        "policies": policies,
        "gap_recovery": gap_recovery(early, probs, config.q_grid),
        "routellm_pair": pair,
    }


# Shares of texts sent to the strong model at which the pair curves are tabulated (the full curve is exact: every
# cut of the ranking is evaluated).
PAIR_REPORT_SHARES = (0.1, 0.2, 0.3, 0.5)


def pair_curve(weak: Outcome, strong: Outcome, score: np.ndarray) -> dict:
    """RouteLLM's curve of one routing score on a weak/strong pair: the texts with the highest `score` go to the
    strong model, every cut from none to all.

    Returns:
        {"share": (N+1,) share sent to strong, "accuracy": (N+1,), "cost": (N+1,) mean FLOPs (routing: each text
        runs one model), "pgr": (N+1,) or None when strong is not more accurate, "apgr", "cpt50", "cpt80"}.
    """
    n = len(score)
    order = np.argsort(-score, kind="stable")
    gain = (strong.ok[order].astype(float) - weak.ok[order].astype(float)).cumsum()
    extra = (strong.cost[order] - weak.cost[order]).cumsum()
    acc_w, acc_s = float(weak.ok.mean()), float(strong.ok.mean())
    share = np.arange(n + 1) / n
    accuracy = acc_w + np.concatenate([[0.0], gain]) / n
    cost = float(weak.cost.mean()) + np.concatenate([[0.0], extra]) / n
    out = {"share": share, "accuracy": accuracy, "cost": cost, "pgr": None, "apgr": None, "cpt50": None, "cpt80": None}
    gap = acc_s - acc_w
    if gap <= 0:
        return out
    pgr = (accuracy - acc_w) / gap
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    out.update(
        pgr=pgr,
        apgr=float(trapezoid(pgr, share)),
        cpt50=float(share[np.argmax(pgr >= 0.5)]) if (pgr >= 0.5).any() else 1.0,
        cpt80=float(share[np.argmax(pgr >= 0.8)]) if (pgr >= 0.8).any() else 1.0,
    )
    return out


def _at_cost(curve: dict, mean_flops: float) -> dict:
    """A curve's point with the largest mean cost not above `mean_flops`."""
    i = int(np.searchsorted(curve["cost"], mean_flops, side="right")) - 1
    i = min(max(i, 0), len(curve["cost"]) - 1)
    pgr = None if curve["pgr"] is None else float(curve["pgr"][i])
    return {
        "accuracy": float(curve["accuracy"][i]),
        "strong_share": float(curve["share"][i]),
        "mean_flops": float(curve["cost"][i]),
        "pgr": pgr,
    }


def pair_report(
    weak: Outcome,
    strong: Outcome,
    router_score: np.ndarray,
    operating_point: dict,
    reference_flops: float,
    *,
    weak_name: str,
    strong_name: str,
) -> dict:
    """RouteLLM's metrics on the weak/strong pair (the smallest and the largest size, each as its calibrated
    early-exit cascade), for the router and the baselines.

    * router: the estimator's P(the weak size is not enough), as a pure router (no escalation);
    * naive confidence rule: the weak model runs on every text, and its least confident answers go to the strong
      model (cost: weak on all + strong on those sent);
    * random routing (PGR = share, APGR 0.5 in expectation; at equal cost it is the straight line between the two);
    * oracle: the weak model when it is right, else the strong one.

    The operating point (the calibrated router with every size, early exit and escalation) is compared with the
    random, naive and router-score curves at its own mean FLOPs.

    Args:
        weak, strong: the two cascades' outcomes on the test texts.
        router_score: (N,) higher = more likely to need the strong model.
        operating_point: a `summarize` result of the calibrated router (accuracy, mean_flops).
        reference_flops: mean FLOPs of the strong model at full depth (relative costs).
        weak_name, strong_name: size names.
    """
    acc_w, acc_s = float(weak.ok.mean()), float(strong.ok.mean())
    gap = acc_s - acc_w
    router = pair_curve(weak, strong, router_score)
    # Naive: the weak model always runs; sending a text adds the strong model's cost on top.
    naive = pair_curve(weak, strong, -weak.confidence)
    naive["cost"] = float(weak.cost.mean()) + np.concatenate(
        [[0.0], strong.cost[np.argsort(weak.confidence, kind="stable")].cumsum()]
    ) / len(weak.ok)
    oracle_send = ~weak.ok & strong.ok
    oracle_acc = float((weak.ok | strong.ok).mean())
    oracle_cost = float(np.where(oracle_send, strong.cost, weak.cost).mean())
    op_acc, op_flops = float(operating_point["accuracy"]), float(operating_point["mean_flops"])
    # Random routing at the operating point's cost: the share x with (1-x) c_weak + x c_strong = op_flops.
    c_w, c_s = float(weak.cost.mean()), float(strong.cost.mean())
    x = float(np.clip((op_flops - c_w) / (c_s - c_w), 0.0, 1.0)) if c_s > c_w else 0.0
    random_at_cost = {"accuracy": acc_w + x * gap, "strong_share": x, "mean_flops": c_w + x * (c_s - c_w)}
    random_at_cost["pgr"] = x if gap > 0 else None

    def table(curve: dict) -> dict:
        if curve["pgr"] is None:
            return {}
        return {
            f"{round(100 * s)}%": {
                "accuracy": float(curve["accuracy"][round(s * len(weak.ok))]),
                "pgr": float(curve["pgr"][round(s * len(weak.ok))]),
            }
            for s in PAIR_REPORT_SHARES
        }

    def summary(curve: dict) -> dict:
        return {"apgr": curve["apgr"], "cpt50": curve["cpt50"], "cpt80": curve["cpt80"], "by_share": table(curve)}

    return {
        "weak": weak_name,
        "strong": strong_name,
        "n": len(weak.ok),
        "accuracy_weak": acc_w,
        "accuracy_strong": acc_s,
        "gap": gap,
        "relative_cost_weak": c_w / reference_flops,
        "relative_cost_strong": c_s / reference_flops,
        "operating_point": {
            "accuracy": op_acc,
            "mean_flops": op_flops,
            "relative_cost": op_flops / reference_flops,
            "pgr": (op_acc - acc_w) / gap if gap > 0 else None,
            "accuracy_over_random_at_equal_cost": op_acc - random_at_cost["accuracy"],
            "accuracy_over_naive_at_equal_cost": op_acc - _at_cost(naive, op_flops)["accuracy"],
        },
        "at_operating_cost": {
            "random": random_at_cost,
            "naive confidence rule": _at_cost(naive, op_flops),
            "router score (pure routing)": _at_cost(router, op_flops),
        },
        "curves": {
            "router score (pure routing)": summary(router),
            "naive confidence rule": summary(naive),
            "random": {"apgr": 0.5 if gap > 0 else None, "cpt50": 0.5, "cpt80": 0.8, "by_share": {}},
        },
        "oracle": {
            "accuracy": oracle_acc,
            "strong_share": float(oracle_send.mean()),
            "relative_cost": oracle_cost / reference_flops,
            "pgr": (oracle_acc - acc_w) / gap if gap > 0 else None,
        },
    }
