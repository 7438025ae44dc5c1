# ctloop: `make run` (a local continuous-training run ending with a served model) and `make test`.
# Two environments (see README): .venv/pipeline (TFX 1.16 family + kfp) and .venv/serving (KServe).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION ?= 0.13.9
VENV ?= .venv
WORKDIR ?= work
PORT ?= 8080
PYTEST_ARGS ?=
# make bench: data sizes (rows) and extra flags of `python -m bench.run` (--help lists them).
BENCH_ROWS ?= 10000 100000 1000000
BENCH_ARGS ?=
# make realdata: extra flags of `python -m realdata.suite` (--help lists them), e.g. --reps 5.
REALDATA_ARGS ?=
# The kind path (scripts/kind-up.sh tells the versions it pins; each is a ${VAR:-default} there).
CLUSTER ?= ctloop
KFP_HOST ?= http://localhost:8880
GPU ?= 0

UV := $(VENV)/tools/bin/uv
PIPELINE := $(VENV)/pipeline
SERVING := $(VENV)/serving
# Never download a Python; compile bytecode at install (without .pyc every task process recompiles
# TensorFlow's sources, ~15 s each, because this machine sets PYTHONDONTWRITEBYTECODE).
export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1
export CTLOOP_SERVING_PYTHON := $(abspath $(SERVING))/bin/python

.PHONY: help setup run test bench realdata lint compile locks clean kind-up images e2e kind-down \
	monitor-demo

help:  ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(UV):
	$(PYTHON) -m venv $(VENV)/tools
	$(VENV)/tools/bin/pip install --quiet uv==$(UV_VERSION)

# One recipe for both environments: venv, exact lock, then the project itself (no deps).
$(VENV)/%/.installed: locks/%.txt pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)/$*
	$(UV) pip sync --quiet --python $(VENV)/$*/bin/python locks/$*.txt
	$(UV) pip install --quiet --python $(VENV)/$*/bin/python --no-deps -e .
	touch $@

setup: $(PIPELINE)/.installed $(SERVING)/.installed  ## Create both environments.

run: setup  ## Two CT iterations on built-in data, then serve the model and query it.
	WORKDIR=$(WORKDIR) PORT=$(PORT) PIPELINE_BIN=$(PIPELINE)/bin SERVING_BIN=$(SERVING)/bin \
		scripts/demo.sh

monitor-demo: setup  ## Serve with recording, send shifted traffic: the monitor detects it and retrains once.
	WORKDIR=$(WORKDIR)/monitor-demo PORT=$(PORT) PIPELINE_BIN=$(PIPELINE)/bin SERVING_BIN=$(SERVING)/bin \
		scripts/monitor-demo.sh

test: setup  ## The test suite (unit, local pipeline run, serving).
	$(PIPELINE)/bin/python -m pytest $(PYTEST_ARGS)

bench: setup  ## Benchmark: pipeline vs bare libraries, growth, statistics, serving (docs/BENCHMARKS.md).
	$(PIPELINE)/bin/python -m bench.run --rows $(BENCH_ROWS) --workdir $(WORKDIR)/bench $(BENCH_ARGS)

realdata: setup  ## Every decision on public data sets: cold start, false alarms, corruptions, drift by month.
	$(PIPELINE)/bin/python -m realdata.suite --workdir $(WORKDIR)/realdata $(REALDATA_ARGS)

lint: setup  ## Static checks.
	$(PIPELINE)/bin/ruff check .

compile: $(PIPELINE)/.installed  ## Recompile pipelines/*.yaml (CT: CPU, GPU, multi-worker; monitoring; approval) and pipelines/components/.
	$(PIPELINE)/bin/ctloop compile
	$(PIPELINE)/bin/ctloop compile --gpu
	$(PIPELINE)/bin/ctloop compile --train-workers 2

locks: $(UV)  ## Re-resolve the lock files from pyproject.toml.
	$(UV) pip compile --quiet pyproject.toml --extra pipeline --python-version 3.11 \
		--override locks/overrides.txt -o locks/pipeline.txt
	$(UV) pip compile --quiet pyproject.toml --extra pipeline --extra gpu --python-version 3.11 \
		--override locks/overrides.txt -o locks/pipeline-gpu.txt
	$(UV) pip compile --quiet pyproject.toml --extra serving --python-version 3.11 -o locks/serving.txt

kind-up:  ## A kind cluster with KFP, KServe and ctloop's manifests (needs docker, kind, kubectl).
images:  ## Build the images from the locks and load them into the kind cluster (GPU=1: also GPU).
e2e: images $(PIPELINE)/.installed  ## Upload and run the pipeline on the kind cluster; wait for it.
kind-down:  ## Delete the kind cluster.
# One recipe for the four: each is scripts/<target>.sh, which checks its own tools first.
kind-up images e2e kind-down:
	CLUSTER=$(CLUSTER) KFP_HOST=$(KFP_HOST) GPU=$(GPU) PIPELINE_BIN=$(PIPELINE)/bin scripts/$@.sh

clean:  ## Remove environments and run outputs.
	rm -rf $(VENV) $(WORKDIR)
