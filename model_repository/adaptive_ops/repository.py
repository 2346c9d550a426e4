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
  <size>_exit               ensemble: tokenizer_<size> -> cascade_<size> (early exit on one size, no routing)
  router                    Python BLS: complexity estimate -> start size -> cascade -> escalate (when the export
                            has a trained estimator, `complexity/router.json`); the admission gate
  router_standard           the router's work for requests in the standard lane, at the standard lane's CPU priority
  adaptive                  ensemble: tokenizer_<cheapest routed size> -> router, or -> cascade_<entry size> without
                            a router

Per-size tokenization: sizes may read different vocabularies (small and medium the uncased BERT one, large MPNet's).
The entry tokenizes once, for the cheapest routed size (where most texts are answered); a routed size whose tokenizer
file differs from the entry's (or that reads more tokens) names its own file in the router plan
(`CascadePlan.tokenizer`, copied beside the plan), and the router tokenizes those texts in-process for it: a few
tens of microseconds per snippet against a BLS hop of milliseconds (docs/model-family.md).

Latency classes: the router (or cascade) holds the admission gate (`adaptive_serving.gate`), which caps the requests
in flight per class and keeps room for the urgent classes. BLS child requests cannot carry a priority, so past the
gate the class order is kept by lanes: requests with a critical-class deadline go to express stage instances, and
the standard lane (its stages, and `router_standard`, which routes its requests) runs at a lower CPU priority, so it
yields the cores to them. A request alone in the server also takes the express lane (`solo_express`): the standard
lane's batcher would only hold it for company.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
OUTPUT_TYPES = {
    names.LABEL: "TYPE_INT64",
    names.CONFIDENCE: "TYPE_FP32",
    names.EXIT_STAGE: "TYPE_INT32",
    names.EXIT_LAYER: "TYPE_INT32",
    names.MODEL_SIZE: "TYPE_STRING",
    names.DEADLINE_CUT: "TYPE_BOOL",
    names.COMPLEXITY: "TYPE_FP32",
    names.ESCALATIONS: "TYPE_INT32",
}


@dataclass(frozen=True)
class RepositoryOptions:
    """Knobs of a generated repository (`python -m adaptive_ops.repository --help` lists them as flags).

    Args:
        target: "local" (Python backend + onnxruntime, runs here) or "container" (native onnxruntime backend for
            nvcr.io/nvidia/tritonserver:24.10-py3).
        entry_size: size the `adaptive` entry cascades through when there is no router (with one, the entry
            tokenizes for the cheapest routed size).
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
        lanes: the express and standard lanes (`adaptive_core.lanes.LaneOptions`).
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
    lanes: LaneOptions = field(default_factory=LaneOptions)

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


def _tensor(name: str, dtype: str, dims: Sequence[int], *, optional: bool = False) -> str:
    flag = " optional: true" if optional else ""
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


def fifo_batching(delay_us: int) -> str:
    """Plain dynamic batching whose queue honours a caller's timeout (the cascade sends its remaining budget)."""
    return (
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}\n"
        f"  default_queue_policy {{ timeout_action: REJECT default_timeout_microseconds: {NO_TIMEOUT_US} "
        f"allow_timeout_override: true }}\n}}"
    )


def _instances(count: int, kind: str = "KIND_CPU") -> str:
    return f"instance_group [ {{ count: {count} kind: {kind} }} ]"


def size_tokenizer(export_dir: Path, size: str) -> Path:
    """The `tokenizer.json` a size reads: its own (`<export>/<size>/tokenizer/`), else the build's shared one."""
    own = export_dir / size / "tokenizer" / "tokenizer.json"
    return own if own.is_file() else export_dir / "tokenizer" / "tokenizer.json"


def tokenizer_sep_id(tokenizer_json: Path) -> int:
    """The separator id of a tokenizer file ([SEP] or </s>): what truncation writes at a cut."""
    from tokenizers import Tokenizer

    from adaptive_serving.tokenizer import special_ids

    return special_ids(Tokenizer.from_file(str(tokenizer_json)))[0]


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
                _params(tokenizer_file="tokenizer.json", max_seq_len=cfg.max_seq_len, max_text_bytes=MAX_TEXT_BYTES),
            ]
        )
        + "\n"
    )


def stage_io(cfg: EarlyExitConfig, stage: int | None) -> tuple[list[str], list[str]]:
    """Inputs and outputs of a stage (None = the full-depth encoder), as config.pbtxt tensor entries."""
    hidden_in = _tensor(names.HIDDEN_IN, "TYPE_FP32", [-1, cfg.hidden_size])
    hidden = _tensor(names.HIDDEN, "TYPE_FP32", [-1, cfg.hidden_size])
    logits = _tensor(names.LOGITS, "TYPE_FP32", [cfg.num_labels])
    first = stage is None or stage == 1
    last = stage is None or stage == cfg.num_stages
    return ([IDS, MASK] if first else [hidden_in, MASK]), ([logits] if last else [hidden, logits])


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


def cascade_config(cfg: EarlyExitConfig, opts: RepositoryOptions, sep_id: int = 102) -> str:
    outputs = [_tensor(n, OUTPUT_TYPES[n], [1]) for n in CASCADE_OUTPUTS]
    return (
        "\n".join(
            [
                f'name: "cascade_{cfg.name}"',
                'backend: "python"',
                f"max_batch_size: {MAX_BATCH_SIZE}",
                f"input [ {IDS}, {MASK}, {ENTERED_IN} ]",
                f"output [ {', '.join(outputs)} ]",
                # No dynamic batcher: `execute` only hands requests to the gate, which orders classes and enforces their
                # timeouts; 2.51's batcher can miss an instance's wake-up and hold a request 500 ms (see the tokenizer).
                _instances(opts.gate_instances),
                _params(plan_file="plan.json", sep_id=sep_id, **gate_params(opts)),
            ]
        )
        + "\n"
    )


def router_configs(
    opts: RepositoryOptions, audit_model: str, audit_input: str = "text", sep_id: int = 102
) -> dict[str, str]:
    """Config of each router model (both run `models/router/model.py`): `router`, the gate, and `router_standard`
    when the standard lane's requests run apart (`RepositoryOptions.standard_router`). `audit_model` labels sampled
    outcomes, reading the text or ("tokens") the router's own tokens; `sep_id` is the entry tokenizer's."""

    def config(name: str, **params: object) -> str:
        return (
            "\n".join(
                [
                    f'name: "{name}"',
                    'backend: "python"',
                    f"max_batch_size: {MAX_BATCH_SIZE}",
                    f"input [ {', '.join([TEXT_IN, IDS, MASK, ENTERED_IN])} ]",
                    f"output [ {', '.join(_tensor(n, OUTPUT_TYPES[n], [1]) for n in names.ROUTER_OUTPUTS)} ]",
                    _instances(opts.gate_instances),  # no dynamic batcher, as for the cascade
                    _params(
                        sep_id=sep_id,
                        audit_model=audit_model,
                        audit_input=audit_input,
                        outcomes_file=opts.outcomes_file,
                        **params,
                    ),
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
    """The router plan from the export's calibrated `complexity/router.json` (None when there is none).

    The entry tokenizes for the first (cheapest) target; a target whose tokenizer file differs, or that reads more
    tokens than the entry keeps, names its own file (`tokenizer_<size>.json`, which `build_repository` copies beside
    the plan)."""
    path = export_dir / "complexity" / "router.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    order = [s for s in raw["sizes"] if s in sizes]
    if raw.get("estimator") is None or len(order) < 2:
        return None  # one size: nothing to route between
    # Relative cost per call: FLOPs per sample of each size's full depth on the evaluation mix.
    flops = json.loads((export_dir / "manifest.json").read_text())["flops_per_sample_eval_mix"]
    entry = order[0]
    entry_bytes = size_tokenizer(export_dir, entry).read_bytes()

    def own_tokens(s: str) -> bool:
        return (
            size_tokenizer(export_dir, s).read_bytes() != entry_bytes or sizes[s].max_seq_len > sizes[entry].max_seq_len
        )

    targets = tuple(
        RouteTarget(
            name=s,
            kind="cascade",
            relative_cost=float(flops[s]) / float(flops[order[-1]]),
            cascade=dataclasses.replace(
                load_plan(export_dir, sizes[s], opts), tokenizer=f"tokenizer_{s}.json" if own_tokens(s) else ""
            ),
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
        sep_id=tokenizer_sep_id(size_tokenizer(export_dir, cfg.name)),
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
    models: list[str] = []

    def python_model(name: str, config: str, source: str) -> Path:
        version = _write(out / name, config)
        shutil.copy2(MODELS_SRC / source / "model.py", version / "model.py")
        models.append(name)
        return version

    def encoder(
        name: str, cfg: EarlyExitConfig, stage: int | None, onnx: Path, *, standard: bool = False, express: bool = False
    ) -> None:
        version = _write(out / name, encoder_config(name, cfg, stage, options, standard=standard, express=express))
        if options.target == "local" and options.runtime == "torch":
            shutil.copy2(MODELS_SRC / "torch_runner" / "model.py", version / "model.py")
            _link_or_copy(export_dir / cfg.name / "weights.safetensors", version / "weights.safetensors")
        else:
            if options.target == "local":
                shutil.copy2(MODELS_SRC / "onnx_runner" / "model.py", version / "model.py")
            _link_or_copy(onnx, version / "model.onnx")
        models.append(name)

    tokens = {names.INPUT_IDS: "ids", names.ATTENTION_MASK: "mask"}
    stamped = {**tokens, names.ENTERED_NS: "entered"}

    def tokenize(size: str, *, stamp: bool = True) -> tuple[str, dict[str, str], dict[str, str]]:
        # `stamp`: the next step reads the entry time (Triton refuses an ensemble tensor nobody reads).
        return f"tokenizer_{size}", {names.TEXT: names.TEXT}, stamped if stamp else tokens

    for size, cfg in sizes.items():
        version = python_model(f"tokenizer_{size}", tokenizer_config(cfg, options), "tokenizer")
        shutil.copy2(size_tokenizer(export_dir, size), version / "tokenizer.json")
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
                [_tensor(names.LOGITS, "TYPE_FP32", [cfg.num_labels])],
            ),
        )
        models.append(cfg.full_model_name)
        sep_id = tokenizer_sep_id(size_tokenizer(export_dir, size))
        version = python_model(f"cascade_{size}", cascade_config(cfg, options, sep_id), "cascade")
        (version / "plan.json").write_text(load_plan(export_dir, cfg, options).to_json())
        _write(
            out / f"{size}_exit",
            ensemble_config(
                f"{size}_exit",
                [tokenize(size), (f"cascade_{size}", stamped, {n: n for n in CASCADE_OUTPUTS})],
                [TEXT_IN],
                [_tensor(n, OUTPUT_TYPES[n], [1]) for n in CASCADE_OUTPUTS],
            ),
        )
        models.append(f"{size}_exit")

    entry = sizes[options.entry_size]
    plan = load_router_plan(export_dir, sizes, options) if options.router else None
    if plan is not None:
        # The entry tokenizes for the cheapest target; targets with their own tokenizer get it beside the plan.
        entry = sizes[plan.targets[0].name]
        sep_id = plan.targets[0].cascade.sep_id
        audit = plan.targets[-1]
        # The audit size's full encoder can read the router's tokens when they are its tokens.
        configs = (
            router_configs(options, f"{audit.name}_full_encoder", "tokens", sep_id)
            if audit.name == entry.name or not audit.cascade.tokenizer
            else router_configs(options, f"{audit.name}_full", sep_id=sep_id)
        )
        for name, config in configs.items():
            python_model(name, config, "router")
        version = out / "router" / "1"  # router_standard reads the plan, estimator and tokenizers from here
        estimator = json.loads((export_dir / "complexity" / "router.json").read_text())["estimator"]
        shutil.copy2(export_dir / estimator, version / plan.estimator_file)
        for target in plan.targets:
            if target.cascade.tokenizer:
                shutil.copy2(size_tokenizer(export_dir, target.name), version / target.cascade.tokenizer)
        plan.write(version / "plan.json")
        outputs = list(names.ROUTER_OUTPUTS)
        last = ("router", {names.TEXT: names.TEXT, **stamped}, {n: n for n in outputs})
    else:
        outputs = list(CASCADE_OUTPUTS)
        last = (f"cascade_{entry.name}", stamped, {n: n for n in outputs})
    _write(
        out / ENTRY_MODEL,
        ensemble_config(
            ENTRY_MODEL, [tokenize(entry.name), last], [TEXT_IN], [_tensor(n, OUTPUT_TYPES[n], [1]) for n in outputs]
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
