#!/usr/bin/env python3
"""Benchmark: trajflow reprocess (-w 1, -w 2) vs the PyTorch reference (reference.py).

    python benches/advantages.py [--workdir /tmp/trajflow-bench] [--groups 10500] [--repeat 1]

Generates (once, cached in --workdir) a synthetic dataset of >= --min-tokens tokens, then for each
pipeline times whole commands (process start, Parquet read, compute, Parquet write):
`trajflow reprocess pipelines/NAME.toml -w 1`, the same with `-w 2`, and
`python benches/reference.py NAME` (torch on the CPU with its default thread count; run with
OMP_NUM_THREADS unset). With --repeat N the best of N runs is reported. Prints a markdown table
and writes it to benches/results/advantages.md.

Caveat built into the comparison: trajflow writes a complete dataset (every input column plus the
outputs), the reference writes episode_id + output columns only; the `PyTorch (all cols)` column
runs reference.py --all-columns, which reads and writes every column like trajflow does.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from check_reference import trajflow_bin  # noqa: E402
from reference import dataset_files  # noqa: E402

PIPELINES = ["loop_advantages", "grpo_advantages", "poad_advantages", "ntpo_advantages",
             "reinforce_pp_advantages"]


def count_tokens(path):
    return sum(int(pc.sum(pc.list_value_length(pq.read_table(f, columns=["tokens"])["tokens"])).as_py())
               for f in dataset_files(path))


def timed(cmd, env=None):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return dt, r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="trajflow binary (default: release if built, else debug)")
    ap.add_argument("--workdir", default="/tmp/trajflow-bench")
    ap.add_argument("--groups", type=int, default=10500)
    ap.add_argument("--group-size", type=int, default=6)
    ap.add_argument("--parts", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-tokens", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--pipelines", nargs="*", default=PIPELINES)
    ap.add_argument("--no-all-columns", action="store_true", help="skip the reference --all-columns run")
    ap.add_argument("--results", default=os.path.join(HERE, "results", "advantages.md"))
    a = ap.parse_args()

    exe = trajflow_bin(a.bin)
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    os.makedirs(a.workdir, exist_ok=True)
    data = os.path.join(a.workdir, f"synth-g{a.groups}-k{a.group_size}-p{a.parts}-s{a.seed}")
    if not os.path.isdir(os.path.join(data, "_manifest")):
        shutil.rmtree(data, ignore_errors=True)
        dt, _ = timed([exe, "synth", "--output", data, "--groups", str(a.groups), "--group-size",
                       str(a.group_size), "--parts", str(a.parts), "--seed", str(a.seed)])
        print(f"generated {data} in {dt:.1f}s", file=sys.stderr)
    tokens = count_tokens(data)
    rows = sum(pq.read_metadata(f).num_rows for f in dataset_files(data))
    if tokens < a.min_tokens:
        sys.exit(f"{data} has only {tokens} tokens (< {a.min_tokens}); raise --groups")
    print(f"dataset {data}: {rows} episodes, {tokens} tokens; trajflow = {exe}", file=sys.stderr)

    results = []
    for name in a.pipelines:
        toml = os.path.join(ROOT, "pipelines", f"{name}.toml")
        res = {"pipeline": name}
        variants = [("w1", [exe, "reprocess", toml, "--input", data, "-w", "1"]),
                    ("w2", [exe, "reprocess", toml, "--input", data, "-w", "2"]),
                    ("torch", [sys.executable, os.path.join(HERE, "reference.py"), name, "--input", data])]
        if not a.no_all_columns:
            variants.append(("torch_all", variants[-1][1] + ["--all-columns"]))
        for key, base in variants:
            best = None
            for _ in range(a.repeat):
                if key.startswith("w"):
                    out = os.path.join(a.workdir, f"out-{name}-{key}")
                    shutil.rmtree(out, ignore_errors=True)
                    cmd = base + ["--output", out]
                else:
                    out = os.path.join(a.workdir, f"out-{name}-{key}.parquet")
                    cmd = base + ["--output", out]
                dt, r = timed(cmd, env)
                if best is None or dt < best:
                    best = dt
                    if key.startswith("torch"):
                        res[key + "_breakdown"] = json.loads(r.stderr.strip().splitlines()[-1])
                    else:
                        res[key + "_log"] = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.stdout.strip()
                if key.startswith("w"):
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    os.remove(out)
            res[key] = best
            print(f"{name} {key}: {best:.2f}s", file=sys.stderr)
        results.append(res)

    def tps(sec):
        return f"{tokens / sec / 1e6:.2f} M ({sec:.2f} s)"

    lines = [
        f"# Advantage pipelines: trajflow vs PyTorch reference",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPU(s); dataset: {rows} episodes, {tokens} tokens "
        f"(`trajflow synth --groups {a.groups} --group-size {a.group_size} --parts {a.parts} "
        f"--seed {a.seed}`); trajflow binary: `{os.path.relpath(exe, ROOT)}`; best of {a.repeat}.",
        "Wall time of whole commands (start-up, Parquet read, compute, Parquet write). trajflow "
        "writes every column; `PyTorch` writes episode_id + outputs, `PyTorch all cols` every "
        "column like trajflow. Speedup = PyTorch time / best trajflow time.",
        "",
        "| pipeline | tokens | trajflow w1 tokens/s | trajflow w2 tokens/s | PyTorch tokens/s "
        + ("| PyTorch all cols tokens/s " if not a.no_all_columns else "")
        + "| speedup | speedup (all cols) | PyTorch read / pad / compute / write (s) |",
        "|---|---|---|---|---|" + ("---|" if not a.no_all_columns else "") + "---|---|---|",
    ]
    for r in results:
        best_tf = min(r["w1"], r["w2"])
        b = r["torch_breakdown"]
        row = (f"| {r['pipeline']} | {tokens} | {tps(r['w1'])} | {tps(r['w2'])} | {tps(r['torch'])} | ")
        if not a.no_all_columns:
            row += f"{tps(r['torch_all'])} | "
        row += f"{r['torch'] / best_tf:.2f}x | "
        row += (f"{r['torch_all'] / best_tf:.2f}x" if not a.no_all_columns else "-") + " | "
        row += f"{b['read']:.2f} / {b['pad']:.2f} / {b['compute']:.2f} / {b['write']:.2f} |"
        lines.append(row)
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    with open(a.results, "w") as f:
        f.write(table)
    with open(os.path.splitext(a.results)[0] + ".json", "w") as f:
        json.dump({"tokens": tokens, "rows": rows, "binary": exe, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
