"""Re-tune the served router from its recorded outcomes; the running server picks the new plan up by itself.

    python -m adaptive_ops.recalibrate --outcomes build/outcomes/router.jsonl \
        --plan build/model_repository/router/1/plan.json [--max-disagreement 0.005]

Labels in production come from the sampled audit: the router sends `audit_rate` of its requests also to the
largest model at full depth and records that answer. The knob is the largest allowed disagreement with it
(an accuracy-loss proxy that needs no human labels). From the audited records:
  * exit thresholds: for each early exit whose audited answers disagree more than the knob, the threshold
    rises to the lowest confidence above which they do not (never lowered here: lowering needs evidence
    the current log cannot give, since samples below a threshold never exit there);
  * routing: when overall disagreement is over the knob, the routing threshold and the escalation thresholds
    step up (more text goes to larger targets); when it is under half the knob, the routing threshold steps
    down (cheaper).
The plan is replaced atomically; the router re-reads it within its reload interval (2 s by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_core.config import CALIBRATION
from adaptive_core.router_plan import RouterPlan
from adaptive_serving.outcomes import read_outcomes

MIN_AUDITED = 30  # fewer audited records than this: too little evidence to move anything


def exit_threshold(confidences: np.ndarray, wrong: np.ndarray, current: float, knob: float) -> float:
    """Lowest threshold >= `current` at which the audited exits above it disagree at most `knob`."""
    order = np.argsort(-confidences)
    conf, bad = confidences[order], wrong[order]
    rate = np.cumsum(bad) / np.arange(1, len(bad) + 1)  # disagreement of the top-k most confident
    ok = np.flatnonzero(rate <= knob)
    if ok.size == len(conf):
        return current
    # Keep exits down to the last prefix that still meets the knob; nothing meets it: close the exit.
    threshold = float(np.nextafter(conf[ok[-1] + 1], 1.0)) if ok.size else 1.0
    return max(current, min(threshold, 1.0))


def recalibrate(plan: RouterPlan, records: list[dict], *, knob: float, step: float = 0.05) -> tuple[RouterPlan, dict]:
    """A new plan from audited outcome records, and a report of what moved and why."""
    audited = [r for r in records if r.get("audit_label") is not None]
    report: dict = {"records": len(records), "audited": len(audited), "knob": knob}
    if len(audited) < MIN_AUDITED:
        report["decision"] = f"unchanged: {len(audited)} audited records < {MIN_AUDITED}"
        return plan, report
    wrong = np.array([r["label"] != r["audit_label"] for r in audited])
    report["disagreement"] = float(wrong.mean())
    targets = list(plan.targets)
    for t, target in enumerate(targets):
        if target.cascade is None:
            continue
        thresholds = list(target.cascade.thresholds)
        for k in range(len(thresholds)):
            rows = [i for i, r in enumerate(audited) if r["target"] == t and r["exit_stage"] == k + 1]
            if len(rows) < MIN_AUDITED // 3:
                continue
            conf = np.array([audited[i]["confidence"] for i in rows])
            thresholds[k] = exit_threshold(conf, wrong[rows], thresholds[k], knob)
        targets[t] = dataclasses.replace(
            target, cascade=dataclasses.replace(target.cascade, thresholds=tuple(thresholds))
        )
    route, escalate = plan.route_threshold, list(plan.escalate_thresholds)
    if wrong.mean() > knob:
        route = min(1.0, route + step)
        escalate = [min(1.0, e + step) for e in escalate]
        report["decision"] = "disagreement over the knob: route and escalate more"
    elif wrong.mean() < knob / 2:
        route = max(0.0, route - step)
        report["decision"] = "disagreement under half the knob: route cheaper"
    else:
        report["decision"] = "routing within the knob: unchanged"
    new = dataclasses.replace(plan, targets=tuple(targets), route_threshold=route, escalate_thresholds=tuple(escalate))
    report["route_threshold"] = [plan.route_threshold, new.route_threshold]
    report["escalate_thresholds"] = [list(plan.escalate_thresholds), list(new.escalate_thresholds)]
    report["exit_thresholds"] = {
        t.name: [list(t.cascade.thresholds), list(n.cascade.thresholds)]
        for t, n in zip(plan.targets, new.targets)
        if t.cascade is not None
    }
    return new, report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_ops.recalibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--outcomes", type=Path, required=True, help="the router's outcome log (JSON lines)")
    parser.add_argument("--plan", type=Path, required=True, help="the served plan.json (replaced in place)")
    parser.add_argument(
        "--max-disagreement",
        type=float,
        default=CALIBRATION.max_accuracy_loss,
        help="knob: largest allowed disagreement with the audit model (default %(default)s)",
    )
    parser.add_argument("--step", type=float, default=0.05, help="routing threshold step per run")
    parser.add_argument("--dry-run", action="store_true", help="print the report, keep the plan")
    args = parser.parse_args(argv)
    if not 0.0 <= args.max_disagreement <= 1.0:
        parser.error(f"--max-disagreement must be in [0, 1], got {args.max_disagreement}")
    plan = RouterPlan.read(args.plan)
    new, report = recalibrate(plan, read_outcomes(args.outcomes), knob=args.max_disagreement, step=args.step)
    for key, value in report.items():
        print(f"{key}: {value}")
    if not args.dry_run and new != plan:
        new.write(args.plan)
        print(f"wrote {args.plan}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
