#!/usr/bin/env python3
"""PyTorch / transformers reference for the model benchmarks (training steps and greedy generation).

    python benches/model_reference.py --model {small,smollm2} --mode {train,lora,generate}
        [--batch 8] [--seq 256] [--steps 5] [--new-tokens 64] [--threads N] [--gguf PATH]
        [--precision float32|bf16] [--device cpu|cuda] [--generations 3]

Models (float32 weights, sdpa attention; --precision bf16 wraps the timed work in torch.autocast):
- small: a random-init LlamaForCausalLM (torch.manual_seed(0)): vocab 49152, hidden 128, ffn 344,
  4 layers, 4 heads / 2 KV heads, head_dim 32, rope_theta 1e4, rms_norm_eps 1e-5, tied embeddings.
- smollm2: SmolLM2-135M-Instruct from $TRAJFLOW_CACHE (default ~/.cache/trajflow)/models/SmolLM2-135M-Instruct.Q4_1.gguf,
  dequantised to float32 and converted by tests/parity/hf_gguf_logprobs.py's load_model (reused,
  not copied), then switched from eager to sdpa attention.

train: B x T token ids drawn uniformly from the vocabulary (seeded); a step is forward, token-mean
  NLL of next-token prediction (logits[:, :-1] vs ids[:, 1:]), backward, AdamW(lr 1e-5,
  weight_decay 0, foreach default) step, zero_grad. One untimed warm-up step, then --steps timed
  steps; tokens/s = B*T*steps / seconds.
generate: B prompts of 32 random tokens (same length, attention mask of ones); model.generate(
  do_sample=False, max_new_tokens=min_new_tokens=--new-tokens, use_cache=True, pad_token_id=0).
  One untimed warm-up generation of 4 new tokens, then --generations timed generations;
  tokens/s = B*new_tokens / seconds of the fastest.

Prints one JSON line: {"impl": "pytorch", "model", "mode", "precision", "device", "batch", "seq" | "new_tokens",
"dims" (vocab, hidden, layers, heads, kv heads, head dim, intermediate: for model FLOPs),
"tokens_per_s", "seconds", "peak_rss_mb", "torch_threads"}; peak RSS is the process's
resource.getrusage(RUSAGE_SELF).ru_maxrss (MB), so run one configuration per process.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_GGUF = os.path.join(os.environ.get("TRAJFLOW_CACHE") or os.path.expanduser("~/.cache/trajflow"),
                            "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPT_LEN = 32
SEED = 0


def small_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=49152, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, attn_implementation="sdpa",
    )
    torch.manual_seed(SEED)
    return LlamaForCausalLM(cfg).float()


def smollm2_model(gguf_path):
    sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))
    from hf_gguf_logprobs import load_model  # noqa: E402  (the parity test's GGUF -> HF conversion)

    model = load_model(gguf_path).float()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
    else:
        model.config._attn_implementation = "sdpa"
    return model


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def bench_train(model, batch, seq, steps, device):
    model.train()
    gen = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=gen).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)

    def step():
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    step()  # warm-up (also allocates the AdamW state)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    seconds = time.perf_counter() - t0
    assert torch.isfinite(loss).item()
    return batch * seq * steps, seconds


@torch.no_grad()
def bench_generate(model, batch, new_tokens, device, generations):
    model.eval()
    gen = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, model.config.vocab_size, (batch, PROMPT_LEN), generator=gen).to(device)
    mask = torch.ones_like(ids)

    def run(n):
        return model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                              min_new_tokens=n, use_cache=True, pad_token_id=0)

    run(4)  # warm-up
    seconds = float("inf")
    for _ in range(generations):  # the fastest of several identical generations
        t0 = time.perf_counter()
        out = run(new_tokens)
        sync(device)
        seconds = min(seconds, time.perf_counter() - t0)
        assert out.shape == (batch, PROMPT_LEN + new_tokens), out.shape
    return batch * new_tokens, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["small", "smollm2"], required=True)
    ap.add_argument("--mode", choices=["train", "lora", "generate"], required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--gguf", default=DEFAULT_GGUF, help="SmolLM2 GGUF (for --model smollm2)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--generations", type=int, default=3, help="timed generations; the fastest counts")
    ap.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                    help="bf16: torch.autocast(cpu, bfloat16) around the timed work (weights stay float32)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = (small_model() if a.model == "small" else smollm2_model(a.gguf)).to(a.device)
    if a.mode == "lora":
        # PEFT's LoRA, r 8, alpha 16 on the attention projections, the base frozen.
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))

    out = {"impl": "pytorch", "model": a.model, "mode": a.mode, "precision": a.precision, "device": a.device,
           "batch": a.batch}
    with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
        if a.mode in ("train", "lora"):
            tokens, seconds = bench_train(model, a.batch, a.seq, a.steps, a.device)
            out["seq"] = a.seq
        else:
            tokens, seconds = bench_generate(model, a.batch, a.new_tokens, a.device, a.generations)
            out["new_tokens"] = a.new_tokens
    c = model.config
    out["dims"] = [c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
                   c.num_key_value_heads, getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
                   c.intermediate_size]
    out.update(tokens_per_s=round(tokens / seconds, 2), seconds=round(seconds, 4),
               peak_rss_mb=round(peak_rss_mb(), 1), torch_threads=torch.get_num_threads())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
