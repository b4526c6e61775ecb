#!/usr/bin/env python3
"""Dump a small reference fixture from a GGUF file using llama.cpp's `gguf` package.

Used to produce tests/fixtures/smollm2_gguf_probe.json, which the Rust GGUF reader
(src/model/gguf.rs) checks itself against in its integration test.

    python3 -m venv /tmp/ggufvenv && /tmp/ggufvenv/bin/pip install gguf numpy
    /tmp/ggufvenv/bin/python benches/gguf_probe.py \
        SmolLM2-135M-Instruct.Q4_1.gguf > tests/fixtures/smollm2_gguf_probe.json
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

# Tensors of different ggml types (Q8_0, Q4_1, F32) and layouts.
TENSORS = [
    "token_embd.weight",
    "blk.0.attn_q.weight",
    "blk.29.ffn_down.weight",
    "blk.0.attn_norm.weight",
]


def main(path: str) -> None:
    r = GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    out = {
        "gguf_package_version": __import__("importlib.metadata").metadata.version("gguf"),
        "file": path.split("/")[-1],
        "tensor_count": len(r.tensors),
        "data_offset": int(r.data_offset),
        "tensors": [],
    }
    for name in TENSORS:
        t = by_name[name]
        x = dequantize(t.data, t.tensor_type).astype(np.float32)
        # numpy shape == PyTorch order == reversed GGUF dims.
        shape = [int(d) for d in reversed([int(v) for v in t.shape])]
        x = x.reshape(shape)
        flat = x.reshape(-1)
        row1 = x.reshape(shape[0], -1)[1] if len(shape) > 1 else flat
        out["tensors"].append(
            {
                "name": name,
                "ggml_type": t.tensor_type.name,
                "shape": shape,
                "first8": [float(v) for v in flat[:8]],
                "row1_first8": [float(v) for v in row1[:8]],
                "last": float(flat[-1]),
                "sum": float(flat.astype(np.float64).sum()),
                "abs_sum": float(np.abs(flat.astype(np.float64)).sum()),
            }
        )
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
