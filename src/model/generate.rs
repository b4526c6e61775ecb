//! Batched generation with a KV cache. Prompts of different lengths are left-padded; every row
//! has its own positions, so a row's tokens and log-probs do not depend on what else is in the
//! batch. Sampling: greedy (temperature 0) or temperature, top-k, top-p; stop tokens and stop
//! strings; a token budget. Each generated token comes with its log-prob under the distribution
//! it was drawn from — allowed set, temperature, top-k and top-p applied as [`super::drawn`] says
//! (the masked softmax for greedy) — and the set of tokens it was allowed to be. Sampling draws
//! from a generator of its own seeded with `seed`, so a run is reproducible whatever else runs in
//! the process.

use tch::{Kind, Tensor};

use super::drawn::{restrict, Shape};
use super::llama::Decoder;
use super::prefix_cache::{assemble, extract, PrefixCache};
use super::scored_choice::ScoredChoice;
use super::tokenizer::Tok;
use crate::error::Result;
use crate::synth::SplitMix;

/// How to sample.
#[derive(Debug, Clone)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: i64,
    /// Keep the smallest set of tokens whose probability reaches p (1.0 = off).
    pub top_p: f64,
    /// Maximum new tokens per sequence.
    pub max_new_tokens: usize,
    /// Tokens that end a sequence (kept in the output).
    pub stop_tokens: Vec<i64>,
    /// Strings that end a sequence once the decoded output contains them.
    pub stop_strings: Vec<String>,
    /// Seed of the sampler.
    pub seed: i64,
}

impl Sampling {
    /// The temperature and truncation actions are drawn with.
    pub fn shape(&self) -> Shape {
        Shape { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p }
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: 64,
            stop_tokens: vec![],
            stop_strings: vec![],
            seed: 0,
        }
    }
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token or stop string.
    Stop,
    /// The token budget ran out (truncated).
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated token ids (stop token included).
    pub tokens: Vec<i64>,
    /// Log-prob of each generated token under the distribution it was drawn from.
    pub logprobs: Vec<f32>,
    /// The tokens each generated token was allowed to be (empty: any): constrained decoding's
    /// allowed continuations, which the learner applies again.
    pub allowed: Vec<Vec<i64>>,
    /// The temperature and truncation the tokens were drawn with; `None` when `logprobs` are the
    /// plain softmax's whatever the sampling.
    pub shape: Option<Shape>,
    /// Why generation ended.
    pub finish: Finish,
    /// Whole actions scored and chosen (TWOSOME): the candidates the action was chosen among,
    /// with `start` 0 until the rollout places the action in its episode.
    pub choice: Option<ScoredChoice>,
}

/// log softmax(`logits`)[r, `next`[r]] for every row r, as the chosen logit minus the row's
/// log-sum-exp (no [B, V] log-softmax is written).
fn chosen_logprob(logits: &Tensor, next: &Tensor) -> Tensor {
    logits.gather(1, &next.unsqueeze(1), false).squeeze_dim(1) - logits.logsumexp([-1i64], false)
}

/// Draws one token per row of `probs` [B, V] by inverting the cumulative distribution with our
/// own seeded generator (libtorch's is global, so concurrent generations would interleave draws).
fn sample_rows(probs: &Tensor, rng: &mut SplitMix) -> Result<Vec<i64>> {
    let v = probs.size()[1] as usize;
    let flat: Vec<f32> = Vec::try_from(probs.contiguous().view([-1]))?;
    Ok(flat
        .chunks(v)
        .map(|row| {
            let total: f64 = row.iter().map(|&p| p as f64).sum();
            let u = rng.unit() as f64 * total;
            let mut acc = 0.0;
            let last_nonzero = row.iter().rposition(|&p| p > 0.0).unwrap_or(0);
            row.iter()
                .position(|&p| {
                    acc += p as f64;
                    acc > u
                })
                .unwrap_or(last_nonzero) as i64
        })
        .collect())
}

/// Generates a continuation of every prompt.
pub fn generate(model: &Decoder, tok: &Tok, prompts: &[Vec<i64>], s: &Sampling) -> Result<Vec<Generation>> {
    generate_constrained(model, tok, prompts, s, None)
}

/// The tokens that may follow `prefix` so that it stays a prefix of one of `candidates`.
fn allowed_next(candidates: &[Vec<i64>], prefix: &[i64]) -> Vec<i64> {
    let mut next: Vec<i64> = candidates
        .iter()
        .filter(|c| c.len() > prefix.len() && c.starts_with(prefix))
        .map(|c| c[prefix.len()])
        .collect();
    next.sort_unstable();
    next.dedup();
    next
}

/// [`generate`], where row r may only produce one of `allowed[r]` (token sequences, each ending
/// with a stop token): at every step the logits of tokens that would leave every candidate are
/// masked, so sampling (and greedy) choose among the candidates, and the recorded log-probs are
/// those of the masked distribution — the behaviour policy that was actually sampled. Top-k and
/// top-p apply after the mask. A row whose prefix fits no candidate (none given) is unconstrained.
pub fn generate_constrained(
    model: &Decoder,
    tok: &Tok,
    prompts: &[Vec<i64>],
    s: &Sampling,
    allowed: Option<&[Vec<Vec<i64>>]>,
) -> Result<Vec<Generation>> {
    generate_cached(model, tok, prompts, s, allowed, None)
}

/// [`generate_constrained`] that starts each row from its prefix cache, if any, feeding only the
/// prompt tokens after the reusable prefix, and leaves in `caches` every row's cache for the
/// tokens it was fed (the prompt and all generated tokens but the last) — see
/// [`super::prefix_cache`].
pub fn generate_cached(
    model: &Decoder,
    tok: &Tok,
    prompts: &[Vec<i64>],
    s: &Sampling,
    allowed: Option<&[Vec<Vec<i64>>]>,
    caches: Option<&mut [Option<PrefixCache>]>,
) -> Result<Vec<Generation>> {
    let dev = model.device();
    let b = prompts.len() as i64;
    let reused = assemble(prompts, caches.as_deref().unwrap_or(&[]), dev);
    let fed: Vec<&[i64]> = prompts.iter().zip(&reused.reused).map(|(p, &n)| &p[n..]).collect();
    let t = fed.iter().map(|p| p.len()).max().unwrap_or(0) as i64;
    let mut ids = vec![0i64; (b * t) as usize];
    let mut valid = vec![false; (b * t) as usize];
    let mut pos = vec![0i64; (b * t) as usize];
    for (r, (p, &n)) in fed.iter().zip(&reused.reused).enumerate() {
        let pad = t as usize - p.len();
        for (j, &id) in p.iter().enumerate() {
            let k = r * t as usize + pad + j;
            ids[k] = id;
            valid[k] = true;
            pos[k] = (n + j) as i64;
        }
    }
    let mut key_valid = Tensor::cat(&[&reused.key_valid, &Tensor::from_slice(&valid).view([b, t]).to(dev)], 1);
    let mut next_pos: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
    let mut out: Vec<Generation> = (0..b)
        .map(|_| Generation {
            tokens: vec![],
            logprobs: vec![],
            allowed: vec![],
            shape: Some(s.shape()),
            finish: Finish::Length,
            choice: None,
        })
        .collect();
    let mut done = vec![false; b as usize];
    let mut rng = SplitMix::new(s.seed as u64);
    let _guard = tch::no_grad_guard();
    let mut cache = reused.cache;
    let mut input = Tensor::from_slice(&ids).view([b, t]).to(dev);
    let mut positions = Tensor::from_slice(&pos).view([b, t]).to(dev);
    for _ in 0..s.max_new_tokens {
        let hidden = model.hidden(&input, &positions, &key_valid, Some(&mut cache));
        let last = model.logits(&hidden.narrow(1, hidden.size()[1] - 1, 1)).squeeze_dim(1).to_kind(Kind::Float);
        let mut allowed_now: Vec<Vec<i64>> = match allowed {
            Some(allowed) => (0..b as usize).map(|r| allowed_next(&allowed[r], &out[r].tokens)).collect(),
            None => vec![Vec::new(); b as usize],
        };
        let sets: Vec<&[i64]> = allowed_now.iter().map(Vec::as_slice).collect();
        let shaped = s.shape().apply(&restrict(&last, &sets));
        let next = if s.temperature <= 0.0 {
            shaped.argmax(-1, false)
        } else {
            let probs = shaped.softmax(-1, Kind::Float).to_device(tch::Device::Cpu);
            Tensor::from_slice(&sample_rows(&probs, &mut rng)?).to(dev)
        };
        let logp = chosen_logprob(&shaped, &next);
        let next: Vec<i64> = Vec::try_from(&next.to_device(tch::Device::Cpu))?;
        let logp: Vec<f32> = Vec::try_from(&logp.to_device(tch::Device::Cpu))?;
        for r in 0..b as usize {
            if done[r] {
                continue;
            }
            let g = &mut out[r];
            g.tokens.push(next[r]);
            g.logprobs.push(logp[r]);
            g.allowed.push(std::mem::take(&mut allowed_now[r]));
            let stop_string = !s.stop_strings.is_empty() && {
                let text = tok.decode(&g.tokens)?;
                s.stop_strings.iter().any(|x| text.contains(x.as_str()))
            };
            if s.stop_tokens.contains(&next[r]) || stop_string {
                g.finish = Finish::Stop;
                done[r] = true;
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        // Finished rows keep decoding padding that nothing attends to; their output is frozen.
        input = Tensor::from_slice(&next).view([b, 1]).to(dev);
        positions = Tensor::from_slice(&next_pos).view([b, 1]).to(dev);
        for p in next_pos.iter_mut() {
            *p += 1;
        }
        let step_valid: Vec<bool> = done.iter().map(|d| !d).collect();
        key_valid = Tensor::cat(&[key_valid, Tensor::from_slice(&step_valid).view([b, 1]).to(dev)], 1);
    }
    if let Some(caches) = caches {
        for (r, (p, g)) in prompts.iter().zip(&out).enumerate() {
            let ids: Vec<i64> = p.iter().chain(&g.tokens[..g.tokens.len().saturating_sub(1)]).copied().collect();
            caches[r] = Some(extract(&cache, &key_valid, r as i64, ids));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::DecoderConfig;

    /// Three turns of a conversation-like loop: each turn's prompt is the last prompt, its
    /// generation and new tokens (row 1 rewrites its last generated token, so only part of its
    /// cache is reusable; row 2 starts with no cache every other turn). Generating from the prefix
    /// caches gives the tokens of generating from scratch, with log-probs within 1e-4, and the
    /// caches hold exactly the tokens fed.
    #[test]
    fn prefix_caches_reproduce_generation_from_scratch() {
        tch::manual_seed(3);
        let model = Decoder::new(DecoderConfig::small(40), tch::Device::Cpu);
        let tok = Tok::ids_only();
        let s = Sampling { temperature: 0.0, max_new_tokens: 5, stop_tokens: vec![7], ..Default::default() };
        let mut prompts: Vec<Vec<i64>> = vec![vec![1, 2, 3], vec![4, 5, 6, 8, 9, 10, 11], vec![12]];
        let mut caches: Vec<Option<PrefixCache>> = (0..3).map(|_| None).collect();
        for turn in 0..3i64 {
            if turn == 1 {
                caches[2] = None;
            }
            let fresh = generate(&model, &tok, &prompts, &s).unwrap();
            let cached = generate_cached(&model, &tok, &prompts, &s, None, Some(&mut caches)).unwrap();
            for (r, (a, b)) in fresh.iter().zip(&cached).enumerate() {
                assert_eq!(a.tokens, b.tokens, "turn {turn} row {r}");
                let d = a.logprobs.iter().zip(&b.logprobs).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(d < 1e-4, "turn {turn} row {r}: log-probs differ by {d}");
                let c = caches[r].as_ref().unwrap();
                assert_eq!(c.ids.len(), prompts[r].len() + b.tokens.len() - 1, "turn {turn} row {r}");
                assert!(prompts[r].iter().chain(&b.tokens).zip(&c.ids).all(|(x, y)| x == y));
            }
            for (r, (p, g)) in prompts.iter_mut().zip(&fresh).enumerate() {
                p.extend(&g.tokens);
                if r == 1 {
                    *p.last_mut().unwrap() = 30;
                }
                p.extend([20 + turn, 21 + turn + r as i64]);
            }
        }
    }
}
