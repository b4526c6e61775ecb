#!/usr/bin/env bash
# The learning benchmark (issue 5; ALGORITHMS.md §8): compared pipelines over seeds, on the
# built-in household-pick environment with the small model. Writes runs under $OUT and the table +
# curves to benches/results/$RESULT.{md,png} (RESULT defaults to "learning").
#
# Warm starts are shared so that a comparison isolates the RL algorithm:
# - every pipeline but RetroAct starts from LOOP's warm start of the same seed (checkpoint 0 of
#   `loop-sSEED`, with warm_start.demos = 0; with SETS, of `warm-sSEED`, a warm-start-only run);
# - RetroAct's variants fork one warm-start-only run per seed (`retroact-base-sSEED`: planner SFT,
#   reflector SFT, the imitation set) with `trajflow run --resume --set ...`:
#   retroact (planner + reflector), retroact-planner (planner-only RL: the paper's SFT+RL),
#   retroact-l0 / retroact-l2 (λ = 0 / 2).
#
#   usage: benches/learning.sh [SEEDS] [PIPELINES]    (defaults: "0 1 2", the LOOP comparison)
#   e.g.   benches/learning.sh "0 1 2" "retroact retroact-planner retroact-l0 retroact-l2"
#
# A pipeline name may carry overrides after a colon, applied to that pipeline's runs (not to the
# shared warm start): "grpo:learner.lr=5e-5" runs grpo.toml with --set learner.lr=5e-5, in
# runs named grpo-learner.lr=5e-5-sSEED.
#
# SETS="KEY=VALUE ..." applies to every run, warm starts included: another environment or model,
#   e.g. OUT=runs/bench-kitchen SETS="rollout.env=kitchen model.name=small:kitchen" (use its own OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/trajflow
OUT=${OUT:-runs/bench-learning}
SEEDS=${1:-0 1 2}
PIPELINES=${2:-loop ppo rloo grpo}
ITERATIONS=${ITERATIONS:-10}
RESULT=${RESULT:-learning}
SETS=${SETS:-}
GLOBAL=$(for s in $SETS; do printf -- '--set %s ' "$s"; done)
mkdir -p "$OUT" benches/results

# The --set arguments of a RetroAct variant.
retroact_sets() {
  case $1 in
    retroact) ;;
    retroact-planner) echo "--set stage.rewards.train=planner" ;;
    retroact-l0) echo "--set learner.imitation=0" ;;
    retroact-l2) echo "--set learner.imitation=2" ;;
    *) echo "unknown RetroAct variant $1" >&2; exit 2 ;;
  esac
}

done_run() { [ -f "$1/metrics.jsonl" ] && [ "$(wc -l < "$1/metrics.jsonl")" -gt "$ITERATIONS" ]; }

# "NAME:KEY=VALUE,KEY=VALUE" -> the pipeline NAME and its --set arguments.
pipeline_of() { echo "${1%%:*}"; }
sets_of() { case $1 in *:*) echo "${1#*:}" | tr ',' '\n' | sed 's/^/--set /' | tr '\n' ' ' ;; esac; }
label_of() { echo "$1" | tr ':,' '--'; }

for seed in $SEEDS; do
  for spec in $PIPELINES; do
    p=$(pipeline_of "$spec")
    dir="$OUT/$(label_of "$spec")-s$seed"
    done_run "$dir" && continue
    rm -rf "$dir"
    # LOOP itself runs from scratch (its warm start is the shared one); "loop:KEY=VALUE" variants
    # fork from that warm start like every other pipeline.
    case $spec in
      loop)
        # shellcheck disable=SC2086
        $BIN run pipelines/loop.toml --out "$dir" --quiet --set run.seed=$seed --set run.iterations=$ITERATIONS $GLOBAL ;;
      retroact*)
        base="$OUT/retroact-base-s$seed"
        if [ ! -f "$base/checkpoints/iter-0000/state.json" ]; then
          rm -rf "$base"
          $BIN run pipelines/retroact.toml --out "$base" --quiet --set run.seed=$seed --set run.iterations=0
        fi
        sets=$(retroact_sets "$p")   # an unknown variant stops the script here
        cp -r "$base" "$dir"
        # shellcheck disable=SC2086
        $BIN run --resume "$dir" --quiet --set run.iterations=$ITERATIONS $sets ;;
      *)
        # The shared warm start: LOOP's run (its RL iterations are the loop result), or with SETS
        # a warm-start-only run.
        if [ -z "$SETS" ]; then base="$OUT/loop-s$seed" base_iterations=$ITERATIONS
        else base="$OUT/warm-s$seed" base_iterations=0; fi
        if [ ! -f "$base/checkpoints/iter-0000/state.json" ]; then
          rm -rf "$base"
          # shellcheck disable=SC2086
          $BIN run pipelines/loop.toml --out "$base" --quiet --set run.seed=$seed --set run.iterations=$base_iterations $GLOBAL
        fi
        # shellcheck disable=SC2046,SC2086
        $BIN run "pipelines/$p.toml" --out "$dir" --quiet --set run.seed=$seed --set run.iterations=$ITERATIONS \
          $GLOBAL --set "model=$base/checkpoints/iter-0000" --set warm_start.demos=0 $(sets_of "$spec") ;;
    esac
  done
done
runs=()
for spec in $PIPELINES; do for seed in $SEEDS; do runs+=("$OUT/$(label_of "$spec")-s$seed"); done; done
{
  echo "# Learning benchmark"
  echo
  echo "Command: \`RESULT=$RESULT ITERATIONS=$ITERATIONS${SETS:+ SETS=\"$SETS\"} benches/learning.sh \"$SEEDS\" \"$PIPELINES\"\`, $(nproc) CPU cores, $(uname -m), no GPU,"
  echo "$(date -u +%Y-%m-%d). Environment and model: see the pipelines' rollout stage and [models.policy] table."
  echo
  $BIN report "${runs[@]}" --output "benches/results/$RESULT.png"
} > "benches/results/$RESULT.md"
cat "benches/results/$RESULT.md"
