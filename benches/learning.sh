#!/usr/bin/env bash
# The learning benchmark (issue 5; ALGORITHMS.md §8): every compared pipeline, 3 seeds, on the
# built-in household-pick environment with the small model. Per seed, LOOP's run does the imitation
# warm start; every other pipeline starts from that same checkpoint (warm_start.demos = 0), so the
# comparison isolates the RL algorithm. Writes runs under $OUT and the table + curves to
# benches/results/learning.{md,png}.
#   usage: benches/learning.sh [SEEDS] [PIPELINES]     (defaults: "0 1 2", the LOOP comparison)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/trajflow
OUT=${OUT:-runs/bench-learning}
SEEDS=${1:-0 1 2}
PIPELINES=${2:-loop ppo rloo grpo}
ITERATIONS=${ITERATIONS:-10}
mkdir -p "$OUT" benches/results
for seed in $SEEDS; do
  base="$OUT/loop-s$seed"
  if [ ! -f "$base/checkpoints/iter-0000/state.json" ]; then
    rm -rf "$base"
    $BIN run pipelines/loop.toml --out "$base" --quiet --set run.seed=$seed --set run.iterations=$ITERATIONS
  fi
  for p in $PIPELINES; do
    [ "$p" = loop ] && continue
    dir="$OUT/$p-s$seed"
    [ -f "$dir/metrics.jsonl" ] && [ "$(wc -l < "$dir/metrics.jsonl")" -gt "$ITERATIONS" ] && continue
    rm -rf "$dir"
    $BIN run "pipelines/$p.toml" --out "$dir" --quiet --set run.seed=$seed --set run.iterations=$ITERATIONS \
      --set "model=$base/checkpoints/iter-0000" --set warm_start.demos=0
  done
done
runs=()
for p in $PIPELINES; do for seed in $SEEDS; do runs+=("$OUT/$p-s$seed"); done; done
{
  echo "# Learning benchmark"
  echo
  echo "Command: \`benches/learning.sh \"$SEEDS\" \"$PIPELINES\"\` (ITERATIONS=$ITERATIONS), $(nproc) CPU cores, $(uname -m), no GPU,"
  echo "$(date -u +%Y-%m-%d). Environment and model: see the pipelines' [rollout] and [model] sections."
  echo
  $BIN report "${runs[@]}" --output benches/results/learning.png
} > benches/results/learning.md
cat benches/results/learning.md
