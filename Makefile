# Two commands matter: `make demo` and `make test`. Everything installs itself through `make setup`.
PY      := .venv/bin/python
REPO    ?= build/model_repository
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1

.PHONY: help setup test serve demo clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: ## create .venv with the pinned set, perf_analyzer and the Triton Python backend stub (idempotent)
	@bash scripts/setup.sh

test: setup ## run the test suite against real tritonservers it starts itself
	$(PY) -m pytest $(PYTEST_ARGS)

serve: setup ## serve $(REPO) on 127.0.0.1 (HTTP $(HTTP_PORT), gRPC $(GRPC_PORT), metrics $(METRICS_PORT)) until Ctrl-C
	$(PY) -m adaptive_serving.server --repo $(REPO) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

demo: setup ## the main job: build, serve, run a mixed workload, print what happened
	$(PY) -m adaptive_serving.demo

clean: ## remove build outputs (keeps .venv)
	rm -rf build
