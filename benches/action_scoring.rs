//! TWOSOME's action scoring on this machine: trajflow's `choose` (each prompt run once, its
//! candidates scored against the prompt's cached keys and values) against the reference in the
//! same run — every candidate scored as its own `prompt + candidate` sequence, as rollouts did
//! before — on the same prompts and candidates:
//!
//!     cargo bench --bench action_scoring -- [--rows 24] [--prompt 400] [--candidates 16]
//!                                           [--action 6] [--repeats 3]
//!
//! Random token ids on the small model (household-pick's shape by default: 16 admissible actions
//! of about 6 tokens after a conversation of a few hundred tokens). Prints one JSON line with the
//! fastest of `--repeats` timings of each and, over the rows, the largest gap between the summed
//! log-prob (by the reference) of `choose`'s greedy choice and the reference's best.

use std::time::Instant;

use trajflow::model::config::DecoderConfig;
use trajflow::model::llama::Decoder;
use trajflow::model::score::token_logprobs;
use trajflow::rollout::action_scoring::{choose, Candidate, Normalization};
use trajflow::synth::SplitMix;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
}

/// The fastest of `repeats` timings of `f`, and its last result.
fn fastest<T>(repeats: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = f();
    for _ in 0..repeats {
        let start = Instant::now();
        out = f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, out)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (rows, prompt, n, action, repeats) = (
        arg(&args, "--rows", 24),
        arg(&args, "--prompt", 400),
        arg(&args, "--candidates", 16),
        arg(&args, "--action", 6),
        arg(&args, "--repeats", 3),
    );
    tch::manual_seed(0);
    let vocab = 2000;
    let model = Decoder::new(DecoderConfig::small(vocab), tch::Device::Cpu);
    let mut rng = SplitMix::new(1);
    let mut ids = |len: usize| -> Vec<i64> { (0..len).map(|_| (rng.next_u64() % vocab as u64) as i64).collect() };
    let prompts: Vec<Vec<i64>> = (0..rows).map(|r| ids(prompt - r % 7)).collect();
    let candidates: Vec<Vec<Candidate>> = (0..rows)
        .map(|_| (0..n).map(|c| Candidate { text: "w ".repeat(1 + c % 3), ids: ids(action - c % 3) }).collect())
        .collect();
    let batch_tokens = 16_384;
    let (cached_s, chosen) =
        fastest(repeats, || choose(&model, &prompts, &candidates, Normalization::Sum, 0.0, 0, batch_tokens).unwrap());
    let (reference_s, reference) = fastest(repeats, || {
        let seqs: Vec<Vec<i64>> = prompts
            .iter()
            .zip(&candidates)
            .flat_map(|(p, cs)| cs.iter().map(move |c| p.iter().chain(&c.ids).copied().collect()))
            .collect();
        token_logprobs(&model, &seqs, batch_tokens).unwrap()
    });
    // Sum normalisation: a candidate's score is its summed log-prob.
    let mut worst = 0.0f64;
    let mut next = reference.iter();
    for ((p, cs), g) in prompts.iter().zip(&candidates).zip(&chosen) {
        let sums: Vec<f64> =
            cs.iter().map(|_| next.next().unwrap()[p.len()..].iter().map(|&x| f64::from(x)).sum()).collect();
        let best = sums.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let taken = cs.iter().position(|c| c.ids == g.tokens).unwrap();
        worst = worst.max(best - sums[taken]);
    }
    println!(
        "{{\"rows\": {rows}, \"prompt_tokens\": {prompt}, \"candidates\": {n}, \"action_tokens\": {action}, \"cached_s\": {cached_s:.3}, \"reference_s\": {reference_s:.3}, \"speedup\": {:.1}, \"greedy_score_gap\": {worst:.2e}, \"torch_threads\": {}}}",
        reference_s / cached_s,
        tch::get_num_threads()
    );
}
