# One entry point for people and CI. `make test` and `make demo` work from a fresh clone:
# they create .venv (and .venv-tools for the template checks) from the pinned requirements,
# with bytecode compiled at install time: with PYTHONDONTWRITEBYTECODE=1 every start would recompile.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python >= 3.11 for the project venv: prefer python3.12 (the Lambda runtime), then python3.
PYTHON ?= $(shell for p in python3.12 python3.13 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
TOOLS_VENV := .venv-tools
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS_STAMP := $(TOOLS_VENV)/.installed
export PYTHONPATH := $(CURDIR)/layers/virality:$(CURDIR)/src

# A .venv made by another Python than the one selected now is rebuilt, not silently kept.
pyver = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifneq ($(wildcard $(STAMP)),)
ifneq ($(call pyver,$(PY)),$(call pyver,$(PYTHON)))
$(info ==> $(VENV) uses Python $(call pyver,$(PY)) but $(PYTHON) is $(call pyver,$(PYTHON)): rebuilding $(VENV))
$(STAMP): FORCE
endif
endif
FORCE:
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: help venv tools test test-quick typecheck lint unit integration e2e template layer-check demo serve invoke bench openapi baseline build deploy cli sam spark-archive clean

# uv into a new venv with pip, tried up to 3 times: pip does not retry a download cut off
# mid-body (uv itself retries its downloads).
pip_uv = for try in 1 2 3; do $(1)/bin/python -m pip install -q --disable-pip-version-check uv && break; \
	[ $$try -lt 3 ] || exit 1; echo "pip install uv failed (try $$try of 3); trying again" >&2; done

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements-dev.txt
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: Python >= 3.11 is required (python3 is $$(python3 --version 2>&1))."; \
		echo "       Install python3.12 (e.g. 'pyenv install 3.12' then 'PYENV_VERSION=3.12.1 make ...')"; \
		echo "       or run: make PYTHON=/path/to/python3.12 ..."; exit 1; fi
	@echo "==> creating $(VENV) with $$($(PYTHON) --version)"
	$(PYTHON) -m venv --clear $(VENV)
	$(call pip_uv,$(VENV))
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -r requirements-dev.txt
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	# The library is imported from layers/virality (PYTHONPATH): compile it too, since with
	# PYTHONDONTWRITEBYTECODE=1 (CI, containers) nothing else ever writes its .pyc.
	$(PY) -m compileall -q layers/virality/virality src
	@touch $@

venv: $(STAMP)  ## create .venv with the project and its dev dependencies

$(TOOLS_STAMP): requirements-tools.txt
	@echo "==> creating $(TOOLS_VENV) (sam, cfn-lint, checkov)"
	$(PYTHON) -m venv --clear $(TOOLS_VENV)
	$(call pip_uv,$(TOOLS_VENV))
	$(TOOLS_VENV)/bin/uv pip install -q --compile-bytecode --python $(TOOLS_VENV)/bin/python -r requirements-tools.txt
	@touch $@

tools: $(TOOLS_STAMP)  ## create .venv-tools with the template checkers

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check .

unit: $(STAMP)  ## unit tests only (no AWS emulation, no subprocesses)
	$(PY) -m pytest tests/unit

integration: $(STAMP)  ## integration tests: handlers against moto S3, the invoke script
	$(PY) -m pytest tests/integration

e2e: $(STAMP)  ## end-to-end tests: local API and S3 servers, demo, fuzzing, load
	$(PY) -m pytest tests/e2e

typecheck: $(STAMP)  ## mypy (pydantic plugin) on the library, the dev and Spark packages and the handlers
	$(VENV)/bin/mypy

test-quick: $(STAMP)  ## lint and unit tests (well under a minute)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests/unit

template: $(TOOLS_STAMP)  ## sam validate --lint, cfn-lint, checkov
	TOOLS_VENV=$(TOOLS_VENV) bash scripts/check_template.sh

layer-check: $(TOOLS_STAMP)  ## sam build, then check the built layer imports and carries .pyc
	TOOLS_VENV=$(TOOLS_VENV) bash scripts/check_layer_build.sh

test: $(STAMP) $(TOOLS_STAMP)  ## everything CI runs: lint, types, template checks, layer build, pytest
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory typecheck
	$(MAKE) --no-print-directory template
	$(MAKE) --no-print-directory layer-check
	$(PY) -m pytest

demo: $(STAMP)  ## local S3 + retrain + predict, end to end, no AWS and no Docker
	$(PY) scripts/demo.py

serve: $(STAMP)  ## local HTTP API on 127.0.0.1:3000 backed by a local S3
	$(VENV)/bin/virality serve --local-s3 --port $${PORT:-3000}

FUNCTION ?= predict
EVENT ?= events/predict-single.json
invoke: $(STAMP)  ## Docker-free `sam local invoke`: make invoke FUNCTION=predict EVENT=events/predict-single.json
	$(PY) scripts/invoke.py $(FUNCTION) $(EVENT) $(ARGS)

bench: $(STAMP)  ## run the benchmarks and rewrite docs/benchmarks.md
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_retrain_1m.py
	$(PY) benchmarks/bench_train_e2e.py --full
	$(PY) benchmarks/bench_predict.py
	$(PY) benchmarks/bench_cold_start.py
	$(PY) benchmarks/bench_model_quality.py
	-$(PY) benchmarks/plot_convergence.py

openapi: $(STAMP)  ## regenerate docs/openapi.json from the pydantic models
	$(PY) scripts/gen_openapi.py

baseline: $(STAMP)  ## retrain the bundled baseline model on the synthetic sample
	mkdir -p build
	$(VENV)/bin/virality sample-data --rows 7358 --seed 42 --out build/synthetic-sample-7358-seed42.csv
	cd build && ../$(VENV)/bin/virality train synthetic-sample-7358-seed42.csv \
		--out ../layers/virality/virality/baseline/ml-weights.json --model-version bundled-baseline-synthetic-v1

build: $(TOOLS_STAMP)  ## sam build (needs python3.12 on PATH)
	env -u PYTHONPATH $(TOOLS_VENV)/bin/sam build

deploy: build  ## sam build, then sam deploy --guided (needs AWS credentials)
	env -u PYTHONPATH $(TOOLS_VENV)/bin/sam deploy --guided

cli: $(STAMP)  ## run the virality CLI from .venv: make cli ARGS="train videos.csv --out ml-weights.json"
	$(VENV)/bin/virality $(ARGS)

sam: $(TOOLS_STAMP)  ## run the SAM CLI from .venv-tools: make sam ARGS="local invoke PredictFunction -e events/predict-single.json"
	env -u PYTHONPATH $(TOOLS_VENV)/bin/sam $(ARGS)

spark-archive: $(STAMP)  ## build/spark/: spark_entry.py, virality-spark.zip, virality-spark-deps.tar.gz (EMR Serverless; PyPI)
	$(PY) scripts/build_spark_archive.py --out build/spark

clean:  ## remove virtualenvs and build output
	rm -rf $(VENV) $(TOOLS_VENV) .aws-sam build .pytest_cache .ruff_cache
