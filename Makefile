# Two entry points for a fresh machine: `make demo` and `make test`. Both create the venv first.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
# The CPU/CUDA torch wheels this project is tested with; override on a GPU cluster if needed.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(CURDIR)/$(VENV)/bin
STUDY ?= demo
MLFLOW_PORT ?= 5000
GPU_PYTHON ?= python3
export PATH := $(BIN):$(PATH)

.PHONY: setup demo demo-sweep test test-slow lint gpu-check mlflow-ui clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES)
	@cat results/demo/tables/comparison.md
	@$(BIN)/python -c "import json; s = json.load(open('results/demo/tracking/summary.json')); \
		print('\nMLflow (make mlflow-ui): runs', s['runs_url'], '\ncompare', s['compare_url'])"

# The demo with a hyper-parameter sweep beside two seeds (config/sweep.yaml, an overlay on the demo's).
demo-sweep: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml config/sweep.yaml
	@cat results/demo_sweep/tables/comparison.md results/demo_sweep/tables/recipes.md

# The default suite (budget 15 min on 2 cores; 9:50 measured from a clean clone, venv included). CI (.ci/run) also runs the slow tests and a real SLURM cluster.
test: setup
	$(BIN)/pytest -m "not slow and not slurm"

test-slow: setup
	$(BIN)/pytest -m "slow and not slurm"

# On a machine with a GPU: the checks only CUDA can answer, with that machine's own Python and torch
# (no venv, no network; benchmarks/gpu_check.py). Under 10 minutes on one GPU; without CUDA a smoke test.
gpu-check:
	PYTHONPATH=$(CURDIR)/src $(GPU_PYTHON) benchmarks/gpu_check.py

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/snakemake --lint

# The MLflow UI on the study's store, bound to 127.0.0.1 only.
mlflow-ui: setup
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(CURDIR)/results/$(STUDY)/mlflow.db \
		--artifacts-destination $(CURDIR)/results/$(STUDY)/mlartifacts \
		--host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

clean-demo:
	rm -rf results/demo logs/demo
