#!/usr/bin/env python3
"""One RL iteration's learn phase of a SmolLM2 + LoRA run, redone in PyTorch + PEFT phase by phase:
the reference side of the per-phase throughput table (README, "SmolLM2 + LoRA: where one RL
iteration's time goes").

    python benches/rl_learn_reference.py RUN --iteration N [--epochs 2] [--minibatch 8]
        [--max-batch-tokens 4096] [--threads 2] [--head all|trained] [--results PATH.md]

Reads iteration N's trajectories of the trajflow run RUN, keeps the rows its learner trains
(`keep` true) and does the work trajflow's learner does for a token-level PPO loss, timed as
trajflow's `metrics.jsonl` times it:
- recompute: a forward without autograd over every kept episode, the log-softmax over the
  vocabulary at every position and the targets' log-probs (trajflow: the behaviour check, which
  is also LOOP's recomputed `logp_old`);
- forward: per epoch, minibatches of `minibatch` shuffled episodes, cut into micro-batches of at
  most `max-batch-tokens` padded tokens: forward with autograd, log-softmax, the targets'
  log-probs, the entropy (detached) at every position, the clipped PPO loss over action tokens;
- backward: its backward pass, and one AdamW step per minibatch.
SmolLM2-135M-Instruct from the same GGUF (dequantised to float32), PEFT LoRA r 8, alpha 16 on
q/k/v/o, base frozen, as in pipelines/smollm2/*.toml. Not redone: the restriction of drawn tokens'
distributions to the admissible actions (trajflow does it at action tokens only, a small share).
`--head trained` computes the vocabulary head only at the trained positions instead: what that
saving would be worth. Prints the table with trajflow's own `time_s` of that iteration beside it.
"""
import argparse
import glob
import json
import os
import random
import sys
import time

import pyarrow.parquet as pq
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from model_reference import DEFAULT_GGUF, smollm2_model  # noqa: E402

ACTION = 1  # src/ops/segment.rs


def kept_rows(run, iteration):
    files = sorted(glob.glob(os.path.join(run, "trajectories", f"part-{iteration:012d}-*.parquet")))
    if not files:
        sys.exit(f"{run}: no trajectories of iteration {iteration}")
    rows = []
    for f in files:
        for r in pq.read_table(f).to_pylist():
            if r.get("keep", True) is not False:
                rows.append(r)
    return rows


def micro_batches(batch, lengths, budget):
    """trajflow's learner::micro_batches: runs of at most `budget` padded tokens (one example
    alone may be longer)."""
    out, cur, longest = [], [], 0
    for i in batch:
        grown = max(longest, lengths[i])
        if cur and grown * (len(cur) + 1) > budget:
            out.append(cur)
            cur, grown = [], lengths[i]
        cur.append(i)
        longest = grown
    if cur:
        out.append(cur)
    return out


def pad(rows, idx, device):
    t = max(len(rows[i]["tokens"]) for i in idx)
    ids = torch.zeros(len(idx), t, dtype=torch.long)
    att = torch.zeros(len(idx), t, dtype=torch.long)
    mask = torch.zeros(len(idx), t - 1)
    adv = torch.zeros(len(idx), t - 1)
    for b, i in enumerate(idx):
        r = rows[i]
        n = len(r["tokens"])
        ids[b, :n] = torch.tensor(r["tokens"])
        att[b, :n] = 1
        seg = torch.tensor(r["segments"][1:], dtype=torch.long)
        mask[b, : n - 1] = (seg == ACTION).float()
        a = r.get("advantages") or [r.get("episode_advantage") or 0.0] * n
        adv[b, : n - 1] = torch.tensor(a[1:], dtype=torch.float)
    return ids.to(device), att.to(device), mask.to(device), adv.to(device)


def target_logprobs(model, ids, att, mask, head):
    """Log-probs of the next tokens `[B, T-1]` and the detached entropy at the computed positions."""
    out = model(input_ids=ids, attention_mask=att, output_hidden_states=head == "trained")
    if head == "all":
        logits = out.logits[:, :-1].float()
        logp_all = logits.log_softmax(-1)
        logp = logp_all.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            ent = -(logp_all.exp() * logp_all).sum(-1)
        return logp, ent
    hidden = out.hidden_states[-1][:, :-1]  # after the final norm
    at = mask.bool()
    lm_head = model.get_output_embeddings()
    logp_all = lm_head(hidden[at]).float().log_softmax(-1)
    logp = torch.zeros_like(mask)
    logp[at] = logp_all.gather(-1, ids[:, 1:][at].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        ent = torch.zeros_like(mask)
        ent[at] = -(logp_all.exp() * logp_all).sum(-1)
    return logp, ent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--iteration", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--minibatch", type=int, default=8)
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--clip", type=float, default=0.1)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--head", choices=["all", "trained"], default="all")
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--results", help="also write the table to this markdown file")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = kept_rows(a.run, a.iteration)
    lengths = [len(r["tokens"]) for r in rows]
    tokens = sum(lengths)
    actions = sum(sum(1 for s in r["segments"][1:] if s == ACTION) for r in rows)

    from peft import LoraConfig, get_peft_model
    model = get_peft_model(smollm2_model(a.gguf), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)
    order = list(range(len(rows)))

    t0 = time.perf_counter()
    old = {}
    with torch.no_grad():
        for mb in micro_batches(order, lengths, a.max_batch_tokens):
            ids, att, mask, _ = pad(rows, mb, "cpu")
            lp, _ = target_logprobs(model, ids, att, mask, a.head)
            for b, i in enumerate(mb):
                old[i] = lp[b]
    recompute = time.perf_counter() - t0

    fwd = bwd = 0.0
    rng = random.Random(0)
    for _ in range(a.epochs):
        rng.shuffle(order)
        for s in range(0, len(order), a.minibatch):
            batch = order[s: s + a.minibatch]
            micro = micro_batches(batch, lengths, a.max_batch_tokens)
            for mb in micro:
                t = time.perf_counter()
                ids, att, mask, adv = pad(rows, mb, "cpu")
                lp, _ = target_logprobs(model, ids, att, mask, a.head)
                lp_old = torch.stack([torch.nn.functional.pad(old[i], (0, lp.shape[1] - old[i].shape[0]))
                                      for i in mb])
                ratio = (lp - lp_old).exp()
                per_token = -torch.min(ratio * adv, ratio.clamp(1 - a.clip, 1 + a.clip) * adv) * mask
                loss = (per_token.sum(1) / mask.sum(1).clamp(min=1)).mean() * len(mb) / len(batch)
                fwd += time.perf_counter() - t
                t = time.perf_counter()
                loss.backward()
                bwd += time.perf_counter() - t
            t = time.perf_counter()
            opt.step()
            opt.zero_grad()
            bwd += time.perf_counter() - t

    trained = tokens * a.epochs
    ref = {"recompute": (recompute, tokens), "forward": (fwd, trained), "backward": (bwd, trained)}
    metrics = [json.loads(line) for line in open(os.path.join(a.run, "metrics.jsonl"))]
    ts = next((m.get("time_s", {}) for m in metrics if m["iteration"] == a.iteration), {})
    ours = {"recompute": ts.get("learn/recompute"), "forward": ts.get("learn/forward"),
            "backward": ts.get("learn/backward")}
    print(json.dumps({"impl": "pytorch+peft", "head": a.head, "episodes": len(rows), "tokens": tokens,
                      "action_tokens": actions, "threads": torch.get_num_threads(),
                      **{k: round(v[0], 2) for k, v in ref.items()}, "trajflow": ours}), flush=True)
    lines = [
        f"Iteration {a.iteration} of `{a.run}`: {len(rows)} kept episodes, {tokens:,} tokens, "
        f"{actions:,} of them action tokens (trained); {a.epochs} epochs, minibatches of {a.minibatch}, "
        f"micro-batches of at most {a.max_batch_tokens} padded tokens; PyTorch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, head over {'every position' if a.head == 'all' else 'trained positions only'}.",
        "",
        "| learn phase | tokens | trajflow s | trajflow tokens/s | PyTorch + PEFT s | PyTorch + PEFT tokens/s | trajflow speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, (sec, n) in ref.items():
        o = ours[k]
        lines.append(f"| {k} | {n:,} | {o:.1f} | {n / o:.0f} | {sec:.1f} | {n / sec:.0f} | **{sec / o:.2f}x** |"
                     if o else f"| {k} | {n:,} | - | - | {sec:.1f} | {n / sec:.0f} | - |")
    table = "\n".join(lines)
    print(table)
    if a.results:
        with open(a.results, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
