#!/usr/bin/env python3
"""Benchmark: ingest-to-gradient-step latency of `trajflow watch --train` for one new file.

    python benches/stream_latency.py [--model smollm2-135m] [--files 5] [--workdir /tmp/trajflow-stream]

Data: `trajflow synth` writes `--files` files, each holding exactly `groups_per_update` (4) new
complete groups of K = 4 rollouts (synthetic SmolLM2 token ids, about 300 tokens per episode), so
every file closes 4 groups and triggers exactly one update. A `watch --train` of
pipelines/loop.toml on that model (no warm start, no evaluation) is started; then, one at a time,
a file is published into its directory (`trajflow append`: atomic) and the time until the update's
line appears in RUN/metrics.jsonl is measured. That line is written after the gradient steps and
before the checkpoint, so the script also waits for the checkpoint folder and reports:

- ingest -> update: the file lands -> the update's metrics line (poll wait, read, stages, write,
  commit, the learner's recompute of logp_old and its PPO epochs);
- of which learn: the learner's own time (metrics `time_s.learn`);
- ingest -> checkpoint: until the update's checkpoint (weights + AdamW moments) is on disk, i.e.
  until the update is durable (exactly-once across a crash).

Medians over the files after the first (the first pays one-off costs). Writes
benches/results/stream_latency.md.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_util import run, write_result  # noqa: E402
from check_reference import trajflow_bin  # noqa: E402



def metrics_lines(run_dir):
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        return []


def wait_for(pred, what, proc, timeout=900):
    start = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            sys.exit(f"watch exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() - start > timeout:
            proc.kill()
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.01)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--workdir", default="/tmp/trajflow-stream")
    ap.add_argument("--checkpoint-every", type=int, default=1)
    args = ap.parse_args()
    bin_ = trajflow_bin()
    shutil.rmtree(args.workdir, ignore_errors=True)
    staged, landing, run_dir = (os.path.join(args.workdir, d) for d in ("staged", "landing", "run"))
    os.makedirs(landing)
    files = []
    for i in range(args.files):
        ds = os.path.join(staged, f"f{i}")
        run([bin_, "synth", "--output", ds, "--groups", "4", "--group-size", "4", "--seed", str(i),
             "--id-prefix", f"f{i}-", "--max-action-tokens", "16"])
        part = [p for p in sorted(os.listdir(ds)) if p.endswith(".parquet")][0]
        dest = os.path.join(staged, f"actor-{i:03}.parquet")
        shutil.copy(os.path.join(ds, part), dest)
        files.append(dest)
    sets = ["model.name=" + args.model, "warm_start.demos=0", "run.eval_tasks=0", "rollout.k=4",
            "stream.groups_per_update=4", f"stream.checkpoint_every={args.checkpoint_every}"]
    cmd = [bin_, "watch", os.path.join(ROOT, "pipelines", "loop.toml"), "--input", landing, "--output", run_dir,
           "--train", "--quiet", "--poll-ms", "10", "-w", "2"]
    for s in sets:
        cmd += ["--set", s]
    log = open(os.path.join(args.workdir, "watch.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    # The learner starts (model load, checkpoint 0) before the first file is accepted.
    wait_for(lambda: len(metrics_lines(run_dir)) >= 1 and os.path.isfile(
        os.path.join(run_dir, "checkpoints", "iter-0000", "state.json")), "checkpoint 0", proc)
    rows = []
    for i, f in enumerate(files):
        n = i + 1
        t0 = time.monotonic()
        run([bin_, "append", "--dir", landing, f])
        wait_for(lambda: len(metrics_lines(run_dir)) > n, f"update {n}", proc)
        t_update = time.monotonic() - t0
        m = metrics_lines(run_dir)[n]
        t_ckpt = None
        if n % args.checkpoint_every == 0:
            state = os.path.join(run_dir, "checkpoints", f"iter-{n:04}", "state.json")
            wait_for(lambda: os.path.isfile(state), f"checkpoint {n}", proc)
            t_ckpt = time.monotonic() - t0
        rows.append((n, t_update, m["time_s"].get("learn", 0.0), t_ckpt, m["trained_tokens"], m["episodes"]))
        print(f"file {n}: ingest->update {t_update:.2f} s (learn {rows[-1][2]:.2f} s), "
              f"ingest->checkpoint {t_ckpt if t_ckpt is None else round(t_ckpt, 2)} s, "
              f"{m['episodes']} episodes, {m['trained_tokens']} trained tokens", flush=True)
    proc.kill()
    proc.wait()
    later = rows[1:] or rows
    med = lambda k: statistics.median(r[k] for r in later if r[k] is not None) if any(
        r[k] is not None for r in later) else float("nan")
    ckpt_bytes = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in
                     os.walk(os.path.join(run_dir, "checkpoints", "iter-0000")) for f in fs)
    out = [
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, {os.cpu_count()} CPU(s), "
        f"no GPU; model `{args.model}`; each file: 4 groups x 4 synthetic rollouts (one update); "
        f"`python benches/stream_latency.py --model {args.model} --files {args.files} "
        f"--checkpoint-every {args.checkpoint_every}`; watch with 2 workers.",
        "",
        "| file | ingest -> update (s) | of which learn (s) | ingest -> checkpoint on disk (s) | trained tokens |",
        "|---|---|---|---|---|",
    ]
    for n, tu, tl, tc, tok, _ in rows:
        out.append(f"| {n} | {tu:.2f} | {tl:.2f} | {'-' if tc is None else f'{tc:.2f}'} | {tok} |")
    out.append(f"| median of files 2+ | {med(1):.2f} | {med(2):.2f} | {med(3):.2f} | |")
    out.append("")
    out.append(f"A checkpoint (weights + AdamW moments + tokenizer) is {ckpt_bytes / 1e6:.0f} MB.")
    write_result("stream_latency.md", out)


if __name__ == "__main__":
    main()
