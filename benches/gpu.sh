#!/usr/bin/env bash
# trajflow's GPU checks in one script, sized to end within 10 minutes on one GPU:
#   1. `trajflow doctor` on CUDA (fails unless libtorch sees the GPU);
#   2. the CUDA tests (tests/cuda.rs, ignored on machines without a GPU);
#   3. the model benchmark against PyTorch/transformers on the GPU, bf16, batches scaled up, with
#      model FLOP utilisation against PEAK_TFLOPS;
#   4. SmolLM2-135M-Instruct + LoRA RL runs on the GPU at a larger batch than on 2 CPU cores:
#      pipelines/smollm2/loop.toml (household-pick: LoRA SFT warm start, then LOOP) and
#      pipelines/smollm2/poad.toml (kitchen, from the pretrained prior), each under a time limit,
#      summarised per iteration (success, loss, behaviour-vs-learner mismatch, time per phase).
# Results go to $RESULTS (default benches/results): gpu-summary.md (what the README quotes),
# gpu-model.md/.json, gpu-cuda-tests.log, gpu-runs.log.
#
# Needs: a CUDA build of torch==2.11.0 importable by $PYTHON (default python3) with transformers
# and gguf (the PyTorch side reads SmolLM2 from the GGUF); the SmolLM2 GGUF in
# $TRAJFLOW_CACHE/models (default ~/.cache/trajflow; `make model` fetches it). The
# binaries are built with cargo against that torch, or, where the machine has no Rust toolchain,
# taken prebuilt from $TRAJFLOW_GPU_BIN: a folder holding `trajflow`, `cuda` (the test binary of
# tests/cuda.rs) and `model` (the benchmark binary of benches/model.rs), built on any x86_64
# machine against torch 2.11.0 (`make gpu-bin` writes that folder and an archive of it, which
# TRAJFLOW_GPU_BIN may name instead). Such binaries were linked
# without libtorch_cuda, so the script preloads it: its static initialisers register the CUDA
# backend with libtorch.
#
#   PEAK_TFLOPS=989 benches/gpu.sh          # H100 SXM, dense bf16
#   TRAJFLOW_GPU_BIN=gpu-bin RESULTS=/tmp/gpu PEAK_TFLOPS=989 benches/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${RESULTS:-benches/results}
PEAK=${PEAK_TFLOPS:-}
SCALE=${BATCH_SCALE:-8}
RUNS=${RUNS_DIR:-/tmp/trajflow-gpu-runs}
mkdir -p "$RESULTS" "$RUNS"
started=$(date +%s)
say() { echo "== [$(($(date +%s) - started)) s] $*"; }

LIBTORCH=${LIBTORCH:-$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')} || {
    echo "gpu.sh: $PY cannot import torch" >&2; exit 2; }
TORCH_LINE=$("$PY" - <<'EOF'
import torch, sys
ok = torch.__version__.startswith("2.11.0") and torch.version.cuda and torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
sys.exit(0 if ok else "gpu.sh needs a CUDA build of torch 2.11.0 that sees a GPU")
EOF
) || { echo "$TORCH_LINE" >&2; exit 2; }
echo "$TORCH_LINE"
export LIBTORCH LIBTORCH_BYPASS_VERSION_CHECK=1
export LD_LIBRARY_PATH="$LIBTORCH/lib:${LD_LIBRARY_PATH:-}"

if [ -n "${TRAJFLOW_GPU_BIN:-}" ]; then
    BIN=$TRAJFLOW_GPU_BIN
    if [ -f "$BIN" ]; then # the archive `make gpu-bin` writes
        tar -C "$RUNS" -xJf "$BIN" || exit 2
        BIN=$RUNS/gpu-bin
    fi
    export LD_PRELOAD="$LIBTORCH/lib/libtorch_cuda.so${LD_PRELOAD:+:$LD_PRELOAD}"
else
    say "building against $LIBTORCH"
    make --no-print-directory gpu-bin LIBTORCH="$LIBTORCH" > "$RUNS/build.log" 2>&1 || {
        tail -20 "$RUNS/build.log"; exit 2; }
    BIN=target/gpu-bin
fi

say "doctor"
"$BIN/trajflow" doctor | tee "$RESULTS/gpu-doctor.log"
grep -q "^cuda: available" "$RESULTS/gpu-doctor.log" || { echo "gpu.sh: libtorch does not see CUDA" >&2; exit 2; }

say "CUDA tests"
timeout 120 "$BIN/cuda" --ignored --test-threads 1 2>&1 | tee "$RESULTS/gpu-cuda-tests.log"
tests_rc=${PIPESTATUS[0]}

say "model benchmark (bf16, batches x $SCALE)"
timeout 200 "$PY" benches/model.py --bin-bench "$BIN/model" --device cuda --batch-scale "$SCALE" \
    ${PEAK:+--peak-tflops "$PEAK"} --only small:train:bf16 smollm2:train:bf16 smollm2:generate:bf16 \
    --python "$PY" --results "$RESULTS/gpu-model.md"
bench_rc=$?

# The RL runs: 4x the CPU pipelines' tasks per iteration; each stops at its limit, and what its
# iterations wrote is summarised either way.
say "SmolLM2 LOOP (household-pick) and POAD (kitchen) on the GPU"
: > "$RESULTS/gpu-runs.log"
run_one() { # NAME LIMIT_S PIPELINE SETTINGS...
    local name=$1 limit=$2 pipeline=$3; shift 3
    rm -rf "$RUNS/$name"
    timeout "$limit" "$BIN/trajflow" run "$pipeline" --out "$RUNS/$name" "$@" >> "$RESULTS/gpu-runs.log" 2>&1
    echo "$name: exit $? after at most $limit s" >> "$RESULTS/gpu-runs.log"
}
run_one loop 150 pipelines/smollm2/loop.toml --set rollout.tasks=16 --set run.iterations=3 \
    --set run.eval_tasks=100 --set run.eval_every=3
run_one poad 120 pipelines/smollm2/poad.toml --set rollout.tasks=16 --set run.iterations=3 \
    --set run.eval_tasks=0

"$PY" - "$RUNS" "$RESULTS/gpu-summary.md" "$SCALE" "$TORCH_LINE" <<'EOF'
import json, os, sys
runs, out, scale, torch_line = sys.argv[1:5]
lines = ["# trajflow on a GPU (benches/gpu.sh)", "", f"{torch_line}. Model benchmark: gpu-model.md "
         f"(bf16, batches x {scale}). RL runs: SmolLM2-135M-Instruct + LoRA, 16 tasks per iteration.", ""]
for name in ("loop", "poad"):
    path = os.path.join(runs, name, "metrics.jsonl")
    rows = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
    lines += [f"## {name}", "", "| iteration | episodes | success | eval success | loss | mismatch max | "
              "generated tokens/s | seconds by phase |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r.get("time_s", {}).items()))
        ev = r.get("eval_success_rate")
        mm = r.get("logp_mismatch_max")
        lines.append(f"| {r['iteration']} | {r['episodes']} | {r['success_rate']:.3f} | "
                     f"{'-' if ev is None else f'{ev:.3f}'} | {r['loss']:.4f} | "
                     f"{'-' if mm is None else f'{mm:.1e}'} | {r['tokens_per_s']:.0f} | {phases} |")
    if not rows:
        lines.append("| (no iteration completed) | | | | | | | |")
    lines.append("")
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
EOF
say "done: tests exit $tests_rc, model benchmark exit $bench_rc; results in $RESULTS"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
