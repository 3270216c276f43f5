# Thin wrappers over uv. On a machine with only python3 and make, the first target
# installs uv into .tools/ and everything else into .venv/ from the lock file.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --locked
PYTEST_ARGS ?=
# `make test` runs the suite on pytest-xdist workers, in the work units and order the root
# conftest.py gives. Much of its time is spent waiting on service processes, sleeps and
# socket round trips, which 2 workers overlap on 2 cores. PYTEST_WORKERS=0: serially.
PYTEST_WORKERS ?= 2

.PHONY: help install test test-fast lint format demo up down faults plan synth deploy-shared \
	deploy-orchestrator deploy-worker bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: uv.lock pyproject.toml $(wildcard */*/pyproject.toml) tools/pyproject.toml | $(UV)
	$(UV) sync --locked --all-packages
	@touch $@

install: .venv/.synced  ## install uv (if missing) and the locked environment

# The tests may cache compiled modules (__pycache__/, git-ignored). The suite starts many
# Python processes (services, CLIs, moto servers); with PYTHONDONTWRITEBYTECODE set, as in
# this machine's environment, each compiled every module it imports from source again
# (importing the worker, the CLI and moto's server: ~2.8 s of CPU, ~1.3 s from bytecode).
test: install  ## the whole test suite (unit, moto, CDK, end to end; PYTEST_WORKERS=2)
	env -u PYTHONDONTWRITEBYTECODE \
		$(RUN) pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

test-fast: install  ## unit tests only (no subprocesses, no end-to-end)
	env -u PYTHONDONTWRITEBYTECODE $(RUN) pytest -m "not e2e and not slow" $(PYTEST_ARGS)

lint: install  ## ruff, ruff format --check, mypy --strict on source, hadolint
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy libs/common/src libs/testing/src services/orchestrator/src services/worker/src infra/cdk/src tools/src
	$(RUN) hadolint docker/orchestrator.Dockerfile docker/worker.Dockerfile

format: install  ## apply ruff fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

demo: install  ## local stack + simulator + 1 orchestrator + 2 workers, one real export
	$(RUN) exportpipe demo

up: install  ## the local system in the background: moto, simulator, orchestrator, WORKERS=2 workers
	$(RUN) exportpipe local up --workers $(or $(WORKERS),2)

down: install  ## stop everything `make up` (or `exportpipe local up`) started
	$(RUN) exportpipe local down

faults: install  ## fault-injection run with the loss ledger (SEED=n to reproduce)
	$(RUN) python -m bench.faults $(if $(SEED),--seed $(SEED),)

plan: install  ## capacity and cost planner for a production day
	$(RUN) exportpipe plan

bench: install  ## data-path and fan-out benchmarks (prints figures)
	$(RUN) python -m bench.orchestrator_fanout
	$(RUN) python -m bench.worker_datapath

synth: install  ## synthesize the CDK app into infra/cdk/cdk.out
	cd infra/cdk && $(RUN) python app.py

deploy-shared: synth  ## deploy the shared (stateful) stack (CDK_ARGS=... passed to cdk)
	cd infra/cdk && $(RUN) npx --yes aws-cdk@2 deploy ExportPipeShared --app cdk.out --exclusively $(CDK_ARGS)

deploy-orchestrator: synth  ## deploy the orchestrator only (IMAGE_TAG=..., SHARED_REVISION=...; unset keeps the deployed value)
	cd infra/cdk && $(RUN) npx --yes aws-cdk@2 deploy ExportPipeOrchestrator --app cdk.out --exclusively \
		$(if $(IMAGE_TAG),--parameters ExportPipeOrchestrator:ImageTag=$(IMAGE_TAG)) \
		$(if $(SHARED_REVISION),--parameters ExportPipeOrchestrator:SharedRevision=$(SHARED_REVISION)) $(CDK_ARGS)

deploy-worker: synth  ## deploy the worker only (IMAGE_TAG=..., SHARED_REVISION=...; unset keeps the deployed value)
	cd infra/cdk && $(RUN) npx --yes aws-cdk@2 deploy ExportPipeWorker --app cdk.out --exclusively \
		$(if $(IMAGE_TAG),--parameters ExportPipeWorker:ImageTag=$(IMAGE_TAG)) \
		$(if $(SHARED_REVISION),--parameters ExportPipeWorker:SharedRevision=$(SHARED_REVISION)) $(CDK_ARGS)

clean:  ## remove the environment and generated files
	rm -rf .venv .tools infra/cdk/cdk.out .pytest_cache .mypy_cache .ruff_cache
