//! Model throughput on this machine, trajflow's side of `benches/model.py` (the same CLI and JSON
//! as `benches/model_reference.py`, which runs the same model in PyTorch/transformers):
//!
//!     cargo bench --bench model -- --model small|smollm2 --mode train|lora|generate
//!                                  [--batch 8] [--seq 256] [--steps 5] [--new-tokens 64]
//!                                  [--precision float32|bf16] [--device cpu|cuda] [--generations 3]
//!
//! train: forward + next-token NLL + backward + AdamW step on random tokens, tokens/s = B·T·steps/s.
//! generate: greedy KV-cache decoding of B prompts of 32 tokens, tokens/s = B·new_tokens/s of the
//! fastest of `--generations` identical timed generations.
//! One untimed warm-up each. Prints one JSON line with the peak RSS (VmHWM).

use std::time::Instant;

use tch::{Device, Kind, Tensor};
use trajflow::model::config::DecoderConfig;
use trajflow::model::generate::{generate, Sampling};
use trajflow::model::llama::Decoder;
use trajflow::model::precision::Precision;
use trajflow::synth::SplitMix;
use trajflow::train::losses::{nll_loss, Reduction};
use trajflow::train::optim::{AdamW, OptimConfig};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn random_ids(rng: &mut SplitMix, b: i64, t: i64, vocab: i64) -> Tensor {
    let ids: Vec<i64> = (0..b * t).map(|_| (rng.next_u64() % vocab as u64) as i64).collect();
    Tensor::from_slice(&ids).view([b, t])
}

fn main() {
    // As the `trajflow` binary does ([`trajflow::memory`]).
    let retained = trajflow::memory::retain_freed_memory(true);
    let args: Vec<String> = std::env::args().collect();
    let which: String = arg(&args, "--model", "small".to_string());
    let mode: String = arg(&args, "--mode", "train".to_string());
    let b: i64 = arg(&args, "--batch", 8);
    let t: i64 = arg(&args, "--seq", 256);
    let steps: usize = arg(&args, "--steps", 5);
    let new_tokens: usize = arg(&args, "--new-tokens", 64);
    let generations: usize = arg(&args, "--generations", 3);
    let precision: String = arg(&args, "--precision", "float32".to_string());
    let device_name: String = arg(&args, "--device", "cpu".to_string());
    let device = match device_name.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => panic!("unknown device {other}"),
    };
    tch::manual_seed(0);
    let (mut model, tok) = match which.as_str() {
        "small" => (Decoder::new(DecoderConfig::small(49152), device), None),
        "smollm2" => {
            let (m, tk) = trajflow::model::load("smollm2-135m", device).expect("run `make model` first");
            (m, Some(tk))
        }
        other => panic!("unknown model {other}"),
    };
    model.set_precision(
        <Precision as clap::ValueEnum>::from_str(&precision, false)
            .unwrap_or_else(|e| panic!("--precision {precision}: {e}")),
    );
    let vocab = model.cfg.vocab_size;
    let mut rng = SplitMix::new(1);
    if mode == "lora" {
        // LoRA r 8, alpha 16 on the attention projections; the base frozen (as peft's LoraConfig
        // on the reference side).
        let targets = ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec();
        let cfg = trajflow::model::lora::LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, targets };
        trajflow::model::lora::attach(&mut model, cfg).expect("LoRA attaches");
    }
    let (tokens, seconds) = if mode == "train" || mode == "lora" {
        let mut opt = AdamW::new(
            model.trainable_variables(),
            OptimConfig { lr: 1e-5, max_grad_norm: None, ..Default::default() },
        );
        let mut step = |ids: &Tensor| {
            let logp = model
                .forward(&ids.narrow(1, 0, t - 1))
                .log_softmax(-1, Kind::Float)
                .gather(2, &ids.narrow(1, 1, t - 1).unsqueeze(-1), false)
                .squeeze_dim(-1);
            let loss = nll_loss(&logp, &Tensor::ones_like(&logp), Reduction::TokenMean);
            opt.backward(&loss, None).expect("a finite loss");
        };
        step(&random_ids(&mut rng, b, t, vocab).to(device));
        let start = Instant::now();
        for _ in 0..steps {
            step(&random_ids(&mut rng, b, t, vocab).to(device));
        }
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        ((b * t) as f64 * steps as f64, start.elapsed().as_secs_f64())
    } else {
        let prompts: Vec<Vec<i64>> =
            (0..b).map(|_| (0..32).map(|_| (rng.next_u64() % vocab as u64) as i64).collect()).collect();
        let tok = tok.unwrap_or_else(trajflow::model::tokenizer::Tok::ids_only);
        let warm = Sampling { max_new_tokens: 4, ..Default::default() };
        generate(&model, &tok, &prompts, &warm).expect("generation runs");
        let s = Sampling { max_new_tokens: new_tokens, ..Default::default() };
        let mut fastest = f64::INFINITY;
        let mut n = 0;
        for _ in 0..generations {
            let start = Instant::now();
            let out = generate(&model, &tok, &prompts, &s).expect("generation runs");
            fastest = fastest.min(start.elapsed().as_secs_f64());
            n = out.iter().map(|g| g.tokens.len()).sum();
        }
        (n as f64, fastest)
    };
    let shape = if mode != "generate" { format!("\"seq\": {t}") } else { format!("\"new_tokens\": {new_tokens}") };
    println!(
        "{{\"impl\": \"trajflow\", \"model\": \"{which}\", \"mode\": \"{mode}\", \"precision\": \"{precision}\", \"device\": \"{device_name}\", \"batch\": {b}, {shape}, \"tokens_per_s\": {:.1}, \"seconds\": {seconds:.3}, \"peak_rss_mb\": {:.0}, \"torch_threads\": {}, \"retains_freed_memory\": {retained}}}",
        tokens / seconds,
        peak_rss_mb(),
        tch::get_num_threads()
    );
}
