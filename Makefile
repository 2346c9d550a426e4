# Two commands matter: `make demo` and `make test`. Everything installs itself through `make setup`.
PY      := .venv/bin/python
REPO    ?= build/model_repository
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1

.PHONY: help setup lint test test-unit export repository serve demo bench-exit bench-classes bench-route clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: ## create .venv with the pinned set, perf_analyzer and the Triton Python backend stub (idempotent)
	@bash scripts/setup.sh

lint: setup ## ruff check and ruff format --check (rules in pyproject.toml)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: lint ## lint, then both test tiers: tests/unit (no server) and tests/functional (real tritonservers)
	$(PY) -m pytest tests/unit tests/functional $(PYTEST_ARGS)

test-unit: lint ## lint, then the unit tier only (no server; about a minute)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

export: setup ## train, export and calibrate the model family into build/export (progress bars, summary table)
	$(PY) -m adaptive_export build --out build/export

build/export/manifest.json:
	$(MAKE) export

repository: setup build/export/manifest.json ## generate build/model_repository from build/export (TARGET=local|container)
	$(PY) -m adaptive_ops.repository --export build/export --out $(REPO) --target $(or $(TARGET),local)

serve: setup $(if $(filter build/model_repository,$(REPO)),repository) ## serve $(REPO) on 127.0.0.1 (HTTP $(HTTP_PORT), gRPC $(GRPC_PORT), metrics $(METRICS_PORT)) until Ctrl-C
	$(PY) -m adaptive_ops.serve --repo $(REPO) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

demo: setup ## the main job: build, serve, run a mixed workload, print what happened
	$(PY) -m adaptive_bench.demo

# Rotten Tomatoes' test split has 1,923 snippets; the measured runs take a seeded 800 of them (BENCH_SAMPLES) so that
# every model's sweep fits a few minutes on 2 cores (the offline policy tables use the whole split).
BENCH_SAMPLES ?= 800

bench-exit: repository ## adaptive vs <size>_full: throughput, latency, accuracy, per-hop cost (results/bench-exit)
	$(PY) -m adaptive_bench exit --repo $(REPO) --export build/export --out results/bench-exit --also large_exit --samples $(BENCH_SAMPLES)

bench-classes: repository ## capacity, then a 2x-capacity mixed-class open-loop load (results/bench-classes)
	# The load generator shares the cores: the server runs at nice 5 so the generator is not starved (README).
	ADAPTIVE_SERVER_NICE=$${ADAPTIVE_SERVER_NICE:-5} $(PY) -m adaptive_bench classes --repo $(REPO) --export build/export --out results/bench-classes

bench-route: repository ## routing policies: FLOPs (simulated) and measured cost, accuracy, router overhead (results/bench-route)
	$(PY) -m adaptive_bench route --repo $(REPO) --export build/export --out results/bench-route --samples $(BENCH_SAMPLES)

clean: ## remove build outputs (keeps .venv)
	rm -rf build

# --- client load tooling (adaptive_bench.perf / loadtest) ---
URL ?=
LOAD_TIME ?= 60s
.PHONY: perf-sweep perf-classes load

perf-sweep: repository ## perf_analyzer concurrency + Poisson-rate sweeps of adaptive, <size>_full and stages (results/perf/*.csv)
	$(PY) -m adaptive_bench.perf sweep $(if $(URL),--url $(URL),--repo $(REPO)) --export build/export --out results/perf

perf-classes: repository ## one perf_analyzer per latency class at once, priority checked in the verbose server log (results/perf)
	$(PY) -m adaptive_bench.perf classes $(if $(URL),--url $(URL),--repo $(REPO)) --export build/export --out results/perf \
		--measurement-interval-ms 6000 --stability-percentage 50 --max-trials 6

load: repository ## locust headless for $(LOAD_TIME) on $(URL) or a server of $(REPO); non-zero exit on a failed SLA verdict (results/load)
	$(PY) -m adaptive_bench.loadtest $(if $(URL),--url $(URL),--repo $(REPO)) --time $(LOAD_TIME) --export build/export --out results/load

# --- profiling (adaptive_profiling) ---
PROFILE_OUT ?= results/profile/cpu
PROFILE_ARGS ?=
.PHONY: profile

profile: repository ## per-stage latency, memory, throughput vs batch, roofline, torch.profiler, NVML, per-hop server time ($(PROFILE_OUT)/report.md)
	$(PY) -m adaptive_profiling --export build/export $(if $(URL),--url $(URL),--repo $(REPO)) --out $(PROFILE_OUT) $(PROFILE_ARGS)

# --- deployment (docker/, offline bundle) ---
PYVER ?=
BUNDLE_REPO ?= build/model_repository
.PHONY: docker-check bundle

docker-check: setup ## lint and validate docker/ (or DOCKER_DIR=): hadolint, yamllint, compose spec, dashboard/Prometheus schemas, Kubernetes schemas, cross-file checks
	$(PY) docker/check.py $(if $(DOCKER_DIR),--dir $(DOCKER_DIR))

bundle: setup $(if $(filter build/model_repository,$(BUNDLE_REPO)),repository) ## offline archive for air-gapped hosts: server, libs, stub for PYVER (default: the venv's), BUNDLE_REPO, wheels (build/bundle)
	$(PY) -m adaptive_ops.bundle --repo $(BUNDLE_REPO) --out build/bundle $(if $(PYVER),--python $(PYVER))

# --- reliability (adaptive_bench.reliability) ---
SOAK_TIME ?= 10m
RELIABILITY_ARGS ?=
.PHONY: reliability soak

reliability: repository ## bad inputs (500+), 3x-capacity overload 60 s, faults under load; one table (results/reliability)
	$(PY) -m adaptive_bench.reliability run --repo $(REPO) --export build/export --out results/reliability $(RELIABILITY_ARGS)

soak: repository ## $(SOAK_TIME) at 70% of capacity: server RSS growth and latency drift per window (results/reliability/soak.*); not in CI
	$(PY) -m adaptive_bench.reliability soak --repo $(REPO) --export build/export --out results/reliability --time $(SOAK_TIME)
