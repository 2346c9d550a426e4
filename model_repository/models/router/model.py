"""Router (BLS): estimate each text's complexity, start it at the cheapest target likely to get it right,
run that target (an early-exit cascade, or any text -> logits model), and escalate to the next target while
the answer's confidence is below the calibrated threshold.

`execute` hands each request to the admission gate (`adaptive_serving.gate`), which runs it when its latency class
has room and answers through the request's response sender. Texts of one request are grouped by target and each
group goes through its target together. Outcomes are logged off the hot path for recalibration; a sampled share is
also sent to the audit model (the largest, full depth) to label them. The audit runs in the background after the
answer is sent: a full-depth run on the response path would put the audited requests (2% by default) in every
class's latency tail. When the entry's tokenizer is the audit model's, the audit goes straight to its full-depth
encoder with this router's tokens: a text audit would take turns at the entry's tokenizer with the next requests
(with the tokenizer behind 2.51's dynamic batcher that stalled them past a class's queue timeout). The plan file is
re-read when it changes, so recalibration needs no restart.

Two lanes (the repository builds both from this file). `router` is the gate and runs the requests that take the
express lane (a critical-class deadline, or alone in the server). With `standard_router` set, it hands every other
admitted request to that model (`router_standard`; over a local socket, `adaptive_serving.handover`, or over BLS),
which runs it the same way in processes under the standard lane's CPU priority (`nice`, `sched_idle`): routing and
cascade orchestration of bulk traffic then take only CPU that the urgent path does not want. Under overload on 2 cores
the routers' Python work for every class was the largest share of the CPU at normal priority. `router_standard` reads
the router's plan file, so one recalibration moves both.
"""

import asyncio
import gc
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from adaptive_core import names
from adaptive_core.cascade import CascadeState, StageLatency, deadline_start
from adaptive_core.complexity_features import extract_features
from adaptive_core.confidence import get_policy, softmax
from adaptive_core.router_plan import RouterPlan
from adaptive_core.text import truncate
from adaptive_serving.bls import StageError, call_stage, run_cascade, started_at
from adaptive_serving.gate import Gate, Refused
from adaptive_serving.handover import HandoverClient, HandoverError, HandoverServer
from adaptive_serving.metrics import ModelMetrics
from adaptive_serving.model_args import lower_cpu_priority, model_params
from adaptive_serving.outcomes import OutcomeRecorder

# Audits waiting per instance; past this, outcomes are logged unlabeled (an overload must not pile up audits).
MAX_AUDITS_IN_FLIGHT = 4


@dataclass(frozen=True)
class Job:
    """One request's work, from a Triton request or a hand-over: texts (bytes), their tokens, the request's
    timeout (us, 0 = none) and when its deadline started (`time.monotonic()` seconds)."""

    raw: np.ndarray
    ids: np.ndarray
    mask: np.ndarray
    timeout_us: int
    started: float


class TritonPythonModel:
    def initialize(self, args):
        params, version_dir = model_params(args, ("plan_file", "sep_id", "gate_caps"))
        lower_cpu_priority(params)  # router_standard: before any thread starts, so all of them inherit it
        self.plan_path = version_dir / params["plan_file"]
        # The model that runs standard-lane requests ("" = this one runs every request).
        self.standard_router = params.get("standard_router", "")
        self.sep_id = int(params["sep_id"])
        self.reload_interval_s = float(params.get("reload_interval_s", "2"))
        self.audit_model = params.get("audit_model", "")
        # "tokens": the audit model reads this router's input_ids/attention_mask (the entry tokenizer is its
        # tokenizer); "text": it tokenizes the text itself.
        self.audit_tokens = params.get("audit_input", "text") == "tokens"
        outcomes = params.get("outcomes_file", "")
        self.recorder = OutcomeRecorder(Path(outcomes)) if outcomes else None
        self.model_name = args["model_name"]
        self.audits: set[asyncio.Task] = set()  # background audits in flight (strong refs until done)
        # Per stage model; kept across plan reloads.
        self.latency = StageLatency.from_params(params)
        self._load()
        # router_standard works for the router: it counts its answers as the router's (`metrics_model`), but their
        # gate wait and latency were counted by the router's gate, so its own gate (which only holds the runs)
        # counts nothing.
        self.is_router_standard = params.get("lane", "") == "standard"
        self.metrics = ModelMetrics(
            params.get("metrics_model", self.model_name),
            {t.name: len(t.cascade.stage_models) if t.cascade else 1 for t in self.plan.targets},
            routes=True,
        )
        self.gate = Gate.from_params(
            self.model_name,
            params,
            None if self.is_router_standard else self.metrics,
            background_calls=MAX_AUDITS_IN_FLIGHT,
        )
        # router: hands standard-lane requests to router_standard's listeners ("socket"), or over BLS ("bls", and
        # the fallback while no listener answers). router_standard: listens on its gate's loop.
        self.handover = (
            HandoverClient(self.standard_router)
            if self.standard_router and params.get("standard_handover", "socket") == "socket"
            else None
        )
        self.handover_warned = False
        self.listener = self._listen() if self.is_router_standard else None
        # Startup objects (numpy, onnxruntime, the plan) never die: keep them out of the collector's full passes,
        # which otherwise scan them all and paused this event loop, and every request on it, for up to 86 ms.
        gc.freeze()

    def _load(self):
        import onnxruntime as ort

        plan = RouterPlan.read(self.plan_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.estimator = ort.InferenceSession(
            str(self.plan_path.parent / plan.estimator_file), options, providers=["CPUExecutionProvider"]
        )
        self.policies = [get_policy(t.cascade.confidence if t.cascade else "max_prob") for t in plan.targets]
        self.plan = plan
        self.plan_mtime = os.stat(self.plan_path).st_mtime_ns
        self.next_check = time.monotonic() + self.reload_interval_s

    def _maybe_reload(self):
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.reload_interval_s
        if os.stat(self.plan_path).st_mtime_ns != self.plan_mtime:
            try:
                self._load()
                pb_utils.Logger.log_info(f"{self.model_name}: reloaded {self.plan_path}")
            except Exception as e:  # a bad plan keeps the old one serving
                pb_utils.Logger.log_error(f"{self.model_name}: kept the old plan, new one failed: {e}")

    def _listen(self):
        """router_standard: its hand-over listener, on its gate's loop (None when it cannot listen)."""
        listener = HandoverServer(self.model_name, self._take_over)
        try:
            index = asyncio.run_coroutine_threadsafe(listener.start(), self.gate.loop).result()
        except OSError as e:  # the router then hands requests over BLS
            pb_utils.Logger.log_warn(f"{self.model_name}: no hand-over listener: {e}")
            return None
        pb_utils.Logger.log_info(f"{self.model_name}: hand-over listener {index}")
        return listener

    def execute(self, requests):
        # Answers go out through each request's response sender once the gate admits and runs it, on its loop.
        for request in requests:
            self.gate.submit(request, self._run)
        return None

    async def _run(self, request, arrived):
        self._maybe_reload()  # on the gate's loop, which reads the plan
        if self.standard_router and self._standard_lane(request.timeout()):
            return await self._forward(request, arrived)
        job = Job(
            pb_utils.get_input_tensor_by_name(request, names.TEXT).as_numpy().reshape(-1),
            pb_utils.get_input_tensor_by_name(request, names.INPUT_IDS).as_numpy(),
            pb_utils.get_input_tensor_by_name(request, names.ATTENTION_MASK).as_numpy(),
            request.timeout(),
            started_at(request, arrived),
        )  # the deadline counts from the entry
        try:
            outputs = await self._route(job, arrived)
        except StageError as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.model_name}: {e}"))
        return pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()])

    async def _take_over(self, header, arrays):
        """router_standard: one hand-over from the router, run like a request (`_forward` is the other end)."""
        self._maybe_reload()
        timeout_us = int(header["timeout_us"])

        async def work(arrived):
            job = Job(
                arrays[names.TEXT].reshape(-1),
                arrays[names.INPUT_IDS],
                arrays[names.ATTENTION_MASK],
                timeout_us,
                deadline_start(arrived, np.array([header["entered_ns"]], np.int64)),
            )
            return await self._route(job, arrived)

        try:
            return {}, await self.gate.run(timeout_us, work)
        except Refused as e:
            return {"error": {"message": str(e), "code": "UNAVAILABLE"}}, {}
        except StageError as e:
            return {"error": {"message": f"{self.model_name}: {e}", "code": "INTERNAL"}}, {}

    async def _route(self, job, arrived):
        """Route and run `job`'s texts; returns the outputs (`names.ROUTER_OUTPUTS`, in order).

        Raises:
            StageError: a stage failed.
        """
        plan = self.plan
        started, raw, ids, mask = job.started, job.raw, job.ids, job.mask
        texts = [t.decode("utf-8") for t in raw]  # the tokenizer step already rejected bad text
        probs = softmax(self.estimator.run(None, {"features": extract_features(texts)})[0])
        start = plan.start_targets(probs)
        n = len(texts)
        label = np.zeros(n, np.int64)
        score = np.zeros(n, np.float32)
        exit_stage = np.zeros(n, np.int32)
        exit_layer = np.zeros(n, np.int32)
        target = np.zeros(n, np.int32)
        cut = np.zeros(n, bool)
        escalated = np.zeros(n, np.int32)
        pending = np.zeros(0, np.int64)
        budget_s = job.timeout_us / 1e6
        for t, spec in enumerate(plan.targets):
            if pending.size and not self.latency.fits(
                *self._first_call(spec, job.timeout_us, ids[pending], mask[pending]),
                time.monotonic() - started,
                budget_s,
            ):
                # Escalating would likely overrun the deadline: keep the smaller size's answer, flagged.
                cut[pending] = True
                escalated[pending] -= 1
                pending = pending[:0]
            rows = np.sort(np.concatenate([pending, np.flatnonzero(start == t)]))
            if rows.size == 0:
                continue
            if spec.kind == "cascade":
                state = CascadeState(rows.size, self.policies[t])
                await run_cascade(
                    spec.cascade,
                    state,
                    ids[rows],
                    mask[rows],
                    sep_id=self.sep_id,
                    timeout_us=job.timeout_us,
                    started=started,
                    latency=self.latency,
                    alone=self.gate.alone,
                )
                label[rows], score[rows], exit_stage[rows] = state.label, state.score, state.exit_stage
                exit_layer[rows] = np.array(spec.cascade.exit_layers, np.int32)[state.exit_stage - 1]
                cut[rows] = state.deadline_cut
            else:
                t0 = time.monotonic()
                out = await call_stage(spec.model_name, {names.TEXT: raw[rows].reshape(-1, 1)}, [names.LOGITS], 0.0)
                self.latency.update(spec.model_name, 0, time.monotonic() - t0)  # text in: no token width
                logits = out[names.LOGITS]
                label[rows], score[rows], exit_stage[rows] = logits.argmax(-1), self.policies[t](logits), 1
            target[rows] = t
            last = t == len(plan.targets) - 1
            go_on = np.zeros(rows.size, bool) if last else (score[rows] < plan.escalate_thresholds[t]) & ~cut[rows]
            pending = rows[go_on]
            escalated[pending] += 1
        names_of = np.array([t.name for t in plan.targets], dtype=np.object_)
        self.metrics.answered(
            job.timeout_us,
            names_of[target],
            exit_stage,
            cut,
            None if self.is_router_standard else arrived,
            routed=names_of[start],
        )
        if self.recorder is not None:
            records = [
                {
                    "t": time.time(),
                    "probs": probs[i].round(4).tolist(),
                    "start": int(start[i]),
                    "target": int(target[i]),
                    "exit_stage": int(exit_stage[i]),
                    "confidence": float(score[i]),
                    "escalated": int(escalated[i]),
                    "label": int(label[i]),
                    "deadline_cut": bool(cut[i]),
                    "latency_ms": round((time.monotonic() - arrived) * 1e3, 3),
                    "audit_label": None,
                }
                for i in range(n)
            ]
            if self.audit_model and len(self.audits) < MAX_AUDITS_IN_FLIGHT and random.random() < plan.audit_rate:
                inputs = (
                    {names.INPUT_IDS: ids, names.ATTENTION_MASK: mask}
                    if self.audit_tokens
                    else {names.TEXT: raw.reshape(-1, 1)}
                )
                task = asyncio.ensure_future(self._audit(inputs, records))
                self.audits.add(task)
                task.add_done_callback(self.audits.discard)
            else:
                self._record(records)
        sizes = np.array([[plan.targets[t].name.encode()] for t in target], dtype=np.object_)
        return {
            names.LABEL: label.reshape(n, 1),
            names.CONFIDENCE: score.reshape(n, 1),
            names.EXIT_STAGE: exit_stage.reshape(n, 1),
            names.EXIT_LAYER: exit_layer.reshape(n, 1),
            names.MODEL_SIZE: sizes,
            names.DEADLINE_CUT: cut.reshape(n, 1),
            names.COMPLEXITY: plan.complexity(probs).reshape(n, 1),
            names.ESCALATIONS: escalated.reshape(n, 1),
        }

    def _standard_lane(self, timeout_us):
        """Whether a request with this timeout takes the standard lane (as its first cascade would judge it)."""
        cascade = next((t.cascade for t in self.plan.targets if t.cascade is not None), None)
        return cascade is not None and not cascade.express(timeout_us, alone=self.gate.alone())

    async def _forward(self, request, arrived):
        """Run `request` in the standard-lane router; answer with its outputs or its error. The deadline still counts
        from the entry: the stamp goes along (the gate's arrival when the request has none), and so does the timeout."""
        entered_ns = int(started_at(request, arrived) * 1e9)
        text, ids, mask = (
            pb_utils.get_input_tensor_by_name(request, name)
            for name in (names.TEXT, names.INPUT_IDS, names.ATTENTION_MASK)
        )
        if self.handover is not None:
            try:
                arrays = {
                    names.TEXT: text.as_numpy(),
                    names.INPUT_IDS: ids.as_numpy(),
                    names.ATTENTION_MASK: mask.as_numpy(),
                }
                reply, outputs = await self.handover.call(
                    {"timeout_us": request.timeout(), "entered_ns": entered_ns}, arrays
                )
            except HandoverError as e:  # no listener, or it went away: BLS still reaches router_standard
                if not self.handover_warned:
                    pb_utils.Logger.log_warn(f"{self.model_name}: hand-over over BLS instead: {e}")
                    self.handover_warned = True
            else:
                if "error" in reply:
                    code = getattr(pb_utils.TritonError, reply["error"]["code"] or "INTERNAL")
                    return pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{self.model_name}: {reply['error']['message']}", code)
                    )
                self.metrics.latency(request.timeout(), arrived)
                return pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()])
        # The batch size from the token ids (a view): reading the text tensor would decode every string.
        entered = np.full((ids.as_numpy().shape[0], 1), entered_ns, np.int64)
        inputs = [text, ids, mask, pb_utils.Tensor(names.ENTERED_NS, entered)]
        response = await pb_utils.InferenceRequest(
            model_name=self.standard_router,
            inputs=inputs,
            requested_output_names=list(names.ROUTER_OUTPUTS),
            timeout=request.timeout(),
        ).async_exec()
        if response.has_error():
            error = response.error()
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{self.model_name}: {error.message()}", error.code())
            )
        self.metrics.latency(request.timeout(), arrived)
        return pb_utils.InferenceResponse(response.output_tensors())

    def _first_call(self, spec, timeout_us, ids, mask):
        """(model, token width) of the first call that texts escalated to `spec` make: its first stage in the
        request's lane on the texts cut to its length, or the text model (width 0)."""
        if spec.kind != "cascade":
            return spec.model_name, 0
        width = truncate(ids, mask, spec.cascade.max_seq_len, self.sep_id)[0].shape[1]
        return spec.cascade.lane(timeout_us, alone=self.gate.alone())[0], width

    async def _audit(self, inputs, records):
        """Label `records` with the audit model (largest target, full depth), then log them."""
        try:
            out = await call_stage(self.audit_model, inputs, [names.LOGITS], 0.0)
            for record, label in zip(records, out[names.LOGITS].argmax(-1)):
                record["audit_label"] = int(label)
        except StageError as e:  # an unlabeled outcome is still worth logging
            pb_utils.Logger.log_warn(f"{self.model_name}: audit failed: {e}")
        self._record(records)

    def _record(self, records):
        for record in records:
            self.recorder.record(record)

    def finalize(self):
        if self.listener is not None:
            self.gate.loop.call_soon_threadsafe(self.listener.close)
        self.gate.close()
        if self.recorder is not None:
            self.recorder.close()
