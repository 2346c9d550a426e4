"""perf_analyzer sweeps and per-class runs on the evaluation mix, writing CSV.

    python -m adaptive_bench.perf sweep   --repo build/model_repository --export build/export --out results/perf
    python -m adaptive_bench.perf classes --repo build/model_repository --export build/export --out results/perf

`sweep` measures `adaptive`, each `<size>_full` and each single stage (`<size>_stage<i>`) over a concurrency
range and a Poisson request-rate range; `classes` runs one perf_analyzer process per latency class at the same
time against `adaptive` (gRPC, `--request-parameter priority:N:int` and `timeout:US:int`), closed loop over a
small concurrency range (`--rate` for an open-loop Poisson sweep, which perf_analyzer 2.51 ends at the first
shed request).
Input data: `text` rows from the evaluation mix for text models; for stages, `input_ids`/`attention_mask` from the
export's `tokenizer/tokenizer.json` (adaptive_core.text.TextTokenizer), and for stage i >= 2 the
`hidden_in` that the served stages 1..i-1 return for those tokens.

How priority was verified (2.51, tiny repository, this machine): the server was started with
`TritonServer(..., log_verbose=1)` and `classes` ran the three perf_analyzer processes at once. Triton's
`infer_request.cc` logs every prepared request as `... model: adaptive, ... priority: N, timeout (us): T`; for
each class the log had `model: adaptive` lines with exactly that class's priority (1, 2, 3) and queue timeout
(50000, 200000, and 0 for batch, which sends no timeout), and the ensemble steps `tokenizer_tiny` and
`cascade_tiny` carried the same values (the BLS stage calls showed `priority: 0`, as TRITON_NOTES says).
`verify_priority_log` repeats that check on every `classes` run with `--repo`: the server starts quiet, a short
verification phase (one perf_analyzer per class at a low rate, same flags as the sweep) runs with verbose logging
switched on through Triton's log-settings API, then logging goes back to quiet for the measured sweep (logging
every request slowed the server enough to shed critical requests, and perf_analyzer 2.51 stops at the first
failed request). The counts land in `priority_check.json`; the run fails if a class's priority is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from adaptive_bench.perf_analyzer import PerfAnalyzerError, run_perf_analyzer, write_input_data

# perf_analyzer keeps cycling through the rows; a few dozen texts cover the mix's views without a huge JSON.
INPUT_ROWS = 48
# Requests in flight per class in the closed-loop per-class run: 3 classes x 2 stay within the gate's 8 slots.
CLASS_CONCURRENCY = (1, 2)
PRIORITY_LINE = re.compile(r"model: (\S+?), .*?priority: (\d+), timeout \(us\): (\d+)")


def text_input_data(path: Path, texts: Sequence[str]) -> Path:
    """`--input-data` JSON with one `text` row per text (shape [1], batch size 1)."""
    return write_input_data(path, [{"text": [t]} for t in texts])


def stage_input_data(
    path: Path, texts: Sequence[str], *, tokenizer_json: Path, max_len: int, stage: int, size: str, grpc_url: str
) -> Path:
    """`--input-data` JSON for `<size>_stage<stage>`: tokens for stage 1; for later stages, `hidden_in` computed
    by the served earlier stages (real activations, one text per row).

    Raises:
        tritonclient.utils.InferenceServerException: an earlier stage failed on the server.
    """
    from adaptive_core import names
    from adaptive_serving.tokenizer import TextTokenizer

    # A size with its own tokenizer (`<export>/<size>/tokenizer/`, beside the shared one) reads its own tokens.
    own = tokenizer_json.parent.parent / size / "tokenizer" / "tokenizer.json"
    tokenize = TextTokenizer(own if own.is_file() else tokenizer_json, max_len)
    rows = []
    client = None
    for text in texts:
        ids, mask = tokenize([text])  # (1, T) each
        row: dict[str, object] = {names.ATTENTION_MASK: {"content": mask[0].tolist(), "shape": [mask.shape[1]]}}
        if stage == 1:
            row[names.INPUT_IDS] = {"content": ids[0].tolist(), "shape": [ids.shape[1]]}
        else:
            if client is None:
                import tritonclient.grpc as grpcclient

                client = grpcclient.InferenceServerClient(grpc_url)
            hidden = _hidden_before(client, size, stage, ids, mask)  # (1, T, H)
            row[names.HIDDEN_IN] = {"content": hidden[0].ravel().tolist(), "shape": list(hidden.shape[1:])}
        rows.append(row)
    path.write_text(json.dumps({"data": rows}))
    return path


def _hidden_before(client: object, size: str, stage: int, ids: object, mask: object) -> object:
    """Run stages 1..stage-1 on the server; returns the hidden states stage `stage` reads."""
    import tritonclient.grpc as grpcclient

    from adaptive_core import names

    def tensor(name: str, array: object, dtype: str) -> object:
        t = grpcclient.InferInput(name, list(array.shape), dtype)  # type: ignore[attr-defined]
        t.set_data_from_numpy(array)
        return t

    hidden = None
    for s in range(1, stage):
        first = tensor(names.INPUT_IDS, ids, "INT64") if s == 1 else tensor(names.HIDDEN_IN, hidden, "FP32")
        out = client.infer(
            f"{size}_stage{s}",
            [first, tensor(names.ATTENTION_MASK, mask, "INT64")],  # type: ignore
            outputs=[grpcclient.InferRequestedOutput(names.HIDDEN)],
        )
        hidden = out.as_numpy(names.HIDDEN)
    return hidden


def served_models(grpc_url: str) -> list[str]:
    """Models ready on the server: `adaptive`, `<size>_full` and `<size>_stage<i>` (express copies left out)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(grpc_url) as client:
        index = client.get_model_repository_index(as_json=True).get("models", [])
    wanted = re.compile(r"^(adaptive|[a-z0-9]+_full|[a-z0-9]+_stage\d+)$")
    return sorted(m["name"] for m in index if m.get("state") == "READY" and wanted.match(m["name"]))


def sweep(
    grpc_url: str,
    texts: Sequence[str],
    out: Path,
    *,
    tokenizer_json: Path,
    max_len: dict[str, int],
    models: Sequence[str] | None = None,
    concurrency: Sequence[int] = (1, 2, 4),
    request_rate: Sequence[float] = (10, 20, 30),
    measurement_interval_ms: int = 2000,
    stability_percentage: float = 10.0,
    max_trials: int = 10,
) -> dict[str, dict[str, str]]:
    """Concurrency and Poisson-rate sweeps per model; writes `<model>_concurrency.csv` and `<model>_rate.csv`.

    Args:
        grpc_url: server gRPC address.
        texts: evaluation-mix texts for the input data.
        out: results folder.
        tokenizer_json: the export's shared tokenizer (stage inputs; a size with its own tokenizer folder uses it).
        max_len: token budget per size name (stage inputs are tokenized to it).
        models: models to measure (default: every served `adaptive`, `<size>_full`, `<size>_stage<i>`).
        concurrency: closed-loop levels (evenly spaced).
        request_rate: open-loop Poisson rates per second (evenly spaced).
        measurement_interval_ms, stability_percentage, max_trials: perf_analyzer settings.

    Raises:
        PerfAnalyzerError: a run failed.
    """
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, str]] = {}
    text_data = text_input_data(out / "input_text.json", texts)
    for model in models or served_models(grpc_url):
        stage = re.match(r"^([a-z0-9]+)_stage(\d+)$", model)
        if stage:
            size, k = stage.group(1), int(stage.group(2))
            data = stage_input_data(
                out / f"input_{model}.json",
                texts,
                tokenizer_json=tokenizer_json,
                max_len=max_len[size],
                stage=k,
                size=size,
                grpc_url=grpc_url,
            )
        else:
            data = text_data
        common = {
            "input_data": data,
            "measurement_interval_ms": measurement_interval_ms,
            "stability_percentage": stability_percentage,
            "max_trials": max_trials,
        }
        written[model] = {}
        for kind, load in (
            ("concurrency", {"concurrency": concurrency}),
            ("rate", {"request_rate": request_rate, "poisson": True}),
        ):
            if not load.get(kind if kind == "concurrency" else "request_rate"):
                continue
            csv_path = out / f"{model}_{kind}.csv"
            run_perf_analyzer(model, grpc_url, csv_path=csv_path, **load, **common)  # type: ignore[arg-type]
            written[model][kind] = str(csv_path)
    return written


def run_classes(
    grpc_url: str,
    texts: Sequence[str],
    out: Path,
    *,
    model: str = "adaptive",
    concurrency: Sequence[int] = CLASS_CONCURRENCY,
    request_rate: Sequence[float] = (),
    classes: Sequence[str] | None = None,
    measurement_interval_ms: int = 2000,
    stability_percentage: float = 10.0,
    max_trials: int = 10,
) -> dict[str, str]:
    """One perf_analyzer process per latency class, all at once, each with its class's priority and queue timeout;
    writes `class_<name>.csv`. Closed loop over `concurrency` by default, or a Poisson sweep over `request_rate`.
    The classes share the server, so row i of each CSV was measured while the others offered their row i too
    (same load levels, same measurement windows, roughly).

    Closed loop is the default because perf_analyzer 2.51 stops a run at the first failed request: in an open
    loop a single critical request shed by its 50 ms queue timeout ends the critical class's sweep. With a few
    requests in flight per class, all three classes fit behind the entry's gate, so none should be shed; the
    latency against offered load with shedding counted is bench-classes' job.

    Raises:
        PerfAnalyzerError: a run failed.
    """
    from adaptive_core.config import LATENCY_CLASSES

    out.mkdir(parents=True, exist_ok=True)
    data = text_input_data(out / "input_text.json", texts)
    names = list(classes or LATENCY_CLASSES)

    # perf_analyzer aborts a run on the first failed request (a critical request shed by its 50 ms queue timeout
    # counts) and waits forever on one never answered: bound each process, and report a class's failure without
    # losing the others'.
    bound_s = 60 + len(request_rate or concurrency) * max_trials * measurement_interval_ms / 1e3 * 3
    load = {"request_rate": request_rate, "poisson": True} if request_rate else {"concurrency": concurrency}
    _warm_up(grpc_url, model, texts[:4])

    def one(name: str) -> str:
        cls = LATENCY_CLASSES[name]
        csv_path = out / f"class_{name}.csv"
        try:
            run_perf_analyzer(
                model,
                grpc_url,
                csv_path=csv_path,
                input_data=data,
                **load,
                priority=cls.priority,
                timeout_us=cls.queue_timeout_us or None,
                measurement_interval_ms=measurement_interval_ms,
                timeout_s=bound_s,
                stability_percentage=stability_percentage,
                max_trials=max_trials,
            )
        except (PerfAnalyzerError, subprocess.TimeoutExpired) as e:
            return f"error: {str(e).splitlines()[0][:300]} (last lines: {' | '.join(str(e).splitlines()[-3:])})"
        return str(csv_path)

    with ThreadPoolExecutor(len(names)) as pool:
        return dict(zip(names, pool.map(one, names)))


def _warm_up(grpc_url: str, model: str, texts: Sequence[str]) -> None:
    """A few requests first, so first-call costs (stage sessions, caches) are not charged to a class."""
    from adaptive_client.client import AdaptiveClient

    with AdaptiveClient(grpc_url, model, max_retries=3) as client:
        for t in texts:
            client.classify([t])


def priority_counts(log_text: str, model: str = "adaptive") -> Counter[tuple[int, int]]:
    """(priority, timeout_us) -> requests of `model` in a `--log-verbose=1` server log."""
    return Counter((int(p), int(t)) for m, p, t in PRIORITY_LINE.findall(log_text) if m == model)


def verify_priority_log(log_path: Path, classes: Sequence[str], model: str = "adaptive") -> dict[str, object]:
    """Check that each class's priority (and queue timeout) reached `model`, from the verbose server log.

    Raises:
        PerfAnalyzerError: a class's priority never appears in the log.
    """
    from adaptive_core.config import LATENCY_CLASSES

    counts = priority_counts(log_path.read_text(errors="replace"), model)
    report: dict[str, object] = {
        "model": model,
        "log": str(log_path),
        "counts": {f"priority {p}, timeout_us {t}": n for (p, t), n in sorted(counts.items())},
    }
    missing = []
    for name in classes:
        cls = LATENCY_CLASSES[name]
        seen = counts.get((cls.priority, cls.queue_timeout_us), 0)
        report[name] = seen
        if not seen:
            missing.append(f"{name} (priority {cls.priority}, timeout {cls.queue_timeout_us} us)")
    if missing:
        raise PerfAnalyzerError(f"{log_path}: no {model} requests logged for {', '.join(missing)}")
    return report


def _verification_phase(grpc_url: str, texts: Sequence[str], out: Path, log_path: Path) -> dict[str, object]:
    """One short perf_analyzer per class with verbose server logging on, then logging off; checks the log.

    Raises:
        PerfAnalyzerError: a class's priority (or timeout) did not reach the server.
    """
    import tritonclient.grpc as grpcclient

    from adaptive_core.config import LATENCY_CLASSES

    client = grpcclient.InferenceServerClient(grpc_url)
    client.update_log_settings({"log_verbose_level": 1})
    try:
        run_classes(grpc_url, texts, out / "verify", request_rate=(2,), measurement_interval_ms=1000, max_trials=2)
    finally:
        client.update_log_settings({"log_verbose_level": 0})
    check = verify_priority_log(log_path, list(LATENCY_CLASSES))
    (out / "priority_check.json").write_text(json.dumps(check, indent=2))
    return check


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adaptive_bench.perf", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("sweep", "classes"))
    srv = parser.add_argument_group("server (one of)")
    srv.add_argument("--url", default=None, help="a running server's gRPC address (host:port)")
    srv.add_argument("--repo", type=Path, default=None, help="serve this repository (verbose log) for the run")
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--export", type=Path, default=Path("build/export"), help="export build (tokenizer, labels)")
    io.add_argument("--out", type=Path, default=Path("results/perf"))
    io.add_argument("--rows", type=int, default=INPUT_ROWS, help="evaluation-mix texts in the input data")
    load = parser.add_argument_group("load")
    load.add_argument("--models", nargs="+", default=None, help="sweep: models (default: all served)")
    load.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=None,
        help=f"closed-loop levels, evenly spaced (sweep: 1 2 3 4; classes: {' '.join(map(str, CLASS_CONCURRENCY))})",
    )
    load.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=None,
        help="Poisson rates, evenly spaced (sweep: 10 20 30; classes: open loop instead of closed)",
    )
    load.add_argument("--measurement-interval-ms", type=int, default=2000)
    load.add_argument("--stability-percentage", type=float, default=10.0)
    load.add_argument("--max-trials", type=int, default=10)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (args.url is None) == (args.repo is None):
        print("error: give exactly one of --url and --repo", file=sys.stderr)
        return 2
    import contextlib

    from adaptive_bench.data import load_eval_samples
    from adaptive_core.config import SIZES, TINY
    from adaptive_ops.server import ServerError, TritonServer

    texts = load_eval_samples(args.export, limit=args.rows).texts
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / f"tritonserver-{args.command}.log"
    server = TritonServer.on_free_ports(args.repo, log_path=log_path) if args.repo else contextlib.nullcontext()
    settings = {
        "measurement_interval_ms": args.measurement_interval_ms,
        "stability_percentage": args.stability_percentage,
        "max_trials": args.max_trials,
    }
    try:
        with server as s:
            url = s.grpc_url if args.repo else args.url
            if args.command == "sweep":
                max_len = {c.name: c.max_seq_len for c in (*SIZES.values(), TINY)}
                written: dict[str, object] = sweep(
                    url,
                    texts,
                    args.out,
                    tokenizer_json=args.export / "tokenizer" / "tokenizer.json",
                    max_len=max_len,
                    models=args.models,
                    concurrency=args.concurrency or (1, 2, 3, 4),
                    request_rate=args.rate or (10, 20, 30),
                    **settings,
                )
            else:
                written = {}
                if args.repo:
                    written["priority_check"] = _verification_phase(url, texts, args.out, log_path)
                written["csv"] = run_classes(
                    url,
                    texts,
                    args.out,
                    request_rate=args.rate or (),
                    concurrency=args.concurrency or CLASS_CONCURRENCY,
                    **settings,
                )
    except (ServerError, PerfAnalyzerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(written, indent=2))
    failed = [k for k, v in dict(written.get("csv", {})).items() if str(v).startswith("error")]  # type: ignore
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
