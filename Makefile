# rtinst: `make test` and `make reproduce` do all set-up on a fresh machine.
# The venv is created once; it is re-synced only when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision only work as this pair on the project's machines (see README).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DATA ?= data/synthetic

.PHONY: venv test test-all bench reproduce data clean-venv

$(VENV)/.torch-stamp:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	touch $@

$(VENV)/.deps-stamp: $(VENV)/.torch-stamp pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.deps-stamp

## test: the default test suite (slow tests excluded; `make test-all` runs them too)
test: venv
	$(PY) -m pytest -q -m "not slow"

test-all: venv
	$(PY) -m pytest -q

## data: the embedded synthetic COCO-format dataset (deterministic; skipped when present)
data: venv
	@if [ -f $(DATA)/generation.json ]; then \
		echo "$(DATA) exists (delete it to regenerate)"; \
	else $(VENV)/bin/rtinst data synthetic --out $(DATA); fi

## bench: the measuring instruments' own benchmarks, written to results/benchmarks/
bench: venv
	$(PY) tests/benchmarks/bench_coco_eval.py
	$(PY) tests/benchmarks/bench_nms.py
	$(VENV)/bin/rtinst bench all --model resnet50 --size 640x864 --out results/benchmarks/resnet50_640x864.json

## reproduce: set-up + the main job on the embedded synthetic data
reproduce: venv data bench

clean-venv:
	rm -rf $(VENV)
