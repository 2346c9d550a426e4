"""Start and stop the real `tritonserver` 2.51.0 that ships in the `nvidia-pytriton==0.7.0` wheel.

`TritonServer` is the launcher every tool and test uses; `adaptive_ops.serve` is its command line. The launcher
binds every endpoint to 127.0.0.1 by default, waits for readiness with a timeout, fails with the log tail when a
model does not load, and on stop sends SIGTERM, then SIGKILL after a grace period, to the server and every process it
spawned (the Python backend stubs), so nothing is left behind.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import psutil

from adaptive_core.config import SERVER
from adaptive_serving.inflight import board_path


class ServerError(RuntimeError):
    """The server could not be found, started or made ready."""


# Admin APIs that only callers with the server's admin key may use (Triton's restricted-API flags): shared memory
# always (a registration names a /dev/shm object for the server to map), the model repository too when model
# control is explicit (a load may carry model files). Health, metadata and inference stay open.
ADMIN_HEADER = "admin-key"
RESTRICTED_APIS = ("shared-memory",)
RESTRICTED_APIS_EXPLICIT = ("model-repository", "shared-memory")
# The Python backend's shared-memory region per stub, which the server creates and unlinks on a clean stop only.
SHM_REGION_PREFIX = "/dev/shm/triton_python_backend_shm_region_"


def _site_packages() -> Path:
    import pytriton  # the wheel that ships tritonserver; imported lazily so --help stays fast

    return Path(pytriton.__file__).resolve().parents[1]


def default_backend_dir() -> Path:
    """Backends folder prepared by `make setup`: the wheel's Python backend plus the stub for this Python."""
    return Path(os.environ.get("ADAPTIVE_TRITON_BACKENDS", Path(sys.prefix) / "triton" / "backends"))


def server_binary() -> Path:
    """Path of the wheel's tritonserver binary.

    Raises:
        ServerError: nvidia-pytriton is not installed.
    """
    try:
        binary = _site_packages() / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    except ImportError as e:
        raise ServerError("nvidia-pytriton==0.7.0 is not installed; run `make setup`") from e
    if not binary.exists():
        raise ServerError(f"tritonserver binary missing at {binary}")
    return binary


def free_ports(count: int) -> list[int]:
    """Loopback ports the OS says are free right now (bound then released together, so they are distinct)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


class TritonServer:
    """A local tritonserver process on one model repository.

    Args:
        model_repository: folder of models (config.pbtxt + version folders).
        host: address every endpoint binds to; loopback unless you mean to expose it.
        http_port: HTTP port.
        grpc_port: gRPC port.
        metrics_port: Prometheus metrics port.
        log_path: server log file; a temp file when None.
        log_verbose: Triton's --log-verbose level (1 logs every request's priority and timeout).
        model_control: "none" (default, models fixed at start) or "explicit" (load/unload over the API).
        load_models: with explicit control, models to load at start ("*" for all).
        backend_dir: backends folder; defaults to the one `make setup` prepares.
        extra_args: further tritonserver flags.
        admin_key: the key of the restricted admin APIs (RESTRICTED_APIS); a random one per server when None.

    Example:
        with TritonServer(Path("build/model_repository")) as server:
            print(server.http_url)
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        host: str = SERVER.host,
        http_port: int = SERVER.http_port,
        grpc_port: int = SERVER.grpc_port,
        metrics_port: int = SERVER.metrics_port,
        log_path: Path | None = None,
        log_verbose: int = 0,
        model_control: str = "none",
        load_models: Sequence[str] = (),
        backend_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        admin_key: str | None = None,
    ) -> None:
        if model_control not in ("none", "explicit"):
            raise ValueError(f"model_control must be 'none' or 'explicit', got {model_control!r}")
        self.model_repository = Path(model_repository).resolve()
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self.log_verbose = log_verbose
        self.model_control = model_control
        self.load_models = tuple(load_models)
        self.backend_dir = Path(backend_dir) if backend_dir else default_backend_dir()
        self.extra_args = tuple(extra_args)
        self.admin_key = admin_key or secrets.token_hex(16)
        self._proc: subprocess.Popen[bytes] | None = None
        self._regions: set[Path] = set()  # stub shared-memory regions seen while the server ran

    @classmethod
    def on_free_ports(cls, model_repository: Path, *, log_path: Path, **kwargs: object) -> TritonServer:
        """A not-yet-started server on loopback ports that are free now (tests, benchmarks, the demo)."""
        http, grpc, metrics = free_ports(3)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return cls(model_repository, http_port=http, grpc_port=grpc, metrics_port=metrics, log_path=log_path, **kwargs)  # type: ignore[arg-type]

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        """The tritonserver command line this launcher runs."""
        cmd = [
            str(server_binary()),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--model-control-mode={self.model_control}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--log-verbose={self.log_verbose}",
        ]
        cmd += [f"--load-model={name}" for name in self.load_models]
        apis = ",".join(RESTRICTED_APIS_EXPLICIT if self.model_control == "explicit" else RESTRICTED_APIS)
        cmd += [
            f"--http-restricted-api={apis}:{ADMIN_HEADER}={self.admin_key}",
            f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={self.admin_key}",
        ]
        # Host-specific flags from the operator, e.g. a larger CUDA memory pool on a GPU host (the Python backend
        # moves GPU tensors between processes through it):
        # ADAPTIVE_TRITON_ARGS="--cuda-memory-pool-byte-size=0:2147483648"
        return cmd + shlex.split(os.environ.get("ADAPTIVE_TRITON_ARGS", "")) + list(self.extra_args)

    def admin_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that unlock the restricted admin APIs (gRPC prefixes Triton's protocol tag to the key name)."""
        name = ADMIN_HEADER if protocol == "http" else f"triton-grpc-protocol-{ADMIN_HEADER}"
        return {name: self.admin_key}

    def environment(self) -> dict[str, str]:
        """Environment for the server: the wheel's shared libraries, and this Python first on PATH so the
        backend stubs import this environment's packages."""
        env = dict(os.environ)
        libs = str(_site_packages() / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, ready_timeout_s: float = SERVER.ready_timeout_s) -> TritonServer:
        """Start the server and wait until it reports ready.

        Raises:
            ServerError: the stub or repository is missing, `ADAPTIVE_SERVER_CPUS` or `ADAPTIVE_SERVER_NICE` does
                not parse, the server exited (a model failed to load, a port is taken), or it was not ready within
                `ready_timeout_s`; the message carries the log tail.
        """
        if self._proc is not None:
            raise ServerError("server already started")
        stub = self.backend_dir / "python" / "triton_python_backend_stub"
        if not stub.exists():
            raise ServerError(f"Python backend stub missing at {stub}; run `make setup`")
        if not self.model_repository.is_dir():
            raise ServerError(f"model repository {self.model_repository} does not exist")
        command = self.command()
        nice = server_nice()
        if nice:  # the server and its stubs below the processes beside them (they inherit the niceness)
            command = ["nice", "-n", str(nice), *command]
        cpus = server_cpus()
        if cpus:  # the server and its stubs on these cores only (they inherit the affinity)
            command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *command]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it; closed in stop(); a restart appends
        # A process group of its own lets us signal the server and its stubs together. Not a new session: Linux
        # autogroups schedule each session as one unit against the others, so a server in its own session would
        # take turns with its clients as a whole, its SCHED_IDLE lane included, and its niceness would mean nothing
        # to them (a client's gRPC thread was seen waiting behind the server's idle-class stage threads). The
        # parent-death signal stops the server when this process is killed before it could call stop(); Linux sends
        # it when the starting *thread* ends, so it is only asked for from the main thread.
        on_main_thread = threading.current_thread() is threading.main_thread()
        command, spawn = _spawn(command, dying_with_parent=on_main_thread)
        self._proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.environment(), **spawn
        )
        self._log = log
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise ServerError(self._failure(f"tritonserver exited with code {code} before it was ready"))
            if self.is_ready():
                # Kept now: a server that later dies by itself (an abort) leaves no mapping to find them by.
                self._regions = shm_regions(self._proc.pid)
                return self
            time.sleep(0.2)
        self.stop()
        raise ServerError(self._failure(f"tritonserver not ready after {ready_timeout_s:.0f} s"))

    def _failure(self, what: str) -> str:
        log_tail = tail(self.log_path, 40)
        failed = [line for line in log_tail.splitlines() if "failed to load" in line or "UNAVAILABLE" in line]
        hint = ("\nmodels that failed:\n  " + "\n  ".join(failed)) if failed else ""
        return f"{what} (repository {self.model_repository}, log {self.log_path}){hint}\n--- log tail ---\n{log_tail}"

    def is_ready(self) -> bool:
        """True when the server's HTTP health endpoint says ready."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of a server process that exited on its own (negative: the signal that killed it); None
        while it runs or after `stop`."""
        return None if self._proc is None else self._proc.poll()

    def stop(self, grace_s: float = SERVER.stop_grace_s) -> None:
        """SIGTERM the server, SIGKILL after `grace_s`, and make sure no stub process survives."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        regions, self._regions = shm_regions(proc.pid) | self._regions, set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                proc.wait(timeout=10)
        # Stubs normally exit with the server; any that did not (or were re-parented) are killed here.
        _killpg(proc.pid)
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=5)
        # The gate models' board goes with the last of them; a killed stub leaves it, so it is removed here too.
        board_path(proc.pid).unlink(missing_ok=True)
        # A killed server leaves its stubs' regions in /dev/shm, and a default container's /dev/shm is 64 MB in all.
        for region in regions:
            region.unlink(missing_ok=True)
        self._log.close()

    def __enter__(self) -> TritonServer:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_cpus() -> set[int]:
    """CPU cores the server is pinned to, from `ADAPTIVE_SERVER_CPUS` ("0,1" or "0-1"; unset: no pinning).

    For measuring a server of N cores with the load generator on other cores of the same host (a generator
    sharing the server's cores slows both and is charged to the server's latency).

    Raises:
        ServerError: the value does not parse.
    """
    raw = os.environ.get("ADAPTIVE_SERVER_CPUS", "").strip()
    cpus: set[int] = set()
    try:
        for part in filter(None, raw.split(",")):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ServerError(f"ADAPTIVE_SERVER_CPUS={raw!r}: expected cores like '0,1' or '0-3'") from None
    return cpus


def server_nice() -> int:
    """CPU niceness the server and its stubs start with, from `ADAPTIVE_SERVER_NICE` (0-19; unset: 0).

    For a load generator that must share the server's cores: at the server's own priority it is starved by the
    server it measures (its sends lag and its clocks run late, charged to the server's latency); in production the
    clients run on other machines.

    Raises:
        ServerError: the value is not an integer in 0-19.
    """
    raw = os.environ.get("ADAPTIVE_SERVER_NICE", "").strip() or "0"
    if not raw.isdigit() or int(raw) > 19:
        raise ServerError(f"ADAPTIVE_SERVER_NICE={raw!r}: expected a niceness in 0-19")
    return int(raw)


def _spawn(command: list[str], *, dying_with_parent: bool) -> tuple[list[str], dict[str, object]]:
    """`Popen` arguments that start `command` in a process group of its own, with SIGTERM on its parent's death
    when asked.

    Without a `preexec_fn` where Python allows it (3.11+: `process_group`; `setpriv --pdeathsig`): a `preexec_fn` makes
    Python fork instead of vfork, and fork runs the caller's fork handlers in the child. When the caller holds a gRPC
    client (tests, benchmarks), grpcio's handler restarts its poller thread there, which aborted the child on an epoll
    fd that `Popen` closes before exec ("Epoll1Poller ... epoll_wait error: Bad file descriptor", exit -6;
    docs/lab-notes/2026-11-28-server-launcher.md). Without `setpriv` (or off Linux) there is no parent-death signal on
    3.11+.
    """
    if sys.version_info < (3, 11):
        return command, {"preexec_fn": _own_group_dying_with_parent if dying_with_parent else os.setpgrp}
    setpriv = shutil.which("setpriv") if dying_with_parent and sys.platform.startswith("linux") else None
    if setpriv:  # util-linux; the death signal survives the exec into the server
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    return command, {"process_group": 0}


def _own_group_dying_with_parent() -> None:
    """In the child before exec: a process group of its own, and SIGTERM from Linux when the thread that started us
    dies (PR_SET_PDEATHSIG)."""
    os.setpgrp()
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def shm_regions(pid: int) -> set[Path]:
    """The Python-backend shared-memory regions that process `pid` (a server: it maps each stub's) has mapped."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    return {
        Path(path)
        for path in (line.split(maxsplit=5)[-1] for line in lines)
        if path.startswith(SHM_REGION_PREFIX) and not path.endswith("(deleted)")
    }


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
