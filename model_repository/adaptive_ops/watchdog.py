"""Stub watchdog: bring back a Python-backend model whose stub process died.

Triton 2.51's Python backend (python_backend r24.10) neither restarts a stub process that died (killed, OOM,
segfault) nor marks its model unready: the server keeps answering ready while every request to that model fails
with "Stub process '<instance>' is not healthy." (upstream added an unready report in python_backend #423, Dec 2025,
and still no restart; docs/triton-2.51.md). Triton never reaps such a stub, so it stays a zombie child
of the server, which is how the watchdog tells it from a stub that Triton stopped on purpose (an unloaded model's
stub exits and is reaped).

Recovery:
  - explicit model control: unload and load that model again (a new stub);
  - otherwise (the default, model control off): restart the server on the same ports; clients' retry rules
    (`adaptive_client.client`) cover the gap.

    with server, StubWatchdog(server) as watchdog:
        ...   # watchdog.recoveries lists what it did
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from adaptive_ops.server import ServerError, TritonServer

STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class Recovery:
    """One recovery the watchdog made.

    Args:
        models: models whose stub died ("?" when the stub died before the watchdog first saw it).
        action: "reload" (unload + load) or "restart" (the whole server).
        detected_unix_s: when the dead stub was found (time.time()).
        took_s: detection to recovered (the model or server ready again).
        ok: the recovery succeeded.
        error: why it failed ("" when ok).
    """

    models: tuple[str, ...]
    action: str
    detected_unix_s: float
    took_s: float
    ok: bool
    error: str = ""


def stub_models(server_pid: int) -> dict[int, str]:
    """Live stub processes of a server: pid -> model name (from the stub's `<repo>/<model>/<version>/model.py`)."""
    found = {}
    try:
        children = psutil.Process(server_pid).children()
    except psutil.NoSuchProcess:
        return found
    for proc in children:
        try:
            cmd = proc.cmdline()
            if cmd and Path(cmd[0]).name == STUB_NAME and len(cmd) > 1:
                found[proc.pid] = Path(cmd[1]).parents[1].name
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return found


def dead_stubs(server_pid: int) -> list[int]:
    """Pids of the server's children that are zombies: stubs that died without Triton noticing."""
    try:
        children = psutil.Process(server_pid).children()
    except psutil.NoSuchProcess:
        return []
    dead = []
    for proc in children:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                dead.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return dead


def _post(url: str, timeout_s: float, headers: dict[str, str]) -> None:
    """POST an empty JSON body.

    Raises:
        ServerError: the server answered an error; the message carries Triton's reason (e.g. why a load failed).
        OSError: no answer (connection refused, timeout).
    """
    request = urllib.request.Request(
        url, data=b"{}", headers={"Content-Type": "application/json", **headers}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as e:
        reason = e.read().decode(errors="replace").strip()
        raise ServerError(f"{url}: HTTP {e.code}: {reason[:400]}") from e


def model_ready(http_url: str, model: str) -> bool:
    """True when the server says `model` is ready (HTTP model-ready endpoint)."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/ready", timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class StubWatchdog:
    """Polls a running server for dead stubs and recovers (see the module docstring).

    Args:
        server: a started server.
        interval_s: time between polls.
        restart_grace_s: SIGTERM-to-SIGKILL wait of a restart (short: a dead stub holds Triton's shutdown for its
            whole exit timeout).
        load_timeout_s: how long an explicit reload may take.
        on_recovery: called with each Recovery (e.g. to print it).
    """

    def __init__(
        self,
        server: TritonServer,
        *,
        interval_s: float = 0.5,
        restart_grace_s: float = 3.0,
        load_timeout_s: float = 120.0,
        on_recovery: Callable[[Recovery], None] | None = None,
    ) -> None:
        self.server = server
        self.interval_s = interval_s
        self.restart_grace_s = restart_grace_s
        self.load_timeout_s = load_timeout_s
        self.on_recovery = on_recovery
        self.recoveries: list[Recovery] = []
        self._models: dict[int, str] = {}
        self._handled: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarting = False  # True while a restart has the server stopped

    @property
    def action(self) -> str:
        return "reload" if self.server.model_control == "explicit" else "restart"

    def poll(self) -> Recovery | None:
        """One check: remember the live stubs, recover the models of stubs that died since. Returns the recovery
        made, if any."""
        pid = self.server.pid
        if pid is None or not self.server.is_running():
            return None
        self._models.update(stub_models(pid))
        dead = [p for p in dead_stubs(pid) if p not in self._handled]
        if not dead:
            return None
        self._handled.update(dead)
        models = tuple(sorted({self._models.get(p, "?") for p in dead}))
        detected = time.time()
        start = time.monotonic()
        action = "restart" if self.action == "restart" or "?" in models else "reload"
        try:
            if action == "reload":
                self._reload(models)
            else:
                self._restart()
            recovery = Recovery(models, action, detected, time.monotonic() - start, True)
        except (ServerError, OSError, TimeoutError) as e:
            recovery = Recovery(models, action, detected, time.monotonic() - start, False, str(e)[:500])
        self.recoveries.append(recovery)
        if self.on_recovery is not None:
            self.on_recovery(recovery)
        return recovery

    def _reload(self, models: tuple[str, ...]) -> None:
        base = f"http://{self.server.http_url}/v2/repository/models"
        for model in models:
            _post(f"{base}/{model}/unload", self.load_timeout_s, self.server.admin_headers("http"))
            _post(f"{base}/{model}/load", self.load_timeout_s, self.server.admin_headers("http"))
            if not model_ready(self.server.http_url, model):
                raise ServerError(f"model {model} not ready after reloading it")

    def _restart(self) -> None:
        self.restarting = True
        try:
            self.server.stop(grace_s=self.restart_grace_s)
            self._models.clear()
            self._handled.clear()
            self.server.start()
        finally:
            self.restarting = False

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except psutil.Error:
                continue  # the server changed under us (stopping); the next poll sees the new state

    def start(self) -> StubWatchdog:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="stub-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.load_timeout_s)
            self._thread = None

    def __enter__(self) -> StubWatchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe(recovery: Recovery) -> str:
    """One log line for a recovery."""
    what = "recovered" if recovery.ok else f"FAILED to recover ({recovery.error})"
    return (
        f"stub watchdog: stub of {', '.join(recovery.models)} died; {recovery.action} {what} in {recovery.took_s:.1f} s"
    )
