"""Generated repositories, both targets: every config.pbtxt parses against Triton's model-config schema and
names its tensors exactly as names.py and the ONNX graphs do."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from adaptive_core import names
from adaptive_core.cascade import DEADLINE_MARGIN, CascadePlan
from adaptive_core.config import LATENCY_CLASSES, MAX_BATCH_SIZE
from adaptive_core.lanes import LaneOptions, parse_caps
from adaptive_ops.repository import STANDARD_ROUTER, TARGETS, RepositoryOptions, build_repository, router_configs

NAMES = {v for k, v in vars(names).items() if k.isupper()}


def _parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module", params=TARGETS)
def repo(request: pytest.FixtureRequest, tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"repo_{request.param}") / "repo"
    build_repository(tiny_export, out, RepositoryOptions(target=request.param, entry_size="tiny"))
    return out


def test_every_config_parses_against_the_schema(repo: Path) -> None:
    configs = sorted(repo.glob("*/config.pbtxt"))
    assert {c.parent.name for c in configs} == {
        "adaptive",
        "tokenizer_tiny",
        "cascade_tiny",
        "tiny_stage1",
        "tiny_stage2",
        "tiny_stage1_express",
        "tiny_stage2_express",
        "tiny_full_encoder",
        "tiny_full",
        "tiny_exit",
    }
    for path in configs:
        config = _parse(path)
        assert config.name == path.parent.name
        assert config.max_batch_size == MAX_BATCH_SIZE
        for tensor in [*config.input, *config.output]:
            assert tensor.name in NAMES, f"{path}: tensor {tensor.name!r} is not in names.py"


def test_container_target_uses_native_onnxruntime(repo: Path) -> None:
    stage = _parse(repo / "tiny_stage1" / "config.pbtxt")
    if (repo / "tiny_stage1" / "1" / "model.py").exists():
        assert stage.backend == "python"
    else:
        assert stage.backend == "onnxruntime" and stage.default_model_filename == "model.onnx"
        assert stage.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_stage_configs_match_onnx_graphs(repo: Path) -> None:
    for name in ("tiny_stage1", "tiny_stage2", "tiny_full_encoder"):
        config = _parse(repo / name / "config.pbtxt")
        graph = onnx.load(str(repo / name / "1" / "model.onnx")).graph
        assert [i.name for i in config.input] == [i.name for i in graph.input], name
        assert [o.name for o in config.output] == [o.name for o in graph.output], name


def test_entry_steps_have_no_dynamic_batcher(repo: Path) -> None:
    # The gate (in cascade_tiny) orders classes and enforces their timeouts itself; 2.51's dynamic batcher can miss an
    # instance's wake-up and hold a request 500 ms, so the entry steps and the express stages run without one.
    for name in ("tokenizer_tiny", "cascade_tiny", "tiny_stage1_express"):
        assert not _parse(repo / name / "config.pbtxt").HasField("dynamic_batching"), name
    assert _parse(repo / "tokenizer_tiny" / "config.pbtxt").instance_group[0].count == 2
    # Stage queues are FIFO (BLS children carry no priority) but honour the cascade's remaining budget.
    stage = _parse(repo / "tiny_stage2" / "config.pbtxt").dynamic_batching
    assert stage.priority_levels == 0 and stage.default_queue_policy.allow_timeout_override


def test_express_lane_has_cpu_priority(repo: Path) -> None:
    standard = _parse(repo / "tiny_stage1" / "config.pbtxt")
    express = _parse(repo / "tiny_stage1_express" / "config.pbtxt")
    if standard.backend == "python":  # the standard lane yields the CPU; the express lane keeps normal priority
        assert (
            int(standard.parameters["nice"].string_value) > 0 and standard.parameters["sched_idle"].string_value == "1"
        )
        assert "nice" not in express.parameters and "sched_idle" not in express.parameters
    assert express.instance_group[0].count == LaneOptions().express_instances
    assert standard.instance_group[0].count == RepositoryOptions().stage_instances
    plan = json.loads((repo / "cascade_tiny" / "1" / "plan.json").read_text())
    assert plan["express_models"] == ["tiny_stage1_express", "tiny_stage2_express"]
    assert plan["express_max_timeout_us"] == LATENCY_CLASSES["critical"].queue_timeout_us
    # A request alone in the server takes the express lane too (the gate models keep the board that tells them).
    assert _parse(repo / "cascade_tiny" / "config.pbtxt").parameters["solo_lane"].string_value == "express"
    lanes = CascadePlan.from_dict(plan)
    assert lanes.lane(express=True) == ("tiny_stage1_express", "tiny_stage2_express")
    assert lanes.lane(express=False) == ("tiny_stage1", "tiny_stage2")


def test_ensembles_wire_existing_models(repo: Path) -> None:
    models = {p.parent.name for p in repo.glob("*/config.pbtxt")}
    for name in ("adaptive", "tiny_full", "tiny_exit"):
        config = _parse(repo / name / "config.pbtxt")
        assert config.platform == "ensemble"
        assert all(step.model_name in models for step in config.ensemble_scheduling.step)


def test_cli_builds_and_reports_errors(tiny_export: Path, tmp_path: Path, capsys) -> None:
    from adaptive_ops.repository import main

    assert (
        main(
            [
                "--export",
                str(tiny_export),
                "--out",
                str(tmp_path / "repo"),
                "--entry-size",
                "tiny",
                "--no-router",
                "--max-queue-delay-us",
                "500",
            ]
        )
        == 0
    )
    assert (tmp_path / "repo" / "adaptive" / "config.pbtxt").exists()
    assert "max_queue_delay_microseconds: 500\n" in (tmp_path / "repo" / "tiny_stage1" / "config.pbtxt").read_text()
    assert (
        main(
            [
                "--export",
                str(tiny_export),
                "--out",
                str(tmp_path / "plain"),
                "--entry-size",
                "tiny",
                "--no-router",
                "--no-solo-express",
            ]
        )
        == 0
    )
    assert "solo_lane" not in (tmp_path / "plain" / "cascade_tiny" / "config.pbtxt").read_text()
    assert (
        main(
            [
                "--export",
                str(tiny_export),
                "--out",
                str(tmp_path / "other"),
                "--entry-size",
                "tiny",
                "--no-router",
                "--max-queue-delay-us",
                "-1",
            ]
        )
        == 1
    )
    assert "max_queue_delay_us must be >= 0" in capsys.readouterr().err
    assert main(["--export", str(tmp_path / "missing"), "--out", str(tmp_path / "other")]) == 1
    assert main(["--export", str(tiny_export), "--out", str(tmp_path / "other"), "--entry-size", "huge"]) == 1


def test_batch_queue_cap_reaches_the_gate(tiny_export: Path, tmp_path: Path) -> None:
    """The cap bounds the gate's waiting room for the class without a timeout (the timed classes are bounded by their
    timeouts)."""
    out = tmp_path / "repo"
    build_repository(tiny_export, out, RepositoryOptions(entry_size="tiny", batch_queue_cap=128))
    config = _parse(out / "cascade_tiny" / "config.pbtxt")
    assert config.parameters["gate_untimed_cap"].string_value == "128"


def test_deadline_margin_reaches_the_gate_models(tiny_export: Path, tmp_path: Path, capsys) -> None:
    """The gate models judge a stage call's fit by its mean plus the configured margin of deviations."""
    from adaptive_ops.repository import main

    build_repository(tiny_export, tmp_path / "repo", RepositoryOptions(entry_size="tiny"))
    params = _parse(tmp_path / "repo" / "cascade_tiny" / "config.pbtxt").parameters
    assert float(params["deadline_margin"].string_value) == DEADLINE_MARGIN
    assert (
        main(
            [
                "--export",
                str(tiny_export),
                "--out",
                str(tmp_path / "mean"),
                "--entry-size",
                "tiny",
                "--no-router",
                "--deadline-margin",
                "0",
            ]
        )
        == 0
    )
    params = _parse(tmp_path / "mean" / "cascade_tiny" / "config.pbtxt").parameters
    assert float(params["deadline_margin"].string_value) == 0.0
    assert (
        main(
            [
                "--export",
                str(tiny_export),
                "--out",
                str(tmp_path / "bad"),
                "--entry-size",
                "tiny",
                "--deadline-margin",
                "-1",
            ]
        )
        == 1
    )
    assert "deadline_margin must be >= 0" in capsys.readouterr().err


def test_express_instances_flag(tiny_export: Path, tmp_path: Path, capsys) -> None:
    from adaptive_ops.repository import main

    assert (
        main(
            [
                "--export",
                str(tiny_export),
                "--out",
                str(tmp_path / "two"),
                "--entry-size",
                "tiny",
                "--express-instances",
                "2",
            ]
        )
        == 0
    )
    assert _parse(tmp_path / "two" / "tiny_stage2_express" / "config.pbtxt").instance_group[0].count == 2
    assert _parse(tmp_path / "two" / "tiny_stage2" / "config.pbtxt").instance_group[0].count == 1
    assert (
        main(
            [
                "--export",
                str(tiny_export),
                "--out",
                str(tmp_path / "bad"),
                "--entry-size",
                "tiny",
                "--express-instances",
                "0",
            ]
        )
        == 1
    )
    assert "express_instances must be >= 1" in capsys.readouterr().err


def test_gate_caps_keep_room_for_urgent_classes(tiny_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    build_repository(tiny_export, out, RepositoryOptions(entry_size="tiny", gate_slots=6, gate_reserve=3))
    caps = parse_caps(_parse(out / "cascade_tiny" / "config.pbtxt").parameters["gate_caps"].string_value)
    assert caps == {"critical": 12, "sensitive": 9, "batch": 6}
    with pytest.raises(ValueError, match="must be >="):
        parse_caps("critical:4,sensitive:9,batch:6")
    with pytest.raises(ValueError, match="need exactly the classes"):
        parse_caps("critical:4,batch:2")
    with pytest.raises(ValueError, match="gate slots"):
        RepositoryOptions(gate_slots=0)


def test_router_standard_runs_the_standard_lane_at_its_cpu_priority() -> None:
    """The router keeps the gate and hands standard-lane requests to router_standard, which reads the router's plan,
    runs under the standard lane's CPU priority, has room for every request the router's gates let through, and
    counts its answers as the router's."""
    opts = RepositoryOptions()
    configs = {
        name: text_format.Parse(text, model_config_pb2.ModelConfig())
        for name, text in router_configs(opts, "large_full_encoder", "tokens").items()
    }
    assert set(configs) == {"router", STANDARD_ROUTER}
    for name, config in configs.items():
        assert config.name == name and config.backend == "python" and not config.HasField("dynamic_batching")
        assert [t.name for t in config.output] == list(names.ROUTER_OUTPUTS)
    router = {k: v.string_value for k, v in configs["router"].parameters.items()}
    standard = {k: v.string_value for k, v in configs[STANDARD_ROUTER].parameters.items()}
    assert router["standard_router"] == STANDARD_ROUTER and router["plan_file"] == "plan.json"
    assert "nice" not in router and "sched_idle" not in router
    assert standard["lane"] == "standard" and standard["metrics_model"] == "router"
    assert standard["plan_file"] == "../../router/1/plan.json"
    assert (int(standard["nice"]), standard["sched_idle"]) == (opts.lanes.standard_nice, "1")
    assert "solo_lane" not in standard and "standard_router" not in standard
    front, room = parse_caps(router["gate_caps"]), parse_caps(standard["gate_caps"])
    assert all(room[c] == sum(front.values()) * opts.gate_instances for c in front)
    # Without it (or without the express lane that tells the lanes apart) the router runs every request itself.
    for off in (
        RepositoryOptions(lanes=LaneOptions(standard_router=False)),
        RepositoryOptions(lanes=LaneOptions(express_lane=False)),
    ):
        only = router_configs(off, "large_full_encoder")
        assert set(only) == {"router"} and "standard_router" not in only["router"]


def test_inproc_cascade_flag_builds_and_wires_it(tiny_export: Path, tmp_path: Path, capsys) -> None:
    """`--inproc-cascade` adds cascade_<size>_inproc (every stage in one torch model, behind a batcher with one
    priority level per class), wires tiny_exit and adaptive to it, and keeps the BLS chain beside it."""
    from adaptive_ops.repository import main

    out = tmp_path / "inproc"
    assert main(["--export", str(tiny_export), "--out", str(out), "--entry-size", "tiny", "--inproc-cascade"]) == 0
    assert "cascade_tiny_inproc" in capsys.readouterr().out
    for path in out.glob("*/config.pbtxt"):
        assert _parse(path).name == path.parent.name
    config = _parse(out / "cascade_tiny_inproc" / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == MAX_BATCH_SIZE
    assert [t.name for t in config.input] == [names.INPUT_IDS, names.ATTENTION_MASK]
    assert [t.name for t in config.output] == list(names.CASCADE_OUTPUTS)
    levels = max(c.priority for c in LATENCY_CLASSES.values())
    batcher = config.dynamic_batching
    assert batcher.priority_levels == levels and batcher.default_priority_level == levels
    assert batcher.default_queue_policy.allow_timeout_override
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.model_warmup  # the shapes run while the model loads
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["dtype"] == "float32" and params["fused_attention"] == "yes"
    version = out / "cascade_tiny_inproc" / "1"
    assert (version / "model.py").exists() and (version / "weights.safetensors").exists()
    assert CascadePlan.from_file(version / "plan.json").stage_models == ("tiny_stage1", "tiny_stage2")
    for entry in ("tiny_exit", "adaptive"):
        steps = _parse(out / entry / "config.pbtxt").ensemble_scheduling.step
        assert [s.model_name for s in steps] == ["tokenizer_tiny", "cascade_tiny_inproc"], entry
    assert (out / "cascade_tiny" / "config.pbtxt").exists() and not (out / "router").exists()
    gpu = RepositoryOptions(entry_size="tiny", inproc_cascade=True, runtime="torch", device="gpu", dtype="bfloat16")
    build_repository(tiny_export, tmp_path / "gpu", gpu)
    config = _parse(tmp_path / "gpu" / "cascade_tiny_inproc" / "config.pbtxt")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config.parameters["dtype"].string_value == "bfloat16"
    with pytest.raises(ValueError, match="inproc_cascade needs the local target"):
        RepositoryOptions(target="container", inproc_cascade=True)
