"""Time a few requests per model on a served repository and print Triton's per-model statistics (where time goes)."""

import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as g

from adaptive_core import names
from adaptive_ops.server import TritonServer

repo, log = Path(sys.argv[1]), Path(sys.argv[2])
texts = ["Shares in the bank fell after profits missed forecasts", "The striker scored twice in the cup final"]
with TritonServer.on_free_ports(repo, log_path=log) as s:
    c = g.InferenceServerClient(s.grpc_url)

    def text_inputs(batch):
        arr = np.array([[t.encode()] for t in batch], dtype=np.object_)
        i = g.InferInput(names.TEXT, list(arr.shape), "BYTES")
        i.set_data_from_numpy(arr)
        return [i]

    for model, out in (("large_full", names.LOGITS), ("large_exit", names.LABEL), ("adaptive", names.LABEL)):
        ts = []
        for k in range(6):
            t = time.perf_counter()
            c.infer(model, text_inputs(texts[k % 2 : k % 2 + 1]), outputs=[g.InferRequestedOutput(out)])
            ts.append((time.perf_counter() - t) * 1e3)
        print(f"{model:12s} ms: {' '.join(f'{x:.1f}' for x in ts)}", flush=True)
    ids = np.array([[101, 2000, 3000, 102]], np.int64)
    mask = np.ones_like(ids)
    a = g.InferInput(names.INPUT_IDS, list(ids.shape), "INT64")
    a.set_data_from_numpy(ids)
    b = g.InferInput(names.ATTENTION_MASK, list(mask.shape), "INT64")
    b.set_data_from_numpy(mask)
    ts = []
    for _ in range(6):
        t = time.perf_counter()
        c.infer("large_stage1", [a, b])
        ts.append((time.perf_counter() - t) * 1e3)
    print(f"large_stage1 ms: {' '.join(f'{x:.1f}' for x in ts)}", flush=True)
    stats = c.get_inference_statistics(as_json=True)["model_stats"]
    for m in stats:
        inf = m["inference_stats"]
        n = int(inf["success"].get("count", 0))
        if n:
            ms = {
                k: int(inf[k].get("ns", 0)) / n / 1e6
                for k in ("queue", "compute_input", "compute_infer", "compute_output")
            }
            print(
                f"{m['name']:24s} n={n:4d} queue {ms['queue']:8.1f} ms  in {ms['compute_input']:7.1f}  "
                f"infer {ms['compute_infer']:8.1f}  out {ms['compute_output']:7.1f}"
            )
