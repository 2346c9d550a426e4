"""The shared board of requests in flight (`adaptive_serving.inflight`), across boards and processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from adaptive_serving.inflight import InFlightBoard


def test_boards_sum_their_counts_and_the_last_to_close_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "board"
    a, b = InFlightBoard(path), InFlightBoard(path)
    assert a.slot != b.slot
    a.add(1)
    assert a.total() == b.total() == 1
    b.add(2)
    b.add(-1)
    assert a.total() == 2
    a.close()
    assert path.exists() and b.total() == 1  # a's slot is freed with its count
    b.close()
    assert not path.exists()


def test_a_dead_process_slot_is_reclaimed_and_its_count_dropped(tmp_path: Path) -> None:
    path = tmp_path / "board"
    # A process that leaves with 3 requests counted and never closes (a crashed stub).
    code = (
        "import os, sys; from adaptive_serving.inflight import InFlightBoard; "
        f"b = InFlightBoard({str(path)!r}); b.add(3); print(b.slot); sys.stdout.flush(); os._exit(0)"
    )
    dead_slot = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    board = InFlightBoard(path)
    assert board.slot == dead_slot and board.total() == 0
    board.close()
