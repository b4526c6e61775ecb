#!/usr/bin/env python3
"""Build a tiny RANDOM Llama/Qwen2 model with Hugging Face transformers and dump reference outputs.

Usage:
    python tests/parity/make_tiny.py OUTDIR --arch {llama,qwen2} [--seed 0] [--tie]

Writes into OUTDIR:
  config.json, model.safetensors (float32, save_pretrained(safe_serialization=True)),
  generation_config.json (written by transformers, not needed by the Rust side), and
  reference.json = {"arch", "seed", "tie_word_embeddings", "input_ids": [[...], [...]],
                    "logits": [[T][vocab]] per sequence, "logprobs": [T-1] per sequence
                    (log_softmax(logits[t])[ids[t+1]]), "greedy": [8 new ids] per sequence}.
Each sequence is run ALONE (batch of 1, no padding). Greedy uses model.generate(do_sample=False,
max_new_tokens=8) with EOS disabled so exactly 8 tokens always come back; it is cross-checked
against a plain argmax loop without KV cache.

Model: vocab 256, hidden 64, intermediate 160, 2 layers, 4 heads, 2 KV heads (head_dim 16),
max_position_embeddings 128, rms_norm_eps 1e-6, rope_theta 1e4 (llama) / 1e6 (qwen2; q/k/v bias).
Every parameter (norm weights and biases included) ~ N(0, 0.5^2) drawn after torch.manual_seed(seed),
so logits are far from uniform. Eager attention, float32, CPU: deterministic.
Note: transformers 5 writes rope_theta as config.json["rope_parameters"]["rope_theta"].
"""
import argparse
import json
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

INPUT_IDS = [
    [1, 17, 42, 255, 3, 99, 128, 7, 64, 200, 31],  # 11 tokens
    [5, 250, 12, 77, 0, 143, 36],  # 7 tokens
]
NEW_TOKENS = 8


def build(arch, tie):
    common = dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  rms_norm_eps=1e-6, tie_word_embeddings=tie, attn_implementation="eager")
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(rope_theta=10000.0, **common))
    return Qwen2ForCausalLM(Qwen2Config(rope_theta=1e6, **common))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--arch", choices=["llama", "qwen2"], required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tie", action="store_true", help="tie lm_head to embed_tokens")
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    model = build(a.arch, a.tie).float().eval()
    torch.manual_seed(a.seed)
    with torch.no_grad():
        for _, p in model.named_parameters():  # tied lm_head is the same tensor: listed once
            p.normal_(0.0, 0.5)
    if a.tie:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # Greedy must run the full 8 steps: no EOS stop (a random model may emit id 1/2 any time).
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0

    os.makedirs(a.outdir, exist_ok=True)
    model.save_pretrained(a.outdir, safe_serialization=True)

    ref = {"arch": a.arch, "seed": a.seed, "tie_word_embeddings": a.tie, "input_ids": INPUT_IDS,
           "logits": [], "logprobs": [], "greedy": []}
    with torch.no_grad():
        for ids in INPUT_IDS:
            x = torch.tensor([ids])
            logits = model(x).logits[0].float()  # [T, V]
            lp = torch.log_softmax(logits, -1)[:-1].gather(1, x[0, 1:, None])[:, 0]
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=NEW_TOKENS)
            greedy = out[0, len(ids):].tolist()
            seq = list(ids)  # cross-check: argmax loop, full recompute, no cache
            for _ in range(NEW_TOKENS):
                seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
            assert seq[len(ids):] == greedy, (seq[len(ids):], greedy)
            ref["logits"].append([[float(v) for v in row] for row in logits.tolist()])
            ref["logprobs"].append([float(v) for v in lp.tolist()])
            ref["greedy"].append(greedy)
    with open(os.path.join(a.outdir, "reference.json"), "w") as f:
        json.dump(ref, f)
    print(f"wrote {a.outdir}: {a.arch} tie={a.tie} seed={a.seed} greedy={ref['greedy']}")


if __name__ == "__main__":
    main()
