"""Bad inputs against a real server (the tiny family): at least 500 cases, each a typed error or a valid answer,
good requests beside them all answered, the server alive after. Also the security defaults."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
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
    assert not result.failures, json.dumps(summary["first_failures"], indent=1, default=str)
    assert summary["cases"] >= 500, summary["cases"]  # (hypothesis stops at its first failing case)
    assert result.crashes == 0 and result.lost == 0 and not result.falsified, summary
    # Every kind of outcome was exercised, on both protocols and raw HTTP.
    assert {"answer", "invalid", "not_found", "refused"} <= set(summary["outcomes"]), summary["outcomes"]
    assert {"grpc", "http", "raw_http"} <= set(summary["by_protocol"])
    assert result.good.sent > 0 and result.good.answered == result.good.sent and not result.good.failed, result.good
    assert tiny_server.is_running() and tiny_server.is_ready()


def test_every_raw_http_case_pins_its_status_and_message() -> None:
    """No raw HTTP case accepts "any answer or error": each names the exact HTTP status and, unless it is an answer,
    what the message must say (hand-picked and generated alike)."""
    from hypothesis import HealthCheck, given, settings

    from adaptive_bench.reliability.strategies import raw_http_cases

    def pinned(case: cases.Case) -> None:
        assert case.status.isdigit() and (case.expect == "answer") == (case.status == "200"), case.name
        assert case.expect == "answer" or case.message, case.name
        assert case.expect != "answer" or case.count > 0, case.name

    for case in cases.hand_picked_cases():
        if case.protocol == "raw_http":
            pinned(case)

    @settings(max_examples=300, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(raw_http_cases())
    def generated(case: cases.Case) -> None:
        pinned(case)

    generated()


def _answer_sample() -> list[cases.Case]:
    """Cases that must be answered with every output and no deadline: the hand-picked ones (emoji, mixed scripts,
    combining marks, a BOM, control characters, a 60 KB word, the byte cap, a full batch) and 40 generated ones."""
    from hypothesis import HealthCheck, given, settings

    from adaptive_bench.reliability.strategies import unicode_cases

    sample = [c for c in cases.hand_picked_cases() if c.expect == "answer" and c.inputs and c.outputs is None]
    generated: list[cases.Case] = []

    @settings(max_examples=40, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(unicode_cases())
    def collect(case: cases.Case) -> None:
        generated.append(case)

    collect()
    return [c for c in sample + generated if not c.timeout_us and c.inputs[0].name == "text"]


@pytest.mark.server
def test_answers_to_odd_but_valid_texts_match_the_local_reference(tiny_server: TritonServer, tiny_export: Path) -> None:
    """A sample of the suite's answers, checked for what they say and not only their shape: label, exit stage and
    confidence as the exported stages compute them directly for the same texts."""
    from conftest import expected_exits, local_exit_logits

    from adaptive_bench.reliability.sender import Sender
    from adaptive_core import names
    from adaptive_core.confidence import max_prob

    threshold = json.loads((tiny_export / "tiny" / "thresholds.json").read_text())["thresholds"]
    sample = _answer_sample()
    assert len(sample) >= 50, len(sample)
    sender = Sender(tiny_server)
    stages_seen: set[int] = set()
    try:
        for case in sample:
            got, status, message, outputs, _ = sender.send(case)
            assert got == "answer", (case.name, status, message)
            texts = [item.decode("utf-8") for item in case.inputs[0].data.ravel()]
            logits = local_exit_logits(tiny_export, "tiny", texts)
            conf = np.stack([max_prob(lg) for lg in logits])
            stage = expected_exits(conf, threshold)
            rows = np.arange(len(texts))
            assert outputs[names.EXIT_STAGE].ravel().tolist() == stage.tolist(), case.name
            assert outputs[names.LABEL].ravel().tolist() == logits[stage - 1, rows].argmax(-1).tolist(), case.name
            np.testing.assert_allclose(outputs[names.CONFIDENCE].ravel(), conf[stage - 1, rows], atol=1e-4)
            stages_seen.update(stage.tolist())
    finally:
        sender.close()
    assert stages_seen == {1, 2}, stages_seen  # both exits were checked


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
