"""`make demo`: start the local server, send a few requests, print what happened, stop.

Until the model family is built this runs on the foundation sample repository.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from adaptive_serving.config import LATENCY_CLASSES, PROJECT_ROOT
from adaptive_serving.server import ServerError, TritonServer

SAMPLE_REPOSITORY = PROJECT_ROOT / "model_repository" / "sample"


def main(argv: list[str] | None = None) -> int:
    import tritonclient.grpc as grpcclient

    try:
        Path("build").mkdir(exist_ok=True)
        server = TritonServer(SAMPLE_REPOSITORY, log_path=Path("build/demo-server.log")).start()
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        print(f"{'class':<10} {'priority':>8} {'timeout_ms':>10} {'latency_ms':>10}  answer")
        for cls in LATENCY_CLASSES.values():
            text = np.array([[f"hello from the {cls.name} class".encode()]], dtype=np.object_)
            inp = grpcclient.InferInput("text", [1, 1], "BYTES")
            inp.set_data_from_numpy(text)
            start = time.perf_counter()
            result = client.infer("sample_ensemble", [inp], priority=cls.priority, timeout=cls.queue_timeout_us)
            latency_ms = (time.perf_counter() - start) * 1e3
            print(f"{cls.name:<10} {cls.priority:>8} {cls.queue_timeout_us / 1e3:>10.0f} {latency_ms:>10.2f}  "
                  f"{int(result.as_numpy('num_bytes')[0, 0])} bytes")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
