# sematic-k8s developer commands. Everything runs in ./.venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export SEMATIC_K8S_HOME ?= $(HOME)/.sematic_k8s

.PHONY: run test lint bench e2e clean

BASE   := $(VENV)/.installed-base

$(BASE): pyproject.toml  # the library alone: enough for the embedded LocalResolver
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

$(STAMP): $(BASE)  # plus the server, S3, Docker and Kubernetes extras and the test tools
	$(BIN)/pip install -q -e '.[dev,server,s3,docker,k8s]'
	@touch $@

run: $(BASE)  ## resolve the example pipeline on the embedded LocalResolver (no services)
	$(BIN)/python -m examples.pipeline

lint: $(STAMP)  ## ruff; the import layers of pyproject.toml (no upward imports, no cycles); mypy
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: $(STAMP) lint  ## lint, then the whole test suite
	$(BIN)/python -m pytest -q

bench: $(STAMP)  ## fan-out overhead per run, side by side with sematic 0.41.0
	$(BIN)/python -m bench.fanout --sematic-python "$$(bash bench/sematic_venv.sh)"
	$(BIN)/python -m bench.embedded
	$(BIN)/python -m bench.server_load
	$(BIN)/python -m bench.image_rebuild
	$(BIN)/python -m bench.cloud_rerun
	$(BIN)/python -m bench.containers --importtime
	$(BIN)/python -m bench.k8s_fanout
	$(BIN)/python -m bench.dashboard

e2e: $(STAMP)  ## on a kind cluster: images, helm install, pipelines, rerun, cache hit (skipped without kind/docker)
	PYTHON=$(BIN)/python bash e2e/run.sh

clean:
	rm -rf $(VENV) .venv-sematic .bench
