#!/usr/bin/env python3
"""Benchmark: trajflow reprocess vs the PyTorch reference (reference.py) on >= 10M tokens.

    python benches/advantages.py [--bin target/release/trajflow] [--kernels KERNELS_BENCH_BINARY]
                                 [--workdir /tmp/trajflow-bench] [--groups 10500] [--repeat 2]

Generates (once, cached in --workdir) a synthetic dataset of >= --min-tokens tokens in 32 Parquet
files, then for each pipeline runs, best of --repeat:
- trajflow reprocess -w 2 with the torch-free build (`--bin`, default target/lite/release/trajflow:
  the front that runs data commands without loading libtorch), writing only episode_id + the
  stages' outputs (`--columns outputs`) and writing every column (default); and, with `--torch-bin`,
  the outputs variant run by the libtorch build, to show its start-up cost;
- reference.py (episode_id + outputs) and reference.py --all-columns.
It reports wall time of the whole command and the in-process time (trajflow's own timing; the sum
of the reference's read/pad/compute/write), plus compute-only throughput: trajflow's kernels bench
(`cargo bench --bench kernels`, data in memory, one thread) against the reference's compute phase.
Writes benches/results/advantages.md and .json.
"""
import argparse
import datetime
import json
import os
import platform
import re
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
    ap.add_argument("--torch-bin", help="the libtorch build, for its wall time on the outputs variant")
    ap.add_argument("--workdir", default="/tmp/trajflow-bench")
    ap.add_argument("--groups", type=int, default=10500)
    ap.add_argument("--group-size", type=int, default=6)
    ap.add_argument("--parts", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-tokens", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--pipelines", nargs="*", default=PIPELINES)
    ap.add_argument("--kernels", help="the kernels bench binary (cargo bench --bench kernels --no-run prints it)")
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

    kernels = {}
    if a.kernels:
        r = subprocess.run([a.kernels, data, "--repeat", "3"], capture_output=True, text=True, check=True)
        for line in r.stdout.splitlines():
            k = json.loads(line)
            kernels[k["pipeline"]] = k["seconds"]

    results = []
    for name in a.pipelines:
        toml = os.path.join(ROOT, "pipelines", f"{name}.toml")
        res = {"pipeline": name}
        ref = [sys.executable, os.path.join(HERE, "reference.py"), name, "--input", data]
        variants = [("tf_out", [exe, "reprocess", toml, "--input", data, "-w", "2", "--columns", "outputs"]),
                    ("tf_all", [exe, "reprocess", toml, "--input", data, "-w", "2"]),
                    ("torch_out", ref),
                    ("torch_all", ref + ["--all-columns"])]
        if a.torch_bin:
            variants.append(("tf_libtorch_out", [a.torch_bin] + variants[0][1][1:]))
        for key, base in variants:
            best = None
            for _ in range(a.repeat):
                tf = key.startswith("tf")
                out = os.path.join(a.workdir, f"out-{name}-{key}" + ("" if tf else ".parquet"))
                dt, r = timed(base + ["--output", out], env)
                # In-process time: what trajflow reports itself (after start-up) / the sum of the
                # reference's read + pad + compute + write (after Python and torch imports).
                if tf:
                    inproc = float(re.search(r", ([0-9.]+)s\)", r.stdout).group(1))
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    br = json.loads(r.stderr.strip().splitlines()[-1])
                    inproc = sum(br[k] for k in ("read", "pad", "compute", "write"))
                    res[key + "_compute"] = br["compute"]
                    os.remove(out)
                if best is None or dt < best[0]:
                    best = (dt, inproc)
            res[key] = best
            print(f"{name} {key}: wall {best[0]:.2f}s, in-process {best[1]:.2f}s", file=sys.stderr)
        results.append(res)

    def m(sec):
        return f"{tokens / sec / 1e6:.1f} M"

    lines = [
        "# Advantage pipelines: trajflow vs the PyTorch reference",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPU(s), no GPU; dataset: {rows} episodes, {tokens} tokens "
        f"(`trajflow synth --groups {a.groups} --group-size {a.group_size} --parts {a.parts} "
        f"--seed {a.seed}`, 32 Parquet files); trajflow `{os.path.relpath(exe, ROOT)}` with 2 workers; "
        f"best of {a.repeat}; `python benches/advantages.py --kernels ...`.",
        "",
        "Throughput in tokens/s. *outputs*: write episode_id + every column the stages write (trajflow "
        "`--columns outputs`; the reference writes the same columns); *all*: write every column. *wall*: the whole command "
        "(trajflow: the torch-free build, which does not load libtorch; Python imports torch, ~2 s); "
        "*libtorch build*: the same command run by the libtorch build (loads libtorch and its CUDA "
        "libraries, ~0.5 s warm); *in-process*: without start-up, i.e. Parquet read + compute + Parquet "
        "write. *compute*: the arithmetic alone on data in memory (trajflow: `cargo bench --bench "
        "kernels`, one thread; PyTorch: the reference's compute phase on padded tensors, both cores).",
        "",
        "| pipeline | wall, outputs: trajflow / PyTorch | wall, all | wall, outputs, libtorch build | "
        "in-process, outputs | in-process, all | compute only |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [r["pipeline"]]
        for tf, ref, i in (("tf_out", "torch_out", 0), ("tf_all", "torch_all", 0), ("tf_libtorch_out", "torch_out", 0),
                           ("tf_out", "torch_out", 1), ("tf_all", "torch_all", 1)):
            if tf not in r:
                cells.append("-")
                continue
            t, p = r[tf][i], r[ref][i]
            cells.append(f"{m(t)} / {m(p)} = **{p / t:.1f}x**")
        k = kernels.get(r["pipeline"])
        pc_ = r["torch_out_compute"]
        cells.append(f"{m(k)} / {m(pc_)} = **{pc_ / k:.0f}x**" if k else f"- / {m(pc_)}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    with open(a.results, "w") as f:
        f.write(text)
    with open(os.path.splitext(a.results)[0] + ".json", "w") as f:
        json.dump({"tokens": tokens, "rows": rows, "results": results, "kernels": kernels}, f, indent=1)


if __name__ == "__main__":
    main()
