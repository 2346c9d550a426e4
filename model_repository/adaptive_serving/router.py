"""The router's runtime inside its stub: plan and estimator, the route/escalate loop's callables, audits, outcomes,
and the standard lane's hand-over. `models/router/model.py` unpacks requests and calls it.

The route/escalate decisions are `adaptive_core.routing.route`; this module runs what they decide: each target is an
early-exit cascade (`run_cascade`) or a text -> logits model, called over BLS. Outcomes are logged off the hot path
for recalibration; a sampled share is also sent to the audit model (the largest size, full depth) to label them. The
audit runs in the background after the answer is sent: on the response path it would put the audited requests in every
class's latency tail. When the entry's tokenizer is the audit model's, the audit reads this router's tokens: a text
audit would take turns at the entry's tokenizer with the next requests. The plan file is re-read when it changes, so
recalibration needs no restart.

Per-size tokenization: the entry's tokens are the cheapest target's. A target that reads another vocabulary (its plan
names a tokenizer file, `CascadePlan.tokenizer`) gets its texts tokenized here, in-process, with one tokenizer per
distinct file, only for the rows that reach it.

Two lanes (the repository builds both from one model file): `router` holds the gate and runs the requests that the
gate puts in the express lane. With `standard_router` set, it hands every other admitted request to that model
(`router_standard`; over a local socket, `adaptive_serving.handover`, or over BLS), which runs it the same way under
the standard lane's CPU priority, so routing and orchestration of bulk traffic take only CPU the urgent path does not
want. `router_standard` reads the router's plan file, so one recalibration moves both.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptive_core import names
from adaptive_core.cascade import CascadeState, StageLatency
from adaptive_core.complexity_features import extract_features
from adaptive_core.confidence import get_policy, softmax
from adaptive_core.router_plan import RouterPlan
from adaptive_core.routing import Routed, TargetAnswer, route
from adaptive_core.text import truncate
from adaptive_serving.bls import StageError, call_stage, run_cascade
from adaptive_serving.gate import Admission, Gate
from adaptive_serving.handover import HandoverClient, HandoverError, HandoverServer
from adaptive_serving.metrics import ModelMetrics
from adaptive_serving.outcomes import OutcomeRecorder
from adaptive_serving.tokenizer import TextTokenizer

# Audits waiting per instance; past this, outcomes are logged unlabeled (an overload must not pile up audits).
MAX_AUDITS_IN_FLIGHT = 4


@dataclass(frozen=True)
class Job:
    """One request's work, from a Triton request or a hand-over.

    Args:
        raw: (n,) texts as bytes.
        ids, mask: (n, T) the entry tokenizer's tokens.
        timeout_us: the request's timeout (0 = none).
        started: when its deadline started (`time.monotonic()` seconds).
    """

    raw: np.ndarray
    ids: np.ndarray
    mask: np.ndarray
    timeout_us: int
    started: float


class Router:
    """One router instance (`router` or `router_standard`), from its config parameters.

    Args:
        model: the Triton model name.
        params: the model's config parameters (`plan_file`, `sep_id`, `gate_caps`, and the optional ones below).
        version_dir: the model's version folder (the plan path is relative to it).
        log: `pb_utils.Logger`.
    """

    def __init__(self, model: str, params: dict[str, str], version_dir: Path, log: object) -> None:
        self.model = model
        self.log = log
        self.plan_path = version_dir / params["plan_file"]
        self.sep_id = int(params["sep_id"])
        self.reload_interval_s = float(params.get("reload_interval_s", "2"))
        # The model that runs standard-lane requests ("" = this one runs every request).
        self.standard_router = params.get("standard_router", "")
        self.audit_model = params.get("audit_model", "")
        # "tokens": the audit model reads this router's input_ids/attention_mask (the entry tokenizer is its
        # tokenizer); "text": it tokenizes the text itself.
        self.audit_tokens = params.get("audit_input", "text") == "tokens"
        outcomes = params.get("outcomes_file", "")
        self.recorder = OutcomeRecorder(Path(outcomes)) if outcomes else None
        self.audits: set[asyncio.Task] = set()  # background audits in flight (strong refs until done)
        self.latency = StageLatency.from_params(params)  # per stage model; kept across plan reloads
        self._load()
        # router_standard works for the router: its answers count as the router's (`metrics_model`), but their gate
        # wait and latency were counted by the router's gate, so its own gate (which only holds the runs) counts none.
        self.is_standard = params.get("lane", "") == "standard"
        stages = {t.name: len(t.cascade.stage_models) if t.cascade else 1 for t in self.plan.targets}
        self.metrics = ModelMetrics(params.get("metrics_model", model), stages, routes=True)
        cascade = next((t.cascade for t in self.plan.targets if t.cascade is not None), None)
        express_max = cascade.express_max_timeout_us if cascade is not None and cascade.express_models else 0
        self.gate = Gate.from_params(
            model,
            params,
            None if self.is_standard else self.metrics,
            background_calls=MAX_AUDITS_IN_FLIGHT,
            express_max_timeout_us=express_max,
        )
        # router: hands standard-lane requests to router_standard's listeners ("socket"), or over BLS ("bls", and
        # the fallback while no listener answers). router_standard: listens on its gate's loop.
        socket = self.standard_router and params.get("standard_handover", "socket") == "socket"
        self.handover = HandoverClient(self.standard_router) if socket else None
        self.handover_warned = False
        self.listener = self._listen() if self.is_standard else None

    def _load(self) -> None:
        import onnxruntime as ort

        plan = RouterPlan.read(self.plan_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        estimator = str(self.plan_path.parent / plan.estimator_file)
        self.estimator = ort.InferenceSession(estimator, options, providers=["CPUExecutionProvider"])
        self.policies = [get_policy(t.cascade.confidence if t.cascade else "max_prob") for t in plan.targets]
        # One tokenizer per distinct file, truncating at the longest budget of the targets that read it (each cascade
        # cuts its rows to its own budget).
        budgets: dict[str, int] = {}
        for t in plan.targets:
            if t.cascade is not None and t.cascade.tokenizer:
                budgets[t.cascade.tokenizer] = max(budgets.get(t.cascade.tokenizer, 0), t.cascade.max_seq_len)
        self.tokenizers = {f: TextTokenizer(self.plan_path.parent / f, n) for f, n in budgets.items()}
        self.plan = plan
        self.plan_mtime = os.stat(self.plan_path).st_mtime_ns
        self.next_check = time.monotonic() + self.reload_interval_s

    def maybe_reload(self) -> None:
        """Re-read the plan when its file changed (checked every `reload_interval_s`); a bad plan keeps the old."""
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.reload_interval_s
        if os.stat(self.plan_path).st_mtime_ns != self.plan_mtime:
            try:
                self._load()
                self.log.log_info(f"{self.model}: reloaded {self.plan_path}")
            except Exception as e:  # a bad plan keeps the old one serving
                self.log.log_error(f"{self.model}: kept the old plan, new one failed: {e}")

    def _listen(self) -> HandoverServer | None:
        """router_standard: its hand-over listener, on its gate's loop (None when it cannot listen)."""
        listener = HandoverServer(self.model, self.take_over)
        try:
            index = asyncio.run_coroutine_threadsafe(listener.start(), self.gate.loop).result()
        except OSError as e:  # the router then hands requests over BLS
            self.log.log_warn(f"{self.model}: no hand-over listener: {e}")
            return None
        self.log.log_info(f"{self.model}: hand-over listener {index}")
        return listener

    async def route(self, job: Job, admission: Admission) -> dict[str, np.ndarray]:
        """Route and run `job`'s texts in the admitted lane; returns the outputs (`names.ROUTER_OUTPUTS`, in order).

        Raises:
            StageError: a stage failed.
        """
        plan = self.plan
        texts = [t.decode("utf-8") for t in job.raw]  # the tokenizer step already rejected bad text
        probs = softmax(self.estimator.run(None, {"features": extract_features(texts)})[0])
        start = plan.start_targets(probs)

        async def run(t: int, rows: np.ndarray) -> TargetAnswer:
            return await self._run_target(t, job, rows, admission.express)

        def fits(t: int, rows: np.ndarray) -> bool:
            model, width = self._first_call(t, job.ids[rows], job.mask[rows], admission.express)
            return self.latency.fits(model, width, time.monotonic() - job.started, job.timeout_us / 1e6)

        routed = await route(plan, start, run, fits)
        sizes = np.array([t.name for t in plan.targets], dtype=np.object_)
        arrived = None if self.is_standard else admission.arrived
        self.metrics.answered(
            job.timeout_us, sizes[routed.target], routed.exit_stage, routed.cut, arrived, routed=sizes[start]
        )
        if self.recorder is not None:
            self._log_outcomes(job, probs, start, routed, admission.arrived)
        n = len(texts)
        return {
            names.LABEL: routed.label.reshape(n, 1),
            names.CONFIDENCE: routed.score.reshape(n, 1),
            names.EXIT_STAGE: routed.exit_stage.reshape(n, 1),
            names.EXIT_LAYER: routed.exit_layer.reshape(n, 1),
            names.MODEL_SIZE: np.array([[s.encode()] for s in sizes[routed.target]], dtype=np.object_),
            names.DEADLINE_CUT: routed.cut.reshape(n, 1),
            names.COMPLEXITY: plan.complexity(probs).reshape(n, 1),
            names.ESCALATIONS: routed.escalations.reshape(n, 1),
        }

    def tokens(self, t: int, job: Job, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tokens target `t` reads for `rows`: the entry's, or (a target with its own vocabulary) its tokenizer's
        on those rows' texts."""
        spec = self.plan.targets[t]
        if spec.cascade is None or not spec.cascade.tokenizer:
            return job.ids[rows], job.mask[rows]
        return self.tokenizers[spec.cascade.tokenizer]([job.raw[i].decode("utf-8") for i in rows])

    async def _run_target(self, t: int, job: Job, rows: np.ndarray, express: bool) -> TargetAnswer:
        spec = self.plan.targets[t]
        if spec.kind == "cascade":
            state = CascadeState(rows.size, self.policies[t])
            ids, mask = self.tokens(t, job, rows)
            await run_cascade(
                spec.cascade,
                state,
                ids,
                mask,
                sep_id=spec.cascade.sep_id,
                timeout_us=job.timeout_us,
                started=job.started,
                latency=self.latency,
                express=express,
            )
            layers = np.array(spec.cascade.exit_layers, np.int32)[state.exit_stage - 1]
            return TargetAnswer(state.label, state.score, state.exit_stage, layers, state.deadline_cut)
        t0 = time.monotonic()
        out = await call_stage(spec.model_name, {names.TEXT: job.raw[rows].reshape(-1, 1)}, [names.LOGITS], 0.0)
        self.latency.update(spec.model_name, 0, time.monotonic() - t0)  # text in: no token width
        logits = out[names.LOGITS]
        ones = np.ones(rows.size, np.int32)
        return TargetAnswer(logits.argmax(-1), self.policies[t](logits), ones, 0 * ones, np.zeros(rows.size, bool))

    def _first_call(self, t: int, ids: np.ndarray, mask: np.ndarray, express: bool) -> tuple[str, int]:
        """(model, token width) of the first call that texts escalated to target `t` make: its first stage in the
        request's lane on the texts cut to its length, or the text model (width 0). For a target with its own
        vocabulary the width is judged on the entry's tokens (not tokenized twice for an estimate: the widths are
        buckets, and the vocabularies give about the same token counts)."""
        spec = self.plan.targets[t]
        if spec.kind != "cascade":
            return spec.model_name, 0
        width = truncate(ids, mask, spec.cascade.max_seq_len, spec.cascade.sep_id)[0].shape[1]
        return spec.cascade.lane(express)[0], width

    def _log_outcomes(self, job: Job, probs: np.ndarray, start: np.ndarray, routed: Routed, arrived: float) -> None:
        latency_ms = round((time.monotonic() - arrived) * 1e3, 3)
        records = [
            {
                "t": time.time(),
                "probs": probs[i].round(4).tolist(),
                "start": int(start[i]),
                "target": int(routed.target[i]),
                "exit_stage": int(routed.exit_stage[i]),
                "confidence": float(routed.score[i]),
                "escalated": int(routed.escalations[i]),
                "label": int(routed.label[i]),
                "deadline_cut": bool(routed.cut[i]),
                "latency_ms": latency_ms,
                "audit_label": None,
            }
            for i in range(start.size)
        ]
        if self.audit_model and len(self.audits) < MAX_AUDITS_IN_FLIGHT and random.random() < self.plan.audit_rate:
            tokens = {names.INPUT_IDS: job.ids, names.ATTENTION_MASK: job.mask}
            inputs = tokens if self.audit_tokens else {names.TEXT: job.raw.reshape(-1, 1)}
            task = asyncio.ensure_future(self._audit(inputs, records))
            self.audits.add(task)
            task.add_done_callback(self.audits.discard)
        else:
            self._record(records)

    async def _audit(self, inputs: dict[str, np.ndarray], records: list[dict]) -> None:
        """Label `records` with the audit model (largest target, full depth), then log them."""
        try:
            out = await call_stage(self.audit_model, inputs, [names.LOGITS], 0.0)
            for record, label in zip(records, out[names.LOGITS].argmax(-1)):
                record["audit_label"] = int(label)
        except StageError as e:  # an unlabeled outcome is still worth logging
            self.log.log_warn(f"{self.model}: audit failed: {e}")
        self._record(records)

    def _record(self, records: list[dict]) -> None:
        for record in records:
            self.recorder.record(record)

    async def take_over(self, header: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
        """router_standard: one hand-over from the router (`forward` is the other end), run like a request."""
        from adaptive_core.cascade import deadline_start
        from adaptive_serving.gate import Refused

        self.maybe_reload()
        timeout_us = int(header["timeout_us"])

        async def work(admission: Admission) -> dict[str, np.ndarray]:
            started = deadline_start(admission.arrived, np.array([header["entered_ns"]], np.int64))
            job = Job(
                arrays[names.TEXT].reshape(-1),
                arrays[names.INPUT_IDS],
                arrays[names.ATTENTION_MASK],
                timeout_us,
                started,
            )
            return await self.route(job, admission)

        try:
            return {}, await self.gate.run(timeout_us, work)
        except Refused as e:
            return {"error": {"message": str(e), "code": "UNAVAILABLE"}}, {}
        except StageError as e:
            return {"error": {"message": f"{self.model}: {e}", "code": "INTERNAL"}}, {}

    async def forward(self, text: object, ids: object, mask: object, timeout_us: int, entered_ns: int) -> object:
        """router: run a standard-lane request in `router_standard` (its Triton tensors `text`, `ids`, `mask`); the
        deadline still counts from the entry, so the entry stamp and the timeout go along. Returns its outputs as
        `{name: array}` (hand-over) or as Triton tensors (BLS).

        Raises:
            StageError: router_standard answered with an error (the message is its message).
        """
        if self.handover is not None:
            try:
                arrays = {
                    names.TEXT: text.as_numpy(),
                    names.INPUT_IDS: ids.as_numpy(),
                    names.ATTENTION_MASK: mask.as_numpy(),
                }
                reply, outputs = await self.handover.call({"timeout_us": timeout_us, "entered_ns": entered_ns}, arrays)
            except HandoverError as e:  # no listener, or it went away: BLS still reaches router_standard
                if not self.handover_warned:
                    self.log.log_warn(f"{self.model}: hand-over over BLS instead: {e}")
                    self.handover_warned = True
            else:
                if "error" in reply:
                    raise ForwardError(reply["error"]["message"], reply["error"]["code"] or "INTERNAL")
                return outputs
        import triton_python_backend_utils as pb_utils

        # The batch size from the token ids (a view): reading the text tensor would decode every string.
        entered = np.full((ids.as_numpy().shape[0], 1), entered_ns, np.int64)
        inputs = [text, ids, mask, pb_utils.Tensor(names.ENTERED_NS, entered)]
        request = pb_utils.InferenceRequest(
            model_name=self.standard_router,
            inputs=inputs,
            requested_output_names=list(names.ROUTER_OUTPUTS),
            timeout=timeout_us,
        )
        response = await request.async_exec()
        if response.has_error():
            raise ForwardError(response.error().message(), response.error().code())
        return response.output_tensors()

    def close(self) -> None:
        if self.listener is not None:
            self.gate.loop.call_soon_threadsafe(self.listener.close)
        if self.recorder is not None:
            self.recorder.close()


class ForwardError(Exception):
    """router_standard refused or failed a forwarded request; `code` is the Triton error code (name or value)."""

    def __init__(self, message: str, code: object) -> None:
        super().__init__(message)
        self.code = code
