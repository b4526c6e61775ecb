#!/usr/bin/env python3
"""Cross-checks trajflow's advantage pipelines against the PyTorch reference (reference.py).

    python benches/check_reference.py [--bin PATH] [--groups 200] [--workers 2] [--keep DIR]

For each of loop/grpo/poad/ntpo/reinforce_pp_advantages: makes one synthetic dataset with
`trajflow synth`, runs `trajflow reprocess pipelines/NAME.toml` and `reference.py NAME` on it, joins
the outputs on episode_id and compares every output column: float32 columns (per-episode and
per-token) must agree within 1e-5 (max abs diff), `keep` exactly, and per-token lists must have the
same lengths. Exits 1 on any mismatch, 2 on a failed command.

The trajflow binary is --bin, else $TRAJFLOW_BIN, else $CARGO_BIN_EXE_trajflow, else
target/release/trajflow when present, else target/debug/trajflow.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from reference import dataset_files  # noqa: E402

PIPELINES = {
    "loop_advantages": ["episode_advantage", "keep", "advantages"],
    "grpo_advantages": ["episode_advantage", "advantages"],
    "poad_advantages": ["action_end", "advantages", "returns"],
    "ntpo_advantages": ["action_end", "advantages", "returns"],
    "reinforce_pp_advantages": ["returns", "advantages"],
}
TOL = 1e-5


def trajflow_bin(explicit=None):
    for cand in [explicit, os.environ.get("TRAJFLOW_BIN"), os.environ.get("CARGO_BIN_EXE_trajflow"),
                 os.path.join(ROOT, "target/release/trajflow")]:
        if cand and os.path.exists(cand):
            return cand
    return os.path.join(ROOT, "target/debug/trajflow")


def sh(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}", file=sys.stderr)
        sys.exit(2)
    return r


def load_sorted(path, columns):
    files = dataset_files(path)
    t = pa.concat_tables([pq.read_table(f, columns=columns) for f in files]).combine_chunks()
    return t.take(pc.sort_indices(t, [("episode_id", "ascending")]))


def compare(name, ours, theirs, columns):
    """List of failure strings (empty when everything matches)."""
    fails = []
    if ours.num_rows != theirs.num_rows or ours["episode_id"] != theirs["episode_id"]:
        return [f"{name}: episode ids differ ({theirs.num_rows} trajflow rows vs {ours.num_rows})"]
    report = {}
    for col in columns:
        a, b = theirs[col].combine_chunks(), ours[col].combine_chunks()
        if a.null_count or b.null_count:
            fails.append(f"{name}.{col}: nulls (trajflow {a.null_count}, reference {b.null_count})")
            continue
        if pa.types.is_boolean(a.type):
            diff = int(pc.sum(pc.not_equal(a, b).cast(pa.int64())).as_py() or 0)
            report[col] = f"{diff} differing"
            if diff:
                idx = np.nonzero(pc.not_equal(a, b).to_numpy(zero_copy_only=False))[0][:5]
                fails.append(f"{name}.{col}: {diff} rows differ, e.g. episodes "
                             f"{[ours['episode_id'][int(i)].as_py() for i in idx]}")
            continue
        if pa.types.is_list(a.type) or pa.types.is_large_list(a.type):
            la = pc.list_value_length(a).to_numpy()
            lb = pc.list_value_length(b).to_numpy()
            if not np.array_equal(la, lb):
                fails.append(f"{name}.{col}: list lengths differ")
                continue
            rows = np.repeat(np.arange(len(la)), la)
            va = pc.list_flatten(a).to_numpy(zero_copy_only=False).astype(np.float64)
            vb = pc.list_flatten(b).to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            rows = np.arange(len(a))
            va = a.to_numpy(zero_copy_only=False).astype(np.float64)
            vb = b.to_numpy(zero_copy_only=False).astype(np.float64)
        if not (np.isfinite(va).all() and np.isfinite(vb).all()):
            fails.append(f"{name}.{col}: non-finite values")
            continue
        d = np.abs(va - vb)
        mx = float(d.max()) if d.size else 0.0
        report[col] = f"max |diff| {mx:.3g}"
        if mx > TOL:
            i = int(d.argmax())
            ep = ours["episode_id"][int(rows[i])].as_py()
            n_bad = len(np.unique(rows[d > TOL]))
            fails.append(f"{name}.{col}: max |diff| {mx:.3g} > {TOL} in {n_bad} episode(s), worst "
                         f"{ep}: trajflow {va[i]!r} vs reference {vb[i]!r}")
    print(f"{name:32s} " + "; ".join(f"{k}: {v}" for k, v in report.items()))
    return fails


def make_edge_dataset(src, dst, seed):
    """A single Parquet file derived from a synth dataset, covering cases synth does not: adjacent
    actions with no gap, truncated episodes with null and non-null bootstrap, singleton groups,
    episodes without action tokens, non-binary rewards, random values on every token."""
    rng = np.random.default_rng(seed)
    table = pa.concat_tables([pq.read_table(f) for f in dataset_files(src)]).combine_chunks()
    rows = table.to_pylist()
    per_token = [f.name for f in table.schema
                 if (pa.types.is_list(f.type) and f.name not in ("turn_rewards", "expert_actions"))]
    for i, r in enumerate(rows):
        seg = np.array(r["segments"])
        r["reward"] = float(rng.integers(-8, 9) / 8.0) if i % 3 else r["reward"]
        r["turn_rewards"] = [float(x) for x in rng.normal(size=len(r["turn_rewards"])).astype(np.float32)]
        r["values"] = [float(x) for x in rng.uniform(-2, 2, size=len(seg)).astype(np.float32)]
        if i % 5 == 1:  # drop the non-action tokens between actions: adjacent actions
            act = np.nonzero(seg == 1)[0]
            keep = np.ones(len(seg), bool)
            if len(act):
                keep[act[0]:act[-1]] = seg[act[0]:act[-1]] == 1
            for c in per_token:
                if r[c] is not None:
                    r[c] = [x for x, k in zip(r[c], keep) if k]
        if i % 7 == 2:
            r["truncated"], r["terminated"], r["bootstrap_value"] = True, False, None
        if i % 7 == 4:
            r["truncated"], r["terminated"] = True, False
            r["bootstrap_value"] = float(np.float32(rng.normal()))
        if i % 11 == 3:
            r["group_id"] = f"solo-{i}"
        if i % 13 == 5:  # no action tokens at all
            r["segments"] = [2 if s == 1 else s for s in r["segments"]]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="trajflow binary")
    ap.add_argument("--groups", type=int, default=200)
    ap.add_argument("--group-size", type=int, default=6)
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pipelines", nargs="*", default=list(PIPELINES))
    ap.add_argument("--no-edge", action="store_true", help="skip the edge-case dataset")
    ap.add_argument("--keep", help="work in this directory and keep it (default: a temp dir)")
    a = ap.parse_args()

    exe = trajflow_bin(a.bin)
    work = a.keep or tempfile.mkdtemp(prefix="trajflow-check-")
    os.makedirs(work, exist_ok=True)
    t_start = time.perf_counter()
    fails = []
    try:
        synth = os.path.join(work, "synth")
        shutil.rmtree(synth, ignore_errors=True)
        sh([exe, "synth", "--output", synth, "--groups", str(a.groups), "--group-size",
            str(a.group_size), "--parts", str(a.parts), "--seed", str(a.seed)])
        inputs = [("synth", synth)]
        if not a.no_edge:
            edge = os.path.join(work, "edge.parquet")
            make_edge_dataset(synth, edge, a.seed)
            inputs.append(("edge", edge))
        # Start every trajflow run at once, compute the references in this process meanwhile.
        procs = {}
        for label, data in inputs:
            for name in a.pipelines:
                tf_out = os.path.join(work, f"trajflow-{label}-{name}")
                shutil.rmtree(tf_out, ignore_errors=True)
                cmd = [exe, "reprocess", os.path.join(ROOT, "pipelines", f"{name}.toml"), "--input",
                       data, "--output", tf_out, "-w", str(a.workers)]
                procs[label, name] = (cmd, tf_out, subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        import reference
        ref_outs = {}
        for label, data in inputs:
            for name in a.pipelines:
                ref_outs[label, name] = os.path.join(work, f"reference-{label}-{name}.parquet")
                reference.run(name, data, ref_outs[label, name], quiet=True)
        for (label, name), (cmd, tf_out, proc) in procs.items():
            out, _ = proc.communicate()
            if proc.returncode != 0:
                print(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out}", file=sys.stderr)
                sys.exit(2)
            cols = PIPELINES[name]
            theirs = load_sorted(tf_out, ["episode_id", *cols])
            ours = load_sorted(ref_outs[label, name], ["episode_id", *cols])
            fails += compare(f"{label}/{name}", ours, theirs, cols)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"checked {len(a.pipelines)} pipeline(s) x {len(inputs)} dataset(s) in "
          f"{time.perf_counter() - t_start:.1f}s with {exe}")
    if fails:
        print("MISMATCH:\n  " + "\n  ".join(fails), file=sys.stderr)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
