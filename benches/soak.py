#!/usr/bin/env python3
"""Soak benchmark: a long-running `trajflow watch`, its resident memory, epoch latency, file count
and restart time as thousands of files arrive, with SIGKILLs and restarts on the way.

    python benches/soak.py [--files 5000] [--pipeline grpo_advantages] [--workdir /tmp/trajflow-soak]
                           [--kill-at 500] [--snapshot-every N] [--compact-every N] [--train]

Data: `trajflow synth` writes --files files of 30 groups x 6 rollouts (180 rows each; new groups
in every file). The files are dropped into the watched directory in batches; after each batch the
script waits until `watch` has logged every file so far, then samples the process's resident set
size (VmRSS), the number of files under the output directory, and the epoch latencies `watch`
logged. At --kill-at files and again at the end the process is SIGKILLed and restarted with one
more file present; the restart time is from the new process's start to that file being logged
(replay of what was ingested before, or loading the snapshot, included).

Reports (benches/results/soak-PIPELINE.md, .json and .png):
- RSS growth per ingested row between 40 and 400 files (the issue's measurement window), and
  between 400 and the end;
- restart time after --kill-at files and after --files files;
- the file count of the output at the end, before and after `trajflow compact`;
- epoch latency percentiles per window of files.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_util import run  # noqa: E402
from check_reference import trajflow_bin  # noqa: E402

ROWS_PER_FILE = 180


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def count_files(path):
    return sum(len(fs) for _, _, fs in os.walk(path))


def logged(out):
    """Files `watch` has logged as ingested (records, or entries of folded records)."""
    d = os.path.join(out, "_ingested")
    if not os.path.isdir(d):
        return 0
    n = 0
    for name in os.listdir(d):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        if "folded" in name:
            try:
                n += len(json.load(open(os.path.join(d, name)))["entries"])
            except (OSError, ValueError, KeyError):
                pass
        else:
            n += 1
    return n


class Watch:
    def __init__(self, tf, args, log_path):
        self.log = open(log_path, "a+")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([tf, "watch", *args], stdout=subprocess.DEVNULL, stderr=self.log)

    def epochs(self):
        self.log.seek(0)
        return [float(m) for m in re.findall(r"watch: epoch \d+ \(.*?\) done in ([0-9.]+) ms", self.log.read())]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_logged(w, out, n, timeout=3600):
    deadline = time.time() + timeout
    while logged(out) < n:
        if w.proc.poll() is not None:
            w.log.seek(0)
            sys.exit(f"watch exited early ({w.proc.returncode}):\n{w.log.read()[-4000:]}")
        if time.time() > deadline:
            sys.exit(f"watch did not log {n} files in {timeout}s")
        time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin")
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--kill-at", type=int, default=500)
    ap.add_argument("--pipeline", default="grpo_advantages")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/trajflow-soak")
    ap.add_argument("--extra", nargs="*", default=[], help="more arguments for `trajflow watch`")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    a = ap.parse_args()
    tf = a.bin or trajflow_bin()
    total = a.files + 2
    data = f"{a.workdir}/data-{total}"
    if not os.path.isdir(data):
        shutil.rmtree(a.workdir, ignore_errors=True)
        run([tf, "synth", "--output", f"{a.workdir}/synth", "--groups", str(30 * total), "--group-size", "6",
             "--parts", str(total)])
        parts = sorted(p for p in os.listdir(f"{a.workdir}/synth") if p.endswith(".parquet"))
        os.makedirs(data)
        for i, p in enumerate(parts):
            os.rename(f"{a.workdir}/synth/{p}", f"{data}/{i:06d}.parquet")
        shutil.rmtree(f"{a.workdir}/synth")
    files = sorted(os.listdir(data))
    name = a.pipeline + a.tag
    wdir, out = f"{a.workdir}/in-{name}", f"{a.workdir}/out-{name}"
    for d in (wdir, out):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(wdir)
    log_path = f"{a.workdir}/watch-{name}.log"
    if os.path.exists(log_path):
        os.remove(log_path)
    args = [os.path.join(ROOT, "pipelines", f"{a.pipeline}.toml"), "--input", wdir, "--output", out,
            "--poll-ms", "10", "-w", str(a.workers), *a.extra]
    samples = []  # (files logged, rss bytes, files under output, seconds since start)
    restarts = []  # (files before the kill, seconds to log the next file)
    t0 = time.perf_counter()
    placed = 0

    def place(upto):
        nonlocal placed
        for f in files[placed:upto]:
            shutil.copy(f"{data}/{f}", f"{wdir}/{f}")
        placed = upto

    def restart_after(w, n):
        w.kill()
        place(n + 1)
        w = Watch(tf, args, log_path)
        wait_logged(w, out, n + 1)
        took = time.perf_counter() - w.started
        restarts.append((n, took))
        print(f"restart after {n} files: {took:.2f} s to log file {n + 1}", flush=True)
        return w

    w = Watch(tf, args, log_path)
    marks = sorted({10, 20, 40, 100, 200, 400, a.kill_at, *range(500, a.files + 1, 500)} | {a.files})
    for m in marks:
        if m > a.files:
            break
        place(m)
        wait_logged(w, out, m)
        time.sleep(0.3)  # let the epoch's allocations settle
        samples.append((m, rss_bytes(w.proc.pid), count_files(out), time.perf_counter() - t0))
        print(f"{m} files: RSS {samples[-1][1] / 2**20:.1f} MiB, {samples[-1][2]} files under the output", flush=True)
        if m == a.kill_at:
            w = restart_after(w, m)
    w = restart_after(w, a.files if placed <= a.files else placed)
    latencies = w.epochs()
    w.kill()
    files_before = count_files(out)
    compact = subprocess.run([tf, "compact", out], capture_output=True, text=True)
    files_after = count_files(out) if compact.returncode == 0 else None
    rss = {m: r for m, r, _, _ in samples}
    growth = lambda lo, hi: (rss[hi] - rss[lo]) / ((hi - lo) * ROWS_PER_FILE) if lo in rss and hi in rss and hi > lo else None
    windows = []
    for lo in range(0, len(latencies), 500):
        chunk = sorted(latencies[lo:lo + 500])
        if chunk:
            windows.append((lo, lo + len(chunk), chunk[len(chunk) // 2], chunk[int(len(chunk) * 0.95)], chunk[-1]))
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPU(s)",
        "pipeline": a.pipeline, "workers": a.workers, "extra": a.extra, "files": a.files,
        "samples": samples, "restarts": restarts,
        "bytes_per_row_40_400": growth(40, 400), "bytes_per_row_400_end": growth(400, a.files),
        "files_before_compact": files_before, "files_after_compact": files_after,
        "compact_output": (compact.stdout + compact.stderr)[-2000:],
        "latency_windows": windows,
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    base = os.path.join(HERE, "results", f"soak-{name}")
    json.dump(result, open(base + ".json", "w"), indent=1)
    fmt = lambda x: "n/a" if x is None else f"{x:.1f}"
    lines = [
        f"# Soak: `watch` over {a.files} files of {ROWS_PER_FILE} rows ({a.pipeline})",
        "",
        f"{result['date']}, {result['machine']}, binary `{os.path.relpath(tf, ROOT)}`, {a.workers} worker(s), "
        f"extra watch arguments `{' '.join(a.extra) or '-'}`; `python benches/soak.py "
        f"--files {a.files} --pipeline {a.pipeline}{' --extra ' + ' '.join(a.extra) if a.extra else ''}`.",
        "",
        f"- RSS growth per ingested row: {fmt(result['bytes_per_row_40_400'])} bytes between 40 and 400 files, "
        f"{fmt(result['bytes_per_row_400_end'])} bytes between 400 and {a.files} files.",
        "- Restart (SIGKILL, then a new process until the next file is logged): "
        + ", ".join(f"after {n} files {s:.2f} s" for n, s in restarts) + ".",
        f"- Files under the output at the end: {files_before}; after `trajflow compact`: {fmt(files_after)}.",
        "",
        "| files | RSS (MiB) | files under output | elapsed (s) |",
        "|---|---|---|---|",
    ] + [f"| {m} | {r / 2**20:.1f} | {n} | {t:.0f} |" for m, r, n, t in samples] + [
        "",
        "| epochs (since last restart) | median ms | p95 ms | max ms |",
        "|---|---|---|---|",
    ] + [f"| {lo}-{hi} | {p50:.1f} | {p95:.1f} | {mx:.1f} |" for lo, hi, p50, p95, mx in windows]
    open(base + ".md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        ax[0].plot([s[0] for s in samples], [s[1] / 2**20 for s in samples], marker="o")
        ax[0].set_xlabel("files ingested")
        ax[0].set_ylabel("RSS (MiB)")
        ax[1].plot([s[0] for s in samples], [s[2] for s in samples], marker="o")
        ax[1].set_xlabel("files ingested")
        ax[1].set_ylabel("files under the output")
        fig.suptitle(f"watch soak, {a.pipeline}")
        fig.tight_layout()
        fig.savefig(base + ".png", dpi=80)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
