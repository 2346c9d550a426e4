"""Build a Triton model repository from an export build (`python -m adaptive_export build`).

    python -m adaptive_ops.repository --export build/export --out build/model_repository [--target container]

Models (one source of truth, two targets):
  tokenizer_<size>          Python: text -> input_ids, attention_mask (the size's token budget)
  <size>_stage<i>           one exit stage; `local`: Python + onnxruntime on the CPU, or Python + torch on a GPU (or the
                            CPU) with `--runtime torch`; `container`: native onnxruntime backend
  <size>_stage<i>_express   the same stage in the express lane: own instances, full CPU priority (critical class)
  <size>_full_encoder       full depth, no exits (same two targets)
  <size>_full               ensemble: tokenizer_<size> -> <size>_full_encoder (the baseline)
  cascade_<size>            Python BLS over the size's stages
  cascade_<size>_inproc     with `--inproc-cascade` (local target): every stage of the size in one Python model, in
                            torch, behind a dynamic batcher with priority levels; no BLS hop per exit
  <size>_exit               ensemble: tokenizer_<size> -> cascade_<size> (early exit on one size, no routing), or
                            -> cascade_<size>_inproc with `--inproc-cascade`
  router                    Python BLS: complexity estimate -> start size -> cascade -> escalate (when the export
                            has a trained estimator, `complexity/router.json`); the admission gate
  router_standard           the router's work for requests in the standard lane, at the standard lane's CPU priority
  adaptive                  ensemble: tokenizer_<entry size> -> router, or -> cascade_<entry size> without one, or
                            -> cascade_<entry size>_inproc with `--inproc-cascade` (no router)

Latency classes: the router (or cascade) holds the admission gate (`adaptive_serving.gate`), which caps the requests
in flight per class and keeps room for the urgent classes. BLS child requests cannot carry a priority, so past the
gate the class order is kept by lanes: requests with a critical-class deadline go to express stage instances, and
the standard lane (its stages, and `router_standard`, which routes its requests) runs at a lower CPU priority, so it
yields the cores to them. A request alone in the server also takes the express lane (`solo_express`): the standard
lane's batcher would only hold it for company.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adaptive_core import names
from adaptive_core.cascade import DEADLINE_MARGIN, CascadePlan
from adaptive_core.config import (
    LATENCY_CLASSES,
    MAX_BATCH_SIZE,
    MAX_TEXT_BYTES,
    PATHS,
    TORCH_DTYPES,
    EarlyExitConfig,
)
from adaptive_core.lanes import LaneOptions, class_caps, format_caps
from adaptive_core.router_plan import RouterPlan, RouteTarget
from adaptive_core.text import SEQ_BUCKETS, bucket_length
from adaptive_ops.options_cli import add_arguments, from_arguments

MODELS_SRC = Path(__file__).resolve().parents[1] / "models"
TARGETS = ("local", "container")
RUNTIMES = ("onnx", "torch")
DEVICES = ("cpu", "gpu")
ENTRY_MODEL = "adaptive"
# Timeout for queues that take no class timeout: long enough never to fire on its own, nonzero so that a
# client's (or the cascade's) timeout can override it (Triton ignores overrides when the default is 0).
NO_TIMEOUT_US = 3_600_000_000
CASCADE_OUTPUTS = names.CASCADE_OUTPUTS
STANDARD_ROUTER = "router_standard"
# Class names, one per line in label order, beside every model that returns logits.
LABELS_FILE = "labels.txt"
# Batch size of the larger warm-up sample of each stage (`warmup`): a batch the dynamic batcher forms under load.
WARMUP_BATCH = 8
OUTPUT_TYPES = {
    names.LABEL: "TYPE_INT64",
    names.CONFIDENCE: "TYPE_FP32",
    names.EXIT_STAGE: "TYPE_INT32",
    names.EXIT_LAYER: "TYPE_INT32",
    names.MODEL_SIZE: "TYPE_STRING",
    names.DEADLINE_CUT: "TYPE_BOOL",
    names.LABEL_NAME: "TYPE_STRING",
    names.COMPLEXITY: "TYPE_FP32",
    names.ESCALATIONS: "TYPE_INT32",
}


@dataclass(frozen=True)
class RepositoryOptions:
    """Knobs of a generated repository (`python -m adaptive_ops.repository --help` lists them as flags).

    Args:
        target: "local" (Python backend + onnxruntime, runs here) or "container" (native onnxruntime backend for
            nvcr.io/nvidia/tritonserver:24.10-py3).
        entry_size: size the `adaptive` entry cascades through.
        tokenizer_instances: instances of each tokenizer model (the entry's first step).
        gate_instances: router (or cascade) instances; each keeps its own admission gate, so the caps below are per
            instance.
        gate_slots: requests of the least urgent class (batch) that one gate lets in flight at a time: enough to fill
            the stage batchers, few enough that a newly admitted request finds little work ahead of it.
        gate_reserve: room each more urgent class has beyond the next less urgent one (sensitive gets `gate_slots +
            gate_reserve`, critical `gate_slots + 2 * gate_reserve`): kept free of batch work, so an urgent request
            is admitted at once even when batch traffic fills its slots.
        stage_instances: instances per stage model (standard lane and full-depth encoders).
        intra_op_threads: onnxruntime (or torch) threads per stage instance (local target); 0 = one per core.
        max_queue_delay_us: dynamic batcher delay for stage models (survivors wait this long for company).
        deadline_margin: the gate models judge whether a stage call fits a request's deadline by the call's mean time
            plus this many mean deviations (`adaptive_core.cascade.StageLatency`; 0 = the mean alone).
        router: put the router behind `adaptive` when the export has one (`complexity/router.json`).
        audit_rate: share of routed requests also sent to the largest `<size>_full` to label outcomes.
        outcomes_file: where the router logs per-request outcomes ("" = no log).
        runtime: stage runtime of the local target: "onnx" (onnxruntime, CPU) or "torch" (from the safetensors).
        device: "cpu" or "gpu" (torch runtime only: stage instances are KIND_GPU).
        dtype: torch compute precision; the tensor contract between stages stays float32.
        gpu_hidden: on a GPU, keep hidden states in GPU memory between stages (BLS passes them as CUDA IPC handles).
            Off by default: with 2.51's Python backend that path was far slower than host memory (docs/triton-2.51.md).
        batch_queue_cap: > 0 bounds the batch class's waiting room at the gate (requests past it are rejected at
            once); 0 = unbounded, the batch class absorbs any overload as waiting time.
        warmup: give stages, tokenizers and gate models `model_warmup` samples, so Triton runs them while the models
            load, before the server reports ready (off: the first requests pay the first calls).
        lanes: the express and standard lanes (`adaptive_core.lanes.LaneOptions`).
        inproc_cascade: add `cascade_<size>_inproc` (local target; torch, on `device` in `dtype`) and wire
            `<size>_exit` and `adaptive` to it: all stages in one process, no BLS hop per exit, the latency classes
            ordered by its batcher's priority levels. The BLS chain stays in the repository; the router is not built
            (it chains stages over BLS).
    """

    target: str = field(default="local", metadata={"choices": TARGETS})
    entry_size: str = "large"
    tokenizer_instances: int = 2
    gate_instances: int = 4
    gate_slots: int = 4
    gate_reserve: int = 4
    stage_instances: int = 1
    intra_op_threads: int = 0
    max_queue_delay_us: int = 2000
    deadline_margin: float = DEADLINE_MARGIN
    router: bool = True
    audit_rate: float = 0.02
    outcomes_file: str = str(PATHS.root / "outcomes" / "router.jsonl")
    runtime: str = field(default="onnx", metadata={"choices": RUNTIMES})
    device: str = field(default="cpu", metadata={"choices": DEVICES})
    dtype: str = field(default="float32", metadata={"choices": TORCH_DTYPES})
    gpu_hidden: bool = False
    batch_queue_cap: int = 0
    warmup: bool = True
    lanes: LaneOptions = field(default_factory=LaneOptions)
    inproc_cascade: bool = False

    def __post_init__(self) -> None:
        class_caps(self.gate_slots, self.gate_reserve)  # raises on a bad pair
        for name in ("gate_instances", "stage_instances", "tokenizer_instances"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.deadline_margin < 0:
            raise ValueError(f"deadline_margin must be >= 0, got {self.deadline_margin}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError(f"audit_rate must be in [0, 1], got {self.audit_rate}")
        if self.batch_queue_cap < 0:
            raise ValueError(f"batch_queue_cap must be >= 0, got {self.batch_queue_cap}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.runtime not in RUNTIMES or self.device not in DEVICES:
            raise ValueError(
                f"runtime must be one of {RUNTIMES} and device one of {DEVICES}, got {self.runtime!r}, {self.device!r}"
            )
        if self.device == "gpu" and (self.target, self.runtime) != ("local", "torch"):
            raise ValueError(
                "device 'gpu' needs the local target's torch runtime (the container target's stages are "
                "always KIND_GPU; onnxruntime here is CPU-only)"
            )
        if self.dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {TORCH_DTYPES}, got {self.dtype!r}")
        if self.inproc_cascade and self.target != "local":
            raise ValueError("inproc_cascade needs the local target (a Python model running torch)")


def _tensor(name: str, dtype: str, dims: Sequence[int], *, optional: bool = False, labels: bool = False) -> str:
    """A config tensor entry; `labels`: the output's class names are in the model folder's LABELS_FILE (Triton's
    classification extension answers `class_count` requests with them)."""
    flag = " optional: true" if optional else ""
    if labels:
        flag += f' label_filename: "{LABELS_FILE}"'
    return f'{{ name: "{name}" data_type: {dtype} dims: [ {", ".join(str(d) for d in dims)} ]{flag} }}'


def _params(**values: object) -> str:
    return "\n".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in values.items())


# The entry's text, as the ensembles, the tokenizers and the router read it.
TEXT_IN = _tensor(names.TEXT, "TYPE_STRING", [1])
# Token tensors, as the tokenizer writes them and the gate models and first stages read them.
IDS = _tensor(names.INPUT_IDS, "TYPE_INT64", [-1])
MASK = _tensor(names.ATTENTION_MASK, "TYPE_INT64", [-1])
# The gate models' optional input: when the request entered the server's entry (the tokenizer's stamp). Optional, so
# the router and cascades still serve callers that send tokens directly (their deadline then counts from the gate).
ENTERED_IN = _tensor(names.ENTERED_NS, "TYPE_INT64", [1], optional=True)
# The gate models' other optional input: set only by their warm-up sample (`gate_warmup`).
WARMUP_IN = _tensor(names.WARMUP, "TYPE_BOOL", [1], optional=True)
# The warm-up request of the tokenizers and gate models: its tensors are files under <model>/warmup/ (`write_warmup`).
WARMUP_TEXT = "Warm up every path of the model before the server reports ready."


def warmup_tokens(tokenizer_json: Path, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The warm-up text's (1, width) input_ids and attention_mask, from the entry tokenizer."""
    from adaptive_serving.tokenizer import TextTokenizer

    return TextTokenizer(tokenizer_json, max_len)([WARMUP_TEXT])


def write_warmup(model_dir: Path, ids: np.ndarray, mask: np.ndarray) -> None:
    """The warm-up sample's input files (Triton's `input_data_file`, raw little-endian tensors; BYTES elements with
    a 4-byte length prefix): the text, its tokens (`warmup_tokens`), and the warm-up flag."""
    folder = model_dir / "warmup"
    folder.mkdir(exist_ok=True)
    text = WARMUP_TEXT.encode()
    (folder / "text").write_bytes(len(text).to_bytes(4, "little") + text)
    (folder / "ids").write_bytes(ids.astype("<i8").tobytes())
    (folder / "mask").write_bytes(mask.astype("<i8").tobytes())
    (folder / "flag").write_bytes(b"\x01")


# The tokenizers' `model_warmup`: the warm-up text (`write_warmup`).
TEXT_WARMUP = (
    'model_warmup [ { name: "warmup" batch_size: 1 inputs { key: "text" value: { data_type: TYPE_STRING dims: [ 1 ] '
    'input_data_file: "text" } } } ]'
)


def gate_warmup(width: int, *, text: bool) -> str:
    """`model_warmup` of a gate model (cascade, router): one request marked `warmup` (see `write_warmup`)."""

    def tensor(name: str, dtype: str, dims: str, file: str) -> str:
        return f'inputs {{ key: "{name}" value: {{ data_type: {dtype} dims: [ {dims} ] input_data_file: "{file}" }} }}'

    inputs = [
        tensor(names.INPUT_IDS, "TYPE_INT64", str(width), "ids"),
        tensor(names.ATTENTION_MASK, "TYPE_INT64", str(width), "mask"),
        tensor(names.WARMUP, "TYPE_BOOL", "1", "flag"),
    ]
    if text:
        inputs.append(tensor(names.TEXT, "TYPE_STRING", "1", "text"))
    return f'model_warmup [ {{ name: "warmup" batch_size: 1 {" ".join(inputs)} }} ]'


def fifo_batching(delay_us: int) -> str:
    """Plain dynamic batching whose queue honours a caller's timeout (the cascade sends its remaining budget)."""
    return (
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}\n"
        f"  default_queue_policy {{ timeout_action: REJECT default_timeout_microseconds: {NO_TIMEOUT_US} "
        f"allow_timeout_override: true }}\n}}"
    )


def _instances(count: int, kind: str = "KIND_CPU") -> str:
    return f"instance_group [ {{ count: {count} kind: {kind} }} ]"


def tokenizer_config(cfg: EarlyExitConfig, opts: RepositoryOptions) -> str:
    return (
        "\n".join(
            [
                f'name: "tokenizer_{cfg.name}"',
                'backend: "python"',
                f"max_batch_size: {MAX_BATCH_SIZE}",
                f"input [ {TEXT_IN} ]",
                f"output [ {IDS}, {MASK}, {_tensor(names.ENTERED_NS, 'TYPE_INT64', [1])} ]",
                # No dynamic batcher (its missed wake-ups stall the entry for 500 ms; class order is the gate's job),
                # and two instances, so a long text does not hold up the next request.
                _instances(opts.tokenizer_instances),
                *([TEXT_WARMUP] if opts.warmup else []),
                _params(tokenizer_file="tokenizer.json", max_seq_len=cfg.max_seq_len, max_text_bytes=MAX_TEXT_BYTES),
            ]
        )
        + "\n"
    )


def stage_io(cfg: EarlyExitConfig, stage: int | None) -> tuple[list[str], list[str]]:
    """Inputs and outputs of a stage (None = the full-depth encoder), as config.pbtxt tensor entries."""
    hidden_in = _tensor(names.HIDDEN_IN, "TYPE_FP32", [-1, cfg.hidden_size])
    hidden = _tensor(names.HIDDEN, "TYPE_FP32", [-1, cfg.hidden_size])
    logits = _tensor(names.LOGITS, "TYPE_FP32", [cfg.num_labels], labels=True)
    first = stage is None or stage == 1
    last = stage is None or stage == cfg.num_stages
    return ([IDS, MASK] if first else [hidden_in, MASK]), ([logits] if last else [hidden, logits])


def warmup(cfg: EarlyExitConfig, stage: int | None) -> str:
    """`model_warmup` of a stage (None = the full encoder): one all-padding sample per token width the tokenizer can
    form, at batch 1 and at WARMUP_BATCH, so Triton runs every shape once while the model loads, before the server
    reports ready (a first call per shape pays session and allocator set-up)."""
    first = stage is None or stage == 1
    widths = sorted({bucket_length(w, cfg.max_seq_len) for w in SEQ_BUCKETS})
    samples = []
    for batch in (1, WARMUP_BATCH):
        for width in widths:
            if first:
                x = f'key: "{names.INPUT_IDS}" value: {{ data_type: TYPE_INT64 dims: [ {width} ] zero_data: true }}'
            else:
                dims = f"{width}, {cfg.hidden_size}"
                x = f'key: "{names.HIDDEN_IN}" value: {{ data_type: TYPE_FP32 dims: [ {dims} ] zero_data: true }}'
            m = f'key: "{names.ATTENTION_MASK}" value: {{ data_type: TYPE_INT64 dims: [ {width} ] zero_data: true }}'
            samples.append(f'  {{ name: "b{batch}_w{width}" batch_size: {batch} inputs {{ {x} }} inputs {{ {m} }} }}')
    return "model_warmup [\n" + ",\n".join(samples) + "\n]"


def standard_cpu(opts: RepositoryOptions) -> dict[str, int]:
    """Config parameters that lower a standard-lane model's CPU priority (`model_args.lower_cpu_priority`)."""
    return {"nice": opts.lanes.standard_nice, "sched_idle": int(opts.lanes.standard_idle)}


def encoder_config(
    name: str,
    cfg: EarlyExitConfig,
    stage: int | None,
    opts: RepositoryOptions,
    *,
    standard: bool = False,
    express: bool = False,
) -> str:
    """One stage (or full-depth encoder) model; `standard` ones run at the standard lane's lower CPU priority,
    `express` ones batch without delay (a critical request does not wait for company)."""
    inputs, outputs = stage_io(cfg, stage)
    cpu = standard_cpu(opts) if standard else {}
    count = opts.lanes.express_instances if express else opts.stage_instances
    head = [f'name: "{name}"']
    if opts.target == "local" and opts.runtime == "torch":
        head += ['backend: "python"']
        params = dict(
            weights_file="weights.safetensors",
            stage="full" if stage is None else stage,
            dtype=opts.dtype,
            intra_op_threads=opts.intra_op_threads,
            **cpu,
        )
        if opts.device == "gpu" and opts.gpu_hidden:
            params["FORCE_CPU_ONLY_INPUT_TENSORS"] = "no"  # hidden states arrive in GPU memory
        params["hidden_on_device"] = "yes" if opts.gpu_hidden else "no"
        tail = [_instances(count, "KIND_GPU" if opts.device == "gpu" else "KIND_CPU"), _params(**params)]
    elif opts.target == "local":
        head += ['backend: "python"']
        tail = [_instances(count), _params(onnx_file="model.onnx", intra_op_threads=opts.intra_op_threads, **cpu)]
    else:
        head += ['backend: "onnxruntime"', 'default_model_filename: "model.onnx"']
        tail = [_instances(count, "KIND_GPU")]
    return (
        "\n".join(
            [
                *head,
                f"max_batch_size: {MAX_BATCH_SIZE}",
                f"input [ {', '.join(inputs)} ]",
                f"output [ {', '.join(outputs)} ]",
                # Express stages have no dynamic batcher: 2.51's batcher can miss the wake-up when an instance frees
                # and then sleeps 500 ms (`WaitForPayloadSlotAvailable`): on a rarely used stage, a critical tail.
                *([] if express else [fifo_batching(opts.max_queue_delay_us)]),
                *tail,
                *([warmup(cfg, stage)] if opts.warmup else []),
            ]
        )
        + "\n"
    )


def gate_params(opts: RepositoryOptions) -> dict[str, object]:
    """Config parameters of a gate model (router or cascade): its caps per class, the batch cap, and (`solo_lane`)
    whether a request alone in the server takes the express lane."""
    solo = {"solo_lane": "express"} if opts.lanes.solo_express and opts.lanes.express_lane else {}
    return {
        "gate_caps": format_caps(class_caps(opts.gate_slots, opts.gate_reserve)),
        "gate_untimed_cap": opts.batch_queue_cap,
        "deadline_margin": opts.deadline_margin,
        **solo,
    }


def cascade_config(cfg: EarlyExitConfig, opts: RepositoryOptions, warm_width: int = 16) -> str:
    outputs = [_tensor(n, OUTPUT_TYPES[n], [1]) for n in CASCADE_OUTPUTS]
    return (
        "\n".join(
            [
                f'name: "cascade_{cfg.name}"',
                'backend: "python"',
                f"max_batch_size: {MAX_BATCH_SIZE}",
                f"input [ {IDS}, {MASK}, {ENTERED_IN}, {WARMUP_IN} ]",
                f"output [ {', '.join(outputs)} ]",
                # No dynamic batcher: `execute` only hands requests to the gate, which orders classes and enforces their
                # timeouts; 2.51's batcher can miss an instance's wake-up and hold a request 500 ms (see the tokenizer).
                _instances(opts.gate_instances),
                _params(plan_file="plan.json", sep_id=102, **gate_params(opts)),
                *([gate_warmup(warm_width, text=False)] if opts.warmup else []),
            ]
        )
        + "\n"
    )


def priority_batching(delay_us: int) -> str:
    """Dynamic batching with one priority level per latency class (the client sends the class's priority); requests
    without one count as the least urgent class. Queues honour a caller's timeout, as in `fifo_batching`."""
    levels = max(c.priority for c in LATENCY_CLASSES.values())
    policy = f"timeout_action: REJECT default_timeout_microseconds: {NO_TIMEOUT_US} allow_timeout_override: true"
    return (
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}\n  priority_levels: {levels}\n"
        f"  default_priority_level: {levels}\n  default_queue_policy {{ {policy} }}\n}}"
    )


def inproc_config(cfg: EarlyExitConfig, opts: RepositoryOptions) -> str:
    """`cascade_<size>_inproc`: the size's stages in one torch model (`models/cascade_inproc`)."""
    outputs = [_tensor(n, OUTPUT_TYPES[n], [1]) for n in CASCADE_OUTPUTS]
    return (
        "\n".join(
            [
                f'name: "cascade_{cfg.name}_inproc"',
                'backend: "python"',
                f"max_batch_size: {MAX_BATCH_SIZE}",
                f"input [ {IDS}, {MASK} ]",
                f"output [ {', '.join(outputs)} ]",
                priority_batching(opts.max_queue_delay_us),
                _instances(opts.stage_instances, "KIND_GPU" if opts.device == "gpu" else "KIND_CPU"),
                _params(
                    plan_file="plan.json",
                    weights_file="weights.safetensors",
                    sep_id=102,
                    dtype=opts.dtype,
                    intra_op_threads=opts.intra_op_threads,
                    fused_attention="yes",
                ),
                *([warmup(cfg, 1)] if opts.warmup else []),  # stage 1's inputs are the model's
            ]
        )
        + "\n"
    )


def router_configs(
    opts: RepositoryOptions, audit_model: str, audit_input: str = "text", warm_width: int = 16
) -> dict[str, str]:
    """Config of each router model (both run `models/router/model.py`): `router`, the gate, and `router_standard`
    when the standard lane's requests run apart (`RepositoryOptions.standard_router`). `audit_model` labels sampled
    outcomes, reading the text or ("tokens") the router's own tokens."""

    def config(name: str, **params: object) -> str:
        return (
            "\n".join(
                [
                    f'name: "{name}"',
                    'backend: "python"',
                    f"max_batch_size: {MAX_BATCH_SIZE}",
                    f"input [ {', '.join([TEXT_IN, IDS, MASK, ENTERED_IN, WARMUP_IN])} ]",
                    f"output [ {', '.join(_tensor(n, OUTPUT_TYPES[n], [1]) for n in names.ROUTER_OUTPUTS)} ]",
                    _instances(opts.gate_instances),  # no dynamic batcher, as for the cascade
                    _params(
                        sep_id=102,
                        audit_model=audit_model,
                        audit_input=audit_input,
                        outcomes_file=opts.outcomes_file,
                        **params,
                    ),
                    *([gate_warmup(warm_width, text=True)] if opts.warmup else []),
                ]
            )
            + "\n"
        )

    if not (opts.lanes.standard_router and opts.lanes.express_lane):
        return {"router": config("router", plan_file="plan.json", **gate_params(opts))}
    # router_standard's requests passed the router's gate: room for all of them at once (each class's cap at least
    # all the router's gates let through, since the batch cap counts every request in flight), and no board (a
    # request alone in the server takes the express lane, so none of these is).
    all_let_through = sum(class_caps(opts.gate_slots, opts.gate_reserve).values()) * opts.gate_instances
    room = dict.fromkeys(LATENCY_CLASSES, all_let_through)
    return {
        "router": config(
            "router",
            plan_file="plan.json",
            standard_router=STANDARD_ROUTER,
            standard_handover="bls" if opts.lanes.bls_handover else "socket",
            **gate_params(opts),
        ),
        STANDARD_ROUTER: config(
            STANDARD_ROUTER,
            plan_file="../../router/1/plan.json",
            lane="standard",
            metrics_model="router",
            gate_caps=format_caps(room),
            deadline_margin=opts.deadline_margin,
            **standard_cpu(opts),
        ),
    }


def load_router_plan(export_dir: Path, sizes: dict[str, EarlyExitConfig], opts: RepositoryOptions) -> RouterPlan | None:
    """The router plan from the export's calibrated `complexity/router.json` (None when there is none)."""
    path = export_dir / "complexity" / "router.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    order = [s for s in raw["sizes"] if s in sizes]
    if raw.get("estimator") is None or len(order) < 2:
        return None  # one size: nothing to route between
    # Relative cost per call: FLOPs per sample of each size's full depth on the evaluation mix.
    flops = json.loads((export_dir / "manifest.json").read_text())["flops_per_sample_eval_mix"]
    targets = tuple(
        RouteTarget(
            name=s,
            kind="cascade",
            relative_cost=float(flops[s]) / float(flops[order[-1]]),
            cascade=load_plan(export_dir, sizes[s], opts),
        )
        for s in order
    )
    escalate = tuple(float(raw["escalate_thresholds"].get(s, 0.0)) for s in order)
    return RouterPlan(
        targets=targets,
        route_threshold=float(raw["q"]),
        escalate_thresholds=escalate,
        audit_rate=opts.audit_rate,
        knob={"max_accuracy_loss": raw.get("max_accuracy_loss")},
    )


def ensemble_config(
    name: str,
    steps: Sequence[tuple[str, dict[str, str], dict[str, str]]],
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> str:
    """An ensemble; each step is (model, input_map step<-ensemble, output_map step->ensemble)."""

    def step(model: str, imap: dict[str, str], omap: dict[str, str]) -> str:
        ins = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in imap.items())
        outs = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in omap.items())
        return f'  step [ {{ model_name: "{model}" model_version: -1 {ins} {outs} }} ]'

    return (
        "\n".join(
            [
                f'name: "{name}"',
                'platform: "ensemble"',
                f"max_batch_size: {MAX_BATCH_SIZE}",
                f"input [ {', '.join(inputs)} ]",
                f"output [ {', '.join(outputs)} ]",
                "ensemble_scheduling {",
                *[step(*s) for s in steps],
                "}",
            ]
        )
        + "\n"
    )


def _write(model_dir: Path, config: str) -> Path:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir / "1"


def _write_labels(model_dir: Path, label_names: Sequence[str], num_labels: int) -> None:
    """LABELS_FILE in the model folder: one class name per line, in label order (the index when unnamed)."""
    lines = [label_names[i] if i < len(label_names) else str(i) for i in range(num_labels)]
    (model_dir / LABELS_FILE).write_text("\n".join(lines) + "\n")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link big files when possible (same filesystem), else copy: repositories stay cheap to rebuild."""
    dst.unlink(missing_ok=True)
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def load_plan(export_dir: Path, cfg: EarlyExitConfig, opts: RepositoryOptions = RepositoryOptions()) -> CascadePlan:
    """The calibrated cascade plan of one size, from its thresholds.json.

    Raises:
        FileNotFoundError: the size was not exported.
    """
    raw = json.loads((export_dir / cfg.name / "thresholds.json").read_text())
    stages = tuple(cfg.stage_model_name(s) for s in range(1, cfg.num_stages + 1))
    return CascadePlan(
        size=cfg.name,
        stage_models=stages,
        exit_layers=cfg.exit_layers,
        thresholds=tuple(raw["thresholds"]),
        confidence=raw["policy"],
        max_seq_len=cfg.max_seq_len,
        express_models=tuple(f"{s}_express" for s in stages) if opts.lanes.express_lane else (),
        express_max_timeout_us=LATENCY_CLASSES["critical"].queue_timeout_us,
        device="gpu" if opts.device == "gpu" and opts.gpu_hidden else "cpu",
        label_names=tuple(raw.get("label_names", ())),
    )


def exported_sizes(export_dir: Path) -> dict[str, EarlyExitConfig]:
    """Sizes present in an export build, with the config each was built with (from its thresholds.json)."""
    found = {}
    for path in sorted(export_dir.glob("*/thresholds.json")):
        cfg = json.loads(path.read_text())["config"]
        found[path.parent.name] = EarlyExitConfig(**cfg)
    if not found:
        raise FileNotFoundError(f"no exported sizes under {export_dir}; run `make export` first")
    return found


def build_repository(export_dir: Path, out: Path, options: RepositoryOptions = RepositoryOptions()) -> list[str]:
    """Write the repository; returns the model names. `out` is replaced.

    Raises:
        ValueError: unknown target or entry size.
        FileNotFoundError: the export build is missing files.
    """
    sizes = exported_sizes(export_dir)
    if options.entry_size not in sizes:
        raise ValueError(f"entry size {options.entry_size!r} not exported; have {sorted(sizes)}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tokenizer_json = export_dir / "tokenizer" / "tokenizer.json"
    warm_ids, warm_mask = warmup_tokens(tokenizer_json, max(cfg.max_seq_len for cfg in sizes.values()))
    warm_width = warm_ids.shape[1]
    models: list[str] = []

    def python_model(name: str, config: str, source: str) -> Path:
        version = _write(out / name, config)
        if options.warmup:
            write_warmup(out / name, warm_ids, warm_mask)
        shutil.copy2(MODELS_SRC / source / "model.py", version / "model.py")
        models.append(name)
        return version

    def encoder(
        name: str, cfg: EarlyExitConfig, stage: int | None, onnx: Path, *, standard: bool = False, express: bool = False
    ) -> None:
        version = _write(out / name, encoder_config(name, cfg, stage, options, standard=standard, express=express))
        _write_labels(out / name, label_names[cfg.name], cfg.num_labels)
        if options.target == "local" and options.runtime == "torch":
            shutil.copy2(MODELS_SRC / "torch_runner" / "model.py", version / "model.py")
            _link_or_copy(export_dir / cfg.name / "weights.safetensors", version / "weights.safetensors")
        else:
            if options.target == "local":
                shutil.copy2(MODELS_SRC / "onnx_runner" / "model.py", version / "model.py")
            _link_or_copy(onnx, version / "model.onnx")
        models.append(name)

    label_names = {
        s: json.loads((export_dir / s / "thresholds.json").read_text()).get("label_names", []) for s in sizes
    }
    tokens = {names.INPUT_IDS: "ids", names.ATTENTION_MASK: "mask"}
    stamped = {**tokens, names.ENTERED_NS: "entered"}

    def tokenize(size: str, *, stamp: bool = True) -> tuple[str, dict[str, str], dict[str, str]]:
        # `stamp`: the next step reads the entry time (Triton refuses an ensemble tensor nobody reads).
        return f"tokenizer_{size}", {names.TEXT: names.TEXT}, stamped if stamp else tokens

    for size, cfg in sizes.items():
        version = python_model(f"tokenizer_{size}", tokenizer_config(cfg, options), "tokenizer")
        shutil.copy2(tokenizer_json, version / "tokenizer.json")
        for stage in range(1, cfg.num_stages + 1):
            onnx = export_dir / size / f"stage{stage}.onnx"
            encoder(cfg.stage_model_name(stage), cfg, stage, onnx, standard=True)
            if options.lanes.express_lane:
                encoder(f"{cfg.stage_model_name(stage)}_express", cfg, stage, onnx, express=True)
        # Full depth is bulk work here (the baselines, and the router's background audits): the standard lane.
        encoder(f"{size}_full_encoder", cfg, None, export_dir / size / "full.onnx", standard=True)
        _write(
            out / cfg.full_model_name,
            ensemble_config(
                cfg.full_model_name,
                [tokenize(size, stamp=False), (f"{size}_full_encoder", tokens, {names.LOGITS: names.LOGITS})],
                [TEXT_IN],
                [_tensor(names.LOGITS, "TYPE_FP32", [cfg.num_labels], labels=True)],
            ),
        )
        _write_labels(out / cfg.full_model_name, label_names[size], cfg.num_labels)
        models.append(cfg.full_model_name)
        version = python_model(f"cascade_{size}", cascade_config(cfg, options, warm_width), "cascade")
        (version / "plan.json").write_text(load_plan(export_dir, cfg, options).to_json())
        exit_step = (f"cascade_{size}", stamped, {n: n for n in CASCADE_OUTPUTS})
        if options.inproc_cascade:
            inproc = f"cascade_{size}_inproc"
            version = _write(out / inproc, inproc_config(cfg, options))
            shutil.copy2(MODELS_SRC / "cascade_inproc" / "model.py", version / "model.py")
            _link_or_copy(export_dir / size / "weights.safetensors", version / "weights.safetensors")
            (version / "plan.json").write_text(load_plan(export_dir, cfg, options).to_json())
            models.append(inproc)
            exit_step = (inproc, tokens, {n: n for n in CASCADE_OUTPUTS})
        _write(
            out / f"{size}_exit",
            ensemble_config(
                f"{size}_exit",
                [tokenize(size, stamp=not options.inproc_cascade), exit_step],
                [TEXT_IN],
                [_tensor(n, OUTPUT_TYPES[n], [1]) for n in CASCADE_OUTPUTS],
            ),
        )
        models.append(f"{size}_exit")

    entry = sizes[options.entry_size]
    plan = load_router_plan(export_dir, sizes, options) if options.router and not options.inproc_cascade else None
    entry_stamp = True
    if options.inproc_cascade:
        outputs = list(CASCADE_OUTPUTS)
        last = (f"cascade_{entry.name}_inproc", tokens, {n: n for n in outputs})
        entry_stamp = False
    elif plan is not None:
        audit = plan.targets[-1].name
        # The audit size's full encoder can read the router's tokens when the entry tokenizes for that size.
        configs = (
            router_configs(options, f"{audit}_full_encoder", "tokens", warm_width)
            if audit == entry.name
            else router_configs(options, f"{audit}_full", warm_width=warm_width)
        )
        for name, config in configs.items():
            python_model(name, config, "router")
        version = out / "router" / "1"  # router_standard reads the plan and estimator from here
        estimator = json.loads((export_dir / "complexity" / "router.json").read_text())["estimator"]
        shutil.copy2(export_dir / estimator, version / plan.estimator_file)
        plan.write(version / "plan.json")
        outputs = list(names.ROUTER_OUTPUTS)
        last = ("router", {names.TEXT: names.TEXT, **stamped}, {n: n for n in outputs})
    else:
        outputs = list(CASCADE_OUTPUTS)
        last = (f"cascade_{entry.name}", stamped, {n: n for n in outputs})
    _write(
        out / ENTRY_MODEL,
        ensemble_config(
            ENTRY_MODEL,
            [tokenize(entry.name, stamp=entry_stamp), last],
            [TEXT_IN],
            [_tensor(n, OUTPUT_TYPES[n], [1]) for n in outputs],
        ),
    )
    models.append(ENTRY_MODEL)
    return models


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_ops.repository", description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, default=PATHS.export_dir, help="export build folder")
    parser.add_argument("--out", type=Path, default=PATHS.repository, help="repository folder (replaced)")
    add_arguments(parser, RepositoryOptions, "repository")
    args = parser.parse_args(argv)
    try:
        options = from_arguments(RepositoryOptions, args)
        models = build_repository(args.export, args.out, options)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(models)} models ({options.target} target) to {args.out}: {', '.join(models)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
