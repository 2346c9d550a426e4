"""Bad inputs against a real server (the tiny family): at least 500 cases, each a typed error or a valid answer,
good requests beside them all answered, the server alive after. Also the security defaults."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from adaptive_bench.reliability import cases, suite
from adaptive_bench.reliability.cli import main as reliability_main
from adaptive_bench.reliability.cli import parse_duration
from adaptive_core.config import MAX_BATCH_SIZE, MAX_TEXT_BYTES, SERVER
from adaptive_ops.server import ADMIN_HEADER, TritonServer


@pytest.mark.server
def test_bad_inputs_get_typed_answers(tiny_server: TritonServer) -> None:
    result = suite.run_cases(tiny_server, generated=400)
    summary = result.summary()
    assert summary["cases"] >= 500, summary["cases"]
    assert not result.failures, json.dumps(summary["first_failures"], indent=1, default=str)
    assert result.crashes == 0 and result.lost == 0 and not result.falsified, summary
    # Every kind of outcome was exercised, on both protocols and raw HTTP.
    assert {"answer", "invalid", "not_found", "refused"} <= set(summary["outcomes"]), summary["outcomes"]
    assert {"grpc", "http", "raw_http"} <= set(summary["by_protocol"])
    assert result.good.sent > 0 and result.good.answered == result.good.sent and not result.good.failed, result.good
    assert tiny_server.is_running() and tiny_server.is_ready()


def test_oracle_names_the_first_bad_element() -> None:
    ok = b"Shares fell"
    assert cases.expect_for_texts([ok], None) == ("answer", "")
    assert cases.expect_for_texts([ok, b"\xff", b""], None) == ("invalid", "element 1 is not valid UTF-8")
    assert cases.expect_for_texts([b" \t"], None) == ("invalid", "element 0 is empty")
    assert cases.expect_for_texts([b"a" * (MAX_TEXT_BYTES + 1)], None)[1].startswith("element 0 is")
    assert cases.expect_for_texts([ok] * (MAX_BATCH_SIZE + 1), None) == ("invalid", "batch-size must be <= 64")
    assert cases.expect_for_texts([ok], ["label", "nope"]) == ("invalid", "unexpected inference output")
    # Two request-level problems: invalid, without betting on which message Triton gives first.
    assert cases.expect_for_texts([ok] * (MAX_BATCH_SIZE + 1), ["nope"]) == ("invalid", "")


def test_known_crasher_is_outside_the_generated_suite() -> None:
    """The suite's raw-HTTP bodies never declare a huge tensor of a fixed-size datatype (it would abort Triton 2.51;
    `make reliability` checks that separately, on a throwaway server)."""
    from hypothesis import HealthCheck, given, settings

    from adaptive_bench.reliability.strategies import raw_http_cases

    @settings(max_examples=300, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(raw_http_cases())
    def bounded(case: cases.Case) -> None:
        try:
            body = json.loads(case.body)
        except ValueError:
            return
        for tensor in body.get("inputs", []) if isinstance(body, dict) else []:
            if isinstance(tensor, dict) and tensor.get("datatype") != "BYTES":
                assert all(d <= 70 for d in tensor.get("shape", [])), tensor

    bounded()
    [crasher] = cases.known_triton_crashers()
    assert json.loads(crasher.body)["inputs"][0]["datatype"] == "INT32"


def test_security_defaults() -> None:
    server = TritonServer(Path("repo"))
    command = " ".join(server.command())
    assert SERVER.host == "127.0.0.1" and server.host == "127.0.0.1"
    assert "--model-control-mode=none" in command
    assert f"--http-restricted-api=shared-memory:{ADMIN_HEADER}=" in command
    assert f"--grpc-restricted-protocol=shared-memory:{ADMIN_HEADER}=" in command
    explicit = " ".join(TritonServer(Path("repo"), model_control="explicit").command())
    assert "--http-restricted-api=model-repository,shared-memory:" in explicit
    assert TritonServer(Path("repo")).admin_key != server.admin_key  # a fresh key per server


def _status(server: TritonServer, path: str, headers: dict[str, str], body: bytes | None = None) -> int:
    request = urllib.request.Request(
        f"http://{server.http_url}{path}", data=body, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.server
def test_admin_apis_need_the_key_and_model_control_is_off(tiny_server: TritonServer) -> None:
    assert _status(tiny_server, "/v2/systemsharedmemory/status", {}) == 403
    assert _status(tiny_server, "/v2/systemsharedmemory/status", tiny_server.admin_headers()) == 200
    # With the key, a load is still refused: model control is off.
    load = b'{"parameters": {"file:1/model.py": "aW1wb3J0IG9z"}}'
    assert _status(tiny_server, "/v2/repository/models/planted/load", tiny_server.admin_headers(), load) == 503
    assert not (tiny_server.model_repository / "planted").exists()


def test_cli_help_and_durations(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        reliability_main(["--help"])
    assert exit_.value.code == 0 and "soak" in capsys.readouterr().out
    assert [parse_duration(t) for t in ("600", "90s", "10m", "1h")] == [600, 90, 600, 3600]
    assert reliability_main(["run", "--repo", "/nonexistent"]) == 1
