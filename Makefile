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

.PHONY: demo demo-full test test-all lint typecheck bench rehearsal mutation mlflow-ui serve clean

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

# A comparison large enough for verdicts (README "A comparison that can conclude"): 1.5 x the subjects,
# the paper's 4 seeds, 8 methods (baselines of the paper's Table 1 that fit the hour, unimodal runs,
# SAM, MASAM), the analyses on the first seed only. A DVC experiment: params.yaml in the workspace is
# left with these settings afterwards (`git checkout params.yaml` returns to the demo's).
DEMO_FULL_METHODS ?= [late_fusion,unimodal_primary,unimodal_image,ogm_ge,agm,mmpareto,sam,masam]
demo-full: $(STAMP)  ## the larger comparison (53 min measured on 2 cores), then where the outputs are
	@start=$$(date +%s); \
	$(BIN)/dvc exp run -S '++synth.subjects=1200' -S '++synth.adni_subjects=700' \
	  -S 'sweep.seeds=[42,123,1234,2024]' -S 'sweep.methods=$(DEMO_FULL_METHODS)' \
	  -S '++analyze.seeds=first' -S '++analyze.efficiency=false' && \
	$(BIN)/python -m clinfuse.pipeline summary --elapsed $$(( $$(date +%s) - start ))

test: $(STAMP)  ## the test suite CI runs: unit tests + the dvc repro end-to-end tests (about 15 min on 2 cores)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)  ## every test, slow ones included
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)  ## ruff, then mypy (basic mode, pyproject [tool.mypy]); CI runs it after `make test`
	$(BIN)/ruff check clinfuse pipeline etl models evaluation tests benchmarks
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)  ## speed/memory figures (minutes)
	$(BIN)/python benchmarks/step_cost.py --quick
	$(BIN)/python benchmarks/etl_mimic.py --quick
	$(BIN)/python benchmarks/bootstrap_speed.py
	$(BIN)/python benchmarks/masam_memory.py

# `make rehearsal` runs every stage on a 1/10 MIMIC-IV v3.1 / MIMIC-CXR-JPG-sized synthetic export
# (43M chartevents rows, real-resolution films; about 2.5 GB under rehearsal/tenth) and prints a table of
# wall time, CPU time, peak RSS and disk written per stage. `make rehearsal SIZE=full`: 433M rows,
# about 22 GB written (REHEARSAL_DIR=/big/disk/folder to put it elsewhere); SIZE=hundredth for a quick look.
SIZE ?= tenth
rehearsal: $(STAMP)  ## every stage at 1/10 of MIMIC-IV's size (SIZE=full for the real size): time, CPU, RSS, disk per stage
	$(BIN)/python benchmarks/full_scale.py --size $(SIZE) $(if $(REHEARSAL_DIR),--work $(REHEARSAL_DIR))

# `make mutation MODULES="etl.normalize.* evaluation.champion.*"` re-runs those mutants only, keeping the rest;
# `make mutation SAMPLE=0.2` runs a seeded 20 % of each module's mutants and prints each score with its 95 % CI;
# `SAMPLE_MIN=40` draws at least 40 of each module (a small module's 10 % is too few for an informative interval).
# One mutant per CPU core at a time (MUTATION_JOBS=N to change): a full run is CPU-bound, hours on 2 cores.
MUTATION_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
mutation: $(STAMP)  ## mutation testing of the core modules (mutmut; long, not part of `make test`); prints the score last
	$(BIN)/python tests/mutation/run.py --max-children $(MUTATION_JOBS) $(if $(MODULES),$(foreach m,$(MODULES),'$(m)'),--fresh) $(if $(SAMPLE),--sample $(SAMPLE)) $(if $(SAMPLE_MIN),--sample-min $(SAMPLE_MIN))

# A moved or copied project: its store still names the old folder until rebased (idempotent, fast).
mlflow-ui: $(STAMP)
	$(BIN)/clinfuse relocate-store --store $(CURDIR)/mlflow.db
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# `make serve MODEL=adni-diagnosis PORT=5002`; POST JSON to http://127.0.0.1:$(PORT)/invocations.
# MLflow starts `uvicorn` by name: the Makefile's PATH (.venv/bin first) is what lets it find it.
MODEL ?= mimic-phenotype
PORT  ?= 5001
serve: $(STAMP)  ## serve models:/$(MODEL)@champion with MLflow's scoring server (offline, this environment)
	$(BIN)/clinfuse relocate-store --store $(CURDIR)/mlflow.db
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(BIN)/mlflow models serve -m models:/$(MODEL)@champion \
	    --env-manager local --host 127.0.0.1 --port $(PORT)

clean:
	rm -rf data runs reports mlflow.db mlartifacts .dvc/tmp mutants
