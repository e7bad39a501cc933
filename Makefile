# Two commands set everything up: `make demo` and `make test`.
# Both create .venv on first use and install the project into it (CPU torch 2.13.0).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0
# dvc.yaml stages call `clinfuse`; run them with the project's environment.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test test-all lint bench mutation mlflow-ui clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dicom-jpeg]'
	touch $(STAMP)

demo: $(STAMP)  ## run the whole pipeline on the synthetic default, then say where the outputs are
	@start=$$(date +%s); \
	$(BIN)/dvc repro && \
	$(BIN)/python -m clinfuse.pipeline summary --elapsed $$(( $$(date +%s) - start ))

test: $(STAMP)  ## the test suite CI runs: unit tests + the dvc repro end-to-end test (~4 min)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)  ## every test, slow ones included
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check clinfuse pipeline etl models evaluation tests benchmarks

bench: $(STAMP)  ## speed/memory figures (minutes)
	$(BIN)/python benchmarks/step_cost.py --quick
	$(BIN)/python benchmarks/etl_mimic.py --quick
	$(BIN)/python benchmarks/bootstrap_speed.py
	$(BIN)/python benchmarks/masam_memory.py

# `make mutation MODULES="etl.normalize.* evaluation.champion.*"` re-runs those mutants only, keeping the rest;
# `make mutation SAMPLE=0.2` runs a seeded 20 % of each module's mutants and prints each score with its 95 % CI.
# One mutant per CPU core at a time (MUTATION_JOBS=N to change): a full run is CPU-bound, hours on 2 cores.
MUTATION_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
mutation: $(STAMP)  ## mutation testing of the core modules (mutmut; long, not part of `make test`); prints the score last
	$(BIN)/python tests/mutation/run.py --max-children $(MUTATION_JOBS) $(if $(MODULES),$(foreach m,$(MODULES),'$(m)'),--fresh) $(if $(SAMPLE),--sample $(SAMPLE))

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf data runs reports mlflow.db mlartifacts .dvc/tmp mutants
