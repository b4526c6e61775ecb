#!/usr/bin/env python3
"""Benchmark: cost of a `trajflow watch` update after +1% new trajectories vs a full `reprocess`.

    python benches/incremental.py [--workdir /tmp/trajflow-incr] [--groups 10500] [--workers 2]

Data: `trajflow synth` writes the base dataset (--groups groups of 6 rollouts over 99 files) and a
delta of 1% more rollouts (new groups, one file). For each pipeline:
- full: `trajflow reprocess` over base + delta; the time is the one reprocess reports itself
  (dataflow setup, Parquet read, compute, Parquet write; not process start-up);
- update: `trajflow watch` ingests the 99 base files (one epoch each), then the delta file is
  dropped in; the time is the delta epoch's own, as watch logs it ("watch: epoch N ... done in X
  ms": read, recompute of the touched groups, write, commit).
Group-scoped pipelines (loop) recompute only the delta's groups. Batch-scoped whitening (poad)
moves with every row; `watch` stores the values before whitening and records the statistic, and
readers whiten: that cost moves to reads, so the table also reports a full read of each output
(`trajflow export`, which reads the current rows, whitens them and writes one plain Parquet file)
for the watched dataset vs the reprocessed one.
Writes benches/results/incremental.md.
"""
import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_util import run, write_result  # noqa: E402
from check_reference import trajflow_bin  # noqa: E402



def parts_of(dataset):
    return sorted(os.path.join(dataset, f) for f in os.listdir(dataset) if f.endswith(".parquet"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin")
    ap.add_argument("--workdir", default="/tmp/trajflow-incr")
    ap.add_argument("--groups", type=int, default=10500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pipelines", nargs="*", default=["loop_advantages", "grpo_advantages", "poad_advantages"])
    ap.add_argument("--results", default=os.path.join(HERE, "results", "incremental.md"))
    a = ap.parse_args()
    tf = a.bin or trajflow_bin()
    w = a.workdir
    base, delta, alldir = f"{w}/base", f"{w}/delta", f"{w}/all"
    if not os.path.isdir(alldir):
        shutil.rmtree(w, ignore_errors=True)
        run([tf, "synth", "--output", base, "--groups", str(a.groups), "--group-size", "6", "--parts", "99"])
        run([tf, "synth", "--output", delta, "--groups", str(max(1, a.groups // 99)), "--group-size", "6",
             "--parts", "1", "--seed", "99", "--id-prefix", "new"])
        os.makedirs(alldir)
        for i, p in enumerate(parts_of(base) + parts_of(delta)):
            shutil.copy(p, f"{alldir}/{i:03d}.parquet")
    files = sorted(os.listdir(alldir))
    rows = []
    for name in a.pipelines:
        pipe = os.path.join(ROOT, "pipelines", f"{name}.toml")
        out = f"{w}/out-full-{name}"
        shutil.rmtree(out, ignore_errors=True)
        text = run([tf, "reprocess", pipe, "--input", alldir, "--output", out, "-w", str(a.workers)])
        full = float(re.search(r", ([0-9.]+)s\)", text).group(1))
        wdir, wout = f"{w}/watch-{name}", f"{w}/out-watch-{name}"
        shutil.rmtree(wdir, ignore_errors=True)
        shutil.rmtree(wout, ignore_errors=True)
        os.makedirs(wdir)
        for f in files[:-1]:
            shutil.copy(f"{alldir}/{f}", f"{wdir}/{f}")
        log = open(f"{w}/watch-{name}.log", "w+")
        proc = subprocess.Popen([tf, "watch", pipe, "--input", wdir, "--output", wout, "--poll-ms", "20",
                                 "--max-files", str(len(files)), "-w", str(a.workers)],
                                stdout=subprocess.DEVNULL, stderr=log)

        def epochs():
            log.seek(0)
            return re.findall(r"watch: epoch (\d+) \((.*?)\) done in ([0-9.]+) ms", log.read())

        deadline = time.time() + 1800
        while len(epochs()) < len(files) - 1:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"watch stopped early:\n{open(log.name).read()}")
            time.sleep(0.05)
        base_ms = [float(m) for _, _, m in epochs()]
        shutil.copy(f"{alldir}/{files[-1]}", f"{wdir}/{files[-1]}")
        proc.wait(timeout=600)
        last = epochs()[-1]
        assert last[1].endswith(files[-1]), last
        update = float(last[2]) / 1e3
        reads = []
        for dataset in (wout, out):
            start = time.perf_counter()
            run([tf, "export", dataset, "--output", f"{w}/export-{name}.parquet"])
            reads.append(time.perf_counter() - start)
        rows.append((name, full, update, sum(base_ms) / 1e3, reads))
        print(f"{name}: full reprocess {full:.3f}s, +1% watch update {update:.3f}s "
              f"({100 * update / full:.1f}% of full); ingesting the 99 base files took {sum(base_ms)/1e3:.1f}s; "
              f"export of the watched / reprocessed output {reads[0]:.2f}s / {reads[1]:.2f}s", flush=True)
    lines = [
        "# Incremental update (+1% trajectories through `watch`) vs full `reprocess`",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, {os.cpu_count()} CPU(s), "
        f"binary `{os.path.relpath(tf, ROOT)}`, {a.workers} workers; base: {a.groups} groups x 6 rollouts in 99 files, "
        f"delta: {max(1, a.groups // 99)} new groups x 6 in 1 file (`python benches/incremental.py`).",
        "",
        "| pipeline | full reprocess (s) | +1% update (s) | update / full | 99 base files through watch (s) "
        "| export watched / reprocessed (s) |",
        "|---|---|---|---|---|---|",
    ] + [f"| {n} | {f:.3f} | {u:.3f} | {100 * u / f:.1f}% | {b:.1f} | {r[0]:.2f} / {r[1]:.2f} |"
         for n, f, u, b, r in rows]
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    open(a.results, "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
