# trajflow: the two commands are `make run` and `make test`. Both bootstrap what they need:
# a Python virtual environment outside the repo (TRAJFLOW_CACHE, default ~/.cache/trajflow)
# with torch==2.11.0, whose libtorch tch 0.24 links against.

SHELL := /bin/bash
CACHE ?= $(or $(TRAJFLOW_CACHE),$(HOME)/.cache/trajflow)
VENV := $(CACHE)/venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trajflow-torch-2.11.0
LIBTORCH := $(shell ls -d $(VENV)/lib/python3*/site-packages/torch 2>/dev/null | head -1)
export LIBTORCH
export LIBTORCH_BYPASS_VERSION_CHECK := 1
export LD_LIBRARY_PATH := $(LIBTORCH)/lib:$(LD_LIBRARY_PATH)
RUN_DIR ?= runs/demo

.PHONY: run test bench setup build release clean-cache fmt

setup: $(STAMP)

$(STAMP):
	@mkdir -p $(CACHE)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q torch==2.11.0 numpy pyarrow
	@touch $(STAMP)

# Recursive make so that LIBTORCH is re-evaluated after the venv exists.
build: setup
	@$(MAKE) --no-print-directory _build
_build:
	cargo build --release

run: setup
	@$(MAKE) --no-print-directory _run
_run:
	cargo build --release
	@rm -rf $(RUN_DIR) && mkdir -p $(RUN_DIR)
	@echo "== 1/4 libtorch check"
	./target/release/trajflow doctor
	@echo "== 2/4 synthetic logged rollouts: 512 groups x 6 rollouts (LOOP-style K=6), split over 8 files"
	./target/release/trajflow synth --output $(RUN_DIR)/rollouts --groups 512 --group-size 6 --parts 8
	@echo "== 3/4 LOOP advantages (leave-one-out per group, |A| filter, broadcast to action tokens) on 2 workers"
	./target/release/trajflow explain pipelines/loop_advantages.toml
	./target/release/trajflow reprocess pipelines/loop_advantages.toml --input $(RUN_DIR)/rollouts --output $(RUN_DIR)/advantages -w 2
	@echo "== 4/4 the result"
	./target/release/trajflow inspect $(RUN_DIR)/advantages --rows 2
	@echo "run directory: $(RUN_DIR) (rollouts/ and advantages/ are trajflow datasets: Parquet parts + _manifest/)"

test: setup
	@$(MAKE) --no-print-directory _test
_test:
	TRAJFLOW_PYTHON=$(PY) cargo test -- --test-threads 2

bench: setup
	@$(MAKE) --no-print-directory _bench
_bench:
	cargo build --release
	TRAJFLOW_PYTHON=$(PY) $(PY) benches/advantages.py

fmt:
	cargo fmt --all

clean-cache:
	rm -rf $(CACHE)
