"""The typed client against the tiny repository on a real server: both protocols, class mapping, errors."""

from __future__ import annotations

import pytest
from conftest import free_ports

from adaptive_client.client import AdaptiveClient, CascadeResult, InvalidInputError, ServerUnavailableError, split_url
from adaptive_core import names
from adaptive_ops.server import TritonServer

pytestmark = pytest.mark.server


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_classify_returns_typed_results(tiny_server: TritonServer, scheme: str) -> None:
    url = f"{scheme}://{tiny_server.grpc_url if scheme == 'grpc' else tiny_server.http_url}"
    with AdaptiveClient(url) as client:
        results = client.classify(["Shares fell on Monday", "The striker scored twice"], latency_class="critical")
    assert len(results) == 2 and all(isinstance(r, CascadeResult) for r in results)
    for r in results:
        assert 0 <= r.label < 5 and 0.0 <= r.confidence <= 1.0 and r.exit_stage in (1, 2)
        assert r.exit_layer == 2 * r.exit_stage and r.model_size == "tiny" and r.latency_ms > 0


def test_baseline_logits_through_infer_raw(tiny_server: TritonServer) -> None:
    with AdaptiveClient(tiny_server.grpc_url, "tiny_full") as client:
        out = client.infer_raw(["Interest rates were left unchanged"], [names.LOGITS], latency_class="sensitive")
    assert out[names.LOGITS].shape == (1, 5)


def test_errors_are_typed(tiny_server: TritonServer) -> None:
    with AdaptiveClient(tiny_server.grpc_url) as client:
        with pytest.raises(InvalidInputError, match="empty"):
            client.classify(["  "])
        with pytest.raises(ValueError, match="unknown latency class"):
            client.classify(["fine"], latency_class="urgent")
    (port,) = free_ports(1)
    with AdaptiveClient(f"127.0.0.1:{port}") as client, pytest.raises(ServerUnavailableError):
        client.classify(["nobody listens"])


def test_url_schemes() -> None:
    assert split_url("grpc://h:1") == ("grpc", "h:1")
    assert split_url("http://h:2") == ("http", "h:2")
    assert split_url("h:3") == ("grpc", "h:3")
    with pytest.raises(ValueError, match="scheme"):
        split_url("ftp://h:4")
