#!/usr/bin/env python3
"""One large update on exactly one iteration of rollouts (the RL issue's acceptance check).

From a warm-start-only run directory (`trajflow run PIPELINE --set run.iterations=0`), a copy is
continued for one iteration with the update opened up (default: 24 tasks x K, lr 3e-4, 8 epochs,
clip 3). Then every trained episode is scored with `trajflow score` under the policy before and
after the update, and the script reports the fraction of episodes whose action log-prob moved in
the direction of their advantage (positive and negative separately), greedy successes on the same
(task, seed) pairs before and after, and the run's own dev verdict.

    python benches/overfit.py --base runs/loop-ws --work /tmp/overfit [--set rollout.top_k=0 ...]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq


def rows(dataset):
    out = {}
    for f in glob.glob(os.path.join(dataset, "*.parquet")):
        for r in pq.read_table(f).to_pylist():
            out[r["episode_id"]] = r
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="a warm-start-only run directory (iteration 0)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--bin", default="target/release/trajflow")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--tasks", type=int, default=24)
    a = ap.parse_args()
    run = os.path.join(a.work, "run")
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    shutil.copytree(a.base, run)
    sets = [f"rollout.tasks={a.tasks}", "run.iterations=1", "learner.lr=3e-4", "learner.epochs=8", "learner.clip=3"]
    sets += a.sets
    cmd = [a.bin, "run", "--resume", run, "--quiet"] + [x for s in sets for x in ("--set", s)]
    verdict = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    ckpt = lambda i: os.path.join(run, "checkpoints", f"iter-{i:04d}")
    scored = []
    for i in (0, 1):
        out = os.path.join(a.work, f"scored{i}")
        subprocess.run([a.bin, "score", "--model", ckpt(i), "--input", os.path.join(run, "trajectories"),
                        "--output", out, "--column", "lp"], check=True, capture_output=True)
        scored.append(rows(out))
    moved = {True: [0, 0], False: [0, 0]}
    for eid, r in scored[0].items():
        if not r.get("keep", True):
            continue
        act = np.array(r["segments"]) == 1
        adv = np.array(r["advantages"])[act]
        if len(adv) == 0 or not np.any(adv):
            continue
        a_ep = adv[np.argmax(np.abs(adv))]
        d = np.sum(np.array(scored[1][eid]["lp"])[act] - np.array(r["lp"])[act])
        moved[a_ep > 0][0] += int(d * a_ep > 0)
        moved[a_ep > 0][1] += 1
    agree = moved[True][0] + moved[False][0]
    total = moved[True][1] + moved[False][1]
    print(f"trained episodes: {total}; action log-prob moved the way of the advantage: {agree} ({agree / total:.3f}); "
          f"positive {moved[True][0]}/{moved[True][1]}, negative {moved[False][0]}/{moved[False][1]}")
    cfg = open(os.path.join(run, "config.toml")).read()
    env = re.search(r'^env = "([^"]+)"', cfg, re.M).group(1)
    seed = int(re.search(r"^seed = (\d+)", cfg, re.M).group(1))
    turns = re.search(r"^max_turns = (\d+)", cfg, re.M).group(1)
    tokens = re.search(r"^max_action_tokens = (\d+)", cfg, re.M).group(1)
    for i in (0, 1):
        out = subprocess.run([a.bin, "rollout", "--env", env, "--model", ckpt(i), "--tasks", str(a.tasks), "--k", "1",
                              "--max-turns", turns, "--max-action-tokens", tokens, "--temperature", "0",
                              "--seed", str(seed * 1_000_003 + 1), "--admissible",
                              "--output", os.path.join(a.work, f"greedy{i}")],
                             check=True, capture_output=True, text=True).stdout
        print(f"greedy on the trained (task, seed) pairs, {'before' if i == 0 else 'after'}: {out.strip()}")
    print(verdict.strip())


if __name__ == "__main__":
    main()
