#!/usr/bin/env python3
"""Independent PyTorch reference of trajflow's advantage pipelines (veRL style).

    python benches/reference.py PIPELINE --input DATASET --output OUT.parquet [--all-columns]

PIPELINE is one of loop_advantages, grpo_advantages, poad_advantages, ntpo_advantages,
reinforce_pp_advantages (a path to pipelines/NAME.toml is accepted too; only its stem is used,
the parameters below are hard-coded to those of the shipped TOML files so that this stays an
independent implementation rather than a second interpreter of the same TOML).

DATASET is a trajflow dataset directory (committed parts read in the sorted order of the
`_manifest/*.json` names), a directory of Parquet files, or one Parquet file. The output is one
Parquet file with `episode_id` and the pipeline's output columns (with --all-columns: every
input column too, which is what `trajflow reprocess` writes). A timing breakdown
(read / pad / compute / write, seconds) is printed to stderr as one JSON line.

Everything per token is computed on padded [B, T] tensors with a mask; the only Python loops run
over the time dimension (tokens, like veRL's compute_gae) or over the turn dimension (<= a few
dozen), never over episodes.
"""
import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

ACTION = 1
PAD_SEGMENT = 255  # not a valid segment code: never an action token

# Parameters of the shipped pipelines/*.toml.
PIPELINES = {
    "loop_advantages": dict(kind="group", mode="leave_one_out", min_abs=0.01),
    "grpo_advantages": dict(kind="group", mode="mean_std", epsilon=1e-6),
    "poad_advantages": dict(kind="gae", gamma=0.95, lam=0.95, gamma_intra=1.0, lambda_intra=0.95),
    "ntpo_advantages": dict(kind="gae", gamma=0.95, lam=0.95, gamma_intra=0.95, lambda_intra=0.95),
    "reinforce_pp_advantages": dict(kind="reinforce_pp", gamma=1.0),
}
WHITEN_EPS = 1e-8


# ----------------------------------------------------------------------------------------- I/O
def dataset_files(path):
    """Parquet files of a dataset, in commit order."""
    if os.path.isfile(path):
        return [path]
    manifest = os.path.join(path, "_manifest")
    if os.path.isdir(manifest):
        files = []
        for name in sorted(os.listdir(manifest)):
            if name.endswith(".json"):
                with open(os.path.join(manifest, name)) as f:
                    files.append(os.path.join(path, json.load(f)["part"]))
        return files
    return sorted(glob.glob(os.path.join(path, "*.parquet")))


def read_dataset(path, columns):
    tables = [pq.read_table(f, columns=columns) for f in dataset_files(path)]
    table = pa.concat_tables(tables).combine_chunks()
    # Upsert semantics: a later row with the same episode_id supersedes an earlier one.
    if pc.count_distinct(table["episode_id"]).as_py() != table.num_rows:
        ids = table["episode_id"].to_numpy(zero_copy_only=False)[::-1]
        _, first_in_reversed = np.unique(ids, return_index=True)
        keep = np.sort(table.num_rows - 1 - first_in_reversed)
        table = table.take(pa.array(keep))
    return table


def list_parts(col):
    """(offsets int64 numpy [B+1], flat values numpy) of a list column (one chunk)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if isinstance(arr, pa.ListArray):
        arr = arr.cast(pa.large_list(arr.type.value_type))
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    base = offsets[0]
    return offsets - base, values[base:offsets[-1]]


class Padder:
    """Scatters flat list values into a padded [B, T] tensor (row-major valid positions)."""

    def __init__(self, offsets):
        lengths = np.diff(offsets)
        self.B = len(lengths)
        self.T = int(lengths.max()) if self.B else 0
        self.lengths = torch.from_numpy(lengths)
        self.offsets = offsets
        # valid[b, t] = t < len(b); flattened row-major it enumerates the flat values in order.
        self.valid = torch.arange(self.T).unsqueeze(0) < self.lengths.unsqueeze(1)
        self.valid_np = self.valid.numpy()

    def pad(self, flat, fill, dtype):
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        out = np.full((self.B, self.T), fill, dtype=np_dtype)
        out[self.valid_np] = flat
        return torch.from_numpy(out)

    def unpad(self, padded):
        flat = padded[self.valid].numpy()
        item = pa.bool_() if padded.dtype == torch.bool else pa.float32()
        return pa.LargeListArray.from_arrays(pa.array(self.offsets), pa.array(flat)).cast(pa.list_(item))


# ------------------------------------------------------------------------------ group baselines
def group_advantages(table, mode, epsilon=1e-6):
    """Per-episode advantage (float64) from the rewards of its group_id."""
    codes = pc.dictionary_encode(table["group_id"]).combine_chunks().indices.to_numpy()
    g = torch.from_numpy(codes.astype(np.int64))
    r = torch.from_numpy(table["reward"].to_numpy().astype(np.float64))
    G = int(g.max()) + 1 if len(g) else 0
    n = torch.zeros(G, dtype=torch.float64).index_add_(0, g, torch.ones_like(r))
    s = torch.zeros(G, dtype=torch.float64).index_add_(0, g, r)
    lo = torch.full((G,), float("inf"), dtype=torch.float64).scatter_reduce_(0, g, r, "amin")
    hi = torch.full((G,), -float("inf"), dtype=torch.float64).scatter_reduce_(0, g, r, "amax")
    # All-equal groups: the mean is that value exactly, so every advantage is exactly 0.
    mean = torch.where(lo == hi, lo, s / n)
    centred = r - mean[g]
    ng = n[g]
    if mode == "leave_one_out":
        # R_i - (sum - R_i)/(n - 1), evaluated as (R_i - mean) n/(n - 1) like trajflow.
        adv = centred * ng / (ng - 1.0)
    elif mode == "mean_std":
        m2 = torch.zeros(G, dtype=torch.float64).index_add_(0, g, centred * centred)
        std = (m2 / (n - 1.0)).sqrt()[g]
        adv = torch.where(centred == 0.0, torch.zeros_like(centred), centred / (std + epsilon))
    else:
        raise ValueError(mode)
    return torch.where(ng <= 1.0, torch.zeros_like(adv), adv)


# ------------------------------------------------------------------------ token-level helpers
def action_structure(seg, turns, n_turns):
    """Action mask, last-token-of-action mask and clamped turn index per token, [B, T]."""
    act = seg == ACTION
    nxt_act = torch.zeros_like(act)
    nxt_act[:, :-1] = act[:, 1:]
    nxt_turn = torch.full_like(turns, -1)
    nxt_turn[:, :-1] = turns[:, 1:]
    is_last = act & ~(nxt_act & (nxt_turn == turns))
    tclamp = turns.clamp(min=0)
    tclamp = torch.minimum(tclamp, (n_turns - 1).clamp(min=0).unsqueeze(1))
    tclamp = torch.where(act, tclamp, torch.zeros_like(tclamp))
    return act, is_last, tclamp


def folded_steps(act, tclamp, rewards, n_turns, gamma):
    """Folds empty turns into the preceding non-empty action (loop over the turn dimension).

    Returns per-turn tensors [B, NT]: effective reward R, discount D = gamma^(k+1) and the
    number of turns covered n = k+1, defined at turns that have an action (others unused).
    """
    B, NT = rewards.shape
    has_action = torch.zeros((B, NT), dtype=torch.int64)
    if NT:
        has_action.scatter_add_(1, tclamp, act.to(torch.int64))
    has_action = has_action > 0
    R = torch.zeros((B, NT), dtype=torch.float32)
    D = torch.zeros((B, NT), dtype=torch.float32)
    N = torch.zeros((B, NT), dtype=torch.int64)
    cur = torch.full((B,), -1, dtype=torch.int64)
    accR = torch.zeros(B, dtype=torch.float32)
    accD = torch.zeros(B, dtype=torch.float32)
    accN = torch.zeros(B, dtype=torch.int64)
    g = torch.tensor(gamma, dtype=torch.float32)
    rows = torch.arange(B)
    for t in range(NT):
        valid = t < n_turns
        new = has_action[:, t] & valid
        empty = ~has_action[:, t] & valid & (cur >= 0)
        r = rewards[:, t]
        accR = torch.where(new, r, torch.where(empty, accR + accD * r, accR))
        accD = torch.where(new, g.expand(B), torch.where(empty, accD * g, accD))
        accN = torch.where(new, torch.ones_like(accN), torch.where(empty, accN + 1, accN))
        cur = torch.where(new, torch.full_like(cur, t), cur)
        sel = rows[cur >= 0]
        c = cur[sel]
        R[sel, c] = accR[sel]
        D[sel, c] = accD[sel]
        N[sel, c] = accN[sel]
    return R, D, N


def gae_tokens(act, is_last, tclamp, V, R, D, N, bootstrap, p):
    """Token-level GAE with intra-action discount; backward loop over T (veRL compute_gae)."""
    B, T = V.shape
    lam = torch.tensor(p["lam"], dtype=torch.float32)
    Rt = torch.gather(R, 1, tclamp) if R.shape[1] else torch.zeros_like(V)
    Dt = torch.gather(D, 1, tclamp) if D.shape[1] else torch.zeros_like(V)
    Nt = torch.gather(N, 1, tclamp) if N.shape[1] else torch.zeros_like(V, dtype=torch.int64)
    gi = torch.tensor(p["gamma_intra"], dtype=torch.float32)
    intra = gi * torch.tensor(p["lambda_intra"], dtype=torch.float32)
    # Per token: gae = r + a * v_next - V + c * gae_next, with (r, a, c) = (R, D, D λ^n) at the
    # last token of an action and (0, γ_intra, γ_intra λ_intra) inside it.
    r_tok = torch.where(is_last, Rt, torch.zeros_like(V))
    a_tok = torch.where(is_last, Dt, gi.expand(B, T))
    c_tok = torch.where(is_last, Dt * torch.pow(lam, Nt.to(torch.float32)), intra.expand(B, T))
    # Time-major copies so that each step of the scan reads contiguous memory.
    actT, VT = act.t().contiguous(), V.t().contiguous()
    rT, aT, cT = r_tok.t().contiguous(), a_tok.t().contiguous(), c_tok.t().contiguous()
    advT = torch.zeros((T, B), dtype=torch.float32)
    v_next = bootstrap.clone()
    g_next = torch.zeros(B, dtype=torch.float32)
    for t in range(T - 1, -1, -1):
        m = actT[t]
        vt = VT[t]
        g = rT[t] + aT[t] * v_next - vt + cT[t] * g_next
        g_next = torch.where(m, g, g_next)
        v_next = torch.where(m, vt, v_next)
        advT[t] = torch.where(m, g, torch.zeros_like(g))
    adv = advT.t()
    ret = torch.where(act, adv + V, torch.zeros_like(V))
    return adv, ret


def reinforce_pp_tokens(act, is_last, tclamp, R, D, gamma):
    """REINFORCE++ returns, reset at non-action gaps (veRL); backward loop over T."""
    B, T = act.shape
    Rt = torch.gather(R, 1, tclamp) if R.shape[1] else torch.zeros(B, T)
    Dt = torch.gather(D, 1, tclamp) if D.shape[1] else torch.zeros(B, T)
    g = torch.tensor(gamma, dtype=torch.float32)
    r_tok = torch.where(is_last, Rt, torch.zeros_like(Rt))
    a_tok = torch.where(is_last, Dt, g.expand(B, T))
    actT, rT, aT = act.t().contiguous(), r_tok.t().contiguous(), a_tok.t().contiguous()
    outT = torch.zeros((T, B), dtype=torch.float32)
    running = torch.zeros(B, dtype=torch.float32)
    for t in range(T - 1, -1, -1):
        m = actT[t]
        x = rT[t] + aT[t] * running
        # A non-action token between two actions zeroes the running sum (veRL reset); padding
        # and tokens after the last action are non-action too, where running is 0 anyway.
        running = torch.where(m, x, torch.zeros_like(x))
        outT[t] = running
    return outT.t()


def whiten(x, act, eps=WHITEN_EPS):
    """(x - mean)/sqrt(var_unbiased + eps) over all action tokens, statistics in float64."""
    sel = x[act].double()
    n = sel.numel()
    mean = sel.mean() if n else torch.tensor(0.0, dtype=torch.float64)
    var = ((sel - mean) ** 2).sum() / (n - 1) if n >= 2 else torch.tensor(0.0, dtype=torch.float64)
    scale = 1.0 / torch.sqrt(var + eps)
    y = ((x.double() - mean) * scale).to(torch.float32)
    return torch.where(act, y, torch.zeros_like(y))


# ------------------------------------------------------------------------------------- driver
def run(pipeline, input_path, output_path, all_columns=False, quiet=False):
    name = os.path.splitext(os.path.basename(pipeline))[0]
    if name not in PIPELINES:
        raise SystemExit(f"unknown pipeline {pipeline!r}; expected one of {sorted(PIPELINES)}")
    p = PIPELINES[name]
    timing = {}

    t0 = time.perf_counter()
    if p["kind"] == "group":
        cols = ["episode_id", "group_id", "reward", "segments"]
    else:
        cols = ["episode_id", "segments", "turns", "turn_rewards", "values", "truncated",
                "bootstrap_value"]
    table = read_dataset(input_path, None if all_columns else cols)
    timing["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    seg_off, seg_flat = list_parts(table["segments"])
    pad = Padder(seg_off)
    seg = pad.pad(seg_flat, PAD_SEGMENT, torch.uint8)
    act = seg == ACTION
    if p["kind"] != "group":
        turns_off, turns_flat = list_parts(table["turns"])
        val_off, val_flat = list_parts(table["values"])
        if not (np.array_equal(turns_off, seg_off) and np.array_equal(val_off, seg_off)):
            raise SystemExit("turns/values lengths differ from segments")
        turns = pad.pad(turns_flat, -1, torch.int64)
        V = pad.pad(val_flat, 0.0, torch.float32)
        tr_off, tr_flat = list_parts(table["turn_rewards"])
        tr_pad = Padder(tr_off)
        rewards = tr_pad.pad(tr_flat, 0.0, torch.float32) if tr_pad.T else torch.zeros((pad.B, 0))
        n_turns = tr_pad.lengths
        truncated = torch.from_numpy(table["truncated"].to_numpy(zero_copy_only=False))
        bv = torch.from_numpy(pc.fill_null(table["bootstrap_value"], 0.0).to_numpy()
                              .astype(np.float32))
        bootstrap = torch.where(truncated, bv, torch.zeros_like(bv))
    timing["pad"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = {}
    if p["kind"] == "group":
        a64 = group_advantages(table, p["mode"], p.get("epsilon", 1e-6))
        a32 = a64.to(torch.float32)
        out["episode_advantage"] = pa.array(a32.numpy())
        if "min_abs" in p:
            out["keep"] = pa.array((a64.abs() >= p["min_abs"]).numpy())
        adv = torch.where(act, a32.unsqueeze(1).expand_as(act), torch.zeros((), dtype=torch.float32))
        out["advantages"] = adv
    else:
        act, is_last, tclamp = action_structure(seg, turns, n_turns)
        R, D, N = folded_steps(act, tclamp, rewards, n_turns, p["gamma"])
        if p["kind"] == "gae":
            out["action_end"] = is_last  # the action_boundaries stage's column
            adv, ret = gae_tokens(act, is_last, tclamp, V, R, D, N, bootstrap, p)
            out["advantages"] = whiten(adv, act)
            out["returns"] = ret
        else:
            ret = reinforce_pp_tokens(act, is_last, tclamp, R, D, p["gamma"])
            out["returns"] = ret
            out["advantages"] = whiten(ret, act)
    timing["compute"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    arrays = {k: (pad.unpad(v) if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    if all_columns:
        result = table
        for k, v in arrays.items():
            if k in result.column_names:
                result = result.set_column(result.column_names.index(k), k, v)
            else:
                result = result.append_column(k, v)
    else:
        result = pa.table({"episode_id": table["episode_id"], **arrays})
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    pq.write_table(result, output_path)
    timing["write"] = time.perf_counter() - t0

    timing.update(pipeline=name, rows=pad.B, tokens=int(seg_off[-1]), padded_T=pad.T,
                  torch_threads=torch.get_num_threads())
    if not quiet:
        print(json.dumps(timing), file=sys.stderr)
    return timing


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--all-columns", action="store_true",
                    help="write every input column too (like trajflow reprocess)")
    a = ap.parse_args()
    run(a.pipeline, a.input, a.output, a.all_columns)


if __name__ == "__main__":
    main()
