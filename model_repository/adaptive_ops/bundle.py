"""Offline bundle: a relocatable archive that serves a model repository on a host with no package index.

    python -m adaptive_ops.bundle --repo build/model_repository --python 3.12 --out build/bundle

writes `build/bundle/triton-adaptive-<python>.tar.xz` with one top folder `triton-adaptive-<python>/`:

    start.sh                    makes a venv of its own on the host's Python (the backend stubs ignore PYTHONPATH),
                                sets the library path, runs tritonserver bound to 127.0.0.1
    triton/bin/tritonserver     tritonserver 2.51.0 from the nvidia-pytriton wheel
    triton/lib/                 only the wheel's shared libraries those binaries load (found with ldd)
    triton/backends/python/     the Python backend and the stub built for the chosen Python
    models/                     the model repository (hard links inside it are stored once)
    wheels/                     this project's wheel (pure Python), plus any `--wheel` requirement
    manifest.json               what is inside, for which Python, and which modules the host must provide

The host needs glibc and a Python of the chosen version with the models' binary packages (numpy, tokenizers,
onnxruntime for ONNX stages; torch for torch stages): those are compiled per platform and Python, so the bundle
names them (start.sh checks) rather than guessing the host's build. `--wheel numpy==1.26.4` etc. adds wheels
for the target Python when the host lacks them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adaptive_core.config import PATHS, PROJECT_ROOT, SERVER

TRITON_VERSION = "2.51.0"  # the tritonserver inside nvidia-pytriton 0.7.0 (NGC 24.10)
PACKAGE_DIRS = (
    "model_repository/adaptive_core",
    "model_repository/adaptive_serving",
    "model_repository/adaptive_ops",
    "export/adaptive_export",
    "client/adaptive_client",
    "client/adaptive_bench",
    "profiling/adaptive_profiling",
)
# Binary modules the Python models import, keyed by what in the repository needs them.
ALWAYS_NEEDED = ("numpy", "tokenizers")
EXECUTABLES = ("/bin/tritonserver", "/triton_python_backend_stub")
BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")


class BundleError(RuntimeError):
    """The bundle cannot be built (missing stub, repository or tool)."""


@dataclass(frozen=True)
class BundleOptions:
    """What goes into a bundle.

    Args:
        repository: model repository folder to ship.
        python: "major.minor" of the host's Python (picks the backend stub).
        out: folder the archive is written to.
        xz_level: xz preset 0-9 (6 is xz's default; 0-1 are several times faster and about 15% bigger).
        extra_wheels: requirement specs downloaded as wheels for `python` (binary deps the host lacks).
    """

    repository: Path = PATHS.repository
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    out: Path = PATHS.root / "bundle"
    xz_level: int = 6
    extra_wheels: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"triton-adaptive-{self.python}"


def wheel_tree() -> tuple[Path, Path]:
    """(tritonserver folder, shared-library folder) of the installed nvidia-pytriton wheel.

    Raises:
        BundleError: nvidia-pytriton is not installed.
    """
    try:
        import pytriton
    except ImportError as e:
        raise BundleError("nvidia-pytriton==0.7.0 is not installed; run `make setup`") from e
    site = Path(pytriton.__file__).resolve().parents[1]
    return site / "pytriton" / "tritonserver", site / "nvidia_pytriton.libs"


def needed_libraries(binaries: Sequence[Path], lib_dir: Path) -> list[Path]:
    """Libraries in `lib_dir` that `binaries` load, directly or not (ldd resolves the whole closure).

    Raises:
        BundleError: ldd is missing or fails on a binary.
    """
    if shutil.which("ldd") is None:
        raise BundleError("ldd not found (Debian package libc-bin)")
    env = {**os.environ, "LD_LIBRARY_PATH": str(lib_dir)}
    found: set[Path] = set()
    for binary in binaries:
        proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise BundleError(f"ldd failed on {binary}: {proc.stderr.strip()}")
        for match in re.finditer(r"=>\s+(\S+)\s+\(", proc.stdout):
            path = Path(match.group(1)).resolve()
            if path.parent == lib_dir.resolve():
                found.add(path)
    return sorted(found)


def host_modules(repository: Path) -> list[str]:
    """Binary modules the host's Python must provide for this repository (start.sh checks them)."""
    modules = list(ALWAYS_NEEDED)
    if any(repository.rglob("*.onnx")):
        modules.append("onnxruntime")  # local ONNX stage runners and the router's estimator
    if any("torch" in p.read_text(errors="replace") for p in repository.glob("*/1/model.py")):
        modules.append("torch")
    return modules


def build_project_wheel(dest: Path) -> Path:
    """This project's wheel (pure Python, no dependencies), built from a clean copy of the sources.

    Raises:
        BundleError: the wheel build failed.
    """
    with tempfile.TemporaryDirectory(prefix="bundle-src-") as tmp:
        src = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(PROJECT_ROOT / name, src / name)
        for rel in PACKAGE_DIRS:
            shutil.copytree(PROJECT_ROOT / rel, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(dest),
                str(src),
            ],
            capture_output=True,
            text=True,
        )
    wheels = sorted(dest.glob("triton_adaptive-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise BundleError(f"building the project wheel failed:\n{proc.stdout}{proc.stderr}")
    return wheels[-1]


def download_wheels(specs: Sequence[str], python: str, dest: Path) -> list[Path]:
    """Wheels of `specs` (no dependencies) for CPython `python` on manylinux x86_64.

    Raises:
        BundleError: pip could not find a wheel.
    """
    if not specs:
        return []
    tag = python.replace(".", "")
    platforms = [f"--platform={p}" for p in ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            f"--python-version={tag}",
            "--implementation=cp",
            *platforms,
            "-d",
            str(dest),
            *specs,
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BundleError(f"pip download of {list(specs)} for Python {python} failed:\n{proc.stderr}")
    return sorted(dest.glob("*.whl"))


def start_script(python: str, modules: Sequence[str]) -> str:
    """start.sh of a bundle: loopback by default, ports and extra tritonserver flags from the caller."""
    return f"""#!/usr/bin/env bash
# Start the bundled tritonserver {TRITON_VERSION} on this bundle's models, bound to loopback.
#   ./start.sh [extra tritonserver flags]
# Environment: PYTHON (a Python {python} with {", ".join(modules)}; default python{python}), HOST (default
# {SERVER.host}), HTTP_PORT / GRPC_PORT / METRICS_PORT (default {SERVER.http_port} / {SERVER.grpc_port} / \
{SERVER.metrics_port}).
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
PYVER="{python}"
PYTHON="${{PYTHON:-python$PYVER}}"
HOST="${{HOST:-{SERVER.host}}}"
HTTP_PORT="${{HTTP_PORT:-{SERVER.http_port}}}"
GRPC_PORT="${{GRPC_PORT:-{SERVER.grpc_port}}}"
METRICS_PORT="${{METRICS_PORT:-{SERVER.metrics_port}}}"

PY="$(command -v "$PYTHON")" || {{ echo "start.sh: $PYTHON not found; set PYTHON to a Python $PYVER" >&2; exit 1; }}
have="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$have" != "$PYVER" ]; then
    echo "start.sh: the bundled backend stub is built for Python $PYVER, but $PY is $have" >&2
    exit 1
fi
# The bundle's wheels, unpacked once (no pip, no index).
if [ ! -f "$HERE/python/.unpacked" ]; then
    mkdir -p "$HERE/python"
    for whl in "$HERE"/wheels/*.whl; do "$PY" -m zipfile -e "$whl" "$HERE/python"; done
    touch "$HERE/python/.unpacked"
fi
# The backend stubs ignore PYTHONPATH: their interpreter takes its site-packages from the first python3 on PATH.
# A venv of our own (the host's Python untouched) comes first; its .pth puts the unpacked wheels, then $PYTHON's
# site-packages (where numpy, tokenizers, ... live), on the stubs' path. Rewritten at each start: relocatable.
VENV="$HERE/venv"
if [ ! -x "$VENV/bin/python3" ] && ! "$PY" -m venv --without-pip "$VENV" 2>/dev/null; then
    # No venv module (Debian/Ubuntu without python3-venv): the same layout by hand.
    real="$("$PY" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))')"
    mkdir -p "$VENV/bin" "$VENV/lib/python$PYVER/site-packages"
    for name in python python3 "python$PYVER"; do ln -sf "$real" "$VENV/bin/$name"; done
    printf 'home = %s\\ninclude-system-site-packages = false\\nversion = %s\\n' "$(dirname "$real")" \\
        "$("$PY" -c 'import platform; print(platform.python_version())')" > "$VENV/pyvenv.cfg"
fi
site_dir="$("$VENV/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
{{ echo "$HERE/python"
   "$PY" -c 'import site; print("\\n".join([*site.getsitepackages(), site.getusersitepackages()]))'
}} > "$site_dir/triton_adaptive.pth"
check='import importlib.util as u, sys; print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))'
missing="$("$VENV/bin/python3" -c "$check" adaptive_serving {" ".join(modules)})"
if [ -n "$missing" ]; then
    echo "start.sh: $PY lacks: $missing (install them, or rebuild the bundle with --wheel)" >&2
    exit 1
fi
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$HERE/triton/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
# The router's outcome log is an absolute path in its config: point it into this bundle, wherever it lives.
key='(key: "outcomes_file" value: \\{{ string_value: ")[^"]*"'
for cfg in "$HERE"/models/*/config.pbtxt; do
    if grep -q 'key: "outcomes_file"' "$cfg"; then
        sed -i -E "s|$key|\\1$HERE/outcomes/router.jsonl\\"|" "$cfg"
    fi
done
# The supervisor restarts tritonserver when it dies, within a budget (adaptive_ops.supervisor).
exec "$VENV/bin/python3" -m adaptive_ops.supervisor --metrics-file "$HERE/state/supervisor.prom" -- \\
    "$HERE/triton/bin/tritonserver" --model-repository="$HERE/models" --backend-directory="$HERE/triton/backends" \\
    --http-address="$HOST" --http-port="$HTTP_PORT" --grpc-address="$HOST" --grpc-port="$GRPC_PORT" \\
    --metrics-address="$HOST" --metrics-port="$METRICS_PORT" --allow-metrics=true \\
    --model-control-mode=none --exit-on-error=true --strict-readiness=true "$@"
"""


def _unique_bytes(paths: Sequence[Path]) -> int:
    """Bytes of the regular files among `paths`, each inode once (as the archive stores hard links)."""
    return sum({(st.st_dev, st.st_ino): st.st_size for st in (p.stat() for p in paths if p.is_file())}.values())


def _add_file(tar: tarfile.TarFile, src: Path, arcname: str) -> None:
    info = tar.gettarinfo(str(src), arcname)  # a second hard link to one file becomes a link entry
    if info.isreg():
        if arcname.endswith(EXECUTABLES):
            info.mode |= 0o755  # the wheel does not always ship the stub executable
        with open(src, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(arcname)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _write_archive(
    path: Path,
    files: Sequence[tuple[Path, str]],
    extra: dict[str, tuple[bytes, int]],
    xz_level: int,
    desc: str,
    progress: bool,
) -> None:
    """Stream a tar of `files` (source, name) and `extra` (name -> (bytes, mode)) through xz into `path`.

    Raises:
        BundleError: xz failed.
    """
    from tqdm import tqdm

    xz = shutil.which("xz")
    with open(path, "wb") as sink:
        # xz uses every core; Python's lzma (the fallback) only one.
        proc = subprocess.Popen([xz, f"-{xz_level}", "-T0", "-c"], stdin=subprocess.PIPE, stdout=sink) if xz else None
        try:
            with tarfile.open(
                fileobj=proc.stdin if proc else sink,
                mode="w|" if proc else "w|xz",
                format=tarfile.PAX_FORMAT,
                **({} if proc else {"preset": xz_level}),
            ) as tar:
                with tqdm(
                    total=sum(src.stat().st_size for src, _ in files if src.is_file()),
                    unit="B",
                    unit_scale=True,
                    desc=desc,
                    disable=not progress,
                ) as bar:
                    for src, arcname in files:
                        _add_file(tar, src, arcname)
                        bar.update(src.stat().st_size if src.is_file() else 0)
                for arcname, (data, mode) in extra.items():
                    _add_bytes(tar, arcname, data, mode)
        finally:
            if proc:
                proc.stdin.close()
                if proc.wait() != 0:
                    raise BundleError(f"xz exited with code {proc.returncode}")


def build_bundle(options: BundleOptions, progress: bool = True) -> Path:
    """Write the bundle archive, and its manifest beside it (`<name>.manifest.json`); returns the archive's path.

    Raises:
        BundleError: no stub for that Python, no repository, or a tool failed.
    """
    server_dir, lib_dir = wheel_tree()
    stub = server_dir / "python_backend_stubs" / options.python / "triton_python_backend_stub"
    if not stub.exists():
        have = sorted(p.name for p in (server_dir / "python_backend_stubs").iterdir())
        raise BundleError(f"no Python backend stub for Python {options.python}; the wheel has {have}")
    repository = Path(options.repository)
    if not (repository.is_dir() and any(repository.glob("*/config.pbtxt"))):
        raise BundleError(f"{repository} is not a model repository (no */config.pbtxt); run `make repository`")
    if not 0 <= options.xz_level <= 9:
        raise BundleError(f"xz level must be in [0, 9], got {options.xz_level}")

    backend = server_dir / "backends" / "python"
    binaries = [server_dir / "bin" / "tritonserver", backend / "libtriton_python.so", stub]
    libs = needed_libraries(binaries, lib_dir)
    modules = host_modules(repository)
    top = options.name
    options.out.mkdir(parents=True, exist_ok=True)
    archive = options.out / f"{top}.tar.xz"
    partial = archive.with_suffix(".xz.partial")
    with tempfile.TemporaryDirectory(prefix="bundle-wheels-") as tmp:
        wheels = [build_project_wheel(Path(tmp)), *download_wheels(options.extra_wheels, options.python, Path(tmp))]
        files: list[tuple[Path, str]] = [
            (server_dir / "bin" / "tritonserver", f"{top}/triton/bin/tritonserver"),
            *[(lib, f"{top}/triton/lib/{lib.name}") for lib in libs],
            *[(backend / name, f"{top}/triton/backends/python/{name}") for name in BACKEND_FILES],
            (stub, f"{top}/triton/backends/python/triton_python_backend_stub"),
            *[(w, f"{top}/wheels/{w.name}") for w in wheels],
            *[
                (p, f"{top}/models/{p.relative_to(repository).as_posix()}")
                for p in sorted(repository.rglob("*"))
                if "__pycache__" not in p.parts
            ],  # empty version dirs too
        ]
        manifest = {
            "name": top,
            "python": options.python,
            "tritonserver": TRITON_VERSION,
            "host_modules": modules,
            "repository_source": str(repository.resolve()),
            "models": sorted(p.parent.name for p in repository.glob("*/config.pbtxt")),
            "libraries": [lib.name for lib in libs],
            "wheels": [w.name for w in wheels],
            "uncompressed_bytes": _unique_bytes([src for src, _ in files]),
        }
        extra = {
            f"{top}/start.sh": (start_script(options.python, modules).encode(), 0o755),
            f"{top}/manifest.json": ((json.dumps(manifest, indent=1) + "\n").encode(), 0o644),
        }
        try:
            _write_archive(partial, files, extra, options.xz_level, f"bundle {top}", progress)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    partial.replace(archive)
    manifest["archive_bytes"] = archive.stat().st_size
    (options.out / f"{top}.manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return archive


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_ops.bundle", description=__doc__.split("\n\n")[0])
    defaults = BundleOptions()
    parser.add_argument("--repo", type=Path, default=defaults.repository, help="model repository to ship")
    parser.add_argument("--python", default=defaults.python, help="host Python major.minor (default: this one)")
    parser.add_argument("--out", type=Path, default=defaults.out, help="folder for the archive")
    parser.add_argument("--xz-level", type=int, default=defaults.xz_level, help="xz preset 0-9")
    parser.add_argument(
        "--wheel",
        action="append",
        default=[],
        metavar="SPEC",
        help="also ship this requirement's wheel for --python (repeatable), e.g. tokenizers==0.23.3",
    )
    args = parser.parse_args(argv)
    options = BundleOptions(
        repository=args.repo, python=args.python, out=args.out, xz_level=args.xz_level, extra_wheels=tuple(args.wheel)
    )
    started = time.monotonic()
    try:
        archive = build_bundle(options)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    manifest = json.loads((options.out / f"{options.name}.manifest.json").read_text())
    print(
        f"wrote {archive}: {archive.stat().st_size / 2**20:.1f} MiB "
        f"({manifest['uncompressed_bytes'] / 2**20:.1f} MiB unpacked, {len(manifest['models'])} models, "
        f"Python {options.python}) in {time.monotonic() - started:.0f} s"
    )
    print(
        f"host needs: Python {options.python} with {', '.join(manifest['host_modules'])}; start with "
        f"`tar -xJf {archive.name} && {options.name}/start.sh`"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
