# Setup, demo and tests. CPU machines get the CPU torch build (torch==2.13.0, already on disk here);
# CUDA users run `make setup TORCH_SPEC=torch` (or plain `pip install -e .`) to get their own build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
SHARED ?= ../shared
BIN := $(VENV)/bin
# One OpenMP thread per process: on a shared 2-core machine spin-waiting threads slow training ~5x.
export OMP_NUM_THREADS ?= 1
export MATGL_CAL_DATA ?= $(SHARED)/data
export MATGL_CAL_MODELS ?= $(SHARED)/models
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-slow bench

$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.setup-done

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# The main job, from the command line: 48 WBM structures (DFT energies) as the target domain, 100 held out,
# rattled MP binaries for distillation and for the retention check (examples/finetune_wbm.py --export writes them).
DEMO ?= out/demo
MODEL ?= M3GNet-PES-MatPES-PBE-2025.2
demo: setup
	$(BIN)/python examples/finetune_wbm.py --export $(DEMO)
	$(BIN)/mgl-cal finetune --model $(MODEL) --target $(DEMO)/target.extxyz --eval-target $(DEMO)/test.extxyz \
		--distill $(DEMO)/distill.extxyz --epochs 12 --out $(DEMO)/tuned --overwrite --no-progress
	$(BIN)/mgl-cal evaluate --model $(DEMO)/tuned/model --data $(DEMO)/retention.extxyz --reference $(MODEL)
