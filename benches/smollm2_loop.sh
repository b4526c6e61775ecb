#!/usr/bin/env bash
# The SmolLM2 learning benchmark (LOOP in household-pick): one shared LoRA SFT warm start
# (pipelines/smollm2/loop.toml with run.iterations=0; greedy eval on its 100 dev tasks), forked per
# seed with `trajflow run --resume COPY --set run.seed=S`, ITERATIONS RL iterations each and a
# greedy eval on the same tasks at the end; then benches/paired_gain.py's table into
# benches/results/$RESULT.md. An interrupted run resumes where its last checkpoint left it.
#
#   usage: benches/smollm2_loop.sh [SEEDS]      (default "0 1 2"; ITERATIONS=4, OUT, RESULT)
# On 2 CPU cores: the warm start about 35 min, an iteration 4-9 min, each eval 6.5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/trajflow
OUT=${OUT:-runs/bench-smollm2-loop}
SEEDS=${1:-0 1 2}
ITERATIONS=${ITERATIONS:-4}
RESULT=${RESULT:-smollm2-loop-household}
ws=$OUT/warm
mkdir -p "$OUT" benches/results
if [ ! -f "$ws/checkpoints/iter-0000/state.json" ]; then
  rm -rf "$ws"
  $BIN run pipelines/smollm2/loop.toml --out "$ws" --quiet --set run.iterations=0
fi
runs=()
for s in $SEEDS; do
  dir=$OUT/loop-s$s
  [ -d "$dir" ] || cp -r "$ws" "$dir"
  if [ "$(wc -l < "$dir/metrics.jsonl")" -le "$ITERATIONS" ]; then
    $BIN run --resume "$dir" --quiet --set run.seed="$s" --set run.iterations="$ITERATIONS" \
      --set run.eval_every="$ITERATIONS"
  fi
  runs+=("$dir")
done
{
  echo "# SmolLM2-135M-Instruct + LoRA, LOOP in household-pick: gain over the shared warm start"
  echo
  echo "Command: \`ITERATIONS=$ITERATIONS benches/smollm2_loop.sh \"$SEEDS\"\`, $(nproc) CPU cores, $(uname -m), $(date -u +%Y-%m-%d)."
  echo
  python3 benches/paired_gain.py "$ws" "${runs[@]}"
} > "benches/results/$RESULT.md"
cat "benches/results/$RESULT.md"
