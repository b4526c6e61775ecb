#!/usr/bin/env python3
"""Gains of RL runs over their shared warm start, paired by task and over seeds.

    python benches/paired_gain.py WARM_START_RUN RUN [RUN ...]

WARM_START_RUN is the run whose iteration-0 evaluation is the "before" (a `trajflow run ...
--set run.iterations=0`); each RUN is a copy of it resumed with another seed, and its last
evaluated iteration is the "after". Both evaluations must cover the same dev tasks
(`eval_outcomes` in metrics.jsonl, one character per task). Prints a Markdown table: per run the
greedy success after, the gain in points with its 95 % interval paired by task (normal
approximation, as `trajflow run`'s own verdict, src/run/gain.rs), the sampled rollout success per
iteration, the largest KL and behaviour-vs-learner mismatch; then over the runs the mean gain with
a t interval (n - 1 degrees of freedom), and the gain of the per-task mean over runs, paired by
task.
"""
import json
import math
import sys

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def metrics(run):
    with open(f"{run}/metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def last_eval(rows):
    evaluated = [r for r in rows if r.get("eval_outcomes")]
    if not evaluated:
        sys.exit("no evaluation in the run")
    r = evaluated[-1]
    return r["iteration"], [c == "1" for c in r["eval_outcomes"]]


def interval(values, quantile=1.96):
    """Mean of `values` and its 95 % interval, mean ± quantile · standard error."""
    n = len(values)
    m = sum(values) / n
    half = quantile * math.sqrt(sum((x - m) ** 2 for x in values) / (n - 1) / n)
    return m, m - half, m + half


def paired(before, after):
    """Mean of after - before in points, paired by task, and its 95 % interval (normal approximation)."""
    return tuple(100 * x for x in interval([float(a) - float(b) for a, b in zip(after, before)]))


def fmt(g):
    return f"{g[0]:+.1f} [{g[1]:+.1f}, {g[2]:+.1f}]"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    warm, runs = sys.argv[1], sys.argv[2:]
    it0, before = last_eval(metrics(warm))
    if it0 != 0:
        sys.exit(f"{warm}: its evaluation is of iteration {it0}, not the warm start's")
    print(f"Before: `{warm}`, iteration 0, greedy success {sum(before)} of {len(before)} dev tasks.\n")
    print("| run | iteration | greedy success after | gain (points, paired by task) | sampled rollout success by iteration | KL max | mismatch max |")
    print("|---|---|---|---|---|---|---|")
    gains, afters = [], []
    for run in runs:
        rows = metrics(run)
        it, after = last_eval(rows)
        if len(after) != len(before):
            sys.exit(f"{run}: {len(after)} evaluated tasks, the warm start {len(before)}")
        g = paired(before, after)
        gains.append(g[0])
        afters.append(after)
        rl = [r for r in rows if 0 < r["iteration"] <= it]
        sampled = " ".join(f"{r['success_rate']:.2f}" for r in rl)
        kl = max((r["kl"] for r in rl), default=0.0)
        mismatch = max((r.get("logp_mismatch_max") or 0.0 for r in rl), default=0.0)
        print(f"| {run} | {it} | {sum(after)} / {len(after)} | {fmt(g)} | {sampled} | {kl:.4f} | {mismatch:.1e} |")
    n = len(gains)
    if n > 1:
        g = interval(gains, T975[n - 1])
        verdict = "improved" if g[1] > 0 else "got worse" if g[2] < 0 else "inconclusive"
        print(f"\nOver the {n} runs (t, {n - 1} degrees of freedom): **{fmt(g)}: {verdict}**.")
        mean_after = [sum(a[i] for a in afters) / n for i in range(len(before))]
        print(f"The per-task mean over the runs against the warm start, paired by task: {fmt(paired(before, mean_after))}.")

if __name__ == "__main__":
    main()
