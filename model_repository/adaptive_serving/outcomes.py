"""Per-request outcome log for the feedback loop, written off the hot path.

The router hands each record to a bounded queue; a daemon thread appends JSON lines. When the queue is full
the record is dropped and counted, never waited for.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path


class OutcomeRecorder:
    """Append-only JSON-lines log fed from a bounded queue.

    Args:
        path: the log file (its folder is created).
        max_pending: records held in memory before new ones are dropped.
    """

    def __init__(self, path: Path, max_pending: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped = 0
        self._queue: queue.Queue[dict | None] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._drain, name="outcome-recorder", daemon=True)
        self._thread.start()

    def record(self, outcome: dict) -> None:
        try:
            self._queue.put_nowait(outcome)
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        with self.path.open("a") as f:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                f.write(json.dumps(item) + "\n")
                if self._queue.empty():
                    f.flush()

    def close(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)


def read_outcomes(path: Path) -> list[dict]:
    """All records of an outcome log (a partial last line, from a live writer, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
