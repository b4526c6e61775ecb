#!/usr/bin/env python3
"""Soak benchmark: a long-running `trajflow watch`, its resident memory, epoch latency, file count
and restart time as thousands of files arrive, with SIGKILLs and restarts on the way.

    python benches/soak.py [--files 5000] [--pipeline grpo_advantages] [--workdir /tmp/trajflow-soak]
                           [--kill-at 500] [--extra=--seal-after=10 ...] [--train]

Data: `trajflow synth` writes --files files of 30 groups x 6 rollouts (180 rows each; new groups
in every file). With --train (`watch --train` of pipelines/loop.toml, the small model, no warm
start or evaluation, an update per 4 groups): `trajflow rollout` plays 100 household-pick tasks x 4
with the small model once, and each file holds 4 of those groups (16 rows) under ids of its own. The files are dropped into the watched directory in batches; after each batch the
script waits until `watch` has logged every file so far, then samples the process's resident set
size (VmRSS), the number of files under the output directory, and the epoch latencies `watch`
logged. At --kill-at files and again at the end the process is SIGKILLed and restarted with one
more file present; the restart time is from the new process's start to that file being logged
(replay of what was ingested before, or loading the snapshot, included).

Reports (benches/results/soak-NAME.md, .json and .svg):
- RSS growth per ingested row between 40 and 400 files (the issue's measurement window), and
  between 400 and the end;
- restart time after --kill-at files and after --files files (median of three kills, each
  waiting for a running background compaction to end first);
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



def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def count_files(path):
    return sum(len(fs) for _, _, fs in os.walk(path))


def logged(dataset):
    """Files `watch` has logged as ingested (records, or entries of folded records)."""
    d = os.path.join(dataset, "_ingested")
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


def train_files(tf, workdir, data, total):
    """`total` files of 4 groups x 4 real rollouts of the small model (ids made unique per file)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    rollouts = f"{workdir}/rollouts"
    shutil.rmtree(rollouts, ignore_errors=True)
    run([tf, "rollout", "--env", "household-pick", "--model", "small:household-pick", "--tasks", "100", "--k", "4",
         "--output", rollouts])
    table = pq.read_table([f"{rollouts}/{p}" for p in sorted(os.listdir(rollouts)) if p.endswith(".parquet")])
    groups = sorted(set(table.column("group_id").to_pylist()))
    os.makedirs(data)
    for i in range(total):
        mine = [groups[(4 * i + j) % len(groups)] for j in range(4)]
        part = table.filter(pc.is_in(table.column("group_id"), pa_array(mine)))
        for col in ("episode_id", "group_id"):
            ids = pc.binary_join_element_wise(f"f{i}", part.column(col), "-")
            part = part.set_column(part.schema.get_field_index(col), col, ids)
        pq.write_table(part, f"{data}/{i:06d}.parquet")


def pa_array(values):
    import pyarrow as pa
    return pa.array(values)


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
    ap.add_argument("--train", action="store_true", help="watch --train of pipelines/loop.toml (small model)")
    a = ap.parse_args()
    tf = a.bin or trajflow_bin()
    total = a.files + 6
    rows_per_file = 16 if a.train else 180
    data = f"{a.workdir}/data-{'train-' if a.train else ''}{total}"
    if a.train and not os.path.isdir(data):
        train_files(tf, a.workdir, data, total)
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
    if a.train:
        a.pipeline = "loop"
    name = a.pipeline + ("-train" if a.train else "") + a.tag
    wdir, out = f"{a.workdir}/in-{name}", f"{a.workdir}/out-{name}"
    dataset = f"{out}/ingested" if a.train else out
    for d in (wdir, out):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(wdir)
    log_path = f"{a.workdir}/watch-{name}.log"
    if os.path.exists(log_path):
        os.remove(log_path)
    args = [os.path.join(ROOT, "pipelines", f"{a.pipeline}.toml"), "--input", wdir, "--output", out,
            "--poll-ms", "10", "-w", str(a.workers), *a.extra]
    if a.train:
        args += ["--train", "--quiet"]
        for s in ["warm_start.demos=0", "run.eval_tasks=0", "rollout.k=4", "stream.groups_per_update=4"]:
            args += ["--set", s]
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
        """SIGKILL and restart three times (one more file each time); the median time to log it."""
        took = []
        for i in range(3):
            # A background compaction (a child process) finishing first: measure the restart alone.
            while subprocess.run(["pgrep", "-f", f"compact {dataset}"], capture_output=True).returncode == 0:
                time.sleep(0.05)
            w.kill()
            place(n + i + 1)
            w = Watch(tf, args, log_path)
            wait_logged(w, dataset, n + i + 1)
            took.append(time.perf_counter() - w.started)
        restarts.append((n, sorted(took)[1]))
        print(f"restart after {n} files: {sorted(took)[1]:.2f} s to log the next file (median of 3: "
              f"{', '.join(f'{t:.2f}' for t in took)})", flush=True)
        return w

    w = Watch(tf, args, log_path)
    marks = sorted({10, 20, 40, 100, 200, 400, a.kill_at, *range(500, a.files + 1, 500)} | {a.files})
    for m in marks:
        if m > a.files:
            break
        place(m)
        wait_logged(w, dataset, m)
        time.sleep(0.3)  # let the epoch's allocations settle
        samples.append((m, rss_bytes(w.proc.pid), count_files(dataset), time.perf_counter() - t0))
        print(f"{m} files: RSS {samples[-1][1] / 2**20:.1f} MiB, {samples[-1][2]} files under the output", flush=True)
        if m == a.kill_at:
            w = restart_after(w, m)
    w = restart_after(w, placed)
    latencies = w.epochs()
    w.kill()
    files_before = count_files(dataset)
    compact = subprocess.run([tf, "compact", dataset], capture_output=True, text=True)
    files_after = count_files(dataset) if compact.returncode == 0 else None
    rss = {m: r for m, r, _, _ in samples}
    growth = lambda lo, hi: (rss[hi] - rss[lo]) / ((hi - lo) * rows_per_file) if lo in rss and hi in rss and hi > lo else None
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
        f"# Soak: `watch{' --train' if a.train else ''}` over {a.files} files of {rows_per_file} rows ({a.pipeline})",
        "",
        f"{result['date']}, {result['machine']}, binary `{os.path.relpath(tf, ROOT)}`, {a.workers} worker(s), "
        f"extra watch arguments `{' '.join(a.extra) or '-'}`; `python benches/soak.py "
        f"--files {a.files} --kill-at {a.kill_at} {'--train' if a.train else '--pipeline ' + a.pipeline}"
        f"{''.join(' --extra=' + x for x in a.extra)}`.",
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
    panels = [
        ("RSS (MiB)", [(m, r / 2**20) for m, r, _, _ in samples]),
        ("files under the output", [(m, n) for m, _, n, _ in samples]),
        ("epoch latency, median per 500 (ms)", [(hi, p50) for _, hi, p50, _, _ in windows]),
    ]
    open(base + ".svg", "w").write(svg(f"watch soak: {name}, {a.files} files", panels))


def svg(title, panels, w=320, h=220):
    """Line panels side by side as one SVG (x: files ingested), with min/max labels."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(panels)}" height="{h + 30}" '
           f'font-family="sans-serif" font-size="11"><text x="8" y="16" font-size="13">{title}</text>']
    for i, (label, pts) in enumerate(panels):
        x0, y0 = i * w + 50, 40
        pw, ph = w - 70, h - 50
        out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{x0}" y="{y0 - 6}">{label}</text>')
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        lo, hi = min(0, min(ys)), max(ys) * 1.05 or 1
        sx = lambda x: x0 + pw * x / max(xs)
        sy = lambda y: y0 + ph - ph * (y - lo) / (hi - lo)
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
        out.append(f'<text x="{x0 - 4}" y="{y0 + ph}" text-anchor="end">{lo:g}</text>')
        out.append(f'<text x="{x0 - 4}" y="{y0 + 10}" text-anchor="end">{hi:.4g}</text>')
        out.append(f'<text x="{x0 + pw}" y="{y0 + ph + 14}" text-anchor="end">{max(xs)} files</text>')
    out.append("</svg>")
    return "\n".join(out)


if __name__ == "__main__":
    main()
