#!/usr/bin/env python3
"""Benchmark: model training steps and greedy generation, trajflow (tch) vs PyTorch/transformers.

    python benches/model.py [--bin-bench PATH] [--quick] [--threads N] [--repeat N] [--only small:train ...]
                            [--results benches/results/model.md]

For each configuration below, the trajflow benchmark binary and benches/model_reference.py are
run as separate processes (so peak RSS is per run), both with the same CLI
    --model {small,smollm2} --mode {train,generate} --batch B (--seq T --steps S | --new-tokens N)
    --precision {float32,bf16}
and both print one JSON line {"impl", "model", "mode", "precision", "batch", "seq"/"new_tokens",
"tokens_per_s", "seconds", "peak_rss_mb", "torch_threads"} (see model_reference.py for what is
timed). Configurations, each in float32 and in bf16 (autocast on the PyTorch side):
    train    small    B=8, T=256, 5 steps       generate small    B=8, 32-token prompts, 64 new
    train    smollm2  B=4, T=256, 5 steps       generate smollm2  B=4, 32-token prompts, 64 new
--quick: 2 steps, 16 new tokens. --batch-scale N multiplies every batch. --only MODEL:MODE[:PRECISION] picks a subset. On a GPU machine:
--device cuda --peak-tflops P (the GPU's dense peak at the precision, e.g. 989 for an H100 SXM in
bf16) adds model FLOP utilisation.

The binary is --bin-bench, default: the newest executable target/release/deps/model-* (not *.d),
i.e. what `cargo bench --bench model --no-run` builds. Without one only the PyTorch side runs and
the trajflow column reads "-". Writes a markdown table to --results and the raw JSON lines next
to it (same name, .json).
"""
import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CONFIGS = [  # (model, mode, batch, precision)
    ("small", "train", 8, "float32"),
    ("smollm2", "train", 4, "float32"),
    ("smollm2", "lora", 4, "float32"),
    ("small", "generate", 8, "float32"),
    ("smollm2", "generate", 4, "float32"),
    ("small", "train", 8, "bf16"),
    ("smollm2", "train", 4, "bf16"),
    ("small", "generate", 8, "bf16"),
    ("smollm2", "generate", 4, "bf16"),
]
SEQ = 256
PROMPT_LEN = 32  # fixed in model_reference.py (and the Rust binary)


def flops_per_token(dims, mode, context):
    """Model FLOPs per token (PaLM's accounting): 6N + 12·L·H·hd·T for a training token, 2N +
    4·L·H·hd·ctx for a generated one, N = the weights of every matrix product (vocabulary head
    included); T = the sequence length, ctx = the mean context length while decoding. `dims` as
    model_reference.py reports them from the model's config."""
    v, d, layers, h, kvh, hd, inter = dims
    n = layers * (d * h * hd + 2 * d * kvh * hd + h * hd * d + 3 * d * inter) + v * d
    if mode == "train":
        return 6 * n + 12 * layers * h * hd * context
    if mode == "lora":  # no weight gradients for the frozen base: forward 2N + input gradients 2N
        return 4 * n + 12 * layers * h * hd * context
    return 2 * n + 4 * layers * h * hd * context


def default_bin():
    cands = [p for p in glob.glob(os.path.join(ROOT, "target", "release", "deps", "model-*"))
             if not p.endswith(".d") and os.path.isfile(p) and os.access(p, os.X_OK)]
    return max(cands, key=os.path.getmtime) if cands else None


def run_one(cmd):
    """Run one benchmark process; return its JSON result (dict) or None on failure."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("{")]
    if r.returncode != 0 or not lines:
        print(f"  FAILED (rc {r.returncode})\n{r.stdout[-2000:]}{r.stderr[-4000:]}", file=sys.stderr)
        return None
    res = json.loads(lines[-1])
    print("  " + lines[-1], file=sys.stderr, flush=True)
    return res


def best(kept, res):
    """The faster of two results (either may be None)."""
    if kept is None or (res is not None and res["tokens_per_s"] > kept["tokens_per_s"]):
        return res
    return kept


def fmt_tps(res):
    return "-" if res is None else f"{res['tokens_per_s']:,.0f}"


def fmt_rss(res):
    return "-" if res is None else f"{res['peak_rss_mb']:,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-bench", help="trajflow model benchmark binary (default: newest target/release/deps/model-*)")
    ap.add_argument("--quick", action="store_true", help="2 train steps, 16 new tokens")
    ap.add_argument("--threads", type=int, help="passed to both sides as --threads")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="passed to both sides")
    ap.add_argument("--peak-tflops", type=float,
                    help="the device's peak dense TFLOP/s at the benchmarked precision, for an MFU column")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each side N times, alternating, and keep each side's best (noisy machines)")
    ap.add_argument("--only", nargs="*", help="subset of MODEL:MODE[:PRECISION], e.g. small:train smollm2:generate:bf16")
    ap.add_argument("--batch-scale", type=int, default=1,
                    help="multiply every configuration's batch by N (a GPU needs larger batches than a CPU)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for model_reference.py")
    ap.add_argument("--results", default=os.path.join(HERE, "results", "model.md"))
    a = ap.parse_args()

    steps, new_tokens = (2, 16) if a.quick else (5, 64)
    binary = a.bin_bench or default_bin()
    if binary and not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"warning: {binary} is not an executable file; running the PyTorch side only", file=sys.stderr)
        binary = None
    if binary is None:
        print("warning: no trajflow model benchmark binary; running the PyTorch side only", file=sys.stderr)
    configs = [c for c in CONFIGS if not a.only or f"{c[0]}:{c[1]}" in a.only or f"{c[0]}:{c[1]}:{c[3]}" in a.only]
    if not configs:
        ap.error(f"--only matched nothing; choose from {[f'{m}:{o}[:{p}]' for m, o, _, p in CONFIGS]}")

    load_before = os.getloadavg()
    rows, raw, failed = [], [], False
    for model, mode, batch, precision in configs:
        batch *= a.batch_scale
        args = ["--model", model, "--mode", mode, "--batch", str(batch), "--precision", precision,
                "--device", a.device]
        if mode in ("train", "lora"):
            args += ["--seq", str(SEQ), "--steps", str(steps)]
            shape = f"B={batch}, T={SEQ}, {steps} steps"
        else:
            args += ["--new-tokens", str(new_tokens)]
            shape = f"B={batch}, prompt {PROMPT_LEN}, +{new_tokens} tokens"
        if a.threads:
            args += ["--threads", str(a.threads)]
        tf = pt = None
        for _ in range(a.repeat):
            if binary:
                r = run_one([binary] + args)
                failed |= r is None
                tf = best(tf, r)
            r = run_one([a.python, os.path.join(HERE, "model_reference.py")] + args)
            failed |= r is None
            pt = best(pt, r)
        raw += [r for r in (tf, pt) if r is not None]
        ratio = f"**{tf['tokens_per_s'] / pt['tokens_per_s']:.2f}x**" if tf and pt else "-"
        dims = pt.get("dims") if pt else None
        fpt = dims and flops_per_token(dims, mode, SEQ if mode != "generate" else PROMPT_LEN + new_tokens / 2)

        def tflops(res):
            if res is None or not fpt:
                return "-"
            t = res["tokens_per_s"] * fpt / 1e12
            return f"{t:.3f}" + (f" ({100 * t / a.peak_tflops:.1f}%)" if a.peak_tflops else "")
        rows.append(f"| {model} | {mode} | {precision} | {shape} | {fmt_tps(tf)} | {fmt_tps(pt)} | {ratio} "
                    f"| {tflops(tf)} | {tflops(pt)} | {fmt_rss(tf)} | {fmt_rss(pt)} |")

    threads = next((r["torch_threads"] for r in raw if r.get("impl") == "pytorch"), None)
    tf_threads = next((r["torch_threads"] for r in raw if r.get("impl") == "trajflow"), None)
    load_after = os.getloadavg()
    cmdline = "python benches/model.py" + (" --quick" if a.quick else "") + \
        (f" --threads {a.threads}" if a.threads else "") + \
        (f" --batch-scale {a.batch_scale}" if a.batch_scale > 1 else "") + (f" --repeat {a.repeat}" if a.repeat > 1 else "") + \
        (f" --device {a.device}" if a.device != "cpu" else "") + \
        (f" --peak-tflops {a.peak_tflops}" if a.peak_tflops else "")
    bin_desc = f"`{os.path.relpath(binary, ROOT)}`" if binary else "none (trajflow not run)"
    out = [
        "# Model benchmarks: trajflow (tch) vs PyTorch/transformers",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPU(s), device {a.device}; torch threads: trajflow {tf_threads or '-'}, "
        f"PyTorch {threads or '-'}; load average (1 min) {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; trajflow binary {bin_desc}; `{cmdline}`.",
        "",
        "Models: *small* = random-init Llama (vocab 49152, hidden 128, 4 layers, 4 heads / 2 KV heads, "
        "tied embeddings); *smollm2* = SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to float32). "
        "PyTorch side: `benches/model_reference.py` (transformers LlamaForCausalLM, sdpa attention). "
        "*train*: tokens/s = B·T·steps / time of the timed steps (forward, next-token NLL, backward, "
        "AdamW lr 1e-5; one untimed warm-up step). *lora*: the same step with a LoRA adapter (r 8, alpha 16, "
        "q/k/v/o projections; PyTorch side: peft) and the base frozen, AdamW on the adapter only; "
        "model FLOPs 4N + 12·L·H·hd·T (no weight gradients for the base). *generate*: greedy decoding with KV cache, "
        "tokens/s = generated tokens (B·new) / time of the fastest of 3 identical generations in the "
        "process (one untimed 4-token warm-up). Peak RSS: "
        "the process's maxrss (each run is its own process; host memory). Ratio = trajflow / PyTorch. "
        "TFLOP/s: tokens/s x model FLOPs per token (6N + 12·L·H·hd·T training, 2N + 4·L·H·hd·ctx "
        "decoding; N = weights of all matrix products); MFU = that / the peak given with --peak-tflops. *bf16*: "
        "trajflow `precision = bf16` (bfloat16 matrix products, float32 weights), PyTorch "
        f"`torch.autocast('{a.device}', torch.bfloat16)` around the same work. "
        f"Each side run {a.repeat} time(s), alternating; the best run of each side is shown.",
        "",
        "| model | mode | precision | shape | trajflow tokens/s | PyTorch tokens/s | ratio "
        "| trajflow TFLOP/s" + (" (MFU)" if a.peak_tflops else "") + " | PyTorch TFLOP/s"
        + (" (MFU)" if a.peak_tflops else "") + " | trajflow peak RSS (MB) | PyTorch peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    with open(a.results, "w") as f:
        f.write("\n".join(out))
    with open(os.path.splitext(a.results)[0] + ".json", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in raw)
    print("\n".join(out))
    print(f"wrote {a.results}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
