"""Requests in flight across a server's gate models (router and cascade instances), read in microseconds.

Why: a standard-lane stage's dynamic batcher holds each call up to `max_queue_delay_us`, waiting for company. When the
request is the only one in the server no company can come, and the wait is pure loss: at concurrency 1 it was a large
share of every request (docs/lab-notes/2026-11-28-bench-exit.md). A gate model that knows its request is alone sends the
stage calls down the express lane, which has no batcher. The gate instances live in separate stub processes, so each one
publishes its own count in a slot of a small shared file (`/dev/shm` when there is one) and reads the sum of all slots.
One writer per slot needs no lock; a slot is claimed once, under `flock`, at startup.

The file is named after the server process (the stubs' parent), so two servers never share one. Any failure to
set it up leaves the model without a board: it then never calls a request alone, which is the old behaviour.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import numpy as np

SLOTS = 64  # gate instances one server may hold (4 per gate model by default, one gate model per size + router)
PID, COUNT = 0, 1  # columns of a slot


def board_path(server_pid: int) -> Path:
    """The board file of the tritonserver process `server_pid` (the launcher removes it when a killed server's
    models never got to)."""
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return folder / f"adaptive-serving-inflight-{os.getuid()}-{server_pid}"


def server_board_path() -> Path:
    """The board file of the server this stub process belongs to (its parent process)."""
    return board_path(os.getppid())


class InFlightBoard:
    """One process's slot on a shared board of in-flight request counts.

    Args:
        path: the board file, created when missing (mode 0600; a file of another user is refused).

    Raises:
        OSError: the file cannot be opened or mapped, belongs to another user, or every slot is taken.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            if os.fstat(self._fd).st_uid != os.getuid():
                raise PermissionError(f"{self.path} belongs to another user")
            os.ftruncate(self._fd, max(os.fstat(self._fd).st_size, SLOTS * 2 * 8))
            self._table = np.memmap(self.path, dtype=np.int64, mode="r+", shape=(SLOTS, 2))
            self.slot = self._claim()
        except BaseException:
            os.close(self._fd)
            raise

    def _claim(self) -> int:
        """Take the first slot that is free or whose process has died, and clear the counts of dead slots."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            mine = None
            for i in range(SLOTS):
                pid = int(self._table[i, PID])
                if pid and _alive(pid):
                    continue
                self._table[i] = 0  # a dead process's count must not count
                if mine is None:
                    mine = i
            if mine is None:
                raise OSError(f"{self.path}: all {SLOTS} slots are taken")
            self._table[mine, PID] = os.getpid()
            return mine
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def add(self, n: int) -> None:
        """Change this process's count by `n` (+1 when a request arrives, -1 when it is answered)."""
        self._table[self.slot, COUNT] += n

    def total(self) -> int:
        """Requests in flight in every process on the board."""
        return int(self._table[:, COUNT].sum())

    def close(self) -> None:
        """Free the slot; the last process to leave removes the file."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._table[self.slot] = 0
            if not self._table[:, PID].any():
                self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
