#!/usr/bin/env python3
"""Reference log-probs / greedy decoding for a llama-architecture GGUF, computed by Hugging Face
transformers (LlamaForCausalLM, eager attention, float32, CPU).

Usage:
    python tests/parity/hf_gguf_logprobs.py GGUF_PATH --ids IDS_JSON --out OUT_JSON
        IDS_JSON = {"ids": [...]}; writes OUT_JSON = {"ids": [...], "logprobs": [...]} where
        logprobs[t] = log_softmax(logits[t])[ids[t+1]] (len(ids)-1 values).
    python tests/parity/hf_gguf_logprobs.py GGUF_PATH --generate PROMPT_IDS_JSON [--new-tokens 16]
        greedy-decodes from {"ids": [...]} (EOS does not stop it) and prints {"ids": [...new ids...], "text": ...} as JSON
        (text decoded with the tokenizer transformers builds from the GGUF).

How: the gguf package (llama.cpp's reader) dequantises every tensor to float32; names are mapped
to HF names (token_embd -> model.embed_tokens, blk.N.attn_q -> model.layers.N.self_attn.q_proj,
..., output_norm -> model.norm, output -> lm_head; no output.weight = tied embeddings), and the
Q/K row permutation applied by llama.cpp's convert_hf_to_gguf.py
    w.reshape(n_head, 2, head_dim//2, dim).swapaxes(1, 2).reshape(w.shape)
is undone for attn_q (n_head) and attn_k (n_head_kv). The LlamaConfig comes from llama.* metadata.
Deterministic: no sampling, no randomness reaches the outputs.
"""
import argparse
import json
import os

import gguf
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py's permute(): GGUF q/k rows -> HF rows."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def meta(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def load_config(reader, tied):
    arch = meta(reader, "general.architecture")
    assert arch == "llama", f"only llama-architecture GGUFs are supported, got {arch!r}"
    hidden, n_head = meta(reader, "llama.embedding_length"), meta(reader, "llama.attention.head_count")
    return LlamaConfig(
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        hidden_size=hidden,
        intermediate_size=meta(reader, "llama.feed_forward_length"),
        num_hidden_layers=meta(reader, "llama.block_count"),
        num_attention_heads=n_head,
        num_key_value_heads=meta(reader, "llama.attention.head_count_kv", n_head),
        head_dim=meta(reader, "llama.rope.dimension_count", hidden // n_head),
        max_position_embeddings=meta(reader, "llama.context_length", 2048),
        rope_theta=float(meta(reader, "llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(meta(reader, "llama.attention.layer_norm_rms_epsilon")),
        bos_token_id=meta(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=meta(reader, "tokenizer.ggml.eos_token_id"),
        tie_word_embeddings=tied,
        attn_implementation="eager",
    )


def load_model(gguf_path):
    reader = gguf.GGUFReader(gguf_path)
    names = {t.name for t in reader.tensors}
    cfg = load_config(reader, tied="output.weight" not in names)
    sd = {}
    for t in reader.tensors:
        w = np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        parts = t.name.split(".")
        if parts[0] == "blk":
            n, kind = int(parts[1]), parts[2]
            if kind == "attn_q":
                w = unpermute(w, cfg.num_attention_heads)
            elif kind == "attn_k":
                w = unpermute(w, cfg.num_key_value_heads)
            hf = f"model.layers.{n}.{LAYER_NAMES[kind]}.{parts[3]}"
        else:
            hf = TOP_NAMES[t.name]
        sd[hf] = torch.from_numpy(w.copy())
    if cfg.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float().eval()
    model.load_state_dict(sd, strict=True)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def load_tokenizer(gguf_path):
    from transformers import AutoTokenizer
    d, name = os.path.split(os.path.abspath(gguf_path))
    return AutoTokenizer.from_pretrained(d, gguf_file=name)


@torch.no_grad()
def logprobs(model, ids):
    x = torch.tensor([ids])
    lp = torch.log_softmax(model(x).logits[0].float(), -1)
    return [float(v) for v in lp[:-1].gather(1, x[0, 1:, None])[:, 0].tolist()]


@torch.no_grad()
def greedy(model, ids, n):
    x = torch.tensor([ids])
    model.generation_config.eos_token_id = None  # never stop early: always exactly n tokens
    model.generation_config.pad_token_id = model.config.eos_token_id
    out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n)
    return out[0, len(ids):].tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf_path")
    ap.add_argument("--ids", help='JSON file {"ids": [...]} to score')
    ap.add_argument("--out", help="where to write {\"ids\", \"logprobs\"}")
    ap.add_argument("--generate", metavar="PROMPT_IDS_JSON", help="greedy-decode from these ids and print")
    ap.add_argument("--new-tokens", type=int, default=16)
    a = ap.parse_args()
    if not a.generate and not (a.ids and a.out):
        ap.error("need --ids IDS_JSON --out OUT_JSON, or --generate PROMPT_IDS_JSON")
    model = load_model(a.gguf_path)
    if a.ids:
        ids = json.load(open(a.ids))["ids"]
        with open(a.out, "w") as f:
            json.dump({"ids": ids, "logprobs": logprobs(model, ids)}, f)
    if a.generate:
        new = greedy(model, json.load(open(a.generate))["ids"], a.new_tokens)
        text = load_tokenizer(a.gguf_path).decode(new)
        print(json.dumps({"ids": new, "text": text}))


if __name__ == "__main__":
    main()
