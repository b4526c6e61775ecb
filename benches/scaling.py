#!/usr/bin/env python3
"""Benchmark: `trajflow reprocess` throughput over >= 50M tokens with 1, 2 and 4 workers, and
with 2 processes on 127.0.0.1 (scaling efficiency).

    python benches/scaling.py [--workdir /tmp/trajflow-scaling] [--min-tokens 50000000] [--repeat 2]

Data (made once, cached in --workdir): `trajflow synth` groups of 6 rollouts in 64 Parquet files,
at least --min-tokens tokens. For each pipeline and each placement, `trajflow reprocess` writes
every column (`--columns all`: Parquet read + stages + Parquet write of the whole dataset), and
the time is the one reprocess reports itself (not process start-up); best of --repeat.
Efficiency = (T_1 / T_n) / n for n workers (1.0 is perfect scaling). Placements above the
machine's core count are measured too and say so: they show overhead, not speed-up.
Writes benches/results/scaling.md.
"""
import argparse
import datetime
import os
import platform
import re
import shutil
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_util import run, write_result  # noqa: E402
from check_reference import trajflow_bin  # noqa: E402

TOKENS_PER_EPISODE = 165  # synth's default shape averages about 167.6 tokens an episode: a margin below it



def reported_seconds(out):
    m = re.search(r"\(\d+ worker\(s\) in this process, ([0-9.]+)s\)", out)
    if not m:
        sys.exit(f"cannot parse reprocess output: {out}")
    return float(m.group(1))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(exe, toml, data, out, workdir):
    hosts = os.path.join(workdir, "hosts.txt")
    with open(hosts, "w") as f:
        f.write(f"127.0.0.1:{free_port()}\n127.0.0.1:{free_port()}\n")
    procs = [subprocess.Popen([exe, "reprocess", toml, "--input", data, "--output", out, "-w", "1",
                               "--processes", "2", "--process-id", str(i), "--hostfile", hosts],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate() for p in procs]
    if any(p.returncode != 0 for p in procs):
        sys.exit(f"2-process reprocess failed: {outs}")
    return max(reported_seconds(o[0]) for o in outs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/trajflow-scaling")
    ap.add_argument("--min-tokens", type=int, default=50_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    exe = trajflow_bin()
    os.makedirs(a.workdir, exist_ok=True)
    groups = a.min_tokens // (6 * TOKENS_PER_EPISODE) + 1
    data = os.path.join(a.workdir, f"synth-g{groups}")
    if not os.path.isdir(data):
        run([exe, "synth", "--output", data, "--groups", str(groups), "--group-size", "6", "--parts", "64"])
    import pyarrow.parquet as pq
    tokens = 0
    for f in sorted(os.listdir(data)):
        if f.endswith(".parquet"):
            t = pq.read_table(os.path.join(data, f), columns=["tokens"])
            tokens += sum(len(x) for x in t.column("tokens").to_pylist())
    if tokens < a.min_tokens:
        sys.exit(f"dataset has {tokens} tokens < {a.min_tokens}; delete {data} and raise TOKENS_PER_EPISODE")
    rows = []
    for name in ["loop_advantages", "poad_advantages"]:
        toml = os.path.join(ROOT, "pipelines", f"{name}.toml")
        times = {}
        for label, workers in [("1 worker", 1), ("2 workers", 2), ("4 workers", 4), ("2 processes x 1", None)]:
            best = None
            for _ in range(a.repeat):
                out = os.path.join(a.workdir, "out")
                shutil.rmtree(out, ignore_errors=True)
                if workers is None:
                    sec = two_processes(exe, toml, data, out, a.workdir)
                else:
                    sec = reported_seconds(run([exe, "reprocess", toml, "--input", data, "--output", out,
                                                "-w", str(workers)]))
                best = sec if best is None else min(best, sec)
            times[label] = (best, workers or 2)
            print(f"{name} {label}: {best:.2f} s, {tokens / best / 1e6:.1f} M tokens/s", flush=True)
        t1 = times["1 worker"][0]
        for label, (sec, n) in times.items():
            rows.append((name, label, sec, tokens / sec / 1e6, t1 / sec / n))
    shutil.rmtree(os.path.join(a.workdir, "out"), ignore_errors=True)
    cores = os.cpu_count()
    lines = [
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, {cores} CPU(s), no GPU; "
        f"{tokens} tokens in {groups * 6} episodes, 64 Parquet files (`trajflow synth --groups {groups} "
        f"--group-size 6 --parts 64`); `python benches/scaling.py`; best of {a.repeat}; every column written.",
        "",
        "| pipeline | placement | seconds | M tokens/s | scaling efficiency (T1/Tn)/n |",
        "|---|---|---|---|---|",
    ]
    for name, label, sec, tps, eff in rows:
        n = 2 if "process" in label else int(label.split()[0])
        note = f" (> {cores} cores)" if n > cores else ""
        lines.append(f"| {name} | {label}{note} | {sec:.2f} | {tps:.1f} | {eff:.2f} |")
    write_result("scaling.md", lines)


if __name__ == "__main__":
    main()
