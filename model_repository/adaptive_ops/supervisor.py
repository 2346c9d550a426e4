"""Supervision: bring tritonserver back when it exits on its own (a crash, an abort), within a restart budget.

Two ways in, one policy (`RestartPolicy`):

- `Supervisor` watches a `TritonServer` (the launcher's Python API and `adaptive-serve`): when the process exits
  unexpectedly it logs why (exit code or signal, and the log tail), waits the policy's backoff, and starts the server
  again on the same ports; the launcher's stop cleans up the dead server's stubs and shared memory first.
- `python -m adaptive_ops.supervisor [--metrics-file F] -- COMMAND...` does the same for any command: the bundle's
  `start.sh` and the container's entry run tritonserver through it (signals go to the child; a stop is not restarted).

Past the budget (`max_restarts` in `window_s`) the supervisor gives up and exits non-zero: a server that keeps dying is
a fault for the next layer to see. Under Kubernetes or Compose that layer restarts the container with its own backoff
(docs/operations.md): the supervisor makes the common case (one crash) a few seconds of retries for clients instead of
a container restart, and the container runtime still catches a crash loop.

Each restart is a log line and a count in a Prometheus text file (`--metrics-file`; node_exporter's textfile
collector format): `adaptive_server_restarts_total{reason=...}` and `adaptive_server_up`.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RESTARTS_METRIC = "adaptive_server_restarts_total"
UP_METRIC = "adaptive_server_up"


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart, and when to give up.

    Args:
        max_restarts: restarts allowed within `window_s`; one more exit in the window and the supervisor gives up.
        window_s: the window the restarts are counted in (seconds).
        backoff_s: wait before the first restart in a window; each further one doubles it.
        max_backoff_s: the longest wait.
    """

    max_restarts: int = 5
    window_s: float = 600.0
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window_s <= 0 or self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(f"bad restart policy: {self}")

    def delay(self, restarts: Sequence[float], now: float) -> float | None:
        """Seconds to wait before the next restart, given the times of the restarts so far; None = give up."""
        recent = [t for t in restarts if now - t < self.window_s]
        if len(recent) >= self.max_restarts:
            return None
        return min(self.backoff_s * 2 ** len(recent), self.max_backoff_s)


def exit_reason(returncode: int | None) -> str:
    """A process's exit as words: "signal 11 (SIGSEGV)" or "exit code 1"."""
    if returncode is None:
        return "unknown exit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"


@dataclass
class RestartCounter:
    """The restart count per reason, written to a Prometheus text file after every change (atomically).

    Args:
        path: the file; None = count only.
    """

    path: Path | None = None
    counts: collections.Counter = field(default_factory=collections.Counter)
    up: bool = False

    def set_up(self, up: bool) -> None:
        self.up = up
        self._write()

    def count(self, reason: str) -> None:
        self.counts[reason] += 1
        self._write()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _write(self) -> None:
        if self.path is None:
            return
        lines = [
            f"# HELP {RESTARTS_METRIC} tritonserver restarts by the supervisor after it exited on its own, by reason",
            f"# TYPE {RESTARTS_METRIC} counter",
            *(f'{RESTARTS_METRIC}{{reason="{reason}"}} {n}' for reason, n in sorted(self.counts.items())),
            f"# HELP {UP_METRIC} 1 while the supervised tritonserver runs",
            f"# TYPE {UP_METRIC} gauge",
            f"{UP_METRIC} {int(self.up)}",
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)


class Supervisor:
    """Restarts a started `TritonServer` that exits on its own (see the module docstring).

    Args:
        server: a started `adaptive_ops.server.TritonServer`.
        policy: when to restart and when to give up.
        counter: where restarts are counted.
        log: called with one line per event.
    """

    def __init__(
        self,
        server: object,
        policy: RestartPolicy = RestartPolicy(),
        counter: RestartCounter | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.server = server
        self.policy = policy
        self.counter = counter or RestartCounter()
        self.log = log
        self.restarts: list[float] = []  # time.monotonic() of each restart
        self.gave_up = False
        self.restarting = False
        self.counter.set_up(server.is_running())

    def check(self) -> bool:
        """Restart the server if it died; returns False once the supervisor has given up."""
        if self.gave_up:
            return False
        if self.server.is_running():
            return True
        self.restarting = True
        try:
            return self._recover()
        finally:
            self.restarting = False

    def _recover(self) -> bool:
        from adaptive_ops.server import ServerError, tail

        reason = exit_reason(self.server.returncode)
        self.counter.set_up(False)
        while True:
            delay = self.policy.delay(self.restarts, time.monotonic())
            if delay is None:
                self.log(
                    f"supervisor: tritonserver exited ({reason}); {len(self.restarts)} restarts in the last "
                    f"{self.policy.window_s:.0f} s, giving up"
                )
                self.gave_up = True
                return False
            self.log(
                f"supervisor: tritonserver exited ({reason}); restart {self.counter.total + 1} in {delay:.1f} s; "
                f"log tail:\n{tail(self.server.log_path, 20)}"
            )
            time.sleep(delay)
            self.restarts.append(time.monotonic())
            self.counter.count(reason)
            self.server.stop()  # reaps the dead process; kills stubs left behind, removes their shared memory
            try:
                self.server.start()
            except ServerError as e:
                reason = f"start failed: {str(e).splitlines()[0][:200]}"
                continue
            self.counter.set_up(True)
            self.log(f"supervisor: tritonserver ready again (pid {self.server.pid})")
            return True

    def watch(self, stop: threading.Event, interval_s: float = 0.2) -> None:
        """Check every `interval_s` until `stop` is set or the supervisor gives up (for a thread)."""
        while not stop.wait(interval_s) and self.check():
            pass


def run_command(command: Sequence[str], policy: RestartPolicy, counter: RestartCounter) -> int:
    """Run `command`, restarting it when it exits on its own; SIGTERM/SIGINT go to it and end the run. Returns the
    exit code to leave with: 0 after a requested stop, 1 after giving up."""
    stopping = threading.Event()
    child: list[subprocess.Popen] = []

    def forward(signum: int, frame: object) -> None:
        stopping.set()
        if child and child[0].poll() is None:
            child[0].send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    restarts: list[float] = []
    while True:
        proc = subprocess.Popen(list(command))
        child[:] = [proc]
        counter.set_up(True)
        code = proc.wait()
        counter.set_up(False)
        if stopping.is_set():
            return 0
        reason = exit_reason(code)
        delay = policy.delay(restarts, time.monotonic())
        if delay is None:
            print(f"supervisor: {command[0]} exited ({reason}); restart budget spent, giving up", flush=True)
            return 1
        print(f"supervisor: {command[0]} exited ({reason}); restarting in {delay:.1f} s", flush=True)
        if stopping.wait(delay):
            return 0
        restarts.append(time.monotonic())
        counter.count(reason)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adaptive_ops.supervisor",
        description="Run a command (tritonserver) and restart it when it dies.",
    )
    parser.add_argument("--metrics-file", type=Path, default=None, help="Prometheus text file of restart counts")
    parser.add_argument("--max-restarts", type=int, default=RestartPolicy.max_restarts)
    parser.add_argument("--window-s", type=float, default=RestartPolicy.window_s)
    parser.add_argument("--backoff-s", type=float, default=RestartPolicy.backoff_s)
    parser.add_argument("--max-backoff-s", type=float, default=RestartPolicy.max_backoff_s)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    policy = RestartPolicy(args.max_restarts, args.window_s, args.backoff_s, args.max_backoff_s)
    return run_command(command, policy, RestartCounter(args.metrics_file))


if __name__ == "__main__":
    sys.exit(main())
