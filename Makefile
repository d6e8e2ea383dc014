# rtinst: `make test` and `make reproduce` do all set-up on a fresh machine.
# The venv is created once; it is re-synced only when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision only work as this pair on the project's machines (see README).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DATA ?= data/synthetic
# `make data DATA_CONFIG=<run config>`: the dataset that config wants (data.synthetic_*: images,
# level, knobs) in its data.root, or in DATA when DATA is given too; empty: the default config,
# i.e. the embedded dataset (hard level) in DATA.
DATA_CONFIG ?=

.PHONY: venv test test-all bench reproduce data tiny-data tiny-backbone lab clean-venv

$(VENV)/.torch-stamp:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	touch $@

$(VENV)/.deps-stamp: $(VENV)/.torch-stamp pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,export,lab]'
	touch $@

venv: $(VENV)/.deps-stamp

## test: the default test suite (slow tests excluded; `make test-all` runs them too)
test: venv
	$(PY) -m pytest -q -m "not slow"

test-all: venv
	$(PY) -m pytest -q

## data: the embedded synthetic COCO-format dataset (deterministic; skipped when present, an
## error when the folder holds a dataset made with other settings)
data: venv
	$(VENV)/bin/rtinst data synthetic $(if $(DATA_CONFIG),--config $(DATA_CONFIG)) \
		$(if $(and $(DATA_CONFIG),$(filter file,$(origin DATA))),,-o data.root=$(DATA))

## tiny-data: the dataset the tiny presets train on (the easy-large level, data/synthetic_easy_large; the
## three tiny presets share it)
tiny-data: venv
	$(VENV)/bin/rtinst data synthetic --config rtinst/configs/sparseinst/tiny.yaml

## bench: the measuring instruments' own benchmarks, written to results/benchmarks/
bench: venv
	$(PY) tests/benchmarks/bench_coco_eval.py
	$(PY) tests/benchmarks/bench_nms.py
	$(VENV)/bin/rtinst bench all --model resnet50 --size 640x864 --out results/benchmarks/resnet50_640x864.json
	$(PY) tests/benchmarks/bench_sweep_cost.py

## tiny-backbone: re-create rtinst/weights/tiny_backbone.pt (committed; ~85 min on 2 cores).
## Stage 1: 64 px object crops (80% held-out crop accuracy); stage 2: crops of 64/112/160 px,
## so that objects are also seen at the sizes they have in the detection images; stage 3: half
## of the steps classify every object of full images from its mask-averaged features (what the
## detectors need: a linear probe of the GT objects of val images went from 50% to 60%).
STAGE1 := data/pretrain/stage1.pt
STAGE2 := data/pretrain/stage2.pt
CROPS := --scale 64:1.2:3.0:64 --scale 112:1.1:2.0:24 --scale 160:1.05:1.8:12
tiny-backbone: venv
	$(VENV)/bin/rtinst pretrain --scale 64:1.2:3.0:64 --out $(STAGE1)
	$(VENV)/bin/rtinst pretrain --init $(STAGE1) $(CROPS) --iters 6000 --lr 1e-3 --warmup-iters 100 \
		--out $(STAGE2)
	$(VENV)/bin/rtinst pretrain --init $(STAGE2) $(CROPS) --object-steps 3 --object-batch 8 \
		--iters 4000 --lr 1e-3 --warmup-iters 100

## reproduce: set-up + the main job on the embedded synthetic data: every paper table at the
## tiny preset (cached runs are reused), executed table notebooks in results/notebooks/,
## results/summary.html. Bounded: it trains only the missing runs whose estimates fit in
## REPRODUCE_BUDGET minutes (default 15, so a fresh clone finishes in < 30 min); the rest stay
## missing cells, listed with their estimate, and the next call goes on from the cache.
## REPRODUCE_BUDGET=none trains every missing run (the whole tiny sweep, hours on this CPU);
## REPRODUCE_ARGS="--cached-only" tabulates the committed runs without training;
## REPRODUCE_ARGS="--tables yolact/table2a" limits the tables.
REPRODUCE_BUDGET ?= 15
REPRODUCE_ARGS ?=
reproduce: venv tiny-data
	$(VENV)/bin/rtinst reproduce --preset tiny \
		$(if $(filter none,$(REPRODUCE_BUDGET)),,--budget-minutes $(REPRODUCE_BUDGET)) $(REPRODUCE_ARGS)

## lab: JupyterLab on the repository (every notebook resolves its paths against the repo root,
## whatever folder its kernel starts in). LAB_ARGS="--no-browser --port 8890" for a remote machine.
LAB_ARGS ?=
lab: venv
	$(VENV)/bin/jupyter lab --notebook-dir=$(CURDIR) $(LAB_ARGS)

clean-venv:
	rm -rf $(VENV)
