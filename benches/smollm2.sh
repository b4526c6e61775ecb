#!/usr/bin/env bash
# The SmolLM2 learning benchmark: one shared start per pipeline (pipelines/smollm2/PIPELINE.toml
# with run.iterations=0, and its greedy eval on the pipeline's dev tasks: LOOP's LoRA SFT warm
# start, or for POAD, NTPO and TWOSOME the pretrained prior itself), forked per seed with `trajflow
# run --resume COPY --set run.seed=S`, ITERATIONS RL iterations each and a greedy eval on the same
# tasks at the end; then benches/paired_gain.py's table into benches/results/$RESULT.md. An
# interrupted run resumes where its last checkpoint left it; finished runs are skipped.
#
#   usage: benches/smollm2.sh PIPELINE [SEEDS]     (loop | poad | ntpo | twosome; SEEDS default "0 1 2")
#   env:   ITERATIONS (default 4), OUT (default runs/bench-smollm2-PIPELINE),
#          RESULT (default smollm2-PIPELINE-ENV, ENV the pipeline's environment without "-pick")
# On 2 CPU cores: LOOP's warm start about 35 min, a LOOP iteration 4-9 min, each eval of 100
# household-pick tasks 6.5 min; a kitchen iteration (8 tasks x 2 episodes of up to 20 turns) about
# 5 min, an eval of 100 kitchen tasks about 8 min.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/trajflow
PIPELINE=${1:?usage: benches/smollm2.sh PIPELINE [SEEDS]}
SEEDS=${2:-0 1 2}
FILE=pipelines/smollm2/$PIPELINE.toml
[ -f "$FILE" ] || { echo "no pipeline $FILE" >&2; exit 2; }
ENV=$(sed -n 's/^env = "\([^"]*\)".*/\1/p' "$FILE" | head -1)
OUT=${OUT:-runs/bench-smollm2-$PIPELINE}
ITERATIONS=${ITERATIONS:-4}
RESULT=${RESULT:-smollm2-$PIPELINE-${ENV%-pick}}
ws=$OUT/warm
mkdir -p "$OUT" benches/results
if [ ! -f "$ws/checkpoints/iter-0000/state.json" ]; then
  rm -rf "$ws"
  $BIN run "$FILE" --out "$ws" --quiet --set run.iterations=0
fi
runs=()
for s in $SEEDS; do
  dir=$OUT/$PIPELINE-s$s
  [ -d "$dir" ] || cp -r "$ws" "$dir"
  if [ "$(wc -l < "$dir/metrics.jsonl")" -le "$ITERATIONS" ]; then
    $BIN run --resume "$dir" --quiet --set run.seed="$s" --set run.iterations="$ITERATIONS" \
      --set run.eval_every="$ITERATIONS"
  fi
  runs+=("$dir")
done
{
  echo "# SmolLM2-135M-Instruct + LoRA, $PIPELINE in $ENV: gain over the shared start"
  echo
  echo "Command: \`ITERATIONS=$ITERATIONS benches/smollm2.sh $PIPELINE \"$SEEDS\"\`, $(nproc) CPU cores, $(uname -m), $(date -u +%Y-%m-%d)."
  echo
  python3 benches/paired_gain.py "$ws" "${runs[@]}"
} > "benches/results/$RESULT.md"
cat "benches/results/$RESULT.md"
